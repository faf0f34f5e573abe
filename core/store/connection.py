"""The connection side of the store: one SQLite file, a connection per thread, transactions.

One SQLite file is the single source of truth. Every thread gets its own connection
(Streamlit reruns and job workers run on different threads, and a sqlite3 connection must not
be shared between threads that use it at the same time). The file is in WAL mode so readers
never block the writer, and every connection waits on a busy timeout instead of failing with
"database is locked" when another writer holds the lock.

Writes go through `transaction()`, which takes the write lock up front (`BEGIN IMMEDIATE`): a
deferred transaction that reads first and writes later can fail with SQLITE_BUSY without
waiting, the immediate one simply queues.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence, TypeVar

from sqlite_utils import Database

from core.errors import StepScopeError
from core.store.schema import MIGRATIONS

DEFAULT_DB = Path("data") / "stepscope.db"

_S = TypeVar("_S", bound="ConnectionBase")


def default_db_path() -> Path:
    """`$STEPSCOPE_DB`, else data/stepscope.db under the current directory."""
    return Path(os.environ.get("STEPSCOPE_DB") or DEFAULT_DB)


class ConnectionBase:
    """A database file with a connection per thread; the query mixins of `Store` build on it."""

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StepScopeError(f"cannot create the folder for database {self.path}: {error}")
        self._migrate()
        self._after_open()

    def _after_open(self) -> None:
        """Run once the schema is current (core.store.imports undoes a killed import here)."""

    @classmethod
    def open(cls: type[_S], path: str | os.PathLike[str] | None = None, **kwargs: Any) -> _S:
        return cls(path if path is not None else default_db_path(), **kwargs)

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    # --- connections and transactions -------------------------------------------------------

    @property
    def db(self) -> Database:
        """This thread's sqlite-utils Database."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._connect()
            self._local.db = db
        return db

    @property
    def conn(self) -> sqlite3.Connection:
        return self.db.conn

    def _connect(self) -> Database:
        try:
            # isolation_level=None: no implicit BEGIN; transactions are explicit (see module doc).
            # check_same_thread=False only so close() can close every thread's connection.
            conn = sqlite3.connect(
                self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            db = Database(conn, execute_plugins=False)
            db.enable_wal()
        except sqlite3.DatabaseError as error:
            raise StepScopeError(f"cannot open database {self.path}: {error}") from None
        with self._lock:
            self._connections.append(conn)
        return db

    def close(self) -> None:
        """Close every thread's connection. The Store reconnects if used again."""
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()
        self._local = threading.local()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Everything inside commits together or not at all. Nested blocks join the outer one."""
        conn = self.conn
        if getattr(self._local, "depth", 0):
            self._local.depth += 1
            try:
                yield conn
            finally:
                self._local.depth -= 1
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            # The busy timeout ran out: another writer (a long import?) held the lock throughout.
            raise StepScopeError(
                f"database {self.path} is busy: another writer held it for"
                f" {self.timeout:g}s ({error})"
            ) from None
        self._local.depth = 1
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")
        finally:
            self._local.depth = 0

    def _migrate(self) -> None:
        db = self.db
        try:
            if not MIGRATIONS.pending(db):
                return
            # The immediate lock serialises two processes opening a fresh file at once; the
            # second one then finds nothing pending.
            with self.transaction():
                MIGRATIONS.apply(db)
        except sqlite3.DatabaseError as error:
            raise StepScopeError(f"cannot open database {self.path}: {error}") from None

    def applied_migrations(self) -> list[str]:
        return [migration.name for migration in MIGRATIONS.applied(self.db)]

    def _rows(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[dict]:
        cursor = self.conn.execute(sql, params)
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]

    def _one(self, sql: str, params: Sequence[Any] = ()) -> dict | None:
        rows = self._rows(sql, params)
        return rows[0] if rows else None

    def _scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        row = self.conn.execute(sql, params).fetchone()
        return None if row is None else row[0]

    def _insert_or_get(
        self, table: str, row: Mapping[str, Any], unique: Sequence[str]
    ) -> tuple[int, bool]:
        """Insert `row` unless a row with the same `unique` columns exists; (id, created).

        ON CONFLICT DO NOTHING, not INSERT OR IGNORE: the latter also silently drops rows that
        break a CHECK or NOT NULL constraint, and bad data must fail loudly.
        """
        columns = list(row)
        cursor = self.conn.execute(
            f"INSERT INTO {table} ({', '.join(columns)})"
            f" VALUES ({', '.join('?' for _ in columns)}) ON CONFLICT DO NOTHING",
            [row[c] for c in columns],
        )
        if cursor.rowcount == 1:
            return int(cursor.lastrowid), True
        where = " AND ".join(f"{c} = ?" for c in unique)
        existing = self._scalar(f"SELECT id FROM {table} WHERE {where}", [row[c] for c in unique])
        return int(existing), False
