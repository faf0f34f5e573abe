"""Quality control of a labelling project: gold items and the project's settings.

A gold item is a trajectory with expected step ratings. Annotators label it like any other;
their accuracy on it is for the organiser (Compare), never shown during a session. Settings
are small JSON values kept in the database file, so a labelling project (say, its error
taxonomy) travels with its data.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from core.errors import StepScopeError
from core.store.annotations import RATINGS
from core.store.connection import ConnectionBase
from core.store.keys import now


class QualityQueries(ConnectionBase):
    def set_gold(self, trajectory_id: int, ratings: Mapping[int, int]) -> int:
        """Make the trajectory a gold item: expected ratings by step id (steps of one trajectory).
        Replaces any earlier expected ratings; returns how many steps are gold."""
        if not ratings:
            raise StepScopeError("a gold item needs at least one expected step rating")
        for step_id, rating in ratings.items():
            if isinstance(rating, bool) or rating not in RATINGS:
                raise StepScopeError(f"an expected rating is -1, 0 or +1, not {rating!r}")
        stamp = now()
        with self.transaction() as conn:
            owners = {row[0] for row in conn.execute(
                f"SELECT DISTINCT trajectory_id FROM steps WHERE id IN ({', '.join('?' for _ in ratings)})",
                list(ratings))}  # fmt: skip
            if owners != {trajectory_id}:
                raise StepScopeError(f"the expected ratings must name steps of trajectory {trajectory_id}")
            conn.execute("DELETE FROM gold_labels WHERE trajectory_id = ?", [trajectory_id])
            conn.executemany(
                "INSERT INTO gold_labels (step_id, trajectory_id, rating, created_at) VALUES (?, ?, ?, ?)",
                [(step_id, trajectory_id, rating, stamp) for step_id, rating in ratings.items()],
            )
        return len(ratings)

    def clear_gold(self, trajectory_id: int) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM gold_labels WHERE trajectory_id = ?", [trajectory_id])

    def gold_labels(self, trajectory_id: int | None = None) -> dict[int, int]:
        """Expected rating by step id (of one gold trajectory, or of all)."""
        where, params = ("WHERE trajectory_id = ?", [trajectory_id]) if trajectory_id is not None else ("", [])
        return {row[0]: row[1] for row in self.conn.execute(f"SELECT step_id, rating FROM gold_labels {where}", params)}

    def gold_trajectory_ids(self) -> list[int]:
        return [row[0] for row in self.conn.execute("SELECT DISTINCT trajectory_id FROM gold_labels ORDER BY 1")]

    def gold_answers(self) -> list[dict]:
        """Every annotator's rating on every gold step they rated, beside the expected one."""
        return self._rows(
            """SELECT n.name AS annotator, g.trajectory_id, g.step_id, s.idx, g.rating AS expected,
                      a.rating AS given
               FROM gold_labels g JOIN steps s ON s.id = g.step_id
               JOIN annotations a ON a.step_id = g.step_id AND a.rating IS NOT NULL
               JOIN annotators n ON n.id = a.annotator_id
               ORDER BY n.name, g.trajectory_id, s.idx"""
        )

    def setting(self, name: str, default: Any = None) -> Any:
        value = self._scalar("SELECT value FROM settings WHERE name = ?", [name])
        return default if value is None else json.loads(value)

    def set_setting(self, name: str, value: Any) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO settings (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                [name, json.dumps(value)],
            )
