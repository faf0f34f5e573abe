"""Step scores of a step verifier (a PRM) read back per trajectory, for aggregation on read."""

from __future__ import annotations

import numpy as np

from core.store.connection import ConnectionBase

# The newest verdict of the judge on each step of the trajectory's current segmentation: a step
# scored again (another job, another format) counts once, with its latest score.
_LATEST_STEP_SCORES = """
    SELECT t.id AS trajectory_id, s.id AS step_id, s.idx, v.p_yes, v.mass, v.judge, v.template,
           v.template_hash, v.job_id
    FROM trajectories t
    JOIN steps s ON s.segmentation_id = t.current_segmentation_id
    LEFT JOIN verdicts v ON v.id = (
        SELECT MAX(id) FROM verdicts WHERE step_id = s.id AND judge = ? AND kind = 'step')
"""


class PrmQueries(ConnectionBase):
    """Step verdicts of one judge, per step and per trajectory."""

    def prm_step_scores(self, trajectory_id: int, judge: str | None = None) -> dict[str, list[dict]]:
        """Per judge name (`judge`, or each judge with step verdicts on the trajectory): one row per
        current step in order (step_id, idx, p_yes, mass, template, template_hash, job_id; p_yes
        None where it has not scored the step)."""
        judges = [judge] if judge is not None else [row["judge"] for row in self._rows(
            "SELECT DISTINCT judge FROM verdicts WHERE trajectory_id = ? AND kind = 'step' ORDER BY judge",
            [trajectory_id])]  # fmt: skip
        return {
            name: self._rows(_LATEST_STEP_SCORES + " WHERE t.id = ? ORDER BY s.idx", [name, trajectory_id])
            for name in judges
        }

    def step_scores_by_trajectory(self, judge: str, *, dataset: str | None = None) -> dict[int, list[float | None]]:
        """Trajectory id -> the judge's latest score on each current step, in step order (None where
        unscored), for every trajectory it scored at least one step of."""
        where, params = "", [judge, judge]
        if dataset is not None:
            where, params = " AND p.dataset = ?", [*params, dataset]
        rows = self._rows(
            _LATEST_STEP_SCORES
            + " JOIN problems p ON p.id = t.problem_id"
            + " WHERE t.id IN (SELECT DISTINCT trajectory_id FROM verdicts WHERE judge = ? AND kind = 'step')"
            + where + " ORDER BY t.id, s.idx",
            params,
        )
        scores: dict[int, list[float | None]] = {}
        for row in rows:
            scores.setdefault(row["trajectory_id"], []).append(row["p_yes"])
        return scores

    def step_score_arrays(self, judge: str, *, dataset: str | None = None) -> dict[str, np.ndarray]:
        """`step_scores_by_trajectory` as arrays, in one query: for every current step of each
        trajectory the judge scored a step of, ordered by trajectory and position: trajectory id,
        idx, the latest score (NaN where unscored or its latest verdict has none) and the
        trajectory's grade (1, 0; -1 ungraded)."""
        where, params = "", [judge, judge]
        if dataset is not None:
            where, params = " AND p.dataset = ?", [*params, dataset]
        rows = self.conn.execute(
            f"""SELECT t.id, s.idx, v.p_yes, COALESCE(t.correct, -1)
                FROM trajectories t JOIN problems p ON p.id = t.problem_id
                JOIN steps s ON s.segmentation_id = t.current_segmentation_id
                LEFT JOIN (SELECT step_id, MAX(id) AS id FROM verdicts WHERE judge = ? AND kind = 'step'
                           GROUP BY step_id) m ON m.step_id = s.id
                LEFT JOIN verdicts v ON v.id = m.id
                WHERE t.id IN (SELECT DISTINCT trajectory_id FROM verdicts WHERE judge = ? AND kind = 'step'){where}
                ORDER BY t.id, s.idx""",
            params,
        ).fetchall()
        count = len(rows)
        return {
            "trajectory_id": np.fromiter((r[0] for r in rows), dtype=np.int64, count=count),
            "idx": np.fromiter((r[1] for r in rows), dtype=np.int64, count=count),
            "score": np.fromiter((np.nan if r[2] is None else r[2] for r in rows), dtype=float, count=count),
            "correct": np.fromiter((r[3] for r in rows), dtype=np.int64, count=count),
        }
