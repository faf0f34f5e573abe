"""The rollout tree: nodes (problem, step prefix), the rollouts pooled at each, the tree search's
marks, and child branches (rollouts turned into trajectories).

Values at a node are counted from every rollout that continues its prefix, whichever trajectory's
step (or which search) sampled it: trajectories that share a prefix share its value. Like step
values, node values are per policy model.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

from core.errors import StepScopeError
from core.steps import StepSpan
from core.store.connection import ConnectionBase
from core.store.keys import new_key, now
from core.store.nodes import ensure_path
from core.store.rows import _chunks, _decode

_MODEL = "(? IS NULL OR r.model IS ?)"


class TreeQueries(ConnectionBase):
    """Mixed into Store with ProblemQueries and RolloutQueries."""

    # --- nodes ------------------------------------------------------------------------------

    def ensure_node_path(self, problem_id: int, steps: Sequence[str]) -> list[int]:
        """Ids of the root and of every prefix of `steps` (len(steps) + 1), created if new."""
        if self._scalar("SELECT 1 FROM problems WHERE id = ?", [problem_id]) is None:
            raise StepScopeError(f"problem {problem_id} does not exist")
        with self.transaction() as conn:
            return ensure_path(conn, problem_id, list(steps))

    def get_node(self, node_id: int) -> dict | None:
        return self._one("SELECT id, problem_id, parent_id, depth, text FROM nodes WHERE id = ?", [node_id])

    def node_path(self, node_id: int) -> list[dict]:
        """The node's ancestors from the root down to the node itself."""
        rows = self._rows(
            """WITH RECURSIVE up(id, parent_id, depth, text) AS (
                   SELECT id, parent_id, depth, text FROM nodes WHERE id = ?
                   UNION ALL SELECT n.id, n.parent_id, n.depth, n.text FROM nodes n JOIN up ON n.id = up.parent_id)
               SELECT id, parent_id, depth, text FROM up ORDER BY depth""",
            [node_id],
        )
        return rows

    def problem_nodes(self, problem_id: int) -> list[dict]:
        """Every node of the problem's tree: id, parent_id, depth, text (parents before children)."""
        return self._rows(
            "SELECT id, parent_id, depth, text FROM nodes WHERE problem_id = ? ORDER BY depth, id", [problem_id]
        )

    def root_node(self, problem_id: int) -> int:
        return self.ensure_node_path(problem_id, [])[0]

    def trajectory_nodes(self, trajectory_id: int) -> list[int]:
        """The root and the node of every current step of the trajectory, in order."""
        problem_id = self._scalar("SELECT problem_id FROM trajectories WHERE id = ?", [trajectory_id])
        if problem_id is None:
            raise StepScopeError(f"trajectory {trajectory_id} does not exist")
        return [self.root_node(problem_id), *[s["node_id"] for s in self.steps(trajectory_id)]]

    def node_counts(self, problem_id: int, model: str | None = None) -> dict[int, tuple[int, int]]:
        """(n, n_correct) per node of the problem that holds rollouts (of `model`, else of any)."""
        rows = self._rows(
            f"""SELECT r.node_id, COUNT(*) AS n, SUM(r.correct) AS c FROM rollouts r
                JOIN nodes n ON n.id = r.node_id WHERE n.problem_id = ? AND {_MODEL} GROUP BY r.node_id""",
            [problem_id, model, model],
        )
        return {row["node_id"]: (int(row["n"]), int(row["c"])) for row in rows}

    def tree_problems(self, dataset: str | None = None) -> list[dict]:
        """Problems (id, question) that have rollouts at any node, by id."""
        return self._rows(
            """SELECT p.id, p.question FROM problems p WHERE (? IS NULL OR p.dataset = ?) AND EXISTS
               (SELECT 1 FROM nodes n JOIN rollouts r ON r.node_id = n.id WHERE n.problem_id = p.id) ORDER BY p.id""",
            [dataset, dataset],
        )

    def node_models(self, problem_id: int) -> list[str]:
        rows = self._rows(
            """SELECT DISTINCT r.model FROM rollouts r JOIN nodes n ON n.id = r.node_id
               WHERE n.problem_id = ? AND r.model IS NOT NULL ORDER BY r.model""",
            [problem_id],
        )
        return [row["model"] for row in rows]

    def node_labels(self, node_id: int) -> list[dict]:
        """Human labels on any step (of any trajectory) that ends at this node."""
        return self._rows(
            """SELECT a.rating, a.first_error, a.flagged, a.note, u.name AS annotator, s.trajectory_id, s.idx
               FROM annotations a JOIN steps s ON s.id = a.step_id JOIN annotators u ON u.id = a.annotator_id
               WHERE s.node_id = ? ORDER BY a.id""",
            [node_id],
        )

    def node_steps(self, node_id: int) -> list[dict]:
        """Steps (id, trajectory_id, idx) of current segmentations that end at this node."""
        return self._rows(
            """SELECT s.id, s.trajectory_id, s.idx FROM steps s JOIN trajectories t
               ON t.id = s.trajectory_id AND t.current_segmentation_id = s.segmentation_id
               WHERE s.node_id = ? ORDER BY s.trajectory_id""",
            [node_id],
        )

    # --- rollouts at nodes --------------------------------------------------------------------

    def add_node_rollouts(self, node_id: int, rows: Sequence[Mapping[str, Any]]) -> list[int]:
        """Store rollouts sampled from a node, in one transaction; returns their ids in order."""
        stamp = now()
        ids = []
        with self.transaction() as conn:
            for r in rows:
                cursor = conn.execute(
                    """INSERT INTO rollouts (key, step_id, node_id, job_id, text, answer, correct, num_tokens,
                       finish_reason, seed, model, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                    [r.get("key") or new_key(), r.get("step_id"), node_id, r.get("job_id"), r["text"],
                     r.get("answer"), int(bool(r["correct"])), r.get("num_tokens"), r.get("finish_reason"),
                     r.get("seed"), r.get("model"), stamp],
                )  # fmt: skip
                ids.append(int(cursor.lastrowid))
        return ids

    def node_rollouts(self, node_id: int, model: str | None = None) -> list[dict]:
        rows = self._rows(
            f"""SELECT r.*, m.selected, m.first_error, m.branch_id FROM rollouts r
                LEFT JOIN tree_marks m ON m.rollout_id = r.id
                WHERE r.node_id = ? AND {_MODEL} ORDER BY r.id""",
            [node_id, model, model],
        )
        return [_decode(row, "correct", "selected", json_columns=()) for row in rows]

    def problem_rollouts(self, problem_id: int, model: str | None) -> list[dict]:
        """Every rollout at the problem's nodes (of `model`), oldest first: id, node_id, text,
        correct, num_tokens."""
        rows = self._rows(
            f"""SELECT r.id, r.node_id, r.text, r.correct, r.num_tokens FROM rollouts r
                JOIN nodes n ON n.id = r.node_id WHERE n.problem_id = ? AND {_MODEL} ORDER BY r.id""",
            [problem_id, model, model],
        )
        return [_decode(row, "correct", json_columns=()) for row in rows]

    def get_rollout(self, rollout_id: int) -> dict | None:
        """The rollout with its node, problem, step (trajectory and idx, if from a step) and job."""
        row = self._one(
            """SELECT r.*, n.problem_id, n.depth, s.trajectory_id, s.idx AS step_idx, j.manifest AS job_manifest
               FROM rollouts r LEFT JOIN nodes n ON n.id = r.node_id LEFT JOIN steps s ON s.id = r.step_id
               LEFT JOIN jobs j ON j.id = r.job_id WHERE r.id = ?""",
            [rollout_id],
        )
        return _decode(row, "correct", json_columns=("job_manifest",)) if row else None

    # --- marks --------------------------------------------------------------------------------

    def mark_rollout(self, rollout_id: int, *, selected: bool | None = None, first_error: int | None = None,
                     branch_id: int | None = None, job_id: int | None = None) -> None:  # fmt: skip
        """Set the given marks on a rollout (the others stay as they were)."""
        with self.transaction() as conn:
            conn.execute(
                """INSERT INTO tree_marks (rollout_id, selected, first_error, branch_id, job_id, updated_at)
                   VALUES (?, COALESCE(?, 0), ?, ?, ?, ?)
                   ON CONFLICT (rollout_id) DO UPDATE SET
                     selected = COALESCE(?, selected), first_error = COALESCE(?, first_error),
                     branch_id = COALESCE(?, branch_id), job_id = COALESCE(?, job_id), updated_at = excluded.updated_at""",
                [rollout_id, None if selected is None else int(selected), first_error, branch_id, job_id, now(),
                 None if selected is None else int(selected), first_error, branch_id, job_id],
            )  # fmt: skip

    def problem_marks(self, problem_id: int) -> list[dict]:
        """The marks on rollouts at the problem's nodes: rollout_id, selected, first_error, branch_id."""
        rows = self._rows(
            """SELECT m.rollout_id, m.selected, m.first_error, m.branch_id FROM tree_marks m
               JOIN rollouts r ON r.id = m.rollout_id JOIN nodes n ON n.id = r.node_id WHERE n.problem_id = ?""",
            [problem_id],
        )
        return [_decode(row, "selected", json_columns=()) for row in rows]

    def node_visits(self, node_ids: Sequence[int]) -> dict[int, int]:
        """How many of each node's rollouts the tree search selected (OmegaPRM's N(s))."""
        visits = {node: 0 for node in node_ids}
        for chunk in _chunks(list(visits)):
            marks = ", ".join("?" for _ in chunk)
            for row in self._rows(
                f"""SELECT r.node_id, COUNT(*) AS v FROM tree_marks m JOIN rollouts r ON r.id = m.rollout_id
                    WHERE m.selected = 1 AND r.node_id IN ({marks}) GROUP BY r.node_id""",
                list(chunk),
            ):
                visits[row["node_id"]] = int(row["v"])
        return visits

    # --- branches -----------------------------------------------------------------------------

    def add_branch(
        self,
        rollout_id: int,
        solution: str,
        spans: Sequence[StepSpan],
        *,
        rule: str,
        model: str | None,
        policy_prompt: str | None,
        final_answer: str | None,
        correct: bool | None,
        meta: Mapping[str, Any] | None = None,
    ) -> tuple[int, bool]:
        """The rollout as a child branch: a trajectory (source "rollout") whose solution is the full
        path, linked to the rollout and the node it was sampled from; (trajectory id, created).
        The same rollout expanded twice gives the same trajectory."""
        rollout = self.get_rollout(rollout_id)
        if rollout is None:
            raise StepScopeError(f"rollout {rollout_id} does not exist")
        if rollout["node_id"] is None:
            raise StepScopeError(f"rollout {rollout_id} belongs to no tree node")
        with self.transaction() as conn:
            trajectory_id, created = self.insert_trajectory(
                rollout["problem_id"], solution, source="rollout", model=model, policy_prompt=policy_prompt,
                final_answer=final_answer, correct=correct, meta={"rollout": rollout_id, **(meta or {})},
            )  # fmt: skip
            if created:
                conn.execute(
                    "UPDATE trajectories SET parent_node_id = ?, parent_rollout_id = ? WHERE id = ?",
                    [rollout["node_id"], rollout_id, trajectory_id],
                )
                self.add_segmentation(trajectory_id, rule, spans)
            self.mark_rollout(rollout_id, branch_id=trajectory_id)
        return trajectory_id, created

    def branches(self, node_id: int) -> list[dict]:
        """Child branches sampled from this node: trajectory id and the rollout it came from."""
        return self._rows(
            "SELECT id, parent_rollout_id FROM trajectories WHERE parent_node_id = ? ORDER BY id", [node_id]
        )

    # --- the full dump (core.formats.jsonl) -----------------------------------------------------

    def tree_dump(self, problem_ids: Sequence[int]) -> dict[int, dict[str, list[dict]]]:
        """What the dump needs of these problems' trees beyond their trajectories, one query per
        table for the page (not per problem): problem id -> {"nodes", "rollouts", "marks",
        "branches"}, each a list of rows that name other rows by key, never by id.

        nodes: those no step ends at (an import recreates the others from the segmentations, and
            the root of any problem with one), parents first, by key within a depth.
        rollouts: stepless ones (sampled at a node by the tree search), oldest first.
        marks: on any rollout at the problem's nodes, by rollout key.
        branches: trajectories with a parent node or rollout, by trajectory key."""
        out: dict[int, dict[str, list[dict]]] = {}
        ids = _json_list(problem_ids)

        def add(kind: str, rows: list[dict]) -> None:
            for row in rows:
                out.setdefault(row.pop("problem_id"), {}).setdefault(kind, []).append(row)

        add("nodes", self._rows(
            """SELECT n.problem_id, n.key, p.key AS parent, n.text FROM nodes n LEFT JOIN nodes p ON p.id = n.parent_id
               WHERE n.problem_id IN (SELECT value FROM json_each(?))
                 AND NOT EXISTS (SELECT 1 FROM steps s WHERE s.node_id = n.id)
                 AND NOT (n.parent_id IS NULL AND EXISTS (SELECT 1 FROM segmentations g JOIN trajectories t
                          ON t.id = g.trajectory_id WHERE t.problem_id = n.problem_id))
               ORDER BY n.problem_id, n.depth, n.key""",
            [ids],
        ))  # fmt: skip
        add("rollouts", [_decode(row, "correct", json_columns=()) for row in self._rows(
            """SELECT n.problem_id, r.key, r.text, r.answer, r.correct, r.num_tokens, r.finish_reason, r.seed,
                      r.model, r.created_at, j.key AS job, n.key AS node
               FROM nodes n JOIN rollouts r ON r.node_id = n.id LEFT JOIN jobs j ON j.id = r.job_id
               WHERE n.problem_id IN (SELECT value FROM json_each(?)) AND r.step_id IS NULL ORDER BY r.id""",
            [ids],
        )])  # fmt: skip
        add("marks", [_decode(row, "selected", json_columns=()) for row in self._rows(
            """SELECT n.problem_id, r.key AS rollout, m.selected, m.first_error, t.key AS branch, j.key AS job,
                      m.updated_at
               FROM nodes n JOIN rollouts r ON r.node_id = n.id JOIN tree_marks m ON m.rollout_id = r.id
               LEFT JOIN trajectories t ON t.id = m.branch_id LEFT JOIN jobs j ON j.id = m.job_id
               WHERE n.problem_id IN (SELECT value FROM json_each(?)) ORDER BY r.key""",
            [ids],
        )])  # fmt: skip
        add("branches", self._rows(
            """SELECT t.problem_id, t.key AS trajectory, n.key AS node, r.key AS rollout FROM trajectories t
               LEFT JOIN nodes n ON n.id = t.parent_node_id LEFT JOIN rollouts r ON r.id = t.parent_rollout_id
               WHERE t.problem_id IN (SELECT value FROM json_each(?))
                 AND (t.parent_node_id IS NOT NULL OR t.parent_rollout_id IS NOT NULL)
               ORDER BY t.key""",
            [ids],
        ))  # fmt: skip
        return out

    def keys_of(self, table: str, ids: Sequence[int]) -> dict[int, str]:
        """id -> key of those rows of a keyed table (problems, trajectories, nodes) that exist."""
        if table not in _KEYED:
            raise ValueError(f"{table} is not a keyed table")
        return dict(self.conn.execute(
            f"SELECT id, key FROM {table} WHERE id IN (SELECT value FROM json_each(?))", [_json_list(set(ids))]
        ).fetchall())  # fmt: skip


_KEYED = ("problems", "trajectories", "nodes")


def _json_list(values) -> str:
    return json.dumps(list(values))
