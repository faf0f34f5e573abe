"""What Compare reads about human latents: each rating of a current step with its confidence,
dwell time, category and position."""

from __future__ import annotations

from core.store.connection import ConnectionBase


class LatentQueries(ConnectionBase):
    def label_latents(self, dataset: str | None = None) -> list[dict]:
        """One row per rating of a step of a current segmentation: annotator, step, position
        (idx and the trajectory's step count), rating, confidence, dwell_ms, category, rating_order."""
        where, params = ("AND p.dataset = ?", [dataset]) if dataset else ("", [])
        return self._rows(
            f"""SELECT n.name AS annotator, s.id AS step_id, s.trajectory_id, s.idx,
                       (SELECT COUNT(*) FROM steps x WHERE x.segmentation_id = s.segmentation_id) AS n_steps,
                       a.rating, a.confidence, a.dwell_ms, a.category, a.rating_order
                FROM annotations a JOIN annotators n ON n.id = a.annotator_id
                JOIN steps s ON s.id = a.step_id
                JOIN trajectories t ON t.id = s.trajectory_id AND t.current_segmentation_id = s.segmentation_id
                JOIN problems p ON p.id = t.problem_id
                WHERE a.rating IS NOT NULL {where}
                ORDER BY n.name, s.trajectory_id, s.idx""",
            params,
        )

