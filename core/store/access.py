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
import os
import re
import secrets
import sqlite3
import urllib.parse
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from core.errors import StepScopeError
from core.store.connection import ConnectionBase

MIGRATION_SET = "stepscope"  # core.store.schema.MIGRATIONS' name, in _sqlite_migrations.migration_set

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
        lookup, secret = token_parts(token)
        row = self._one(f"SELECT {_COLUMNS}, salt, secret_hash FROM invitations WHERE lookup = ?", [lookup])
        return _checked(row, secret, at)

    def _refuse_inactive(self, invitation: Invitation, at: datetime | None) -> None:
        _refuse_inactive(invitation, at)

    def active_invitation(self, invitation_id: int, at: datetime | None = None) -> Invitation:
        """The invitation behind a signed-in session, checked again on every page run (so a
        revocation or an expiry ends sessions already open); StepScopeError if no longer active."""
        invitation = self.invitation(invitation_id)
        if invitation is None:
            raise StepScopeError("this invitation no longer exists; ask the organiser for a new link")
        _refuse_inactive(invitation, at)
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


def token_parts(token: Any) -> tuple[str, str]:
    """(lookup, secret) of a well-formed token; StepScopeError before anything is opened otherwise."""
    match = _TOKEN_PATTERN.fullmatch(token) if isinstance(token, str) else None
    if not match:
        raise StepScopeError(_INVALID)
    return match.group(1), match.group(2)


def _refuse_inactive(invitation: Invitation, at: datetime | None) -> None:
    state = invitation.state(at)
    if state == "revoked":
        raise StepScopeError("this invitation was revoked; ask the organiser for a new link")
    if state == "expired":
        raise StepScopeError(f"this invitation expired at {invitation.expires_at}; ask the organiser for a new link")


def _checked(row: dict | None, secret: str, at: datetime | None) -> Invitation:
    salt, expected = (row["salt"], row["secret_hash"]) if row else (b"\0" * _SALT_BYTES, b"")
    if not hmac.compare_digest(_hash(secret, salt), expected) or row is None:
        raise StepScopeError(_INVALID)
    invitation = _invitation(row)
    _refuse_inactive(invitation, at)
    return invitation


def _read_only(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """A read-only connection (sqlite's URI mode=ro): it cannot migrate, switch the journal mode,
    or write a byte. A StepScope store is always in WAL mode, so a file whose header says
    otherwise (not SQLite, empty, a rollback journal) is refused before SQLite opens it. Without
    a -wal file beside it nobody has it open and everything is in the file, which is then read
    as immutable, so not even the -wal and -shm files a read-only WAL reader makes appear."""
    name = os.path.basename(os.fspath(path))
    with open(path, "rb") as handle:
        header = handle.read(100)
    if len(header) < 100 or not header.startswith(b"SQLite format 3\0") or header[18:20] != b"\2\2":
        raise StepScopeError(f"{name} is not a StepScope database")
    immutable = "" if os.path.exists(f"{os.fspath(path)}-wal") else "&immutable=1"
    uri = "file:" + urllib.parse.quote(os.path.abspath(os.fspath(path))) + "?mode=ro" + immutable
    conn = sqlite3.connect(uri, uri=True, timeout=5.0, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    return conn


def is_stepscope_store(conn: sqlite3.Connection) -> bool:
    """Whether an open database is a StepScope store: it has the migrations table of set "stepscope"
    and an invitations table."""
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not {"_sqlite_migrations", "invitations"} <= tables:
        return False
    return conn.execute("SELECT 1 FROM _sqlite_migrations WHERE migration_set = ? LIMIT 1",
                        [MIGRATION_SET]).fetchone() is not None


def _store_rows(path: str | os.PathLike[str], sql: str, params: list) -> dict | None:
    """One row from an existing StepScope store, read only; StepScopeError (one line) for a
    missing file, another kind of file or a foreign SQLite database."""
    name = os.path.basename(os.fspath(path))
    if not os.path.isfile(path):
        raise StepScopeError(f"there is no database {name} in the data folder")
    try:
        conn = _read_only(path)
        try:
            if not is_stepscope_store(conn):
                raise StepScopeError(f"{name} is not a StepScope database")
            row = conn.execute(sql, params).fetchone()
        finally:
            conn.close()
    except OSError as error:
        raise StepScopeError(f"cannot read {name}: {error.strerror or error}") from None
    except sqlite3.DatabaseError as error:
        raise StepScopeError(f"{name} is not a StepScope database ({error})") from None
    return dict(row) if row else None


def check_token_read_only(path: str | os.PathLike[str], token: Any, at: datetime | None = None) -> Invitation:
    """`check_token` on the file at `path` without opening it for writing: the token's format is
    checked before the file is touched, and only an existing StepScope store is read (mode=ro).
    Signing in with a junk link leaves every file as it was, byte for byte."""
    lookup, secret = token_parts(token)
    row = _store_rows(path, f"SELECT {_COLUMNS}, salt, secret_hash FROM invitations WHERE lookup = ?", [lookup])
    return _checked(row, secret, at)


def active_invitation_read_only(path: str | os.PathLike[str], invitation_id: int,
                                at: datetime | None = None) -> Invitation:
    """`active_invitation` read from the file at `path` (mode=ro): the check every action of an
    invited session passes, at the moment it happens."""
    row = _store_rows(path, f"SELECT {_COLUMNS} FROM invitations WHERE id = ?", [invitation_id])
    if row is None:
        raise StepScopeError("this invitation no longer exists; ask the organiser for a new link")
    invitation = _invitation(row)
    _refuse_inactive(invitation, at)
    return invitation
