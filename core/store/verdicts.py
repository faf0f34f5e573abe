"""Judge verdicts on steps and whole solutions."""

from __future__ import annotations

import sqlite3
from typing import Any, Iterable, Mapping

from core.errors import StepScopeError
from core.store.connection import ConnectionBase
from core.store.keys import new_key, now
from core.store.verifier_identity import register_verifiers

VERDICT_KINDS = ("step", "outcome", "critic")


class VerdictQueries(ConnectionBase):
    """Verdicts: adding (each checked against its step) and reading them."""

    def add_verdicts(
        self, verdicts: Iterable[Mapping[str, Any]], *, verifier_kind: str = "judge", fingerprint: str | None = None
    ) -> int:
        """Insert verdicts in one transaction; returns how many were new.

        Each needs judge (the verifier's name), kind (step|outcome|critic) and step_id or
        trajectory_id; optional: p_yes, mass, raw, template, template_hash, job_id, key, created_at,
        and verifier_kind / fingerprint where one row differs from the call's. The verifier's kind
        is recorded with its name (core.store.verifiers); a name held by another kind is refused.
        """
        stamp = now()
        verdicts = list(verdicts)
        with self.transaction() as conn:
            rows = [self._verdict_row(v, stamp) for v in verdicts]
            register_verifiers(conn, dict.fromkeys(
                (v["judge"], v.get("verifier_kind") or verifier_kind, v.get("fingerprint") or fingerprint)
                for v in verdicts))  # fmt: skip
            before = conn.total_changes
            try:
                conn.executemany(
                    """INSERT INTO verdicts (key, trajectory_id, step_id, job_id, judge,
                       kind, p_yes, mass, raw, template, template_hash, created_at)
                       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING""",
                    rows,
                )
            except sqlite3.IntegrityError as error:
                raise StepScopeError(f"cannot store verdicts: {error}") from None
            return conn.total_changes - before

    def _verdict_row(self, v: Mapping[str, Any], stamp: str) -> tuple:
        if v["kind"] not in VERDICT_KINDS:
            raise StepScopeError(
                f"a verdict kind is one of {', '.join(VERDICT_KINDS)}, not {v['kind']!r}"
            )
        trajectory_id, step_id = v.get("trajectory_id"), v.get("step_id")
        if step_id is not None:
            owner = self._scalar("SELECT trajectory_id FROM steps WHERE id = ?", [step_id])
            if owner is None or (trajectory_id is not None and owner != trajectory_id):
                raise StepScopeError(f"step {step_id} is not a step of trajectory {trajectory_id}")
            trajectory_id = owner
        return (
            v.get("key") or new_key(), trajectory_id, step_id, v.get("job_id"), v["judge"],
            v["kind"], v.get("p_yes"), v.get("mass"), v.get("raw"), v.get("template"),
            v.get("template_hash"), v.get("created_at") or stamp,
        )

    def verdicts(
        self, trajectory_id: int, *, judge: str | None = None, kind: str | None = None
    ) -> list[dict]:
        """Verdicts on a trajectory, oldest first; step verdicts carry the step's idx."""
        clauses, params = ["v.trajectory_id = ?"], [trajectory_id]
        for clause, value in (("v.judge = ?", judge), ("v.kind = ?", kind)):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        return self._rows(
            f"""SELECT v.*, w.kind AS verifier_kind, s.idx, s.segmentation_id, j.key AS job_key FROM verdicts v
                LEFT JOIN verifiers w ON w.name = v.judge
                LEFT JOIN steps s ON s.id = v.step_id
                LEFT JOIN jobs j ON j.id = v.job_id
                WHERE {' AND '.join(clauses)} ORDER BY v.id""",
            params,
        )

    def judges(self) -> list[str]:
        """Names of every verifier that gave verdicts, of any kind (core.store.verifiers)."""
        return [row["name"] for row in self.verifiers()]
