"""What Compare reads about human latents: each rating of a current step with its confidence,
dwell time, category and position."""

from __future__ import annotations

import numpy as np

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

    def label_latent_arrays(self, dataset: str | None = None) -> dict:
        """`label_latents` as arrays, from one query (unordered): annotator id, step id,
        trajectory id, idx, n_steps, rating, confidence (-1 not given), dwell_ms (NaN not given),
        category (a code into `categories`, -1 none); `names` maps annotator ids to names."""
        where, params = ("AND p.dataset = ?", [dataset]) if dataset else ("", [])
        join = "JOIN problems p ON p.id = t.problem_id" if dataset else ""
        rows = self.conn.execute(
            f"""SELECT a.annotator_id, s.id, s.trajectory_id, s.idx, n.steps, a.rating,
                       COALESCE(a.confidence, -1), a.dwell_ms, a.category
                FROM annotations a JOIN steps s ON s.id = a.step_id
                JOIN trajectories t ON t.id = s.trajectory_id AND t.current_segmentation_id = s.segmentation_id
                JOIN (SELECT segmentation_id, COUNT(*) AS steps FROM steps GROUP BY segmentation_id) n
                     ON n.segmentation_id = s.segmentation_id
                {join}
                WHERE a.rating IS NOT NULL {where}""",
            params,
        ).fetchall()
        count = len(rows)
        columns = list(zip(*rows)) if rows else [()] * 9
        categories = sorted({c for c in columns[8] if c is not None})
        code = {c: i for i, c in enumerate(categories)}
        ints = {name: np.fromiter(columns[i], dtype=np.int64, count=count)
                for i, name in enumerate(("annotator_id", "step_id", "trajectory_id", "idx", "n_steps", "rating",
                                          "confidence"))}  # fmt: skip
        return {
            **ints,
            "dwell_ms": np.fromiter((np.nan if d is None else d for d in columns[7]), dtype=float, count=count),
            "category": np.fromiter((-1 if c is None else code[c] for c in columns[8]), dtype=np.int64, count=count),
            "categories": tuple(categories),
            "names": dict(self.conn.execute("SELECT id, name FROM annotators").fetchall()),
        }
