"""Imports that commit in batches and still import all or nothing (issue 22).

A large file (100K trajectories, millions of rows) must not hold the write lock for minutes: a
label saved in the app meanwhile would wait out the busy timeout and fail. So an import commits
one batch (a few thousand rows) per short transaction, written set-wise (one `executemany` per
table per batch; ids resolved by content key with one query per table), and stays atomic for the
user through a small undo log:

- `begin_import` adds a row to `imports` (status 'running') and takes a lock on byte <id> of
  `<database>-imports.lock` (fcntl.lockf) for as long as the importing process lives.
- Every batch records, in the same transaction, the range of row ids it added to each table
  (`import_ranges`). SQLite gives a new row max(rowid) + 1, and nobody else writes while the batch
  holds the write lock, so the range holds exactly that batch's rows.
- `finish_import` marks the import 'done' and drops its ranges in one short transaction: from then
  on its rows are ordinary rows. An error (bad record, Ctrl-C) before that undoes it at once
  (`undo_import`); a killed process (kill -9, power loss) leaves the row 'running' with nobody
  holding its lock, and the next `Store` opened on the file (or the next import) undoes it.
- Undoing deletes the ranges child tables first, a few thousand ids per transaction, lowest ids
  first, shrinking the range in the same transaction: a killed undo resumes where it stopped, and
  the highest id of a range stays in place until its range is gone (SQLite could hand a deleted
  top id to a new row).

While an import runs, its committed batches are visible (a page may show half an imported file);
whatever the app attaches to those rows meanwhile (a label on an imported step) goes with them if
the import is undone. An annotator or verifier name that the app used meanwhile is kept.
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from core.errors import StepScopeError
from core.store.annotations import RESERVED_ANNOTATOR_NAMES, AnnotationQueries, _check_duration
from core.store.connection import ConnectionBase
from core.store.keys import now
from core.store.nodes import child_key, root_key
from core.store.rows import _as_int_bool, _json
from core.store.verifier_identity import legacy_verifier_kind

try:
    import fcntl
except ImportError:  # no POSIX locks (Windows): a killed import is then not undone on open
    fcntl = None  # type: ignore[assignment]

VERDICT_KINDS = ("step", "outcome", "critic")
# Every table an import writes, children first: the order an undo deletes in.
# (searches first: their candidates name nodes; their events and candidates go with them, by cascade)
IMPORT_TABLES = ("searches", "annotations", "trajectory_labels", "rollouts", "verdicts", "steps", "trajectories",
                 "segmentations", "nodes", "problems", "annotators", "verifiers", "jobs")  # fmt: skip
UNDO_CHUNK = 5000
# Names the app may have started using during the import stay (their rows would be orphaned).
_KEEP_IF_USED = {
    "annotators": " AND NOT EXISTS (SELECT 1 FROM annotations a WHERE a.annotator_id = annotators.id)"
                  " AND NOT EXISTS (SELECT 1 FROM trajectory_labels l WHERE l.annotator_id = annotators.id)",
    "verifiers": " AND NOT EXISTS (SELECT 1 FROM verdicts v WHERE v.judge = verifiers.name)",
}  # fmt: skip


class ImportRowError(StepScopeError):
    """A row of the file the store cannot take; `line` is where it is in the file."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line


@dataclass
class ImportBatch:
    """One batch of an import, flattened. Rows refer to each other by content key, never by id
    (the store resolves ids set-wise); each is a dict with the `line` of the file it came from.

    problems: key, dataset, question, gold, meta, created_at
    trajectories: key, problem_key, source, model, policy_prompt, solution, final_answer, correct,
        meta, created_at, current (the key of its current segmentation)
    segmentations: trajectory_key, problem_key, key, rule, created_at, steps [(text, start, end)]
    annotations, rollouts, step verdicts: trajectory_key, segmentation_key, idx, and the row's fields
    (a whole-solution verdict has segmentation_key None); labels: trajectory_key and its fields;
    annotators: (line, name) in the order they first appear; jobs: the job row's fields.
    The rollout tree beyond the trajectories' steps (each with problem_key): nodes (key, parent
    key, text; parents first), tree_rollouts (a rollout's fields and its node's key), marks
    (rollout key, selected, first_error, branch trajectory key, job, updated_at) and branches
    (trajectory key, its parent node and rollout keys, and file_node: the node key the file
    wrote, which its meta may name). searches: a search's fields (core.formats.records.Search), with
    problem_key, and its candidates' node and trajectory keys (core.store.searches writes them).
    """

    jobs: list[dict] = field(default_factory=list)
    problems: list[dict] = field(default_factory=list)
    trajectories: list[dict] = field(default_factory=list)
    segmentations: list[dict] = field(default_factory=list)
    annotators: list[tuple[int, str]] = field(default_factory=list)
    annotations: list[dict] = field(default_factory=list)
    rollouts: list[dict] = field(default_factory=list)
    verdicts: list[dict] = field(default_factory=list)
    labels: list[dict] = field(default_factory=list)
    nodes: list[dict] = field(default_factory=list)
    tree_rollouts: list[dict] = field(default_factory=list)
    marks: list[dict] = field(default_factory=list)
    branches: list[dict] = field(default_factory=list)
    searches: list[dict] = field(default_factory=list)
    rows: int = 0  # rows it will write, roughly (the batch size counts these)


# --- who is importing: a POSIX lock per import, held by its process --------------------------

_LOCK_FDS: dict[str, int] = {}  # lock file -> descriptor, open for the life of the process
_MINE: set[tuple[str, int]] = set()  # (lock file, import id) of the imports this process runs


def _lock_file(db_path: Path) -> str:
    return str(Path(f"{db_path}-imports.lock").resolve())


def _lock_fd(lock_file: str) -> int:
    # One descriptor per file per process, never closed: closing any descriptor of a file drops
    # every POSIX lock the process holds on it.
    if lock_file not in _LOCK_FDS:
        _LOCK_FDS[lock_file] = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    return _LOCK_FDS[lock_file]


def _try_lock(lock_file: str, import_id: int) -> bool:
    try:
        fcntl.lockf(_lock_fd(lock_file), fcntl.LOCK_EX | fcntl.LOCK_NB, 1, import_id)
    except OSError:
        return False
    return True


def _unlock(lock_file: str, import_id: int) -> None:
    fcntl.lockf(_lock_fd(lock_file), fcntl.LOCK_UN, 1, import_id)


def _json_list(values: Iterable[Any]) -> str:
    return json.dumps(list(values))


class ImportQueries(ConnectionBase):
    """Batched, undoable imports: begin, write a batch, finish or undo, recover on open."""

    def _after_open(self) -> None:
        super()._after_open()
        self.recover_imports()

    def begin_import(self, path: str | os.PathLike[str], format_name: str) -> int:
        """A new running import; this process holds its lock until it finishes or is undone."""
        lock_file = _lock_file(self.path)
        with self.transaction() as conn:
            import_id = int(conn.execute(
                "INSERT INTO imports (path, format, status, pid, started_at) VALUES (?, ?, 'running', ?, ?)",
                [str(path), format_name, os.getpid(), now()],
            ).lastrowid)  # fmt: skip
            # Locked before the row is visible to anyone: no other process can take it for dead.
            if fcntl is not None and not _try_lock(lock_file, import_id):
                raise StepScopeError(f"cannot lock {lock_file} for import {import_id}")
        _MINE.add((lock_file, import_id))
        return import_id

    def finish_import(self, import_id: int) -> None:
        """The import's rows become ordinary rows (its ranges go; its row stays, as history)."""
        with self.transaction() as conn:
            conn.execute("DELETE FROM import_ranges WHERE import_id = ?", [import_id])
            conn.execute("UPDATE imports SET status = 'done', finished_at = ? WHERE id = ?", [now(), import_id])
        self._release(import_id)

    def undo_import(self, import_id: int) -> None:
        """Delete every row the import added, in short transactions; then its row."""
        conn = self.conn
        for table in IMPORT_TABLES:
            keep = _KEEP_IF_USED.get(table, "")
            ranges = conn.execute(
                "SELECT id, first_id, last_id FROM import_ranges WHERE import_id = ? AND tbl = ? ORDER BY id",
                [import_id, table],
            ).fetchall()
            for range_id, first, last in ranges:
                while first <= last:
                    end = min(first + UNDO_CHUNK - 1, last)
                    with self.transaction():
                        if table == "segmentations":  # a user may have made one current meanwhile
                            conn.execute("UPDATE trajectories SET current_segmentation_id = NULL"
                                         " WHERE current_segmentation_id BETWEEN ? AND ?", [first, end])  # fmt: skip
                        conn.execute(f"DELETE FROM {table} WHERE rowid BETWEEN ? AND ?{keep}", [first, end])
                        if end < last:
                            conn.execute("UPDATE import_ranges SET first_id = ? WHERE id = ?", [end + 1, range_id])
                        else:
                            conn.execute("DELETE FROM import_ranges WHERE id = ?", [range_id])
                    first = end + 1
        with self.transaction() as conn:
            conn.execute("DELETE FROM imports WHERE id = ?", [import_id])
        self._release(import_id)

    def _release(self, import_id: int) -> None:
        lock_file = _lock_file(self.path)
        _MINE.discard((lock_file, import_id))
        if fcntl is not None:
            _unlock(lock_file, import_id)

    def recover_imports(self) -> list[int]:
        """Undo the running imports whose process is gone; their ids."""
        running = [row[0] for row in self.conn.execute("SELECT id FROM imports WHERE status = 'running'")]
        if not running or fcntl is None:
            return []
        lock_file = _lock_file(self.path)
        dead = [i for i in running if (lock_file, i) not in _MINE and _try_lock(lock_file, i)]
        for import_id in dead:
            _MINE.add((lock_file, import_id))  # ours now: another Store of this process leaves it
            self.undo_import(import_id)
        return dead

    def imports(self) -> list[dict]:
        """Every import of this file, newest first (finished ones, and any running)."""
        return self._rows("SELECT * FROM imports ORDER BY id DESC")

    # --- one batch ------------------------------------------------------------------------------

    def write_import_batch(self, import_id: int, batch: ImportBatch) -> dict[str, int]:
        """Write a batch in one transaction; rows already stored (same key) are left as they are.
        Returns the rows added per table. ImportRowError names the line of a row refused."""
        stamp = now()
        with self.transaction() as conn:
            tops = self._tops(conn)
            jobs = self._write_jobs(conn, batch, stamp)
            problems = self._write_problems(conn, batch, stamp)
            trajectories, created = self._write_trajectories(conn, batch, problems, stamp)
            steps = self._write_segmentations(conn, batch, problems, trajectories, created, stamp)
            annotators = self._write_annotators(conn, batch, stamp)
            self._write_annotations(conn, batch, trajectories, steps, annotators, stamp)
            self._write_rollouts(conn, batch, trajectories, steps, jobs, stamp)
            self._write_verdicts(conn, batch, trajectories, steps, jobs, stamp)
            self._write_labels(conn, batch, trajectories, annotators, stamp)
            self._write_tree(conn, batch, problems, jobs, import_id, tops["trajectories"], stamp)
            self.write_imported_searches(conn, batch.searches, problems=problems, jobs=jobs, import_id=import_id,
                                         top_trajectory=tops["trajectories"], stamp=stamp)  # core.store.searches
            added = {}
            for table, top in self._tops(conn).items():
                added[table] = top - tops[table]
                if top > tops[table]:
                    conn.execute(
                        "INSERT INTO import_ranges (import_id, tbl, first_id, last_id) VALUES (?, ?, ?, ?)",
                        [import_id, table, tops[table] + 1, top],
                    )
        return added

    @staticmethod
    def _tops(conn: sqlite3.Connection) -> dict[str, int]:
        return {t: conn.execute(f"SELECT COALESCE(MAX(rowid), 0) FROM {t}").fetchone()[0] for t in IMPORT_TABLES}

    @staticmethod
    def _ids(conn: sqlite3.Connection, table: str, keys: Iterable[str]) -> dict[str, int]:
        return dict(conn.execute(
            f"SELECT key, id FROM {table} WHERE key IN (SELECT value FROM json_each(?))", [_json_list(set(keys))]
        ).fetchall())  # fmt: skip

    @staticmethod
    def _insert(conn: sqlite3.Connection, sql: str, rows: list[tuple], lines: list[int], what: str) -> None:
        """executemany; on a refused row, the line of the first one refused."""
        try:
            conn.executemany(sql, rows)
        except sqlite3.IntegrityError:
            # Rows before the refused one are in already and now conflict quietly.
            for row, line in zip(rows, lines):
                try:
                    conn.execute(sql, row)
                except sqlite3.IntegrityError as error:
                    raise ImportRowError(line, f"cannot store {what}: {error}") from None
            raise

    def _write_jobs(self, conn: sqlite3.Connection, batch: ImportBatch, stamp: str) -> dict:
        """(key, line) -> job id for every job reference of the batch, checked: a job is stored
        already or defined on an earlier line."""
        refs = (*batch.rollouts, *batch.verdicts, *batch.tree_rollouts, *batch.marks, *batch.searches)
        referenced = {r["job"] for r in refs if r["job"] is not None}
        first_line: dict[str, int] = {}
        for job in batch.jobs:
            first_line.setdefault(job["key"], job["line"])
        stored = self._job_rows(conn, referenced | set(first_line))
        columns = ("key", "kind", "status", "manifest", "planned", "done", "tokens", "error", "created_at",
                   "started_at", "finished_at", "heartbeat_at", "compute")  # fmt: skip
        encode = {"manifest": _json, "compute": lambda v: None if v is None else _json(v), "created_at": lambda v: v or stamp}
        self._insert(
            conn,
            f"INSERT INTO jobs ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)}) ON CONFLICT DO NOTHING",
            [tuple(encode[c](j.get(c)) if c in encode else j[c] for c in columns) for j in batch.jobs],
            [j["line"] for j in batch.jobs], "jobs",
        )  # fmt: skip
        known = {**self._job_rows(conn, set(first_line)), **stored}
        for row in refs:
            key = row["job"]
            if key is not None and key not in stored and not first_line.get(key, row["line"]) < row["line"]:
                raise ImportRowError(row["line"], f"refers to job {key!r}, which is neither stored nor earlier in the file")
        return known

    @staticmethod
    def _job_rows(conn: sqlite3.Connection, keys: set[str]) -> dict[str, tuple[int, str]]:
        if not keys:
            return {}
        rows = conn.execute("SELECT key, id, kind FROM jobs WHERE key IN (SELECT value FROM json_each(?))",
                            [_json_list(keys)]).fetchall()  # fmt: skip
        return {key: (job_id, kind) for key, job_id, kind in rows}

    def _write_problems(self, conn: sqlite3.Connection, batch: ImportBatch, stamp: str) -> dict[str, int]:
        self._insert(
            conn,
            "INSERT INTO problems (key, dataset, question, gold, meta, created_at) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            [(p["key"], p["dataset"], p["question"], p["gold"], _json(p["meta"]), p["created_at"] or stamp)
             for p in batch.problems],
            [p["line"] for p in batch.problems], "problems",
        )  # fmt: skip
        return self._ids(conn, "problems", (p["key"] for p in batch.problems))

    def _write_trajectories(self, conn: sqlite3.Connection, batch: ImportBatch, problems: dict[str, int],
                            stamp: str) -> tuple[dict[str, int], set[str]]:  # fmt: skip
        keys = [t["key"] for t in batch.trajectories]
        existing = self._ids(conn, "trajectories", keys)
        self._insert(
            conn,
            """INSERT INTO trajectories (key, problem_id, source, model, policy_prompt, solution, final_answer,
               correct, meta, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING""",
            [(t["key"], problems[t["problem_key"]], t["source"], t["model"], t["policy_prompt"], t["solution"],
              t["final_answer"], _as_int_bool(t["correct"]), _json(t["meta"]), t["created_at"] or stamp)
             for t in batch.trajectories],
            [t["line"] for t in batch.trajectories], "trajectories",
        )  # fmt: skip
        # Created here: new to the store, and the first of its key in the batch (a second copy of
        # a trajectory in the file finds the first, as it did one record at a time).
        created = set(keys) - set(existing)
        return self._ids(conn, "trajectories", keys), created

    def _write_segmentations(
        self, conn: sqlite3.Connection, batch: ImportBatch, problems: dict[str, int],
        trajectories: dict[str, int], created_trajectories: set[str], stamp: str,
    ) -> dict[tuple[str, str], list[int]]:
        """Segmentations, their nodes and steps; (trajectory key, segmentation key) -> step ids."""
        tids = _json_list({trajectories[s["trajectory_key"]] for s in batch.segmentations})
        select = "SELECT trajectory_id, key, id FROM segmentations WHERE trajectory_id IN (SELECT value FROM json_each(?))"
        existing = {(t, k): i for t, k, i in conn.execute(select, [tids])}
        self._insert(
            conn,
            "INSERT INTO segmentations (trajectory_id, rule, key, created_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [(trajectories[s["trajectory_key"]], s["rule"], s["key"], s["created_at"] or stamp)
             for s in batch.segmentations],
            [s["line"] for s in batch.segmentations], "segmentations",
        )  # fmt: skip
        ids = {(t, k): i for t, k, i in conn.execute(select, [tids])}
        # New segmentations: the nodes of their prefixes (parents first, found by key: executemany
        # runs the rows in order), then the steps pointing at them, as attach_segmentation does.
        nodes, steps, seen = [], [], set()
        for s in batch.segmentations:
            tid = trajectories[s["trajectory_key"]]
            pair = (tid, s["key"])
            if pair in existing or pair in seen:
                continue
            seen.add(pair)
            problem_id, parent = problems[s["problem_key"]], None
            key = root_key(s["problem_key"])
            nodes.append((key, problem_id, None, 0, "", stamp))
            for idx, (text, start, end) in enumerate(s["steps"]):
                parent, key = key, child_key(key, text)
                nodes.append((key, problem_id, parent, idx + 1, text, stamp))
                steps.append((ids[pair], tid, idx, text, start, end, key))
        conn.executemany(
            "INSERT INTO nodes (key, problem_id, parent_id, depth, text, created_at)"
            " VALUES (?, ?, (SELECT id FROM nodes WHERE key = ?), ?, ?, ?) ON CONFLICT (key) DO NOTHING",
            nodes,
        )
        conn.executemany(
            "INSERT INTO steps (segmentation_id, trajectory_id, idx, text, start_char, end_char, node_id)"
            " VALUES (?, ?, ?, ?, ?, ?, (SELECT id FROM nodes WHERE key = ?))",
            steps,
        )
        # A trajectory created here takes its current segmentation; an existing one keeps the
        # segmentation its user last chose.
        current, taken = [], set()
        for t in batch.trajectories:
            if t["key"] in created_trajectories and t["key"] not in taken and t["current"] is not None:
                taken.add(t["key"])
                current.append((ids[(trajectories[t["key"]], t["current"])], trajectories[t["key"]]))
        conn.executemany("UPDATE trajectories SET current_segmentation_id = ? WHERE id = ?", current)
        by_segmentation: dict[int, list[int]] = {}
        for segmentation_id, step_id in conn.execute(
            "SELECT segmentation_id, id FROM steps WHERE segmentation_id IN (SELECT value FROM json_each(?))"
            " ORDER BY segmentation_id, idx", [_json_list(set(ids.values()))],
        ):  # fmt: skip
            by_segmentation.setdefault(segmentation_id, []).append(step_id)
        keys = {t: k for k, t in trajectories.items()}
        return {(keys[t], k): by_segmentation.get(i, []) for (t, k), i in ids.items() if t in keys}

    def _write_annotators(self, conn: sqlite3.Connection, batch: ImportBatch, stamp: str) -> dict[str, int]:
        names = list(dict.fromkeys(name for _, name in batch.annotators))
        for line, name in batch.annotators:
            if not name.strip():
                raise ImportRowError(line, "an annotator needs a non-empty name")
            if name in RESERVED_ANNOTATOR_NAMES:
                raise ImportRowError(line, f"{name!r} names a combination of annotators' labels: choose another annotator name")
        conn.executemany("INSERT INTO annotators (name, created_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
                         [(name, stamp) for name in names])  # fmt: skip
        return dict(conn.execute("SELECT name, id FROM annotators WHERE name IN (SELECT value FROM json_each(?))",
                                 [_json_list(names)]).fetchall())  # fmt: skip

    @staticmethod
    def _step_id(row: dict, steps: dict[tuple[str, str], list[int]]) -> int:
        return steps[(row["trajectory_key"], row["segmentation_key"])][row["idx"]]

    def _write_annotations(self, conn, batch, trajectories, steps, annotators, stamp) -> None:  # noqa: ANN001
        rows = []
        for a in batch.annotations:
            try:
                AnnotationQueries._check_annotation(
                    {"rating": a["rating"], "first_error": a["first_error"], "flagged": a["flagged"], "note": a["note"],
                     "confidence": a["confidence"], "rationale": a["rationale"], "category": a["category"]})  # fmt: skip
                _check_duration(a["dwell_ms"], "dwell_ms")
            except StepScopeError as error:
                raise ImportRowError(a["line"], str(error)) from None
            created_at = a["created_at"] or stamp
            rows.append((annotators[a["annotator"]], self._step_id(a, steps), a["rating"], int(a["first_error"]),
                         int(a["flagged"]), a["note"], a["confidence"], a["rationale"], a["category"], a["dwell_ms"],
                         a["rating_order"], created_at, a["updated_at"] or created_at))  # fmt: skip
        self._insert(
            conn,
            """INSERT INTO annotations (annotator_id, step_id, rating, first_error, flagged, note, confidence,
               rationale, category, dwell_ms, rating_order, created_at, updated_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING""",
            rows, [a["line"] for a in batch.annotations], "annotations",
        )

    def _write_rollouts(self, conn, batch, trajectories, steps, jobs, stamp) -> None:  # noqa: ANN001
        rows = []
        for r in batch.rollouts:
            step_id = self._step_id(r, steps)
            job_id = jobs[r["job"]][0] if r["job"] is not None else None
            rows.append((r["key"], step_id, None, step_id, job_id, r["text"], r["answer"], int(bool(r["correct"])),
                         r["num_tokens"], r["finish_reason"], r["seed"], r["model"], r["created_at"] or stamp))  # fmt: skip
        self._insert(
            conn,
            """INSERT INTO rollouts (key, step_id, node_id, job_id, text, answer, correct, num_tokens,
               finish_reason, seed, model, created_at)
               VALUES (?, ?, COALESCE(?, (SELECT node_id FROM steps WHERE id = ?)), ?, ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT DO NOTHING""",
            rows, [r["line"] for r in batch.rollouts], "rollouts",
        )

    def _write_verdicts(self, conn, batch, trajectories, steps, jobs, stamp) -> None:  # noqa: ANN001
        rows, first = [], {}
        for v in batch.verdicts:
            if v["kind"] not in VERDICT_KINDS:
                raise ImportRowError(v["line"], f"a verdict kind is one of {', '.join(VERDICT_KINDS)}, not {v['kind']!r}")
            job = jobs.get(v["job"]) if v["job"] is not None else None
            # A dump from before kinds were stored: classified as migration 0006 does.
            kind = v["verifier_kind"] or legacy_verifier_kind(v["judge"], [job[1]] if job else [])
            name_kind, _ = first.setdefault(v["judge"], (kind, v["line"]))
            if name_kind != kind:
                raise ImportRowError(v["line"], _kind_taken(v["judge"], name_kind, kind))
            step_id = None if v["segmentation_key"] is None else self._step_id(v, steps)
            rows.append((v["key"], trajectories[v["trajectory_key"]], step_id, job[0] if job else None, v["judge"],
                         v["kind"], v["p_yes"], v["mass"], v["raw"], v["template"], v["template_hash"],
                         v["created_at"] or stamp))  # fmt: skip
        conn.executemany(
            """INSERT INTO verifiers (name, kind, fingerprint, created_at, updated_at) VALUES (?, ?, NULL, ?, ?)
               ON CONFLICT (name) DO NOTHING""",
            [(name, kind, stamp, stamp) for name, (kind, _) in first.items()],
        )
        stored = dict(conn.execute("SELECT name, kind FROM verifiers WHERE name IN (SELECT value FROM json_each(?))",
                                   [_json_list(first)]).fetchall())  # fmt: skip
        for name, (kind, line) in first.items():
            if stored[name] != kind:
                raise ImportRowError(line, _kind_taken(name, stored[name], kind))
        self._insert(
            conn,
            """INSERT INTO verdicts (key, trajectory_id, step_id, job_id, judge, kind, p_yes, mass, raw, template,
               template_hash, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING""",
            rows, [v["line"] for v in batch.verdicts], "verdicts",
        )

    def _write_labels(self, conn, batch, trajectories, annotators, stamp) -> None:  # noqa: ANN001
        rows = []
        for x in batch.labels:
            try:
                _check_duration(x["dwell_ms"], "dwell_ms")
            except StepScopeError as error:
                raise ImportRowError(x["line"], str(error)) from None
            created_at = x["created_at"] or stamp
            rows.append((annotators[x["annotator"]], trajectories[x["trajectory_key"]], int(x["flawed_process"]),
                         x["dwell_ms"], created_at, created_at))  # fmt: skip
        self._insert(
            conn,
            """INSERT INTO trajectory_labels (annotator_id, trajectory_id, flawed_process, dwell_ms, created_at,
               updated_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING""",
            rows, [x["line"] for x in batch.labels], "trajectory labels",
        )


    # --- the rollout tree beyond the steps (a dump's tree records) -------------------------------

    def _write_tree(self, conn, batch, problems, jobs, import_id, top_trajectory, stamp) -> None:  # noqa: ANN001
        """Nodes no step ends at, stepless rollouts, marks and branch links, all named by key: a row
        they name is stored already or comes earlier in the file (ImportRowError otherwise).
        Stored marks and links stay as they are (importing twice changes nothing)."""
        if not (batch.nodes or batch.tree_rollouts or batch.marks or batch.branches):
            return
        known = self._ids(conn, "nodes", (n["parent"] for n in batch.nodes if n["parent"] is not None))
        for n in batch.nodes:
            if n["parent"] is not None and n["parent"] not in known:
                raise ImportRowError(n["line"], f"node {n['key']!r} names a parent node {n['parent']!r} "
                                                "that is neither stored nor earlier in the file")  # fmt: skip
            known[n["key"]] = 0
        # Parents first (executemany runs the rows in order), found by key as segmentations' are.
        conn.executemany(
            """INSERT INTO nodes (key, problem_id, parent_id, depth, text, created_at)
               VALUES (?, ?, (SELECT id FROM nodes WHERE key = ?), COALESCE((SELECT depth + 1 FROM nodes WHERE key = ?), 0),
                       ?, ?) ON CONFLICT (key) DO NOTHING""",
            [(n["key"], problems[n["problem_key"]], n["parent"], n["parent"], n["text"], stamp) for n in batch.nodes],
        )  # fmt: skip
        nodes = self._ids(conn, "nodes", (r for b in (batch.tree_rollouts, batch.branches) for r in
                                          (x["node"] for x in b) if r is not None))  # fmt: skip
        rows = []
        for r in batch.tree_rollouts:
            if r["node"] not in nodes:
                raise ImportRowError(r["line"], f"rollout {r['key']!r} names a node {r['node']!r} that is neither "
                                                "stored nor earlier in the file")  # fmt: skip
            rows.append((r["key"], nodes[r["node"]], jobs[r["job"]][0] if r["job"] is not None else None, r["text"],
                         r["answer"], int(bool(r["correct"])), r["num_tokens"], r["finish_reason"], r["seed"],
                         r["model"], r["created_at"] or stamp))  # fmt: skip
        self._insert(
            conn,
            """INSERT INTO rollouts (key, step_id, node_id, job_id, text, answer, correct, num_tokens, finish_reason,
               seed, model, created_at) VALUES (?, NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING""",
            rows, [r["line"] for r in batch.tree_rollouts], "rollouts",
        )  # fmt: skip
        rollouts = self._ids(conn, "rollouts", [m["rollout"] for m in batch.marks]
                             + [b["rollout"] for b in batch.branches if b["rollout"] is not None])  # fmt: skip
        trajectories = self._ids(conn, "trajectories", [m["branch"] for m in batch.marks if m["branch"] is not None]
                                 + [b["trajectory"] for b in batch.branches])  # fmt: skip

        def named(row: dict, what: str, key: str | None, ids: dict[str, int]) -> int | None:
            if key is not None and key not in ids:
                raise ImportRowError(row["line"], f"names a {what} {key!r} that is neither stored nor earlier in the file")
            return None if key is None else ids[key]

        rows = [(named(m, "rollout", m["rollout"], rollouts), int(bool(m["selected"])), m["first_error"],
                 named(m, "trajectory", m["branch"], trajectories), jobs[m["job"]][0] if m["job"] is not None else None,
                 m["updated_at"] or stamp) for m in batch.marks]  # fmt: skip
        self._insert(
            conn,
            """INSERT INTO tree_marks (rollout_id, selected, first_error, branch_id, job_id, updated_at)
               VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING""",
            rows, [m["line"] for m in batch.marks], "tree marks",
        )
        # A branch link is set on a trajectory this import added only (one stored before keeps its
        # own), with the ids its meta names by key in a dump (core.formats.jsonl) put back.
        links = [(named(b, "trajectory", b["trajectory"], trajectories), named(b, "node", b["node"], nodes),
                  named(b, "rollout", b["rollout"], rollouts), b) for b in batch.branches]  # fmt: skip
        metas = dict(conn.execute(
            "SELECT id, meta FROM trajectories WHERE id IN (SELECT value FROM json_each(?))", [_json_list(t for t, *_ in links)]
        ).fetchall())  # fmt: skip
        updates = []
        for tid, node_id, rollout_id, b in links:
            meta = json.loads(metas[tid]) if metas.get(tid) else None
            if isinstance(meta, dict):
                for name, key, new in (("rollout", b["rollout"], rollout_id), ("node", b.get("file_node", b["node"]), node_id)):
                    if key is not None and meta.get(name) == key:
                        meta[name] = new
            updates.append((node_id, rollout_id, _json(meta) if isinstance(meta, dict) else metas.get(tid), tid,
                            top_trajectory, import_id))  # fmt: skip
        conn.executemany(
            """UPDATE trajectories SET parent_node_id = ?, parent_rollout_id = ?, meta = ?
               WHERE id = ? AND parent_node_id IS NULL AND parent_rollout_id IS NULL
                 AND (id > ? OR EXISTS (SELECT 1 FROM import_ranges g WHERE g.import_id = ? AND g.tbl = 'trajectories'
                                        AND trajectories.id BETWEEN g.first_id AND g.last_id))""",
            updates,
        )  # fmt: skip

    # --- job manifests that name rows by key (a dump's) -------------------------------------------

    def import_key_ids(self, table: str, keys: Iterable[str]) -> dict[str, int]:
        """key -> id of the stored rows of a keyed table (problems, trajectories, nodes)."""
        if table not in ("problems", "trajectories", "nodes"):
            raise ValueError(f"{table} is not a keyed table")
        return self._ids(self.conn, table, keys)

    def set_imported_manifests(self, import_id: int, manifests: dict[str, Any]) -> None:
        """Replace the manifests of the jobs (by key) that this running import added; a job that
        was stored before keeps its own."""
        with self.transaction() as conn:
            conn.executemany(
                """UPDATE jobs SET manifest = ? WHERE key = ? AND EXISTS (SELECT 1 FROM import_ranges g
                   WHERE g.import_id = ? AND g.tbl = 'jobs' AND jobs.id BETWEEN g.first_id AND g.last_id)""",
                [(_json(manifest), key, import_id) for key, manifest in manifests.items()],
            )


def _kind_taken(name: str, stored: str, kind: str) -> str:
    return (f"{name!r} already names a {stored} verifier in this database: store these {kind} scores "
            "under another name (--name)")  # fmt: skip
