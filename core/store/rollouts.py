"""Rollouts (continuations sampled from a step) and the step values counted from them."""

from __future__ import annotations

import sqlite3
from typing import Any, Iterable, Mapping, Sequence

from core.errors import StepScopeError
from core.store.connection import ConnectionBase
from core.store.keys import new_key, now
from core.store.rows import _chunks, _decode


class RolloutQueries(ConnectionBase):
    """Mixed into Store with ProblemQueries: step_values reads the steps."""

    def add_rollouts(self, rollouts: Iterable[Mapping[str, Any]]) -> int:
        """Insert rollouts in one transaction; returns how many were new.

        Each needs step_id (or node_id: a tree node that is no step), text and correct; optional:
        answer, num_tokens, finish_reason, seed, model, job_id, key (a rollout with a key already
        stored is skipped), created_at. A rollout from a step belongs to the step's node too.
        """
        stamp = now()
        rows = [
            (
                r.get("key") or new_key(), r.get("step_id"), r.get("node_id"), r.get("step_id"), r.get("job_id"), r["text"],
                r.get("answer"), int(bool(r["correct"])), r.get("num_tokens"),
                r.get("finish_reason"), r.get("seed"), r.get("model"), r.get("created_at") or stamp,
            )
            for r in rollouts
        ]
        with self.transaction() as conn:
            before = conn.total_changes
            try:
                conn.executemany(
                    """INSERT INTO rollouts (key, step_id, node_id, job_id, text, answer, correct,
                       num_tokens, finish_reason, seed, model, created_at)
                       VALUES (?, ?, COALESCE(?, (SELECT node_id FROM steps WHERE id = ?)), ?, ?, ?, ?,
                               ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING""",
                    rows,
                )
            except sqlite3.IntegrityError as error:
                raise StepScopeError(
                    f"cannot store rollouts: {error} (unknown step or job?)"
                ) from None
            return conn.total_changes - before

    def rollouts(self, step_id: int) -> list[dict]:
        rows = self._rows("SELECT * FROM rollouts WHERE step_id = ? ORDER BY id", [step_id])
        return [_decode(row, "correct", json_columns=()) for row in rows]

    def trajectory_rollouts(self, trajectory_id: int) -> list[dict]:
        """Every rollout from any step of the trajectory (all segmentations), with its job key."""
        rows = self._rows(
            """SELECT r.*, j.key AS job_key FROM rollouts r
               JOIN steps s ON s.id = r.step_id
               LEFT JOIN jobs j ON j.id = r.job_id
               WHERE s.trajectory_id = ? ORDER BY r.id""",
            [trajectory_id],
        )
        return [_decode(row, "correct", json_columns=()) for row in rows]

    def step_value_counts(
        self, step_ids: Sequence[int], *, model: str | None = None
    ) -> dict[int, tuple[int, int]]:
        """(n, n_correct) for every step id given; (0, 0) where nothing was sampled yet."""
        counts = {step_id: (0, 0) for step_id in step_ids}
        ids = list(counts)
        for chunk in _chunks(ids):
            marks = ", ".join("?" for _ in chunk)
            where, params = f"step_id IN ({marks})", list(chunk)
            if model is not None:
                where, params = where + " AND model IS ?", [*params, model]
            for row in self._rows(
                f"SELECT step_id, SUM(n) AS n, SUM(n_correct) AS n_correct FROM step_values"
                f" WHERE {where} GROUP BY step_id",
                params,
            ):
                counts[row["step_id"]] = (int(row["n"]), int(row["n_correct"]))
        return counts

    def step_values(
        self, trajectory_id: int, segmentation_id: int | None = None, *, model: str | None = None
    ) -> list[dict]:
        """Per step in order: step_id, idx, n, n_correct, soft (fraction), hard (any success)."""
        steps = self.steps(trajectory_id, segmentation_id)
        counts = self.step_value_counts([s["id"] for s in steps], model=model)
        values = []
        for step in steps:
            n, n_correct = counts[step["id"]]
            values.append({
                "step_id": step["id"], "idx": step["idx"], "n": n, "n_correct": n_correct,
                "soft": n_correct / n if n else None, "hard": (n_correct > 0) if n else None,
            })
        return values
