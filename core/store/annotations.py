"""Annotators and their labels on steps."""

from __future__ import annotations

from typing import Any, Mapping

from core.errors import StepScopeError
from core.store.connection import ConnectionBase
from core.store.keys import now
from core.store.rows import _decode

RATINGS = (-1, 0, 1)
# "Not passed" for save_annotation, where None means "clear the field".
_UNSET: Any = object()


class AnnotationQueries(ConnectionBase):
    """Annotators, and their labels: saved one click at a time, or imported."""

    def annotator_id(self, name: str) -> int:
        """The id of annotator `name`, created if new."""
        if not isinstance(name, str) or not name.strip():
            raise StepScopeError("an annotator needs a non-empty name")
        with self.transaction():
            annotator_id, _ = self._insert_or_get(
                "annotators", {"name": name, "created_at": now()}, ["name"]
            )
        return annotator_id

    def annotators(self) -> list[dict]:
        return self._rows(
            """SELECT n.id, n.name, n.created_at, COUNT(a.id) AS annotations
               FROM annotators n LEFT JOIN annotations a ON a.annotator_id = n.id
               GROUP BY n.id ORDER BY n.name"""
        )

    def save_annotation(
        self,
        annotator: str,
        step_id: int,
        *,
        rating: int | None = _UNSET,
        first_error: bool = _UNSET,
        flagged: bool = _UNSET,
        note: str | None = _UNSET,
    ) -> dict:
        """Create or update one annotator's label on one step; committed when this returns.

        Only the fields passed change (a click on a rating keeps the note). Marking a step as
        the first error clears that annotator's first-error mark on the other steps of the
        same segmentation: a solution has one earliest error.
        """
        changes = {
            name: value
            for name, value in (
                ("rating", rating), ("first_error", first_error), ("flagged", flagged),
                ("note", note),
            )
            if value is not _UNSET
        }
        self._check_annotation(changes)
        stamp = now()
        values = {"rating": None, "first_error": False, "flagged": False, "note": None, **changes}
        update = ", ".join(f"{column} = excluded.{column}" for column in [*changes, "updated_at"])
        with self.transaction() as conn:
            annotator_id = self.annotator_id(annotator)
            self._require_step(step_id)
            conn.execute(
                f"""INSERT INTO annotations (annotator_id, step_id, rating, first_error,
                    flagged, note, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                    ON CONFLICT (annotator_id, step_id) DO UPDATE SET {update}""",
                [annotator_id, step_id, values["rating"], int(values["first_error"]),
                 int(values["flagged"]), values["note"], stamp, stamp],
            )
            if changes.get("first_error"):
                self._clear_other_first_errors(annotator_id, step_id, stamp)
        return self.annotation(annotator, step_id)

    def _clear_other_first_errors(self, annotator_id: int, step_id: int, stamp: str) -> None:
        self.conn.execute(
            """UPDATE annotations SET first_error = 0, updated_at = ?
               WHERE annotator_id = ? AND first_error = 1 AND step_id != ?
                 AND step_id IN (SELECT id FROM steps WHERE segmentation_id =
                                 (SELECT segmentation_id FROM steps WHERE id = ?))""",
            [stamp, annotator_id, step_id, step_id],
        )

    def add_annotation(
        self,
        annotator: str,
        step_id: int,
        *,
        rating: int | None = None,
        first_error: bool = False,
        flagged: bool = False,
        note: str | None = None,
        created_at: str | None = None,
        updated_at: str | None = None,
    ) -> bool:
        """Insert an imported annotation unless this annotator already labelled the step.

        Imports never overwrite: re-importing a file must not clobber labels made in the app.
        Returns whether a row was added.
        """
        self._check_annotation(
            {"rating": rating, "first_error": first_error, "flagged": flagged, "note": note}
        )
        created_at = created_at or now()
        with self.transaction() as conn:
            annotator_id = self.annotator_id(annotator)
            self._require_step(step_id)
            cursor = conn.execute(
                """INSERT INTO annotations (annotator_id, step_id, rating, first_error,
                   flagged, note, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT DO NOTHING""",
                [annotator_id, step_id, rating, int(first_error), int(flagged), note,
                 created_at, updated_at or created_at],
            )
        return cursor.rowcount == 1

    @staticmethod
    def _check_annotation(fields: Mapping[str, Any]) -> None:
        rating = fields.get("rating")
        if rating is not None and (isinstance(rating, bool) or rating not in RATINGS):
            raise StepScopeError(f"a rating is -1, 0, +1 or empty, not {rating!r}")
        for flag in ("first_error", "flagged"):
            if flag in fields and not isinstance(fields[flag], bool):
                raise StepScopeError(f"{flag} must be true or false, not {fields[flag]!r}")
        note = fields.get("note")
        if note is not None and not isinstance(note, str):
            raise StepScopeError(f"a note must be text, not {type(note).__name__}")

    def _require_step(self, step_id: int) -> None:
        if self._scalar("SELECT 1 FROM steps WHERE id = ?", [step_id]) is None:
            raise StepScopeError(f"step {step_id} does not exist")

    def annotation(self, annotator: str, step_id: int) -> dict | None:
        row = self._one(
            """SELECT a.*, n.name AS annotator FROM annotations a
               JOIN annotators n ON n.id = a.annotator_id
               WHERE n.name = ? AND a.step_id = ?""",
            [annotator, step_id],
        )
        return _decode(row, "first_error", "flagged", json_columns=()) if row else None

    def annotations(
        self,
        trajectory_id: int,
        *,
        annotator: str | None = None,
        segmentation_id: int | None = None,
    ) -> list[dict]:
        """Annotations on a trajectory's steps (every segmentation unless one is named)."""
        clauses, params = ["s.trajectory_id = ?"], [trajectory_id]
        if annotator is not None:
            clauses.append("n.name = ?")
            params.append(annotator)
        if segmentation_id is not None:
            clauses.append("s.segmentation_id = ?")
            params.append(segmentation_id)
        rows = self._rows(
            f"""SELECT a.id, a.step_id, s.segmentation_id, s.idx, n.name AS annotator,
                       a.rating, a.first_error, a.flagged, a.note, a.created_at, a.updated_at
                FROM annotations a
                JOIN steps s ON s.id = a.step_id
                JOIN annotators n ON n.id = a.annotator_id
                WHERE {' AND '.join(clauses)}
                ORDER BY s.segmentation_id, s.idx, n.name""",
            params,
        )
        return [_decode(row, "first_error", "flagged", json_columns=()) for row in rows]
