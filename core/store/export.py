"""What the exports read (issue 22): a few streaming queries per export, each ordered by
trajectory (or by problem), that the exporter merges in one pass (core.formats.sorted_streams).

A stream is a cursor read row by row, never a list of the table: an export holds one page of
trajectories at a time whatever the store's size, and runs the same number of queries for ten
trajectories or a million. Each query walks the tables by their indexes in the order it returns
(trajectories by id, then each one's steps by the (segmentation, idx) index); CROSS JOIN fixes
that order, so SQLite sorts at most one trajectory's rows (the right part of an ORDER BY) and never
the table. What labels a step is aggregated where it lives (a correlated subquery on the step's
index: the latest verdict, the votes of the annotators, the rollout counts), so Python reads one
row per step.

The streams of one export are open together, so SQLite reads them in one read transaction: an
export sees one state of the store even while labels are being saved.

The queries at the end take a list of ids (one JSON array, joined first so that SQLite walks the
step index): PRM training's label sets, which name their trajectories (core.prm_training).
"""

from __future__ import annotations

import json
from typing import Any, Iterator, Sequence

from core.store.connection import ConnectionBase
from core.store.rows import _as_bool
from core.store.verdicts import preferred_order

# The first columns of a step stream (the rest say what labels the step).
STEP_COLUMNS = ("trajectory_id", "id", "segmentation_id", "idx", "text")

# A human label as core.formats.labels.human_label reads it: a rating of 0 or +1 is right, -1 is
# wrong, and an unrated step marked as the first error is wrong.
_RIGHT = "a.rating >= 0"
_WRONG = "(a.rating < 0 OR (a.rating IS NULL AND a.first_error = 1))"


def _ids(ids: Sequence[int]) -> str:
    return json.dumps(list(ids))


def _in_dataset(dataset: str | None) -> tuple[str, list]:
    return ("", []) if dataset is None else ("WHERE p.dataset = ?", [dataset])


class ExportQueries(ConnectionBase):
    """Streams of trajectories, their current steps with what labels them, the dump's tables, the
    PRM800K export's and the rollout tree's; and pages of steps for PRM training."""

    def _stream(self, sql: str, params: Sequence[Any] = ()) -> Iterator[dict]:
        cursor = self.conn.execute(sql, params)
        names = [column[0] for column in cursor.description]
        for row in cursor:
            yield dict(zip(names, row))

    # --- the labelled exports (trl, math-shepherd, processbench) -----------------------------

    def export_trajectories(self, *, dataset: str | None = None, gold_item: bool = False) -> Iterator[dict]:
        """Every trajectory by id: id, key, problem_id, source, model, correct, the problem's
        dataset, question and gold, and the current segmentation_id; with `gold_item`, also its
        meta and whether it is a gold quality-control item (PRM800K's export)."""
        where, params = _in_dataset(dataset)
        extra = (", t.meta, EXISTS (SELECT 1 FROM gold_labels g WHERE g.trajectory_id = t.id) AS gold_item"
                 if gold_item else "")  # fmt: skip
        for row in self._stream(
            f"""SELECT t.id, t.key, t.problem_id, t.source, t.model, t.correct, p.dataset, p.question, p.gold,
                       t.current_segmentation_id AS segmentation_id{extra}
                FROM trajectories t CROSS JOIN problems p ON p.id = t.problem_id {where} ORDER BY t.id""",
            params,
        ):
            row["correct"] = _as_bool(row["correct"])
            if gold_item:
                row["meta"] = json.loads(row["meta"])
            yield row

    def _current_steps(self, columns: str = "", joins: str = "", params: Sequence[Any] = (), *,
                       dataset: str | None = None) -> Iterator[tuple]:  # fmt: skip
        """Rows of STEP_COLUMNS and then `columns` (their parameters first, then the joins'), the
        current steps of every trajectory by trajectory id and step idx."""
        where, more = _in_dataset(dataset)
        problems = "CROSS JOIN problems p ON p.id = t.problem_id" if dataset is not None else ""
        return self.conn.execute(
            f"""SELECT t.id, s.id, s.segmentation_id, s.idx, s.text{columns}
                FROM trajectories t {problems} CROSS JOIN steps s ON s.segmentation_id = t.current_segmentation_id
                {joins} {where} ORDER BY t.id, s.idx""",
            [*params, *more],
        )

    def current_steps_with_annotation(self, annotator: str, *, dataset: str | None = None) -> Iterator[tuple]:
        """Current steps (STEP_COLUMNS) with the annotator's rating, first_error, confidence and
        category (all None where the annotator did not label the step)."""
        return self._current_steps(
            ", a.rating, a.first_error, a.confidence, a.category",
            """LEFT JOIN annotations a ON a.step_id = s.id
                   AND a.annotator_id = (SELECT id FROM annotators WHERE name = ?)""",
            [annotator], dataset=dataset,
        )  # fmt: skip

    def current_steps_with_votes(self, *, dataset: str | None = None) -> Iterator[tuple]:
        """Current steps (STEP_COLUMNS) with how many annotators call each right and how many wrong."""
        return self._current_steps(
            f""", (SELECT COUNT(*) FROM annotations a WHERE a.step_id = s.id AND {_RIGHT}),
                  (SELECT COUNT(*) FROM annotations a WHERE a.step_id = s.id AND {_WRONG})""",
            dataset=dataset,
        )

    def current_steps_with_score(self, verifier: str, *, dataset: str | None = None) -> Iterator[tuple]:
        """Current steps (STEP_COLUMNS) with the score of the verifier's latest step verdict (None
        if it gave none; preferred_order: an in-sample score never hides a cross-fitted one)."""
        return self._current_steps(
            f""", (SELECT v.p_yes FROM verdicts v WHERE v.step_id = s.id AND v.judge = ? AND v.kind = 'step'
                   ORDER BY {preferred_order(last=False, alias="v")} LIMIT 1)""",
            params=[verifier], dataset=dataset,
        )  # fmt: skip

    def current_steps_with_rollouts(self, *, dataset: str | None = None) -> Iterator[tuple]:
        """Current steps (STEP_COLUMNS) with their rollouts (every policy model's), the ones that
        reached the gold, and the trajectory's graded outcome (1, 0, None): what an MC label and
        its provenance are read from (core.formats.labels.mc_labels)."""
        return self._current_steps(
            """, (SELECT COUNT(*) FROM rollouts r WHERE r.step_id = s.id),
                 (SELECT COALESCE(SUM(r.correct), 0) FROM rollouts r WHERE r.step_id = s.id), t.correct""",
            dataset=dataset,
        )

    def current_step_texts(self, *, dataset: str | None = None) -> Iterator[tuple]:
        """Current steps (STEP_COLUMNS) alone."""
        return self._current_steps(dataset=dataset)

    def annotator_has_latents(self, annotator: str) -> bool:
        """Whether any of the annotator's labels has a confidence or an error category."""
        return self._scalar(
            """SELECT EXISTS (SELECT 1 FROM annotations a JOIN annotators n ON n.id = a.annotator_id
               WHERE n.name = ? AND (a.confidence IS NOT NULL OR a.category IS NOT NULL))""",
            [annotator],
        ) == 1

    # --- PRM800K: every annotator's labels on the current steps --------------------------------

    def prm800k_annotations(self, *, dataset: str | None = None) -> Iterator[dict]:
        """trajectory_id, annotator, step_id, rating, flagged, dwell_ms of every label on a
        trajectory's current steps, by trajectory id; of every segmentation's steps when the
        current one has none (as the export always read them)."""
        where, params = _in_dataset(dataset)
        return self._stream(
            f"""SELECT t.id AS trajectory_id, n.name AS annotator, a.step_id, a.rating, a.flagged, a.dwell_ms
                FROM trajectories t CROSS JOIN problems p ON p.id = t.problem_id
                CROSS JOIN steps s ON s.trajectory_id = t.id AND (s.segmentation_id = t.current_segmentation_id
                    OR NOT EXISTS (SELECT 1 FROM steps c WHERE c.segmentation_id = t.current_segmentation_id
                                   AND c.trajectory_id = t.id))
                CROSS JOIN annotations a ON a.step_id = s.id JOIN annotators n ON n.id = a.annotator_id
                {where} ORDER BY t.id""",
            params,
        )

    def prm800k_trajectory_labels(self, *, dataset: str | None = None) -> Iterator[dict]:
        """trajectory_id, annotator, dwell_ms of every trajectory label, by trajectory id."""
        where, params = _in_dataset(dataset)
        return self._stream(
            f"""SELECT t.id AS trajectory_id, n.name AS annotator, x.dwell_ms
                FROM trajectories t CROSS JOIN problems p ON p.id = t.problem_id
                CROSS JOIN trajectory_labels x ON x.trajectory_id = t.id JOIN annotators n ON n.id = x.annotator_id
                {where} ORDER BY t.id""",
            params,
        )

    # --- the complete dump (core.formats.jsonl), problem by problem ----------------------------

    def dump_problems(self, *, dataset: str | None = None) -> Iterator[dict]:
        """Every problem by id: id, dataset, question, gold, meta (decoded), created_at."""
        where, params = _in_dataset(dataset)
        for row in self._stream(
            f"SELECT p.id, p.dataset, p.question, p.gold, p.meta, p.created_at FROM problems p {where} ORDER BY p.id",
            params,
        ):
            row["meta"] = json.loads(row["meta"])
            yield row

    def _dump(self, columns: str, joins: str, order: str, dataset: str | None) -> Iterator[dict]:
        """Rows of every trajectory of the problems, by problem id, trajectory id and `order`;
        each with problem_id and trajectory_id first."""
        where, params = _in_dataset(dataset)
        return self._stream(
            f"""SELECT p.id AS problem_id, t.id AS trajectory_id, {columns}
                FROM problems p CROSS JOIN trajectories t ON t.problem_id = p.id {joins}
                {where} ORDER BY p.id, t.id{order}""",
            params,
        )

    def dump_trajectories(self, *, dataset: str | None = None) -> Iterator[dict]:
        """The trajectory rows (meta decoded, correct as a bool)."""
        for row in self._dump(
            """t.key, t.source, t.model, t.policy_prompt, t.solution, t.final_answer, t.correct, t.meta,
               t.created_at, t.current_segmentation_id, t.parent_rollout_id, t.parent_node_id""",
            "", "", dataset,
        ):
            row["correct"] = _as_bool(row["correct"])
            row["meta"] = json.loads(row["meta"])
            yield row

    def dump_segmentations(self, *, dataset: str | None = None) -> Iterator[dict]:
        """Each trajectory's segmentations, oldest first: id, rule, created_at."""
        return self._dump("g.id, g.rule, g.created_at", "CROSS JOIN segmentations g ON g.trajectory_id = t.id",
                          ", g.id", dataset)  # fmt: skip

    def dump_steps(self, *, dataset: str | None = None) -> Iterator[dict]:
        """The steps of each trajectory's segmentations, oldest segmentation first, in order."""
        return self._dump(
            "s.segmentation_id, s.id, s.text, s.start_char, s.end_char",
            """CROSS JOIN segmentations g ON g.trajectory_id = t.id
               CROSS JOIN steps s ON s.segmentation_id = g.id AND s.trajectory_id = t.id""",
            ", g.id, s.idx", dataset,
        )  # fmt: skip

    def dump_annotations(self, *, dataset: str | None = None) -> Iterator[dict]:
        """The labels on each trajectory's steps (of every segmentation), a step's by annotator name."""
        for row in self._dump(
            """a.step_id, n.name AS annotator, a.rating, a.first_error, a.flagged, a.note, a.created_at,
               a.updated_at, a.confidence, a.rationale, a.category, a.dwell_ms, a.rating_order""",
            """CROSS JOIN steps s ON s.trajectory_id = t.id CROSS JOIN annotations a ON a.step_id = s.id
               JOIN annotators n ON n.id = a.annotator_id""",
            ", s.segmentation_id, s.idx, n.name", dataset,
        ):  # fmt: skip
            row["first_error"], row["flagged"] = bool(row["first_error"]), bool(row["flagged"])
            yield row

    def dump_rollouts(self, *, dataset: str | None = None) -> Iterator[dict]:
        """The rollouts from each trajectory's steps (of every segmentation), oldest first, with
        their job's key."""
        for row in self._dump(
            """r.step_id, r.key, r.text, r.answer, r.correct, r.num_tokens, r.finish_reason, r.seed, r.model,
               r.created_at, j.key AS job_key""",
            """CROSS JOIN steps s ON s.trajectory_id = t.id CROSS JOIN rollouts r ON r.step_id = s.id
               LEFT JOIN jobs j ON j.id = r.job_id""",
            ", r.id", dataset,
        ):  # fmt: skip
            row["correct"] = _as_bool(row["correct"])
            yield row

    def dump_verdicts(self, *, dataset: str | None = None) -> Iterator[dict]:
        """The verdicts on each trajectory (its steps' and its whole solution's), oldest first, with
        the verifier's kind and the job's key."""
        return self._dump(
            """v.step_id, v.key, v.judge, w.kind AS verifier_kind, v.kind, v.p_yes, v.mass, v.raw, v.template,
               v.template_hash, v.created_at, j.key AS job_key""",
            """CROSS JOIN verdicts v ON v.trajectory_id = t.id LEFT JOIN verifiers w ON w.name = v.judge
               LEFT JOIN jobs j ON j.id = v.job_id""",
            ", v.id", dataset,
        )  # fmt: skip

    def dump_trajectory_labels(self, *, dataset: str | None = None) -> Iterator[dict]:
        """Each trajectory's whole-solution labels, by annotator name."""
        for row in self._dump(
            "n.name AS annotator, x.flawed_process, x.dwell_ms, x.created_at",
            "CROSS JOIN trajectory_labels x ON x.trajectory_id = t.id JOIN annotators n ON n.id = x.annotator_id",
            ", n.name", dataset,
        ):  # fmt: skip
            row["flawed_process"] = bool(row["flawed_process"])
            yield row

    # --- the rollout tree, problem by problem (core.formats.tree) ------------------------------

    def tree_problem_stream(self, *, dataset: str | None = None) -> Iterator[dict]:
        """Problems (id, question) with rollouts at any node, by id (tree_problems, streamed)."""
        where, params = _in_dataset(dataset)
        return self._stream(
            f"""SELECT p.id, p.question FROM problems p {where} {"AND" if where else "WHERE"}
                EXISTS (SELECT 1 FROM nodes n JOIN rollouts r ON r.node_id = n.id WHERE n.problem_id = p.id)
                ORDER BY p.id""",
            params,
        )

    def tree_nodes(self, model: str | None = None, *, dataset: str | None = None) -> Iterator[tuple]:
        """(problem id, node id, parent id, depth, text, rollouts, ones that reached the gold) of
        every node, problem by problem, parents first (by depth, then id); the rollouts are those
        of `model`, else of any model."""
        where, params = _in_dataset(dataset)
        return self.conn.execute(
            f"""SELECT p.id, n.id, n.parent_id, n.depth, n.text,
                       (SELECT COUNT(*) FROM rollouts r WHERE r.node_id = n.id AND (? IS NULL OR r.model IS ?)),
                       (SELECT SUM(r.correct) FROM rollouts r WHERE r.node_id = n.id AND (? IS NULL OR r.model IS ?))
                FROM problems p CROSS JOIN nodes n ON n.problem_id = p.id {where} ORDER BY p.id, n.depth, n.id""",
            [model, model, model, model, *params],
        )

    # --- named trajectories and steps (PRM training) -------------------------------------------

    def current_steps(self, trajectory_ids: Sequence[int]) -> dict[int, list[dict]]:
        """Trajectory id -> the steps of its current segmentation in order (id, segmentation_id,
        trajectory_id, idx, text)."""
        steps: dict[int, list[dict]] = {i: [] for i in trajectory_ids}
        for row in self._rows(
            """SELECT s.id, s.segmentation_id, s.trajectory_id, s.idx, s.text
               FROM json_each(?) j CROSS JOIN trajectories t ON t.id = j.value
               JOIN steps s ON s.segmentation_id = t.current_segmentation_id
               ORDER BY s.trajectory_id, s.idx""",
            [_ids(trajectory_ids)],
        ):
            steps[row["trajectory_id"]].append(row)
        return steps

    def latest_step_scores(self, judge: str, step_ids: Sequence[int]) -> dict[int, float | None]:
        """Step id -> the score of verifier `judge`'s latest step verdict (None if it gave none;
        preferred_order: an in-sample score never hides a cross-fitted one)."""
        latest: dict[int, float | None] = {}
        for step_id, p_yes in self.conn.execute(
            f"""SELECT v.step_id, v.p_yes FROM json_each(?) j CROSS JOIN verdicts v ON v.step_id = j.value
               WHERE v.judge = ? AND v.kind = 'step' ORDER BY {preferred_order(last=True, alias="v")}""",
            [_ids(step_ids), judge],
        ):
            latest[step_id] = p_yes  # the preferred one comes last and wins
        return latest

    def step_annotations(self, step_ids: Sequence[int], *, annotator: str | None = None) -> list[tuple]:
        """(step_id, annotator, rating, first_error, confidence, category) for the steps, of one
        annotator or all of them."""
        where, params = ("WHERE n.name = ?", [annotator]) if annotator is not None else ("", [])
        return self.conn.execute(
            f"""SELECT a.step_id, n.name, a.rating, a.first_error, a.confidence, a.category
                FROM json_each(?) j CROSS JOIN annotations a ON a.step_id = j.value
                JOIN annotators n ON n.id = a.annotator_id {where}""",
            [_ids(step_ids), *params],
        ).fetchall()
