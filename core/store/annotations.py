"""Annotators and their labels on steps."""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

from core.errors import StepScopeError
from core.store.connection import ConnectionBase
from core.store.keys import now
from core.store.rows import _chunks, _decode

RATINGS = (-1, 0, 1)
# The label-source grammar (core.formats.labels) reads these as all annotators combined, so no
# single annotator may take them as a name.
RESERVED_ANNOTATOR_NAMES = ("consensus", "majority")
CONFIDENCES = (1, 2, 3, 4, 5)
# "Not passed" for save_annotation, where None means "clear the field".
_UNSET: Any = object()


class AnnotationQueries(ConnectionBase):
    """Annotators, and their labels: saved one click at a time, or imported."""

    def annotator_id(self, name: str) -> int:
        """The id of annotator `name`, created if new."""
        if not isinstance(name, str) or not name.strip():
            raise StepScopeError("an annotator needs a non-empty name")
        if name in RESERVED_ANNOTATOR_NAMES:
            raise StepScopeError(f"{name!r} names a combination of annotators' labels: choose another annotator name")
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
        confidence: int | None = _UNSET,
        rationale: str | None = _UNSET,
        category: str | None = _UNSET,
        dwell_ms: int | None = None,
        trajectory_dwell_ms: int | None = None,
    ) -> dict:
        """Create or update one annotator's label on one step; committed when this returns.

        Only the fields passed change (a click on a rating keeps the note). Every field that
        changes gets a `label_history` row (old -> new), so an edit never overwrites silently.
        Marking a step as the first error clears that annotator's first-error mark on the other
        steps of the same segmentation (a solution has one earliest error), in the history too.
        A step's first rating also records its dwell time (`dwell_ms`, measured by the caller)
        and its place in the order the annotator rated the trajectory's steps (`rating_order`);
        `trajectory_dwell_ms` raises the trajectory's total if larger. A rating other than -1
        clears the error category, which only describes a wrong step.
        """
        changes = {
            name: value
            for name, value in (
                ("rating", rating), ("first_error", first_error), ("flagged", flagged),
                ("note", note), ("confidence", confidence), ("rationale", rationale),
                ("category", category),
            )
            if value is not _UNSET
        }
        self._check_annotation(changes)
        _check_duration(dwell_ms, "dwell_ms")
        _check_duration(trajectory_dwell_ms, "trajectory_dwell_ms")
        stamp = now()
        with self.transaction() as conn:
            annotator_id = self.annotator_id(annotator)
            trajectory_id = self._require_step(step_id)
            old = self._one(
                "SELECT * FROM annotations WHERE annotator_id = ? AND step_id = ?", [annotator_id, step_id]
            ) or {"rating": None, "first_error": 0, "flagged": 0, "note": None, "confidence": None,
                  "rationale": None, "category": None, "dwell_ms": None, "rating_order": None}
            if changes.get("rating", -1) != -1 and "category" not in changes and old["category"] is not None:
                changes["category"] = None
            measured: dict[str, Any] = {}
            if changes.get("rating") is not None and old["rating_order"] is None:
                measured["rating_order"] = 1 + (self._scalar(
                    """SELECT MAX(a.rating_order) FROM annotations a JOIN steps s ON s.id = a.step_id
                       WHERE a.annotator_id = ? AND s.trajectory_id = ?""",
                    [annotator_id, trajectory_id]) or 0)  # fmt: skip
                if dwell_ms is not None and old["dwell_ms"] is None:
                    measured["dwell_ms"] = int(dwell_ms)
            values = {**old, **changes, **measured}
            columns = ["rating", "first_error", "flagged", "note", "confidence", "rationale", "category",
                       "dwell_ms", "rating_order"]  # fmt: skip
            update = ", ".join(f"{column} = excluded.{column}" for column in [*columns, "updated_at"])
            conn.execute(
                f"""INSERT INTO annotations (annotator_id, step_id, {', '.join(columns)}, created_at,
                    updated_at) VALUES (?, ?, {', '.join('?' for _ in columns)}, ?, ?)
                    ON CONFLICT (annotator_id, step_id) DO UPDATE SET {update}""",
                [annotator_id, step_id, *(_stored(values[c]) for c in columns), stamp, stamp],
            )
            for name, value in changes.items():
                before = bool(old[name]) if name in ("first_error", "flagged") else old[name]
                if _stored(value) != _stored(before):
                    self._record_change(annotator_id, trajectory_id, step_id, name, before, value, stamp)
            if changes.get("first_error"):
                self._clear_other_first_errors(annotator_id, trajectory_id, step_id, stamp)
            if trajectory_dwell_ms is not None or changes.get("rating") is not None:
                self._touch_trajectory_label(annotator_id, trajectory_id, stamp, dwell_ms=trajectory_dwell_ms)
        return self.annotation(annotator, step_id)

    def _record_change(self, annotator_id: int, trajectory_id: int, step_id: int | None, field: str,
                       old: Any, new: Any, stamp: str) -> None:
        self.conn.execute(
            """INSERT INTO label_history (annotator_id, trajectory_id, step_id, field, old_value,
               new_value, changed_at) VALUES (?, ?, ?, ?, ?, ?, ?)""",
            [annotator_id, trajectory_id, step_id, field, _history_value(old), _history_value(new), stamp],
        )

    def _clear_other_first_errors(self, annotator_id: int, trajectory_id: int, step_id: int, stamp: str) -> None:
        others = [row[0] for row in self.conn.execute(
            """SELECT step_id FROM annotations
               WHERE annotator_id = ? AND first_error = 1 AND step_id != ?
                 AND step_id IN (SELECT id FROM steps WHERE segmentation_id =
                                 (SELECT segmentation_id FROM steps WHERE id = ?))""",
            [annotator_id, step_id, step_id])]  # fmt: skip
        for other in others:
            self.conn.execute(
                "UPDATE annotations SET first_error = 0, updated_at = ? WHERE annotator_id = ? AND step_id = ?",
                [stamp, annotator_id, other],
            )
            self._record_change(annotator_id, trajectory_id, other, "first_error", True, False, stamp)

    def _touch_trajectory_label(self, annotator_id: int, trajectory_id: int, stamp: str, *,
                                dwell_ms: int | None = None, flawed_process: bool | None = None) -> None:
        self.conn.execute(
            """INSERT INTO trajectory_labels (annotator_id, trajectory_id, flawed_process, dwell_ms,
               created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)
               ON CONFLICT (annotator_id, trajectory_id) DO UPDATE SET
                 dwell_ms = MAX(COALESCE(dwell_ms, 0), COALESCE(excluded.dwell_ms, 0)),
                 flawed_process = CASE WHEN ? IS NULL THEN flawed_process ELSE excluded.flawed_process END,
                 updated_at = excluded.updated_at""",
            [annotator_id, trajectory_id, int(bool(flawed_process)), dwell_ms, stamp, stamp,
             None if flawed_process is None else int(flawed_process)],
        )

    def save_trajectory_label(self, annotator: str, trajectory_id: int, *, flawed_process: bool) -> dict:
        """The "right answer, flawed process" mark on a whole trajectory (kept in the history)."""
        if not isinstance(flawed_process, bool):
            raise StepScopeError(f"flawed_process must be true or false, not {flawed_process!r}")
        stamp = now()
        with self.transaction():
            annotator_id = self.annotator_id(annotator)
            if self._scalar("SELECT 1 FROM trajectories WHERE id = ?", [trajectory_id]) is None:
                raise StepScopeError(f"trajectory {trajectory_id} does not exist")
            old = self.trajectory_label(annotator, trajectory_id)
            before = bool(old["flawed_process"]) if old else False
            self._touch_trajectory_label(annotator_id, trajectory_id, stamp, flawed_process=flawed_process)
            if before != flawed_process:
                self._record_change(annotator_id, trajectory_id, None, "flawed_process", before, flawed_process, stamp)
        return self.trajectory_label(annotator, trajectory_id)

    def add_trajectory_label(self, annotator: str, trajectory_id: int, *, flawed_process: bool = False,
                             dwell_ms: int | None = None, created_at: str | None = None) -> bool:
        """An imported trajectory label (PRM800K's total_time); never overwrites one made here."""
        _check_duration(dwell_ms, "dwell_ms")
        stamp = created_at or now()
        with self.transaction() as conn:
            annotator_id = self.annotator_id(annotator)
            cursor = conn.execute(
                """INSERT INTO trajectory_labels (annotator_id, trajectory_id, flawed_process, dwell_ms,
                   created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING""",
                [annotator_id, trajectory_id, int(flawed_process), dwell_ms, stamp, stamp],
            )
        return cursor.rowcount == 1

    def trajectory_label(self, annotator: str, trajectory_id: int) -> dict | None:
        row = self._one(
            """SELECT t.*, n.name AS annotator FROM trajectory_labels t JOIN annotators n ON n.id = t.annotator_id
               WHERE n.name = ? AND t.trajectory_id = ?""",
            [annotator, trajectory_id],
        )
        return _decode(row, "flawed_process", json_columns=()) if row else None

    def trajectory_labels(self, trajectory_id: int) -> list[dict]:
        rows = self._rows(
            """SELECT t.*, n.name AS annotator FROM trajectory_labels t JOIN annotators n ON n.id = t.annotator_id
               WHERE t.trajectory_id = ? ORDER BY n.name""",
            [trajectory_id],
        )
        return [_decode(row, "flawed_process", json_columns=()) for row in rows]

    def label_history(self, *, trajectory_id: int | None = None, annotator: str | None = None) -> list[dict]:
        """Every change to labels, oldest first: who, when, which field, old -> new."""
        clauses, params = [], []
        if trajectory_id is not None:
            clauses.append("h.trajectory_id = ?")
            params.append(trajectory_id)
        if annotator is not None:
            clauses.append("n.name = ?")
            params.append(annotator)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._rows(
            f"""SELECT h.id, n.name AS annotator, h.trajectory_id, h.step_id, s.idx, h.field,
                       h.old_value, h.new_value, h.changed_at
                FROM label_history h JOIN annotators n ON n.id = h.annotator_id
                LEFT JOIN steps s ON s.id = h.step_id {where} ORDER BY h.id""",
            params,
        )
        for row in rows:
            row["old_value"], row["new_value"] = _json_value(row["old_value"]), _json_value(row["new_value"])
        return rows

    def first_ratings(self, step_ids: Sequence[int]) -> dict[tuple[str, int], int | None]:
        """(annotator, step id) -> the first rating given (before any edit), from the history."""
        found: dict[tuple[str, int], int | None] = {}
        for chunk in _chunks(list(step_ids)):
            marks = ", ".join("?" for _ in chunk)
            for row in self._rows(
                f"""SELECT n.name AS annotator, h.step_id, h.new_value FROM label_history h
                    JOIN annotators n ON n.id = h.annotator_id
                    WHERE h.field = 'rating' AND h.new_value != 'null' AND h.step_id IN ({marks})
                    ORDER BY h.id""",
                chunk,
            ):
                found.setdefault((row["annotator"], row["step_id"]), _json_value(row["new_value"]))
        return found

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
        confidence: int | None = None,
        rationale: str | None = None,
        category: str | None = None,
        dwell_ms: int | None = None,
        rating_order: int | None = None,
    ) -> bool:
        """Insert an imported annotation unless this annotator already labelled the step.

        Imports never overwrite: re-importing a file must not clobber labels made in the app.
        Returns whether a row was added.
        """
        self._check_annotation(
            {"rating": rating, "first_error": first_error, "flagged": flagged, "note": note,
             "confidence": confidence, "rationale": rationale, "category": category}
        )
        _check_duration(dwell_ms, "dwell_ms")
        created_at = created_at or now()
        with self.transaction() as conn:
            annotator_id = self.annotator_id(annotator)
            self._require_step(step_id)
            cursor = conn.execute(
                """INSERT INTO annotations (annotator_id, step_id, rating, first_error,
                   flagged, note, confidence, rationale, category, dwell_ms, rating_order,
                   created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT DO NOTHING""",
                [annotator_id, step_id, rating, int(first_error), int(flagged), note, confidence,
                 rationale, category, dwell_ms, rating_order, created_at, updated_at or created_at],
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
        for name in ("note", "rationale", "category"):
            value = fields.get(name)
            if value is not None and not isinstance(value, str):
                raise StepScopeError(f"a {name} must be text, not {type(value).__name__}")
        if len(fields.get("category") or "") > 80:
            raise StepScopeError("an error category is at most 80 characters")
        confidence = fields.get("confidence")
        if confidence is not None and (isinstance(confidence, bool) or confidence not in CONFIDENCES):
            raise StepScopeError(f"a confidence is 1 to 5 or empty, not {confidence!r}")

    def _require_step(self, step_id: int) -> int:
        """The step's trajectory id; StepScopeError if there is no such step."""
        trajectory_id = self._scalar("SELECT trajectory_id FROM steps WHERE id = ?", [step_id])
        if trajectory_id is None:
            raise StepScopeError(f"step {step_id} does not exist")
        return int(trajectory_id)

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
                       a.rating, a.first_error, a.flagged, a.note, a.confidence, a.rationale,
                       a.category, a.dwell_ms, a.rating_order, a.created_at, a.updated_at
                FROM annotations a
                JOIN steps s ON s.id = a.step_id
                JOIN annotators n ON n.id = a.annotator_id
                WHERE {' AND '.join(clauses)}
                ORDER BY s.segmentation_id, s.idx, n.name""",
            params,
        )
        return [_decode(row, "first_error", "flagged", json_columns=()) for row in rows]


def _stored(value: Any) -> Any:
    return int(value) if isinstance(value, bool) else value


def _history_value(value: Any) -> str:
    return json.dumps(bool(value) if isinstance(value, bool) else value)


def _json_value(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _check_duration(value: Any, name: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise StepScopeError(f"{name} is a whole number of milliseconds, not {value!r}")
