"""What the analysis pages computed, kept on disk beside the database file, keyed by a data version.

Compare, Best-of-N and Explore's disagreement filter compute from every label, score and rollout;
at 100,000 trajectories that is seconds of reading and counting. A page keeps its results in
memory (Streamlit's caches) for one server process; this keeps them across processes, so a
restarted server (or a second one on the same file) shows the figures of an unchanged database at
once. An entry is one file per (what, parameters): written again when the data version (the
trigger counters and largest ids of migration 0008) or the code that computes it changes, so the
folder holds one version per entry, at most MAX_FILES entries (the oldest go first).

Entries are pickles, so they are signed: an HMAC with a random key kept in the database itself
(settings table), which whoever can write files beside the database but not the database cannot
forge; an entry that fails the check, or any read error, is computed again. The folder is
`<database>.cache/`, readable by its owner only.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import pickle
import secrets
import sqlite3
import tempfile
from functools import cache
from pathlib import Path
from typing import Any, Callable, TypeVar

T = TypeVar("T")
MAX_FILES = 256
KEY_SETTING = "analysis_cache_key"
_REPO = Path(__file__).resolve().parent.parent.parent
# The code an entry depends on: an edit to any of these invalidates every entry.
_SOURCES = (
    "core/metrics.py", "core/mcpe.py", "core/splits.py", "core/prm.py", "core/formats/labels.py",
    "core/views/compare.py", "core/views/prm.py", "core/views/latents.py", "core/views/best_of_n.py",
    "core/store/compare.py", "core/store/prm.py", "core/store/best_of_n.py", "core/store/explore.py",
    "core/store/disk_cache.py",
)  # fmt: skip


@cache
def code_version() -> str:
    digest = hashlib.sha256()
    for name in _SOURCES:
        try:
            digest.update((_REPO / name).read_bytes())
        except OSError:
            digest.update(name.encode())
    return digest.hexdigest()[:16]


def folder(db_path: str | os.PathLike[str]) -> Path:
    return Path(f"{db_path}.cache")


def new_signing_key() -> str:
    return secrets.token_hex(32)


def signing_key(conn: sqlite3.Connection) -> bytes | None:
    """The database's own key for signing its cache entries. It is made by a migration, never on
    reading: a page a viewer opens must write nothing to the database."""
    row = conn.execute("SELECT value FROM settings WHERE name = ?", [KEY_SETTING]).fetchone()
    return None if row is None else bytes.fromhex(row[0])


def remembered(store, name: str, key: tuple, version: tuple, compute: Callable[[], T]) -> T:
    """`compute()`, or what it returned before for this `name` and `key` at this data `version`
    (and this code), read back from beside the database."""
    if str(store.path) == ":memory:":
        return compute()
    path = folder(store.path) / f"{name}-{hashlib.sha256(repr(key).encode()).hexdigest()[:24]}.pkl"
    stamp = repr((code_version(), name, key, version)).encode()
    try:
        secret = signing_key(store.conn)
    except sqlite3.Error:
        return compute()
    if secret is None:
        return compute()
    found = _read(path, secret, stamp)
    if found is not None:
        return found[0]
    value = compute()
    _write(path, secret, stamp, value)
    return value


def _read(path: Path, secret: bytes, stamp: bytes) -> tuple[Any] | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    signature, payload = data[:32], data[32:]
    if not hmac.compare_digest(signature, hmac.new(secret, payload, hashlib.sha256).digest()):
        return None
    if not payload.startswith(stamp + b"\n"):
        return None  # another version of the data or the code
    try:
        return (pickle.loads(payload[len(stamp) + 1 :]),)
    except Exception:  # noqa: BLE001 - a damaged entry is computed again
        return None


def _write(path: Path, secret: bytes, stamp: bytes, value: Any) -> None:
    try:
        payload = stamp + b"\n" + pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(handle, "wb") as out:
            out.write(hmac.new(secret, payload, hashlib.sha256).digest() + payload)
        os.replace(temporary, path)
        entries = sorted(path.parent.glob("*.pkl"), key=lambda p: p.stat().st_mtime)
        for old in entries[:-MAX_FILES]:
            old.unlink(missing_ok=True)
    except (OSError, pickle.PicklingError):
        pass  # a cache that cannot be written is only slower
