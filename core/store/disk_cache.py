"""What the analysis pages computed, kept in memory and beside the database file, keyed by a data
version.

Compare, Best-of-N and Explore's disagreement filter compute from every label, score and rollout;
at 100,000 trajectories that is seconds of reading and counting. A result is kept in the store's
memory for one server process and on disk for the next one (a restarted server, or a second one on
the same file, shows an unchanged database's figures at once). An entry is one file per (what,
parameters): written again when the data version (the trigger counters and largest ids of
migration 0008) or the code that computes it changes, so the folder holds one version per entry,
at most MAX_FILES entries (the oldest go first).

After a change to the data, a page that passes `on_stale` is not held up by a result that took a
second or more to compute: it gets the previous version's result at once, told that it is stale
(the page says so), while the current one is computed in a background thread; the page reruns
when `revalidating()` falls to 0. Quick results are always computed in the open, and a CLI or a
test that passes no `on_stale` always gets the current figures.

Entries are pickles, so they are signed: an HMAC with a random key kept in the database itself
(settings table), which whoever can write files beside the database but not the database cannot
forge; an entry that fails the check, or any read error, is computed again. The folder is
`<database>.cache/`, readable by its owner only.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import pickle
import secrets
import sqlite3
import tempfile
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Kept:
    """One computed result: the data version it was computed for, how long that took (CPU seconds),
    when (a Unix time) and the value, pickled (each reader gets its own copy, as from st.cache_data)."""

    version: str
    seconds: float
    at: float
    payload: bytes


@dataclass(frozen=True)
class Stale:
    """What a page is shown while its figures for the current data are computed in the background."""

    name: str
    computed_at: float  # when the figures shown were computed (a Unix time)
    seconds: float  # how long they took to compute then: about how long the new ones will take


class StaleView:
    """What a page passes as `on_stale`: `tell` hears of the first result it is shown stale, and
    from then on every result of the run that has an earlier version is shown as it was too (one
    set of figures from before the change, not old and new mixed; and no quick result computed in
    the open beside the background computation)."""

    def __init__(self, tell: Callable[[Stale], None]) -> None:
        self.tell = tell
        self.shown: list[Stale] = []

    def __call__(self, stale: Stale) -> None:
        self.shown.append(stale)
        if len(self.shown) == 1:
            self.tell(stale)


OnStale = StaleView | None


def remembered(store, name: str, key: tuple, version: tuple, compute: Callable[[], T], on_stale: OnStale = None) -> T:
    """`compute()`, or what it returned before for this `name` and `key` at this data `version`
    (and this code), read back from this store's memory or from beside the database.

    With `on_stale`, a result that took REVALIDATE_AFTER_S or longer to compute (or any, once
    `on_stale` has shown one stale) is not waited for after the data changes: the one computed
    for an earlier version is returned at once (`on_stale` is told, so the page can say so), and
    the new one is computed in a background thread (one at a time, the same entry once), where
    the next call finds it."""
    if str(store.path) == ":memory:":
        return compute()
    try:
        secret = signing_key(store.conn)
    except sqlite3.Error:
        return compute()
    if secret is None:
        return compute()
    digest = hashlib.sha256(repr(key).encode()).hexdigest()[:24]
    path = folder(store.path) / f"{name}-{digest}.pkl"
    ident = repr((code_version(), name, key)).encode()
    memory = store.__dict__.setdefault("_kept_results", _Memory())
    kept = memory.get(path)
    if kept is None:
        kept = _read(path, secret, ident)
        if kept is not None:
            memory.put(path, kept)
    wanted = repr(version)
    if kept is not None and kept.version == wanted:
        return pickle.loads(kept.payload)
    slow = kept is not None and (kept.seconds >= REVALIDATE_AFTER_S or bool(on_stale and on_stale.shown))
    if slow and on_stale is not None and _may_wait(path, wanted):
        _in_background(path, wanted, lambda: _compute(compute, memory, path, secret, ident, wanted))
        on_stale(Stale(name, kept.at, kept.seconds))
        return pickle.loads(kept.payload)
    return pickle.loads(_compute(compute, memory, path, secret, ident, wanted).payload)


def revalidating() -> int:
    """How many results are being computed in the background now (for a page that waits on them)."""
    with _RUNNING_LOCK:
        return len(_RUNNING)


# CPU seconds a result must have taken to be worth showing stale (0 in browser tests: every one is).
REVALIDATE_AFTER_S = float(os.environ.get("STEPSCOPE_REVALIDATE_AFTER_S", "1.0"))
_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stepscope-revalidate")
_RUNNING: dict[Path, Future] = {}
_FAILED: set[tuple[Path, str]] = set()  # computed in the open next time, so the page shows the error
_RUNNING_LOCK = threading.Lock()
_log = logging.getLogger(__name__)


def _may_wait(path: Path, version: str) -> bool:
    with _RUNNING_LOCK:
        if (path, version) in _FAILED:
            _FAILED.discard((path, version))
            return False
        return True


def _in_background(path: Path, version: str, work: Callable[[], Any]) -> None:
    with _RUNNING_LOCK:
        if path in _RUNNING:
            return

        def run():
            try:
                work()
            except Exception:  # noqa: BLE001 - computed again in the open next time: the page shows why
                _log.exception("computing %s in the background failed", path.name)
                with _RUNNING_LOCK:
                    _FAILED.add((path, version))
            finally:
                with _RUNNING_LOCK:
                    _RUNNING.pop(path, None)

        _RUNNING[path] = _POOL.submit(run)


def _compute(compute: Callable[[], Any], memory: "_Memory", path: Path, secret: bytes, ident: bytes,
             version: str) -> Kept:  # fmt: skip
    started = time.thread_time()  # CPU seconds: what a busy machine does not inflate
    value = compute()
    kept = Kept(version, time.thread_time() - started, time.time(), pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
    memory.put(path, kept)
    _write(path, secret, ident, kept)
    return kept


class _Memory:
    """The latest result per entry, in this process (bounded; the oldest go first)."""

    def __init__(self, size: int = 64) -> None:
        self._entries: OrderedDict[Path, Kept] = OrderedDict()
        self._lock = threading.Lock()
        self._size = size

    def get(self, path: Path) -> Kept | None:
        with self._lock:
            kept = self._entries.get(path)
            if kept is not None:
                self._entries.move_to_end(path)
            return kept

    def put(self, path: Path, kept: Kept) -> None:
        with self._lock:
            self._entries[path] = kept
            self._entries.move_to_end(path)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)


def _read(path: Path, secret: bytes, ident: bytes) -> Kept | None:
    """The entry kept at `path` for this code, name and key (any data version), if it is intact."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    signature, payload = data[:32], data[32:]
    if not hmac.compare_digest(signature, hmac.new(secret, payload, hashlib.sha256).digest()):
        return None
    if not payload.startswith(ident + b"\n"):
        return None  # another version of the code (or another key with the same digest)
    try:
        kept = pickle.loads(payload[len(ident) + 1 :])
    except Exception:  # noqa: BLE001 - a damaged entry is computed again
        return None
    return kept if isinstance(kept, Kept) else None


def _write(path: Path, secret: bytes, ident: bytes, kept: Kept) -> None:
    try:
        payload = ident + b"\n" + pickle.dumps(kept, protocol=pickle.HIGHEST_PROTOCOL)
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
