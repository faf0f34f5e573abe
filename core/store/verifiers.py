"""The verifiers that gave verdicts: names, kinds, fingerprints (core.store.verifier_identity
says what the kinds are and how rows are written)."""

from __future__ import annotations

from core.errors import StepScopeError
from core.store.connection import ConnectionBase
from core.store.verifier_identity import VERIFIER_KINDS, check_verifier_kind, legacy_verifier_kind, register_verifiers

__all__ = ["VERIFIER_KINDS", "VerifierQueries", "legacy_verifier_kind", "register_verifiers"]


class VerifierQueries(ConnectionBase):
    """The verifiers that gave verdicts: names, kinds, fingerprints."""

    def verifiers(self, kind: str | None = None) -> list[dict]:
        """Every verifier (name, kind, fingerprint), by name; only those of `kind` if given."""
        if kind is not None:
            check_verifier_kind(kind)
        where, params = ("WHERE kind = ?", [kind]) if kind else ("", [])
        return self._rows(f"SELECT name, kind, fingerprint FROM verifiers {where} ORDER BY name", params)

    def verifier_kinds(self) -> dict[str, str]:
        """Verifier name -> kind."""
        return {row["name"]: row["kind"] for row in self.verifiers()}

    def verifier_kind(self, name: str) -> str | None:
        return self._scalar("SELECT kind FROM verifiers WHERE name = ?", [name])

    def check_verifier_name(self, name: str, kind: str) -> None:
        """Refuse, before a job is queued, a name that another kind of verifier already holds."""
        stored = self.verifier_kind(name)
        if stored is not None and stored != kind:
            raise StepScopeError(
                f"{name!r} already names a {stored} verifier in this database: give the {kind} another --name"
            )
