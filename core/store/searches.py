"""Searches (issue 25): one row per problem a search job searched, its journal, and every candidate
it considered, each a node of the rollout tree.

A search is written twice: its journal one event at a time while it runs (each engine or scorer
call's result, committed before the search goes on, so that a killed search resumes to the
identical tree), and everything else in one transaction when it ends: the candidates (each mapped
onto the node of its step path, created if new, so that MC rollouts, verdicts and people reading
that prefix read the same node), the final beams as graded trajectories (source "search"), the
rollouts its scorer or its simulations sampled (at their nodes, so they count in node values),
and the search's own row (answer, compute). Reads are one query each, never one per candidate.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

from core.steps import StepSpan
from core.store.connection import ConnectionBase
from core.store.keys import now
from core.store.nodes import ensure_path
from core.store.rows import _decode, _json
from core.store.verdicts import preferred_order
from core.store.verifier_identity import register_verifiers

SEARCH_SOURCE = "search"  # the source of the trajectories a search's final beams become
_SEARCH_JSON = ("config", "scorer_fingerprint", "compute")


class SearchQueries(ConnectionBase):
    """Mixed into Store with ProblemQueries (trajectories) and TreeQueries (rollouts at nodes)."""

    def start_search(self, *, job_id: int | None, problem_id: int, policy: str, strategy: str,
                     config: Mapping[str, Any], scorer: Mapping[str, Any]) -> dict:  # fmt: skip
        """The job's search of the problem, created if new (a resumed job finds its own). The
        scorer (its fingerprint's kind and name) is registered as a verifier in the same
        transaction, so one name never mixes two kinds of scores."""
        with self.transaction() as conn:
            register_verifiers(conn, [(scorer["name"], scorer["kind"], _json(scorer))])
            conn.execute(
                """INSERT INTO searches (job_id, problem_id, policy, strategy, config, scorer, scorer_kind,
                   scorer_fingerprint, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (job_id, problem_id) DO NOTHING""",
                [job_id, problem_id, policy, strategy, _json(config), scorer["name"], scorer["kind"], _json(scorer), now()],
            )  # fmt: skip
        return self._search_row("job_id IS ? AND problem_id = ?", [job_id, problem_id])[0]

    def _search_row(self, where: str, params: Sequence[Any]) -> list[dict]:
        rows = self._rows(f"SELECT * FROM searches WHERE {where} ORDER BY id", params)
        return [_decode(row, "correct", json_columns=_SEARCH_JSON) for row in rows]

    def get_search(self, search_id: int) -> dict | None:
        rows = self._search_row("id = ?", [search_id])
        return rows[0] if rows else None

    def job_searches(self, job_id: int) -> list[dict]:
        """The searches a job ran, in the order it started them."""
        return self._search_row("job_id = ?", [job_id])

    def problem_searches(self, problem_id: int) -> list[dict]:
        return self._search_row("problem_id = ?", [problem_id])

    # --- the journal ---------------------------------------------------------------------------

    def add_search_event(self, search_id: int, seq: int, event: Mapping[str, Any]) -> None:
        """One journal event (core.search.journal.event_to_dict), committed at once."""
        with self.transaction() as conn:
            conn.execute("INSERT INTO search_events (search_id, seq, event) VALUES (?, ?, ?)",
                         [search_id, seq, json.dumps(event, sort_keys=True)])  # fmt: skip

    def search_events(self, search_id: int) -> list[dict]:
        rows = self.conn.execute("SELECT event FROM search_events WHERE search_id = ? ORDER BY seq", [search_id])
        return [json.loads(row[0]) for row in rows.fetchall()]

    # --- the finished search -------------------------------------------------------------------

    def finish_search(self, search_id: int, *, candidates: Sequence[Mapping[str, Any]],
                      beams: Sequence[Mapping[str, Any]], rollouts: Sequence[Mapping[str, Any]], answer: str | None,
                      correct: bool, stopped: str, compute: Mapping[str, Any], policy_prompt: str,
                      delimiter: str) -> None:  # fmt: skip
        """Store a search's outcome in one transaction.

        `candidates`: SearchResult.candidate_rows() (parents first); `beams`: (node, solution,
        answer, correct, score) of each final beam; `rollouts`: (prefix, text, answer, correct,
        num_tokens, source) of each rollout sampled outside the tree."""
        search = self.get_search(search_id)
        problem_id, job_id, policy = search["problem_id"], search["job_id"], search["policy"]
        with self.transaction() as conn:
            node_of: dict[int, int] = {}
            for row in candidates:
                node_of[row["order"]] = ensure_path(conn, problem_id, row["steps"])[-1]
            steps_of = {row["order"]: row["steps"] for row in candidates}
            trajectory_of = {}
            for beam in beams:
                steps = steps_of[beam["node"]]
                if not steps:
                    continue  # the policy ended its solution at once: nothing to study
                trajectory_of[beam["node"]] = self.add_trajectory(
                    problem_id, beam["solution"], source=SEARCH_SOURCE, model=policy, policy_prompt=policy_prompt,
                    final_answer=beam["answer"], correct=beam["correct"],
                    **_segmentation(beam["solution"], steps, delimiter),
                    meta={"search": search_id, "candidate": beam["node"], "score": beam["score"], "job_id": job_id},
                )  # fmt: skip
            conn.executemany(
                """INSERT OR REPLACE INTO search_candidates (search_id, candidate, parent, node_id, depth, call, text,
                   num_tokens, finish_reason, finished, score, rank, mark, subtree, prior, visits, value_sum,
                   trajectory_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                [(search_id, c["order"], c["parent_order"], node_of[c["order"]], c["depth"], c["call"], c["text"],
                  c["num_tokens"], c["finish_reason"], int(c["finished"]), c["score"], c["rank"], c["mark"],
                  c["subtree"], c["prior"], c["visits"], c["value_sum"], trajectory_of.get(c["order"]))
                 for c in candidates],
            )  # fmt: skip
            by_prefix: dict[tuple[str, ...], list[dict]] = {}
            for rollout in rollouts:
                by_prefix.setdefault(tuple(rollout["prefix"]), []).append({
                    "text": rollout["text"], "answer": rollout["answer"], "correct": rollout["correct"],
                    "num_tokens": rollout["num_tokens"], "finish_reason": None, "job_id": job_id, "model": policy,
                })  # fmt: skip
            for prefix, rows in by_prefix.items():
                self.add_node_rollouts(ensure_path(conn, problem_id, list(prefix))[-1], rows)
            conn.execute(
                """UPDATE searches SET status = 'done', stopped = ?, answer = ?, correct = ?, compute = ?,
                   finished_at = ? WHERE id = ?""",
                [stopped, answer, int(bool(correct)), _json(compute), now(), search_id],
            )

    def job_search_summary(self, job_id: int) -> list[dict]:
        """Per search of the job, in order: its row's outcome and its candidates counted by mark
        (and how many became final-beam trajectories), in one grouped query."""
        rows = self._rows(
            """SELECT s.id, s.problem_id, s.status, s.answer, s.correct, s.stopped, COUNT(c.candidate) AS candidates,
                      COALESCE(SUM(c.mark = 'chosen'), 0) AS chosen, COALESCE(SUM(c.mark = 'pruned'), 0) AS pruned,
                      COALESCE(SUM(c.mark = 'pending'), 0) AS pending, COUNT(c.trajectory_id) AS beams
               FROM searches s LEFT JOIN search_candidates c ON c.search_id = s.id
               WHERE s.job_id = ? GROUP BY s.id ORDER BY s.id""",
            [job_id],
        )
        return [_decode(row, "correct", json_columns=()) for row in rows]

    def search_candidates(self, search_id: int) -> list[dict]:
        """Every candidate of a search in generation order, with its node's id."""
        rows = self._rows("SELECT * FROM search_candidates WHERE search_id = ? ORDER BY candidate", [search_id])
        return [_decode(row, "finished", json_columns=()) for row in rows]

    # --- reads for the app's search view (core/views/search.py) ---------------------------------

    def search_beams(self, search_id: int) -> list[dict]:
        """The final beams a finished search stored as trajectories: candidate, trajectory_id,
        final_answer, correct, and the guiding score it ended with."""
        rows = self._rows(
            """SELECT c.candidate, t.id AS trajectory_id, t.final_answer, t.correct,
                      json_extract(t.meta, '$.score') AS score
               FROM search_candidates c JOIN trajectories t ON t.id = c.trajectory_id
               WHERE c.search_id = ? ORDER BY c.candidate""",
            [search_id],
        )
        return [_decode(row, "correct", json_columns=()) for row in rows]

    def node_search_scores(self, node_id: int) -> list[dict]:
        """Every search's guiding score at a node of the rollout tree (a candidate that reads the
        same prefix): search_id, strategy, scorer, scorer_kind, score, rank, mark."""
        return self._rows(
            """SELECT s.id AS search_id, s.strategy, s.scorer, s.scorer_kind, c.score, c.rank, c.mark
               FROM search_candidates c JOIN searches s ON s.id = c.search_id
               WHERE c.node_id = ? ORDER BY s.id, c.candidate""",
            [node_id],
        )

    def node_step_verdicts(self, node_id: int) -> list[dict]:
        """Each verifier's preferred step verdict (core.store.verdicts.preferred_order) on the
        current steps that end at a node: judge, verifier_kind, p_yes, trajectory_id, idx."""
        return self._rows(
            f"""SELECT judge, verifier_kind, p_yes, trajectory_id, idx FROM (
                    SELECT v.judge, w.kind AS verifier_kind, v.p_yes, s.trajectory_id, s.idx,
                           ROW_NUMBER() OVER (PARTITION BY v.judge
                                              ORDER BY {preferred_order(last=False, alias='v')}) AS rank
                    FROM steps s JOIN trajectories t
                         ON t.id = s.trajectory_id AND t.current_segmentation_id = s.segmentation_id
                    JOIN verdicts v ON v.step_id = s.id AND v.kind = 'step'
                    LEFT JOIN verifiers w ON w.name = v.judge
                    WHERE s.node_id = ?)
                WHERE rank = 1 ORDER BY judge""",
            [node_id],
        )


def _segmentation(solution: str, steps: Sequence[str], delimiter: str) -> dict:
    """How a final beam's solution is cut into the search's own steps: by lines when they were
    lines, else at the spans where its steps stand (so its steps reach the candidates' nodes)."""
    if delimiter == "\n":
        return {"rule": "line"}
    spans, cursor = [], 0
    for step in steps:
        start = solution.index(step, cursor)
        spans.append(StepSpan(step, start, start + len(step)))
        cursor = start + len(step)
    return {"rule": "pre-split", "spans": spans}
