"""What a step's Monte Carlo label can be read from, set-wise (issue 24): its own rollouts, and
what its neighbours' rollouts and its trajectory's graded outcome imply about it.

One query per call, whatever the number of steps: the steps' segmentations are walked with
window functions (a later step some rollout succeeded from, an earlier step every rollout failed
from, the last step), so the first-error search's implied labels (core.formats.labels) need no
query per trajectory and no Python loop over steps.
"""

from __future__ import annotations

import json
from typing import Sequence

import numpy as np

from core.store.connection import ConnectionBase

EVIDENCE_COLUMNS = ("n", "correct", "later_reached", "earlier_failed", "last", "outcome")


class LabelProvenanceQueries(ConnectionBase):
    def step_reach_evidence(self, step_ids: Sequence[int], *, model: str | None = None) -> dict[str, np.ndarray]:
        """Per step id given (same order; an unknown id reads as unsampled, not last, no outcome):
        `n` rollouts and the `correct` ones (of `model`'s, or every model's); `later_reached`: a
        later step of its segmentation has a rollout that reached the answer; `earlier_failed`: an
        earlier step was sampled and none of its rollouts did; `last`: it ends its segmentation;
        `outcome`: its trajectory's graded final answer (1.0, 0.0, NaN when not graded)."""
        empty = {name: np.zeros(len(step_ids), dtype=np.int64) for name in EVIDENCE_COLUMNS}
        empty["outcome"] = np.full(len(step_ids), np.nan)
        if not len(step_ids):
            return empty
        # model None pools every model's rollouts (`? IS NULL`), as the exports' counts do.
        # Every step of the wanted steps' segmentations is walked (a neighbour's rollouts are the
        # evidence); the wanted ones are picked out in numpy, since joining the windowed rows back
        # to the id list in SQL would scan them once per id.
        rows = self.conn.execute(
            """WITH segs AS (SELECT DISTINCT s.segmentation_id FROM json_each(?) j
                             CROSS JOIN steps s ON s.id = j.value),
               counted AS (
                   SELECT s.id, s.segmentation_id, s.trajectory_id, s.idx, COUNT(r.id) AS n,
                          COALESCE(SUM(r.correct), 0) AS c
                   FROM segs g CROSS JOIN steps s ON s.segmentation_id = g.segmentation_id
                   LEFT JOIN rollouts r ON r.step_id = s.id AND (? IS NULL OR r.model IS ?)
                   GROUP BY s.id),
               walked AS (
                   SELECT id, trajectory_id, n, c,
                          COALESCE(MAX(c > 0) OVER (PARTITION BY segmentation_id ORDER BY idx
                                   ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING), 0) AS later_reached,
                          COALESCE(MAX(n > 0 AND c = 0) OVER (PARTITION BY segmentation_id ORDER BY idx
                                   ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS earlier_failed,
                          idx = MAX(idx) OVER (PARTITION BY segmentation_id) AS last
                   FROM counted)
               SELECT k.id, k.n, k.c, k.later_reached, k.earlier_failed, k.last, t.correct
               FROM walked k JOIN trajectories t ON t.id = k.trajectory_id ORDER BY k.id""",
            [json.dumps([int(i) for i in step_ids]), model, model],
        ).fetchall()
        if not rows:
            return empty
        table = np.array(rows, dtype=float)  # an ungraded outcome (NULL) becomes NaN
        walked_ids = table[:, 0].astype(np.int64)  # sorted by the query
        wanted = np.asarray(step_ids, dtype=np.int64)
        at = np.minimum(np.searchsorted(walked_ids, wanted), len(walked_ids) - 1)
        found = walked_ids[at] == wanted
        for k, name in enumerate(EVIDENCE_COLUMNS[:-1], start=1):
            empty[name][found] = table[at[found], k].astype(np.int64)
        empty["outcome"][found] = table[at[found], -1]
        return empty
        table = np.array(rows, dtype=float)  # an ungraded outcome (NULL) becomes NaN
        at = table[:, 0].astype(np.int64)
        for k, name in enumerate(EVIDENCE_COLUMNS[:-1], start=1):
            empty[name][at] = table[:, k].astype(np.int64)
        empty["outcome"][at] = table[:, -1]
        return empty

    def trajectory_problem_ids(self, trajectory_ids: Sequence[int]) -> dict[int, int]:
        """Trajectory id -> its problem id, for the ids that exist (one query)."""
        return dict(self.conn.execute(
            "SELECT t.id, t.problem_id FROM json_each(?) j CROSS JOIN trajectories t ON t.id = j.value",
            [json.dumps([int(i) for i in trajectory_ids])],
        ).fetchall())  # fmt: skip

    def trajectory_outcomes(self, trajectory_ids: Sequence[int]) -> dict[int, bool | None]:
        """Trajectory id -> its graded final answer (None: not graded), for the ids that exist."""
        return {t: None if correct is None else bool(correct) for t, correct in self.conn.execute(
            "SELECT t.id, t.correct FROM json_each(?) j CROSS JOIN trajectories t ON t.id = j.value",
            [json.dumps([int(i) for i in trajectory_ids])],
        ).fetchall()}  # fmt: skip
