"""Judge verdicts on steps and whole solutions."""

from __future__ import annotations

import json
import sqlite3
from typing import Any, Iterable, Mapping

from core.errors import StepScopeError
from core.store.connection import ConnectionBase
from core.store.keys import new_key, now
from core.store.verifier_identity import register_verifiers

VERDICT_KINDS = ("step", "outcome", "critic")

# Which of a verifier's verdicts on one target the pages read (issue 24): its newest verdict that is
# not in-sample (a cross-fitted or held-out score, or any judge's), else its newest in-sample one.
# A trained verifier scoring data it was trained on flatters itself, so a newer in-sample score
# never hides a cross-fitted one. With `last`, the order puts the preferred verdict per target last
# (readers that keep the last row per target: latest_per_key, a dict); else first (a correlated
# `ORDER BY ... LIMIT 1`, ROW_NUMBER() = 1). `alias`: the verdicts table's name in the query.
def preferred_order(*, last: bool, alias: str | None = None) -> str:
    at = f"{alias}." if alias else ""
    return f"{at}in_sample DESC, {at}id" if last else f"{at}in_sample, {at}id DESC"

class VerdictQueries(ConnectionBase):
    """Verdicts: adding (each checked against its step) and reading them."""

    def add_verdicts(
        self, verdicts: Iterable[Mapping[str, Any]], *, verifier_kind: str = "judge", fingerprint: str | None = None
    ) -> int:
        """Insert verdicts in one transaction; returns how many were new.

        Each needs judge (the verifier's name), kind (step|outcome|critic) and step_id or
        trajectory_id; optional: p_yes, mass, raw, template, template_hash, job_id, key, created_at,
        in_sample (a trained verifier's score on a target it was trained on; see preferred_order),
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
                       kind, p_yes, mass, raw, template, template_hash, created_at, in_sample)
                       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING""",
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
            v.get("template_hash"), v.get("created_at") or stamp, int(bool(v.get("in_sample"))),
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

    def held_out_targets(self, judge: str, kind: str, template_hash: str, targets: Iterable[tuple[int, int | None]]
                         ) -> set[tuple[int, int | None]]:  # fmt: skip
        """Of the (trajectory, step or None) targets, those on which the verifier artifact
        `template_hash` (a probe's or ORM's fingerprint, stored with each of its verdicts) already
        has a verdict that is not in-sample: a cross-fitted or held-out score, which a scoring job
        keeps instead of adding an in-sample one."""
        step = kind == "step"
        rows = self.conn.execute(
            f"""SELECT DISTINCT trajectory_id, step_id FROM verdicts
                WHERE judge = ? AND kind = ? AND template_hash = ? AND in_sample = 0
                AND {"step_id" if step else "trajectory_id"} IN (SELECT value FROM json_each(?))""",
            [judge, kind, template_hash, json.dumps(sorted({s if step else t for t, s in targets}))],
        ).fetchall()
        found = {(t, s if step else None) for t, s in rows}
        return {target for target in targets if (target[0], target[1] if step else None) in found}

    def preferred_verdict_outcomes(self, judge: str, kind: str, trajectory_ids: Iterable[int]) -> list[tuple]:
        """(P(yes), in sample, the trajectory's grade) of the verifier's preferred verdict of
        `kind` (preferred_order) with a P(yes) on each of the trajectories that has one: what a
        summary of its agreement with final-answer correctness reads."""
        return [tuple(r) for r in self.conn.execute(
            f"""SELECT p_yes, in_sample, correct FROM (
                    SELECT v.p_yes, v.in_sample, t.correct,
                           ROW_NUMBER() OVER (PARTITION BY v.trajectory_id ORDER BY {preferred_order(last=False, alias='v')}) AS rank
                    FROM json_each(?) j CROSS JOIN verdicts v ON v.trajectory_id = j.value
                    JOIN trajectories t ON t.id = v.trajectory_id
                    WHERE v.judge = ? AND v.kind = ? AND v.p_yes IS NOT NULL)
                WHERE rank = 1""",
            [json.dumps(sorted({int(t) for t in trajectory_ids})), judge, kind],
        ).fetchall()]  # fmt: skip

    def judges(self) -> list[str]:
        """Names of every verifier that gave verdicts, of any kind (core.store.verifiers)."""
        return [row["name"] for row in self.verifiers()]
