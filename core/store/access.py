"""Invitations: who may open a database file served beyond this machine, and as what.

An invitation is a person's name, a role and a secret token. The token handed out is
`LOOKUP.SECRET`: LOOKUP (random, not secret) finds the row, so a guess costs one hash and a
database read, never a scan; SECRET is kept only as a salted scrypt hash and compared in
constant time. Neither the token nor the secret is ever stored, logged or returned again.

The secret has 256 random bits, so the hash does not need to resist a dictionary: scrypt's
cost is set for a fast check (about 20 ms) that still makes a stolen database file useless.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import urllib.parse
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from core.errors import StepScopeError
from core.store.connection import ConnectionBase

ROLES = ("organiser", "annotator", "viewer")
# The same rule as the app's annotator names: an invitation's name becomes the label author.
NAME_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,40}")
_LOOKUP_BYTES, _SECRET_BYTES, _SALT_BYTES = 9, 32, 16
_TOKEN_PATTERN = re.compile(r"([A-Za-z0-9_-]{12})\.([A-Za-z0-9_-]{43})")
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}
_DURATION = re.compile(r"\s*(\d{1,6})\s*([smhdw])\s*")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
MAX_LIFETIME = timedelta(days=366)
_INVALID = "this link is not a valid invitation (check that it was copied whole, or ask the organiser for a new one)"


@dataclass(frozen=True)
class Invitation:
    id: int
    name: str
    role: str
    created_at: str
    expires_at: str
    revoked_at: str | None
    last_used_at: str | None

    def state(self, at: datetime | None = None) -> str:
        """'active', 'revoked' or 'expired' (at `at`, default now)."""
        if self.revoked_at:
            return "revoked"
        return "expired" if _parse(self.expires_at) <= (at or _utcnow()) else "active"


def parse_lifetime(text: str) -> timedelta:
    """'7d', '12h', '30m', '45s', '2w' -> a timedelta; StepScopeError otherwise."""
    match = _DURATION.fullmatch(text or "") if isinstance(text, str) else None
    if not match:
        raise StepScopeError(f"an expiry is a number and a unit (s, m, h, d or w), like 7d or 12h, not {text!r}")
    lifetime = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    if lifetime <= timedelta(0) or lifetime > MAX_LIFETIME:
        raise StepScopeError(f"an invitation lasts more than 0 seconds and at most {MAX_LIFETIME.days} days")
    return lifetime


def invitation_link(base_url: str, database: str, token: str) -> str:
    """The personal link: the app's address, the database file's name and the token. The app
    removes the token from the address bar as soon as it has read it."""
    base = (base_url or "").strip().rstrip("/")
    parsed = urllib.parse.urlsplit(base)
    if parsed.scheme not in ("http", "https") or not parsed.netloc or parsed.query or parsed.fragment:
        raise StepScopeError(f"the app's address is like http://HOST:8501 (http or https, no query), not {base_url!r}"[:200])
    return f"{base}/?{urllib.parse.urlencode({'db': database, 'token': token})}"


def check_name(name: Any) -> str:
    name = name.strip() if isinstance(name, str) else ""
    if not NAME_PATTERN.fullmatch(name):
        raise StepScopeError("an invited person's name is 1 to 40 letters, digits, dots, underscores or hyphens")
    return name


def check_role(role: Any) -> str:
    if role not in ROLES:
        raise StepScopeError(f"a role is one of {', '.join(ROLES)}, not {role!r}"[:200])
    return role


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _stamp(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds")


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)


def _hash(secret: str, salt: bytes) -> bytes:
    return hashlib.scrypt(secret.encode("ascii"), salt=salt, **_SCRYPT)


def _invitation(row: dict) -> Invitation:
    return Invitation(**{k: row[k] for k in Invitation.__dataclass_fields__})


_COLUMNS = "id, name, role, created_at, expires_at, revoked_at, last_used_at"


class AccessQueries(ConnectionBase):
    """Invitations: create (the only time a token exists in clear), check, list, revoke."""

    def create_invitation(self, name: str, role: str, lifetime: timedelta) -> tuple[Invitation, str]:
        """A new invitation and its token. The token is returned once and never kept."""
        name, role = check_name(name), check_role(role)
        if not isinstance(lifetime, timedelta) or not timedelta(0) < lifetime <= MAX_LIFETIME:
            raise StepScopeError(f"an invitation lasts more than 0 seconds and at most {MAX_LIFETIME.days} days")
        lookup = secrets.token_urlsafe(_LOOKUP_BYTES)
        secret = secrets.token_urlsafe(_SECRET_BYTES)
        salt = secrets.token_bytes(_SALT_BYTES)
        created = _utcnow()
        with self.transaction() as conn:
            cursor = conn.execute(
                """INSERT INTO invitations (lookup, name, role, salt, secret_hash, created_at, expires_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?)""",
                [lookup, name, role, salt, _hash(secret, salt), _stamp(created), _stamp(created + lifetime)],
            )
            invitation_id = cursor.lastrowid
        return self.invitation(invitation_id), f"{lookup}.{secret}"

    def invitation(self, invitation_id: int) -> Invitation | None:
        row = self._one(f"SELECT {_COLUMNS} FROM invitations WHERE id = ?", [invitation_id])
        return _invitation(row) if row else None

    def invitations(self) -> list[Invitation]:
        return [_invitation(row) for row in self._rows(f"SELECT {_COLUMNS} FROM invitations ORDER BY id")]

    def has_active_invitation(self, at: datetime | None = None) -> bool:
        return any(i.state(at) == "active" for i in self.invitations())

    def check_token(self, token: Any, at: datetime | None = None) -> Invitation:
        """The active invitation whose token this is; StepScopeError (writing nothing) otherwise.

        A malformed token is refused before any database read; a well-formed one with an
        unknown lookup is hashed anyway, so the time taken does not say which part was wrong.
        """
        match = _TOKEN_PATTERN.fullmatch(token) if isinstance(token, str) else None
        if not match:
            raise StepScopeError(_INVALID)
        lookup, secret = match.groups()
        row = self._one(f"SELECT {_COLUMNS}, salt, secret_hash FROM invitations WHERE lookup = ?", [lookup])
        salt, expected = (row["salt"], row["secret_hash"]) if row else (b"\0" * _SALT_BYTES, b"")
        if not hmac.compare_digest(_hash(secret, salt), expected) or row is None:
            raise StepScopeError(_INVALID)
        invitation = _invitation(row)
        self._refuse_inactive(invitation, at)
        return invitation

    def _refuse_inactive(self, invitation: Invitation, at: datetime | None) -> None:
        state = invitation.state(at)
        if state == "revoked":
            raise StepScopeError("this invitation was revoked; ask the organiser for a new link")
        if state == "expired":
            raise StepScopeError(f"this invitation expired at {invitation.expires_at}; ask the organiser for a new link")

    def active_invitation(self, invitation_id: int, at: datetime | None = None) -> Invitation:
        """The invitation behind a signed-in session, checked again on every page run (so a
        revocation or an expiry ends sessions already open); StepScopeError if no longer active."""
        invitation = self.invitation(invitation_id)
        if invitation is None:
            raise StepScopeError("this invitation no longer exists; ask the organiser for a new link")
        self._refuse_inactive(invitation, at)
        return invitation

    def mark_invitation_used(self, invitation_id: int) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE invitations SET last_used_at = ? WHERE id = ?", [_stamp(_utcnow()), invitation_id])

    def revoke_invitations(self, who: str) -> list[Invitation]:
        """Revoke invitation `who` (an id) or every active invitation of the person named `who`;
        the ones revoked. StepScopeError if none matches."""
        who = who.strip() if isinstance(who, str) else ""
        if who.isdigit():
            matched = [i for i in self.invitations() if i.id == int(who)]
        else:
            matched = [i for i in self.invitations() if i.name == who]
        targets = [i for i in matched if i.revoked_at is None]
        if not targets:
            what = f"invitation {who}" if who.isdigit() else f"unrevoked invitation for {who!r}"
            raise StepScopeError(f"there is no {what}"[:200] + " (see `stepscope access list`)")
        stamp = _stamp(_utcnow())
        with self.transaction() as conn:
            conn.executemany("UPDATE invitations SET revoked_at = ? WHERE id = ?", [(stamp, i.id) for i in targets])
        return [self.invitation(i.id) for i in targets]
