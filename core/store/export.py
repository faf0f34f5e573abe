"""What the labelled exports read, a page of trajectories at a time (issue 22).

An export of 100K trajectories asks one query per table per page of trajectories (keyset paging
by id, never OFFSET), never one per trajectory; each query takes the page's ids as one JSON array
(`json_each`), joined first (CROSS JOIN) so SQLite walks the step index, not a verifier's or an
annotator's every row.
"""

from __future__ import annotations

import json
from typing import Sequence

from core.store.connection import ConnectionBase
from core.store.rows import _as_bool
from core.store.verdicts import preferred_order


def _ids(ids: Sequence[int]) -> str:
    return json.dumps(list(ids))


class ExportQueries(ConnectionBase):
    """Pages of trajectories with their current steps, and the steps' labels set-wise."""

    def trajectory_page(self, after_id: int, limit: int, *, dataset: str | None = None) -> list[dict]:
        """Up to `limit` trajectories with id > after_id, by id: id, key, problem_id, source, model,
        correct, the problem's dataset, question and gold, and the current segmentation_id."""
        where, params = ("AND p.dataset = ?", [dataset]) if dataset is not None else ("", [])
        rows = self._rows(
            f"""SELECT t.id, t.key, t.problem_id, t.source, t.model, t.correct, p.dataset, p.question, p.gold,
                       t.current_segmentation_id AS segmentation_id
                FROM trajectories t JOIN problems p ON p.id = t.problem_id
                WHERE t.id > ? {where} ORDER BY t.id LIMIT ?""",
            [after_id, *params, limit],
        )
        for row in rows:
            row["correct"] = _as_bool(row["correct"])
        return rows

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

    def step_rollout_counts(self, step_ids: Sequence[int]) -> dict[int, tuple[int, int]]:
        """Step id -> (rollouts, correct ones), every policy model together; absent: none sampled."""
        rows = self.conn.execute(
            """SELECT r.step_id, COUNT(*), SUM(r.correct) FROM json_each(?) j
               CROSS JOIN rollouts r ON r.step_id = j.value GROUP BY r.step_id""",
            [_ids(step_ids)],
        ).fetchall()
        return {step_id: (int(n), int(n_correct)) for step_id, n, n_correct in rows}

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

    def annotator_has_latents(self, annotator: str) -> bool:
        """Whether any of the annotator's labels has a confidence or an error category."""
        return self._scalar(
            """SELECT EXISTS (SELECT 1 FROM annotations a JOIN annotators n ON n.id = a.annotator_id
               WHERE n.name = ? AND (a.confidence IS NOT NULL OR a.category IS NOT NULL))""",
            [annotator],
        ) == 1
