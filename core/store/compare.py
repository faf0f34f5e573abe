"""What the Compare page reads: the human ratings of current steps, and each automatic source's
number for those steps (rollout counts per policy, the latest step verdict per judge)."""

from __future__ import annotations

from typing import Sequence

from core.store.connection import ConnectionBase
from core.store.rows import _chunks


class CompareQueries(ConnectionBase):
    def step_ratings(self, dataset: str | None = None) -> list[tuple[int, int, int, str, int, int]]:
        """(step id, trajectory id, idx, annotator, rating, first error) for every rating of a
        step of a current segmentation, by trajectory and step."""
        where, params = ("AND p.dataset = ?", [dataset]) if dataset else ("", [])
        cursor = self.conn.execute(
            f"""SELECT s.id, s.trajectory_id, s.idx, n.name, a.rating, a.first_error
                FROM annotations a JOIN annotators n ON n.id = a.annotator_id
                JOIN steps s ON s.id = a.step_id
                JOIN trajectories t ON t.id = s.trajectory_id AND t.current_segmentation_id = s.segmentation_id
                JOIN problems p ON p.id = t.problem_id
                WHERE a.rating IS NOT NULL {where}
                ORDER BY s.trajectory_id, s.idx""",
            params,
        )
        return cursor.fetchall()

    def labels_fingerprint(self) -> tuple:
        """Changes whenever a label, rollout or verdict is added or changed: a cache key."""
        return tuple(self.conn.execute(
            """SELECT (SELECT COUNT(*) FROM annotations), (SELECT MAX(updated_at) FROM annotations),
                      (SELECT MAX(id) FROM rollouts), (SELECT MAX(id) FROM verdicts),
                      (SELECT MAX(id) FROM trajectories)"""
        ).fetchone())

    def step_judges(self) -> list[str]:
        """Verifiers (of any kind) with step verdicts that carry a P(yes): one indexed probe per
        verifier, not a scan of the verdicts."""
        rows = self.conn.execute(
            """SELECT name FROM verifiers WHERE EXISTS (
                   SELECT 1 FROM verdicts WHERE judge = verifiers.name AND kind = 'step' AND p_yes IS NOT NULL)
               ORDER BY name""")
        return [row[0] for row in rows]

    def rated_step_rollout_counts(self, policy: str | None) -> dict[int, tuple[int, int]]:
        """(n, n_correct) of the policy's rollouts for every rated step that has some.

        One pass over the rollouts of every rated step (what step_value_counts does in chunks of
        500 ids, here in a single indexed query).
        """
        cursor = self.conn.execute(
            """SELECT step_id, COUNT(*), SUM(correct) FROM rollouts
               WHERE model IS ? AND step_id IN (SELECT DISTINCT step_id FROM annotations WHERE rating IS NOT NULL)
               GROUP BY step_id""",
            [policy],
        )
        return {step_id: (n, n_correct) for step_id, n, n_correct in cursor}

    def latest_step_p_yes(self, judge: str, step_ids: Sequence[int]) -> dict[int, float]:
        """The judge's latest step verdict with a P(yes), for each of the steps that has one."""
        found: dict[int, float] = {}
        for chunk in _chunks(list(step_ids)):
            marks = ", ".join("?" for _ in chunk)
            for row in self._rows(
                f"""SELECT step_id, p_yes FROM verdicts WHERE kind = 'step' AND judge = ? AND p_yes IS NOT NULL
                    AND step_id IN ({marks}) ORDER BY id""",
                [judge, *chunk],
            ):
                found[row["step_id"]] = row["p_yes"]  # the latest verdict wins
        return found
