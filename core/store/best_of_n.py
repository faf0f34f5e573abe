"""What the Best-of-N page reads: a policy's own graded solutions by problem, and the outcome
verdicts on them."""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

from core.store.connection import ConnectionBase
from core.store.rows import _chunks


class BestOfNQueries(ConnectionBase):
    def graded_policy_models(self, dataset: str | None = None) -> list[str]:
        """Policies with graded solutions of their own (source "policy")."""
        where, params = ("AND p.dataset = ?", [dataset]) if dataset else ("", [])
        found = self._rows(
            f"""SELECT DISTINCT t.model FROM trajectories t JOIN problems p ON p.id = t.problem_id
                WHERE t.source = 'policy' AND t.model IS NOT NULL AND t.correct IS NOT NULL {where} ORDER BY t.model""",
            params,
        )
        return [row["model"] for row in found]

    def graded_policy_solutions(self, model: str, dataset: str | None = None) -> list[dict]:
        """The policy's graded solutions by id: id, problem_id, final_answer, correct."""
        where, params = ("AND p.dataset = ?", [dataset]) if dataset else ("", [])
        return self._rows(
            f"""SELECT t.id, t.problem_id, t.final_answer, t.correct FROM trajectories t
                JOIN problems p ON p.id = t.problem_id
                WHERE t.source = 'policy' AND t.model = ? AND t.correct IS NOT NULL {where} ORDER BY t.id""",
            [model, *params],
        )

    def latest_outcome_p_yes(self, trajectory_ids: Sequence[int]) -> dict[int, dict[str, float]]:
        """For each trajectory with outcome verdicts: judge -> P(yes) of its latest one."""
        scores: dict[int, dict[str, float]] = defaultdict(dict)
        for chunk in _chunks(list(trajectory_ids)):
            marks = ", ".join("?" for _ in chunk)
            for row in self._rows(
                f"""SELECT trajectory_id, judge, p_yes FROM verdicts WHERE kind = 'outcome' AND p_yes IS NOT NULL
                    AND trajectory_id IN ({marks}) ORDER BY id""",
                chunk,
            ):
                scores[row["trajectory_id"]][row["judge"]] = row["p_yes"]  # the latest verdict wins
        return dict(scores)

    def solutions_fingerprint(self) -> tuple:
        """Changes whenever trajectories or verdicts are added: a cache key."""
        row = self.conn.execute(
            "SELECT (SELECT MAX(id) FROM trajectories), (SELECT COUNT(*) FROM trajectories), (SELECT MAX(id) FROM verdicts)"
        ).fetchone()
        return tuple(row)
