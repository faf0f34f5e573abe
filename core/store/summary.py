"""What a database holds, for `stepscope db info`: row counts and a breakdown by dataset,
source and model (GROUP BY queries, never a query per trajectory)."""

from __future__ import annotations

from typing import Any

from core.store.connection import ConnectionBase


class SummaryQueries(ConnectionBase):
    """Mixed into Store with AnnotationQueries: counts lists annotators."""

    def counts(self) -> dict[str, Any]:
        """Row counts for `db info`, plus annotations per annotator name."""
        tables = ("problems", "trajectories", "segmentations", "steps", "rollouts", "verdicts",
                  "annotations", "annotators", "jobs")
        counts: dict[str, Any] = {
            table: int(self._scalar(f"SELECT COUNT(*) FROM {table}")) for table in tables
        }
        counts["annotations_by_annotator"] = {
            row["name"]: row["annotations"] for row in self.annotators()
        }
        return counts

    def breakdown(self) -> list[dict[str, Any]]:
        """Per (dataset, source, model): trajectories, steps and labelled steps (of each
        trajectory's current segmentation; labelled: some annotator rated it or marked it as the
        first error), rollouts (from any of its steps) and verdicts. One query: each table is
        counted once, grouped by trajectory, then summed per group."""
        return self._rows(
            """WITH t AS (
                   SELECT t.id, p.dataset, t.source, t.model, t.current_segmentation_id AS seg
                   FROM trajectories t JOIN problems p ON p.id = t.problem_id),
               st AS (SELECT segmentation_id AS seg, COUNT(*) AS n FROM steps GROUP BY segmentation_id),
               lab AS (SELECT s.segmentation_id AS seg, COUNT(DISTINCT a.step_id) AS n
                       FROM annotations a JOIN steps s ON s.id = a.step_id
                       WHERE a.rating IS NOT NULL OR a.first_error = 1
                       GROUP BY s.segmentation_id),
               ro AS (SELECT s.trajectory_id AS tid, COUNT(*) AS n
                      FROM rollouts r JOIN steps s ON s.id = r.step_id GROUP BY s.trajectory_id),
               ve AS (SELECT trajectory_id AS tid, COUNT(*) AS n FROM verdicts GROUP BY trajectory_id)
               SELECT t.dataset, t.source, t.model, COUNT(*) AS trajectories,
                      COALESCE(SUM(st.n), 0) AS steps, COALESCE(SUM(lab.n), 0) AS labelled_steps,
                      COALESCE(SUM(ro.n), 0) AS rollouts, COALESCE(SUM(ve.n), 0) AS verdicts
               FROM t
               LEFT JOIN st ON st.seg = t.seg
               LEFT JOIN lab ON lab.seg = t.seg
               LEFT JOIN ro ON ro.tid = t.id
               LEFT JOIN ve ON ve.tid = t.id
               GROUP BY t.dataset, t.source, t.model
               ORDER BY t.dataset, t.source, t.model IS NULL, t.model"""
        )
