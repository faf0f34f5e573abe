"""What the Annotate page reads: trajectories for an annotator's queue, and how many of each
trajectory's current steps the annotator has rated."""

from __future__ import annotations

from typing import Any, Sequence

from core.store.connection import ConnectionBase
from core.store.rows import _chunks


def _dataset_clause(dataset: str | None) -> tuple[str, list[Any]]:
    return ("WHERE p.dataset = ?", [dataset]) if dataset is not None else ("", [])


class AnnotateQueries(ConnectionBase):
    def unlabelled_first(self, annotator: str, dataset: str | None, limit: int) -> list[int]:
        """Trajectory ids, those the annotator has not labelled first, then by id."""
        where, params = _dataset_clause(dataset)
        found = self._rows(
            f"""SELECT t.id, EXISTS (
                    SELECT 1 FROM steps s JOIN annotations a ON a.step_id = s.id
                    JOIN annotators n ON n.id = a.annotator_id
                    WHERE s.trajectory_id = t.id AND n.name = ?) AS mine
                FROM trajectories t JOIN problems p ON p.id = t.problem_id {where}
                ORDER BY mine, t.id LIMIT ?""",
            [annotator, *params, limit],
        )
        return [row["id"] for row in found]

    def trajectory_ids(self, dataset: str | None = None) -> list[int]:
        where, params = _dataset_clause(dataset)
        found = self._rows(f"SELECT t.id FROM trajectories t JOIN problems p ON p.id = t.problem_id {where} ORDER BY t.id", params)
        return [row["id"] for row in found]

    def existing_trajectory_ids(self, ids: Sequence[int]) -> set[int]:
        """Those of `ids` that are trajectories."""
        existing: set[int] = set()
        for chunk in _chunks(list(ids)):
            marks = ", ".join("?" for _ in chunk)
            existing.update(r[0] for r in self.conn.execute(f"SELECT id FROM trajectories WHERE id IN ({marks})", chunk))
        return existing

    def rated_current_steps(self, annotator: str, trajectory_ids: Sequence[int]) -> dict[int, tuple[int, int]]:
        """For each trajectory: (steps in its current segmentation, of them rated by the annotator)."""
        result: dict[int, tuple[int, int]] = {}
        for chunk in _chunks(list(trajectory_ids)):
            marks = ", ".join("?" for _ in chunk)
            for row in self._rows(
                f"""SELECT s.trajectory_id AS id, COUNT(*) AS steps, COUNT(a.rating) AS rated
                    FROM steps s JOIN trajectories t ON t.id = s.trajectory_id
                         AND s.segmentation_id = t.current_segmentation_id
                    LEFT JOIN annotations a ON a.step_id = s.id
                         AND a.annotator_id = (SELECT id FROM annotators WHERE name = ?)
                    WHERE s.trajectory_id IN ({marks}) GROUP BY s.trajectory_id""",
                [annotator, *chunk],
            ):
                result[row["id"]] = (row["steps"], row["rated"])
        return result
