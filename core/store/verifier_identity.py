"""Verifiers as data: one row per verifier name with its kind and fingerprint (the table's
vocabulary and its writes; the queries are core.store.verifiers).

A verdict's `judge` column names who gave it; what that verifier *is* (a prompted judge, a PRM, a
probe on hidden states, a fine-tuned ORM, ...) lives here, in a column, never in the spelling of
the name. Names are unique across kinds, so a name alone says which verdicts belong together, and
the writer of a verdict says its kind (`add_verdicts(..., verifier_kind=...)`): a PRM stored under
`--name foo` is a PRM everywhere. The table is small (one row per verifier), so listing verifiers
never scans the verdicts.
"""

from __future__ import annotations

import sqlite3
from typing import Iterable

from core.errors import StepScopeError
from core.store.keys import now

# judge: a prompted model's P(Yes); prm: a process reward model's step score; probe: logistic
# regression on hidden states; orm: a fine-tuned outcome verifier; mc: a Monte Carlo value; human:
# a person; search: a search strategy's own scorer; random: uniform scores (a search's floor).
VERIFIER_KINDS = ("judge", "prm", "probe", "orm", "mc", "human", "search", "random")

# How the rows written before kinds were data are classified (migration 0006 and dumps written
# before then): first by the kind of the job that wrote the verdict, which is provenance; only a
# verdict without a job (imported) falls back to the prefix the old default names carried.
JOB_KIND_VERIFIERS = {
    "judge": "judge", "prm-score": "prm", "probe-judge": "probe", "train-verifier": "probe",
    "train-orm": "orm", "orm-score": "orm",
}  # fmt: skip
_LEGACY_NAME_PREFIXES = (("prm:", "prm"), ("orm:", "orm"), ("probe-orm:", "probe"), ("probe-prm-", "probe"))


def legacy_verifier_kind(name: str, job_kinds: Iterable[str] = ()) -> str:
    """The kind of a verifier written before kinds were stored: from its jobs, else its name."""
    kinds = {JOB_KIND_VERIFIERS[k] for k in job_kinds if k in JOB_KIND_VERIFIERS}
    if len(kinds) == 1:
        return kinds.pop()
    for prefix, kind in _LEGACY_NAME_PREFIXES:
        if name.startswith(prefix):
            return kind
    return "judge"


def check_verifier_kind(kind: str) -> None:
    if kind not in VERIFIER_KINDS:
        raise StepScopeError(f"a verifier kind is one of {', '.join(VERIFIER_KINDS)}, not {kind!r}")


def register_verifiers(conn: sqlite3.Connection, identities: Iterable[tuple[str, str, str | None]]) -> None:
    """Record (name, kind, fingerprint) inside the caller's transaction; a name already taken by
    another kind is refused, so one name never mixes two kinds of scores."""
    stamp = now()
    for name, kind, fingerprint in identities:
        check_verifier_kind(kind)
        conn.execute(
            """INSERT INTO verifiers (name, kind, fingerprint, created_at, updated_at) VALUES (?, ?, ?, ?, ?)
               ON CONFLICT (name) DO UPDATE SET
                   fingerprint = COALESCE(excluded.fingerprint, verifiers.fingerprint), updated_at = excluded.updated_at
               WHERE verifiers.kind = excluded.kind""",
            [name, kind, fingerprint, stamp, stamp],
        )
        (stored,) = conn.execute("SELECT kind FROM verifiers WHERE name = ?", [name]).fetchone()
        if stored != kind:
            raise StepScopeError(
                f"{name!r} already names a {stored} verifier in this database: store these {kind} scores "
                "under another name (--name)"
            )
