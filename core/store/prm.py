"""Step scores of a step verifier (a PRM) read back per trajectory, for aggregation on read."""

from __future__ import annotations

import numpy as np

from core.store.compare import latest_per_key
from core.store.connection import ConnectionBase
from core.store.verdicts import preferred_order

# The newest verdict of the judge on each step of the trajectory's current segmentation: a step
# scored again (another job, another format) counts once, with its latest score (preferred_order:
# an in-sample score never hides a cross-fitted one).
_LATEST_STEP_SCORES = f"""
    SELECT t.id AS trajectory_id, s.id AS step_id, s.idx, v.p_yes, v.mass, v.judge, v.template,
           v.template_hash, v.job_id
    FROM trajectories t
    JOIN steps s ON s.segmentation_id = t.current_segmentation_id
    LEFT JOIN verdicts v ON v.id = (
        SELECT id FROM verdicts WHERE step_id = s.id AND judge = ? AND kind = 'step'
        ORDER BY {preferred_order(last=False)} LIMIT 1)
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
        """The judge's latest step verdict on each current step it scored (of the dataset's
        trajectories), ordered by trajectory and position: trajectory id, idx, score (NaN where
        the latest verdict has none), the trajectory's grade (1, 0; -1 ungraded) and its current
        step count (`n_steps`), so a caller tells a completely scored trajectory from one with
        unscored steps. From the judge's verdicts and the current steps, each read once per data
        version (core.store.compare)."""
        verdict_steps, values = self.step_verdict_arrays(judge)
        scored_steps, scores = latest_per_key(verdict_steps, values)
        current = self.current_step_arrays(dataset)
        keep = np.zeros(len(current["id"]), dtype=bool)
        at = np.zeros(0, dtype=np.int64)
        if len(scored_steps):
            at = np.minimum(np.searchsorted(scored_steps, current["id"]), len(scored_steps) - 1)
            keep = scored_steps[at] == current["id"]
        columns = {key: current[key][keep] for key in ("trajectory_id", "idx", "correct", "n_steps")}
        columns["score"] = scores[at[keep]] if len(scored_steps) else np.zeros(0)
        order = np.lexsort((columns["idx"], columns["trajectory_id"]))
        return {key: value[order] for key, value in columns.items()}
