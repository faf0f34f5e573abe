"""What a database holds, for `stepscope db info`."""

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
