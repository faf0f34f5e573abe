"""The SQLite store: schema, migrations and the queries that jobs, pages and the CLI share.

One SQLite file is the single source of truth. Every thread gets its own connection
(Streamlit reruns and job workers run on different threads, and a sqlite3 connection must not
be shared between threads that use it at the same time). The file is in WAL mode so readers
never block the writer, and every connection waits on a busy timeout instead of failing with
"database is locked" when another writer holds the lock.

Writes go through `Store.transaction()`, which takes the write lock up front
(`BEGIN IMMEDIATE`): a deferred transaction that reads first and writes later can fail with
SQLITE_BUSY without waiting, the immediate one simply queues.

Identity: problems, trajectories and segmentations have a content key (a hash of what they
are), so importing the same file twice finds the existing rows instead of adding copies.
Rollouts, verdicts and jobs have a random key assigned when they are created; a full dump
carries it, so re-importing a dump is also a no-op.

An annotation refers to a step row, and a step row belongs to one segmentation: re-segmenting
a trajectory adds a new segmentation with new step rows and leaves the old ones (and their
annotations) where they were.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from core.errors import StepScopeError
from core.steps import SPLITTERS, StepSpan, segment

DEFAULT_DB = Path("data") / "stepscope.db"
SAMPLE_DATASET = "sample"
# The sample set's rows carry this fixed stamp instead of the time a database was created, so
# that every fresh database holds identical rows and dumps of two databases compare equal.
SAMPLE_CREATED_AT = "2025-01-01T00:00:00.000+00:00"
RATINGS = (-1, 0, 1)
VERDICT_KINDS = ("step", "outcome", "critic")
JOB_STATUSES = ("queued", "running", "done", "failed", "cancelled")
# Chunk size for `IN (...)` lists: far below SQLite's variable limit on any build.
_IN_CHUNK = 500


def default_db_path() -> Path:
    """`$STEPSCOPE_DB`, else data/stepscope.db under the current directory."""
    return Path(os.environ.get("STEPSCOPE_DB") or DEFAULT_DB)


def now() -> str:
    """UTC timestamp as ISO 8601 text; sorts correctly as a string."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def new_key() -> str:
    return uuid.uuid4().hex


def content_key(*parts: Any) -> str:
    """Stable hash of JSON-serialisable parts (ASCII-escaped, so any str hashes)."""
    blob = json.dumps(parts, ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("ascii")).hexdigest()


def problem_key(dataset: str, question: str, gold: str | None) -> str:
    return content_key("problem", dataset, question, gold)


def segmentation_key(rule: str, spans: Sequence[StepSpan]) -> str:
    return content_key("segmentation", rule, [[s.start, s.end] for s in spans])


def _json(value: Any) -> str:
    return json.dumps(value if value is not None else {}, sort_keys=True)


# --- schema -----------------------------------------------------------------------------------

MIGRATIONS = Migrations("stepscope")

_SCHEMA_V1 = [
    """CREATE TABLE problems (
        id INTEGER PRIMARY KEY,
        key TEXT NOT NULL UNIQUE,
        dataset TEXT NOT NULL,
        question TEXT NOT NULL,
        gold TEXT,
        meta TEXT NOT NULL DEFAULT '{}',
        created_at TEXT NOT NULL
    )""",
    "CREATE INDEX problems_dataset ON problems(dataset)",
    """CREATE TABLE trajectories (
        id INTEGER PRIMARY KEY,
        key TEXT NOT NULL UNIQUE,
        problem_id INTEGER NOT NULL REFERENCES problems(id) ON DELETE CASCADE,
        source TEXT NOT NULL,
        model TEXT,
        policy_prompt TEXT,
        solution TEXT NOT NULL,
        final_answer TEXT,
        correct INTEGER CHECK (correct IN (0, 1)),
        meta TEXT NOT NULL DEFAULT '{}',
        current_segmentation_id INTEGER REFERENCES segmentations(id),
        created_at TEXT NOT NULL
    )""",
    "CREATE INDEX trajectories_problem ON trajectories(problem_id)",
    "CREATE INDEX trajectories_source_model ON trajectories(source, model)",
    """CREATE TABLE segmentations (
        id INTEGER PRIMARY KEY,
        trajectory_id INTEGER NOT NULL REFERENCES trajectories(id) ON DELETE CASCADE,
        rule TEXT NOT NULL,
        key TEXT NOT NULL,
        created_at TEXT NOT NULL,
        UNIQUE (trajectory_id, key)
    )""",
    # trajectory_id is denormalised onto steps: pages ask for "the steps of trajectory T".
    """CREATE TABLE steps (
        id INTEGER PRIMARY KEY,
        segmentation_id INTEGER NOT NULL REFERENCES segmentations(id) ON DELETE CASCADE,
        trajectory_id INTEGER NOT NULL REFERENCES trajectories(id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        text TEXT NOT NULL,
        start_char INTEGER NOT NULL,
        end_char INTEGER NOT NULL,
        UNIQUE (segmentation_id, idx)
    )""",
    "CREATE INDEX steps_trajectory ON steps(trajectory_id)",
    """CREATE TABLE jobs (
        id INTEGER PRIMARY KEY,
        key TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'queued'
            CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled')),
        manifest TEXT NOT NULL DEFAULT '{}',
        planned INTEGER NOT NULL DEFAULT 0,
        done INTEGER NOT NULL DEFAULT 0,
        tokens INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        created_at TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT,
        heartbeat_at TEXT
    )""",
    "CREATE INDEX jobs_status ON jobs(status)",
    """CREATE TABLE rollouts (
        id INTEGER PRIMARY KEY,
        key TEXT NOT NULL UNIQUE,
        step_id INTEGER NOT NULL REFERENCES steps(id) ON DELETE CASCADE,
        job_id INTEGER REFERENCES jobs(id) ON DELETE SET NULL,
        text TEXT NOT NULL,
        answer TEXT,
        correct INTEGER NOT NULL CHECK (correct IN (0, 1)),
        num_tokens INTEGER,
        finish_reason TEXT,
        seed INTEGER,
        model TEXT,
        created_at TEXT NOT NULL
    )""",
    "CREATE INDEX rollouts_step ON rollouts(step_id)",
    "CREATE INDEX rollouts_job ON rollouts(job_id)",
    # Values are always computed from the stored rollouts (never cached), per policy model:
    # pooling continuations of two different policies would measure neither.
    """CREATE VIEW step_values AS
        SELECT step_id, model,
               COUNT(*) AS n,
               SUM(correct) AS n_correct,
               CAST(SUM(correct) AS REAL) / COUNT(*) AS soft,
               MAX(correct) AS hard
        FROM rollouts GROUP BY step_id, model""",
    """CREATE TABLE verdicts (
        id INTEGER PRIMARY KEY,
        key TEXT NOT NULL UNIQUE,
        trajectory_id INTEGER NOT NULL REFERENCES trajectories(id) ON DELETE CASCADE,
        step_id INTEGER REFERENCES steps(id) ON DELETE CASCADE,
        job_id INTEGER REFERENCES jobs(id) ON DELETE SET NULL,
        judge TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('step', 'outcome', 'critic')),
        p_yes REAL,
        mass REAL,
        raw TEXT,
        template TEXT,
        template_hash TEXT,
        created_at TEXT NOT NULL,
        CHECK (kind != 'step' OR step_id IS NOT NULL),
        CHECK (kind != 'outcome' OR step_id IS NULL)
    )""",
    "CREATE INDEX verdicts_step ON verdicts(step_id)",
    "CREATE INDEX verdicts_trajectory ON verdicts(trajectory_id)",
    """CREATE TABLE annotators (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL
    )""",
    # The UNIQUE index (annotator_id, step_id) also serves "annotations by annotator".
    """CREATE TABLE annotations (
        id INTEGER PRIMARY KEY,
        annotator_id INTEGER NOT NULL REFERENCES annotators(id) ON DELETE CASCADE,
        step_id INTEGER NOT NULL REFERENCES steps(id) ON DELETE CASCADE,
        rating INTEGER CHECK (rating IN (-1, 0, 1)),
        first_error INTEGER NOT NULL DEFAULT 0 CHECK (first_error IN (0, 1)),
        flagged INTEGER NOT NULL DEFAULT 0 CHECK (flagged IN (0, 1)),
        note TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        UNIQUE (annotator_id, step_id)
    )""",
    "CREATE INDEX annotations_step ON annotations(step_id)",
]


@MIGRATIONS(name="0001_schema")
def _schema_v1(db: Database) -> None:
    for statement in _SCHEMA_V1:
        db.execute(statement)


@MIGRATIONS(name="0002_sample_set")
def _sample_set(db: Database) -> None:
    # A data migration, so the set is loaded exactly once: a user who deletes it keeps it gone.
    from core.samples import load_sample_problems

    for problem in load_sample_problems():
        key = problem_key(SAMPLE_DATASET, problem.question, problem.gold)
        db.execute(
            "INSERT INTO problems (key, dataset, question, gold, meta, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [key, SAMPLE_DATASET, problem.question, problem.gold, _json(problem.meta),
             SAMPLE_CREATED_AT],
        )


# --- rows -------------------------------------------------------------------------------------


def _as_bool(value: Any) -> bool | None:
    return None if value is None else bool(value)


def _as_int_bool(value: bool | None) -> int | None:
    return None if value is None else int(bool(value))


def _decode(row: dict, *bool_columns: str, json_columns: Sequence[str] = ("meta",)) -> dict:
    for column in bool_columns:
        if column in row:
            row[column] = _as_bool(row[column])
    for column in json_columns:
        if column in row and isinstance(row[column], str):
            row[column] = json.loads(row[column])
    return row


def _chunks(items: Sequence[int], size: int = _IN_CHUNK) -> Iterator[Sequence[int]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _check_spans(solution: str, spans: Sequence[StepSpan]) -> None:
    previous_end = 0
    for index, span in enumerate(spans):
        in_order = previous_end <= span.start <= span.end <= len(solution)
        if not in_order or solution[span.start : span.end] != span.text:
            raise StepScopeError(
                f"step {index} does not match the solution text at [{span.start}:{span.end}]"
            )
        previous_end = span.end


_UNSET: Any = object()
_JOB_FIELDS = frozenset(
    {"status", "manifest", "planned", "done", "tokens", "error", "started_at", "finished_at",
     "heartbeat_at"}
)


class Store:
    """A StepScope database file. Safe to share between threads; each gets its own connection."""

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

    @classmethod
    def open(cls, path: str | os.PathLike[str] | None = None, **kwargs: Any) -> "Store":
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

    # --- problems ---------------------------------------------------------------------------

    def add_problem(
        self,
        dataset: str,
        question: str,
        gold: str | None = None,
        *,
        meta: Mapping[str, Any] | None = None,
        created_at: str | None = None,
    ) -> int:
        """The id of the problem (dataset, question, gold), created if new."""
        row = {
            "key": problem_key(dataset, question, gold),
            "dataset": dataset,
            "question": question,
            "gold": gold,
            "meta": _json(meta),
            "created_at": created_at or now(),
        }
        with self.transaction():
            problem_id, _ = self._insert_or_get("problems", row, ["key"])
        return problem_id

    def get_problem(self, problem_id: int) -> dict | None:
        row = self._one("SELECT * FROM problems WHERE id = ?", [problem_id])
        return _decode(row) if row else None

    def list_problems(
        self, *, dataset: str | None = None, limit: int | None = None, offset: int = 0
    ) -> list[dict]:
        where, params = ("WHERE dataset = ?", [dataset]) if dataset is not None else ("", [])
        rows = self._rows(
            f"SELECT * FROM problems {where} ORDER BY id LIMIT ? OFFSET ?",
            [*params, -1 if limit is None else limit, offset],
        )
        return [_decode(row) for row in rows]

    def datasets(self) -> list[dict]:
        """Each dataset with its number of problems."""
        return self._rows(
            "SELECT dataset, COUNT(*) AS problems FROM problems GROUP BY dataset ORDER BY dataset"
        )

    # --- trajectories and segmentations -----------------------------------------------------

    def insert_trajectory(
        self,
        problem_id: int,
        solution: str,
        *,
        source: str,
        model: str | None = None,
        policy_prompt: str | None = None,
        final_answer: str | None = None,
        correct: bool | None = None,
        meta: Mapping[str, Any] | None = None,
        created_at: str | None = None,
    ) -> tuple[int, bool]:
        """The trajectory row alone, without a segmentation: (id, created). For importers."""
        pkey = self._scalar("SELECT key FROM problems WHERE id = ?", [problem_id])
        if pkey is None:
            raise StepScopeError(f"problem {problem_id} does not exist")
        row = {
            "key": content_key("trajectory", pkey, source, model, policy_prompt, solution),
            "problem_id": problem_id,
            "source": source,
            "model": model,
            "policy_prompt": policy_prompt,
            "solution": solution,
            "final_answer": final_answer,
            "correct": _as_int_bool(correct),
            "meta": _json(meta),
            "created_at": created_at or now(),
        }
        with self.transaction():
            return self._insert_or_get("trajectories", row, ["key"])

    def add_trajectory(
        self,
        problem_id: int,
        solution: str,
        *,
        source: str,
        rule: str = "line",
        spans: Sequence[StepSpan] | None = None,
        model: str | None = None,
        policy_prompt: str | None = None,
        final_answer: str | None = None,
        correct: bool | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> int:
        """The id of this trajectory, created (and segmented by `rule`) if new.

        `spans` gives pre-split steps (rule "pre-split"); otherwise the solution is cut by
        `rule`. An existing trajectory keeps its current segmentation.
        """
        with self.transaction():
            trajectory_id, created = self.insert_trajectory(
                problem_id, solution, source=source, model=model, policy_prompt=policy_prompt,
                final_answer=final_answer, correct=correct, meta=meta,
            )
            self.add_segmentation(trajectory_id, rule, spans, make_current=created)
        return trajectory_id

    def add_segmentation(
        self,
        trajectory_id: int,
        rule: str,
        spans: Sequence[StepSpan] | None = None,
        *,
        make_current: bool = True,
        created_at: str | None = None,
    ) -> int:
        """Segment a trajectory by `rule` (or the given spans); returns the segmentation id.

        The same rule and spans as an existing segmentation return that one. Step rows (and
        the annotations on them) of other segmentations are never touched.
        """
        if rule not in SPLITTERS:
            raise StepScopeError(
                f"unknown step splitter {rule!r}; choose one of: {', '.join(SPLITTERS)}"
            )
        solution = self._scalar("SELECT solution FROM trajectories WHERE id = ?", [trajectory_id])
        if solution is None:
            raise StepScopeError(f"trajectory {trajectory_id} does not exist")
        if spans is None:
            if rule == "pre-split":
                raise StepScopeError("pre-split steps need their spans")
            spans = segment(solution, rule)
        _check_spans(solution, spans)
        row = {
            "trajectory_id": trajectory_id,
            "rule": rule,
            "key": segmentation_key(rule, spans),
            "created_at": created_at or now(),
        }
        with self.transaction() as conn:
            segmentation_id, created = self._insert_or_get(
                "segmentations", row, ["trajectory_id", "key"]
            )
            if created:
                conn.executemany(
                    "INSERT INTO steps (segmentation_id, trajectory_id, idx, text, start_char,"
                    " end_char) VALUES (?, ?, ?, ?, ?, ?)",
                    [(segmentation_id, trajectory_id, i, s.text, s.start, s.end)
                     for i, s in enumerate(spans)],
                )
            if make_current:
                self.set_current_segmentation(trajectory_id, segmentation_id)
        return segmentation_id

    def resegment(self, trajectory_id: int, rule: str) -> int:
        """Cut the trajectory by another rule and make that the current segmentation."""
        return self.add_segmentation(trajectory_id, rule)

    def set_current_segmentation(self, trajectory_id: int, segmentation_id: int) -> None:
        owner = self._scalar(
            "SELECT trajectory_id FROM segmentations WHERE id = ?", [segmentation_id]
        )
        if owner != trajectory_id:
            raise StepScopeError(
                f"segmentation {segmentation_id} is not one of trajectory {trajectory_id}"
            )
        with self.transaction() as conn:
            conn.execute(
                "UPDATE trajectories SET current_segmentation_id = ? WHERE id = ?",
                [segmentation_id, trajectory_id],
            )

    def get_trajectory(self, trajectory_id: int) -> dict | None:
        """The trajectory with its problem (dataset, question, gold) and current segmentation."""
        row = self._one(
            """SELECT t.*, p.dataset, p.question, p.gold,
                      t.current_segmentation_id AS segmentation_id, s.rule
               FROM trajectories t
               JOIN problems p ON p.id = t.problem_id
               LEFT JOIN segmentations s ON s.id = t.current_segmentation_id
               WHERE t.id = ?""",
            [trajectory_id],
        )
        return _decode(row, "correct") if row else None

    def list_trajectories(
        self,
        *,
        dataset: str | None = None,
        problem_id: int | None = None,
        source: str | None = None,
        model: str | None = None,
        correct: bool | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[dict]:
        """Trajectories (without meta and prompt) with their problem and current step count."""
        where, params = self._trajectory_filters(dataset, problem_id, source, model, correct)
        rows = self._rows(
            f"""SELECT t.id, t.problem_id, p.dataset, p.question, p.gold, t.source, t.model,
                       t.solution, t.final_answer, t.correct,
                       t.current_segmentation_id AS segmentation_id, s.rule,
                       (SELECT COUNT(*) FROM steps st
                        WHERE st.segmentation_id = t.current_segmentation_id) AS n_steps,
                       t.created_at
                FROM trajectories t
                JOIN problems p ON p.id = t.problem_id
                LEFT JOIN segmentations s ON s.id = t.current_segmentation_id
                {where} ORDER BY t.id LIMIT ? OFFSET ?""",
            [*params, -1 if limit is None else limit, offset],
        )
        return [_decode(row, "correct", json_columns=()) for row in rows]

    def count_trajectories(
        self,
        *,
        dataset: str | None = None,
        problem_id: int | None = None,
        source: str | None = None,
        model: str | None = None,
        correct: bool | None = None,
    ) -> int:
        where, params = self._trajectory_filters(dataset, problem_id, source, model, correct)
        return int(self._scalar(
            f"SELECT COUNT(*) FROM trajectories t JOIN problems p ON p.id = t.problem_id {where}",
            params,
        ))

    @staticmethod
    def _trajectory_filters(
        dataset: str | None, problem_id: int | None, source: str | None,
        model: str | None, correct: bool | None,
    ) -> tuple[str, list[Any]]:
        clauses, params = [], []
        for clause, value in (
            ("p.dataset = ?", dataset),
            ("t.problem_id = ?", problem_id),
            ("t.source = ?", source),
            ("t.model = ?", model),
            ("t.correct = ?", _as_int_bool(correct)),
        ):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        return ("WHERE " + " AND ".join(clauses) if clauses else ""), params

    def segmentations(self, trajectory_id: int) -> list[dict]:
        """All segmentations of a trajectory, oldest first, with `current` and step counts."""
        rows = self._rows(
            """SELECT s.*, (s.id = t.current_segmentation_id) AS current,
                      (SELECT COUNT(*) FROM steps st WHERE st.segmentation_id = s.id) AS n_steps
               FROM segmentations s JOIN trajectories t ON t.id = s.trajectory_id
               WHERE s.trajectory_id = ? ORDER BY s.id""",
            [trajectory_id],
        )
        return [_decode(row, "current", json_columns=()) for row in rows]

    def steps(self, trajectory_id: int, segmentation_id: int | None = None) -> list[dict]:
        """Steps in order (current segmentation unless one is named)."""
        if segmentation_id is None:
            segmentation_id = self._scalar(
                "SELECT current_segmentation_id FROM trajectories WHERE id = ?", [trajectory_id]
            )
        return self._rows(
            "SELECT * FROM steps WHERE segmentation_id = ? AND trajectory_id = ? ORDER BY idx",
            [segmentation_id, trajectory_id],
        )

    def step_spans(self, trajectory_id: int, segmentation_id: int | None = None) -> list[StepSpan]:
        return [
            StepSpan(row["text"], row["start_char"], row["end_char"])
            for row in self.steps(trajectory_id, segmentation_id)
        ]

    def get_step(self, step_id: int) -> dict | None:
        return self._one("SELECT * FROM steps WHERE id = ?", [step_id])

    # --- annotations ------------------------------------------------------------------------

    def annotator_id(self, name: str) -> int:
        """The id of annotator `name`, created if new."""
        if not isinstance(name, str) or not name.strip():
            raise StepScopeError("an annotator needs a non-empty name")
        with self.transaction():
            annotator_id, _ = self._insert_or_get(
                "annotators", {"name": name, "created_at": now()}, ["name"]
            )
        return annotator_id

    def annotators(self) -> list[dict]:
        return self._rows(
            """SELECT n.id, n.name, n.created_at, COUNT(a.id) AS annotations
               FROM annotators n LEFT JOIN annotations a ON a.annotator_id = n.id
               GROUP BY n.id ORDER BY n.name"""
        )

    def save_annotation(
        self,
        annotator: str,
        step_id: int,
        *,
        rating: int | None = _UNSET,
        first_error: bool = _UNSET,
        flagged: bool = _UNSET,
        note: str | None = _UNSET,
    ) -> dict:
        """Create or update one annotator's label on one step; committed when this returns.

        Only the fields passed change (a click on a rating keeps the note). Marking a step as
        the first error clears that annotator's first-error mark on the other steps of the
        same segmentation: a solution has one earliest error.
        """
        changes = {
            name: value
            for name, value in (
                ("rating", rating), ("first_error", first_error), ("flagged", flagged),
                ("note", note),
            )
            if value is not _UNSET
        }
        self._check_annotation(changes)
        stamp = now()
        values = {"rating": None, "first_error": False, "flagged": False, "note": None, **changes}
        update = ", ".join(f"{column} = excluded.{column}" for column in [*changes, "updated_at"])
        with self.transaction() as conn:
            annotator_id = self.annotator_id(annotator)
            self._require_step(step_id)
            conn.execute(
                f"""INSERT INTO annotations (annotator_id, step_id, rating, first_error,
                    flagged, note, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                    ON CONFLICT (annotator_id, step_id) DO UPDATE SET {update}""",
                [annotator_id, step_id, values["rating"], int(values["first_error"]),
                 int(values["flagged"]), values["note"], stamp, stamp],
            )
            if changes.get("first_error"):
                self._clear_other_first_errors(annotator_id, step_id, stamp)
        return self.annotation(annotator, step_id)

    def _clear_other_first_errors(self, annotator_id: int, step_id: int, stamp: str) -> None:
        self.conn.execute(
            """UPDATE annotations SET first_error = 0, updated_at = ?
               WHERE annotator_id = ? AND first_error = 1 AND step_id != ?
                 AND step_id IN (SELECT id FROM steps WHERE segmentation_id =
                                 (SELECT segmentation_id FROM steps WHERE id = ?))""",
            [stamp, annotator_id, step_id, step_id],
        )

    def add_annotation(
        self,
        annotator: str,
        step_id: int,
        *,
        rating: int | None = None,
        first_error: bool = False,
        flagged: bool = False,
        note: str | None = None,
        created_at: str | None = None,
        updated_at: str | None = None,
    ) -> bool:
        """Insert an imported annotation unless this annotator already labelled the step.

        Imports never overwrite: re-importing a file must not clobber labels made in the app.
        Returns whether a row was added.
        """
        self._check_annotation(
            {"rating": rating, "first_error": first_error, "flagged": flagged, "note": note}
        )
        created_at = created_at or now()
        with self.transaction() as conn:
            annotator_id = self.annotator_id(annotator)
            self._require_step(step_id)
            cursor = conn.execute(
                """INSERT INTO annotations (annotator_id, step_id, rating, first_error,
                   flagged, note, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT DO NOTHING""",
                [annotator_id, step_id, rating, int(first_error), int(flagged), note,
                 created_at, updated_at or created_at],
            )
        return cursor.rowcount == 1

    @staticmethod
    def _check_annotation(fields: Mapping[str, Any]) -> None:
        rating = fields.get("rating")
        if rating is not None and (isinstance(rating, bool) or rating not in RATINGS):
            raise StepScopeError(f"a rating is -1, 0, +1 or empty, not {rating!r}")
        for flag in ("first_error", "flagged"):
            if flag in fields and not isinstance(fields[flag], bool):
                raise StepScopeError(f"{flag} must be true or false, not {fields[flag]!r}")
        note = fields.get("note")
        if note is not None and not isinstance(note, str):
            raise StepScopeError(f"a note must be text, not {type(note).__name__}")

    def _require_step(self, step_id: int) -> None:
        if self._scalar("SELECT 1 FROM steps WHERE id = ?", [step_id]) is None:
            raise StepScopeError(f"step {step_id} does not exist")

    def annotation(self, annotator: str, step_id: int) -> dict | None:
        row = self._one(
            """SELECT a.*, n.name AS annotator FROM annotations a
               JOIN annotators n ON n.id = a.annotator_id
               WHERE n.name = ? AND a.step_id = ?""",
            [annotator, step_id],
        )
        return _decode(row, "first_error", "flagged", json_columns=()) if row else None

    def annotations(
        self,
        trajectory_id: int,
        *,
        annotator: str | None = None,
        segmentation_id: int | None = None,
    ) -> list[dict]:
        """Annotations on a trajectory's steps (every segmentation unless one is named)."""
        clauses, params = ["s.trajectory_id = ?"], [trajectory_id]
        if annotator is not None:
            clauses.append("n.name = ?")
            params.append(annotator)
        if segmentation_id is not None:
            clauses.append("s.segmentation_id = ?")
            params.append(segmentation_id)
        rows = self._rows(
            f"""SELECT a.id, a.step_id, s.segmentation_id, s.idx, n.name AS annotator,
                       a.rating, a.first_error, a.flagged, a.note, a.created_at, a.updated_at
                FROM annotations a
                JOIN steps s ON s.id = a.step_id
                JOIN annotators n ON n.id = a.annotator_id
                WHERE {' AND '.join(clauses)}
                ORDER BY s.segmentation_id, s.idx, n.name""",
            params,
        )
        return [_decode(row, "first_error", "flagged", json_columns=()) for row in rows]

    # --- rollouts and step values -----------------------------------------------------------

    def add_rollouts(self, rollouts: Iterable[Mapping[str, Any]]) -> int:
        """Insert rollouts in one transaction; returns how many were new.

        Each needs step_id, text and correct; optional: answer, num_tokens, finish_reason,
        seed, model, job_id, key (a rollout with a key already stored is skipped), created_at.
        """
        stamp = now()
        rows = [
            (
                r.get("key") or new_key(), r["step_id"], r.get("job_id"), r["text"],
                r.get("answer"), int(bool(r["correct"])), r.get("num_tokens"),
                r.get("finish_reason"), r.get("seed"), r.get("model"), r.get("created_at") or stamp,
            )
            for r in rollouts
        ]
        with self.transaction() as conn:
            before = conn.total_changes
            try:
                conn.executemany(
                    """INSERT INTO rollouts (key, step_id, job_id, text, answer, correct,
                       num_tokens, finish_reason, seed, model, created_at)
                       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING""",
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

    # --- verdicts ---------------------------------------------------------------------------

    def add_verdicts(self, verdicts: Iterable[Mapping[str, Any]]) -> int:
        """Insert judge verdicts in one transaction; returns how many were new.

        Each needs judge, kind (step|outcome|critic) and step_id or trajectory_id; optional:
        p_yes, mass, raw, template, template_hash, job_id, key, created_at.
        """
        stamp = now()
        with self.transaction() as conn:
            rows = [self._verdict_row(v, stamp) for v in verdicts]
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
            f"""SELECT v.*, s.idx, s.segmentation_id, j.key AS job_key FROM verdicts v
                LEFT JOIN steps s ON s.id = v.step_id
                LEFT JOIN jobs j ON j.id = v.job_id
                WHERE {' AND '.join(clauses)} ORDER BY v.id""",
            params,
        )

    def judges(self) -> list[str]:
        """Names of the judge models that gave verdicts."""
        rows = self._rows("SELECT DISTINCT judge FROM verdicts ORDER BY judge")
        return [row["judge"] for row in rows]

    # --- jobs -------------------------------------------------------------------------------

    def create_job(
        self, kind: str, manifest: Mapping[str, Any], *, planned: int = 0, key: str | None = None
    ) -> int:
        with self.transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO jobs (key, kind, manifest, planned, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                [key or new_key(), kind, _json(manifest), planned, now()],
            )
        return int(cursor.lastrowid)

    def insert_job(
        self,
        *,
        key: str,
        kind: str,
        status: str = "queued",
        manifest: Any = None,
        planned: int = 0,
        done: int = 0,
        tokens: int = 0,
        error: str | None = None,
        created_at: str | None = None,
        started_at: str | None = None,
        finished_at: str | None = None,
        heartbeat_at: str | None = None,
    ) -> tuple[int, bool]:
        """A complete job row (from a dump), unless its key is stored: (id, created)."""
        if status not in JOB_STATUSES:
            raise StepScopeError(f"job status {status!r} is not one of {', '.join(JOB_STATUSES)}")
        row = {
            "key": key, "kind": kind, "status": status, "manifest": _json(manifest),
            "planned": planned, "done": done, "tokens": tokens, "error": error,
            "created_at": created_at or now(), "started_at": started_at,
            "finished_at": finished_at, "heartbeat_at": heartbeat_at,
        }
        with self.transaction():
            return self._insert_or_get("jobs", row, ["key"])

    def get_job(self, job_id: int) -> dict | None:
        row = self._one("SELECT * FROM jobs WHERE id = ?", [job_id])
        return _decode(row, json_columns=("manifest",)) if row else None

    def job_id_for_key(self, key: str) -> int | None:
        return self._scalar("SELECT id FROM jobs WHERE key = ?", [key])

    def update_job(self, job_id: int, **fields: Any) -> None:
        """Set job columns: status, manifest, planned, done, tokens, error, *_at."""
        unknown = set(fields) - _JOB_FIELDS
        if unknown:
            raise ValueError(f"not job fields: {', '.join(sorted(unknown))}")
        if "status" in fields and fields["status"] not in JOB_STATUSES:
            raise ValueError(f"job status {fields['status']!r} is not one of {JOB_STATUSES}")
        if "manifest" in fields:
            fields["manifest"] = _json(fields["manifest"])
        if not fields:
            return
        assignments = ", ".join(f"{name} = ?" for name in fields)
        with self.transaction() as conn:
            conn.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", [*fields.values(), job_id])

    def list_jobs(self, *, status: str | None = None, limit: int | None = None) -> list[dict]:
        where, params = ("WHERE status = ?", [status]) if status else ("", [])
        rows = self._rows(
            f"SELECT * FROM jobs {where} ORDER BY id DESC LIMIT ?",
            [*params, -1 if limit is None else limit],
        )
        return [_decode(row, json_columns=("manifest",)) for row in rows]

    def job_status(self, job_id: int) -> str | None:
        return self._scalar("SELECT status FROM jobs WHERE id = ?", [job_id])

    def claim_job(self, job_id: int | None = None, stale_after: float = 30.0) -> dict | None:
        """Mark one job running and return it: the given one, or the oldest queued or abandoned
        (running with a heartbeat older than `stale_after` seconds).

        The UPDATE is the lock: of two runners racing for a job, only one sees its row change.
        """
        stale = (datetime.now(timezone.utc) - timedelta(seconds=stale_after)).isoformat(timespec="milliseconds")
        claimable = "(status = 'queued' OR (status = 'running' AND (heartbeat_at IS NULL OR heartbeat_at < ?)))"
        with self.transaction() as conn:
            if job_id is None:
                row = conn.execute(f"SELECT id FROM jobs WHERE {claimable} ORDER BY id LIMIT 1", [stale]).fetchone()
                if row is None:
                    return None
                job_id = row[0]
            stamp = now()
            changed = conn.execute(
                f"UPDATE jobs SET status = 'running', heartbeat_at = ?, error = NULL,"
                f" started_at = COALESCE(started_at, ?) WHERE id = ? AND {claimable}",
                [stamp, stamp, job_id, stale],
            ).rowcount
        return self.get_job(job_id) if changed else None

    def cancel_job(self, job_id: int) -> bool:
        """Mark a queued or running job cancelled; False when it is neither."""
        with self.transaction() as conn:
            changed = conn.execute(
                "UPDATE jobs SET status = 'cancelled', finished_at = ? WHERE id = ? AND status IN ('queued', 'running')",
                [now(), job_id],
            ).rowcount
        return bool(changed)

    def job_rollout_totals(self, job_id: int) -> tuple[int, int]:
        """(rollouts, tokens) this job has stored, counted from the rollouts themselves."""
        row = self.db.execute(
            "SELECT COUNT(*), COALESCE(SUM(num_tokens), 0) FROM rollouts WHERE job_id = ?", [job_id]
        ).fetchone()
        return int(row[0]), int(row[1])

    def problems_done_by_job(self, job_key: str) -> set[int]:
        """Problems a generate job has stored solutions for (its key is in their meta)."""
        rows = self.db.execute(
            "SELECT DISTINCT problem_id FROM trajectories WHERE json_extract(meta, '$.job') = ?", [job_key]
        ).fetchall()
        return {row[0] for row in rows}

    def verdict_targets_of_job(self, job_id: int) -> list[tuple[int, int | None]]:
        """(trajectory, step) of every verdict a judge job stored."""
        return [tuple(r) for r in self.db.execute(
            "SELECT trajectory_id, step_id FROM verdicts WHERE job_id = ?", [job_id]).fetchall()]  # fmt: skip

    def job_verdicts_with_outcome(self, job_id: int) -> list[tuple]:
        """(kind, p_yes, mass, raw, trajectory correct) of every verdict a judge job stored."""
        return [tuple(r) for r in self.db.execute(
            """SELECT v.kind, v.p_yes, v.mass, v.raw, t.correct FROM verdicts v
               JOIN trajectories t ON t.id = v.trajectory_id WHERE v.job_id = ?""",
            [job_id],
        ).fetchall()]  # fmt: skip

    # --- summary ----------------------------------------------------------------------------

    def counts(self) -> dict[str, Any]:
        """Row counts for `db info`, plus annotations per annotator name."""
        tables = ("problems", "trajectories", "segmentations", "steps", "rollouts", "verdicts",
                  "annotations", "annotators", "jobs")
        counts: dict[str, Any] = {
            table: int(self._scalar(f"SELECT COUNT(*) FROM {table}")) for table in tables
        }
        counts["annotations_by_annotator"] = {
            row["name"]: row["annotations"] for row in self.annotators()
        }
        return counts
