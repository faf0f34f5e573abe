"""Write imported records into the store: in batches, all of the file or nothing.

The records are read and checked one at a time and gathered into batches of about `BATCH_ROWS`
rows; each batch is written set-wise in one short transaction (core.store.imports: one
executemany per table, ids found by content key), so a label saved in the app while a large
file imports waits for one batch (well under a second), not for the file.

A file still imports completely or not at all: the import is recorded as running, every batch
notes the rows it added, and the first bad record (the error names the file and the line), a
Ctrl-C, or any other failure deletes what the earlier batches added. A process killed outright
(kill -9) leaves its import marked running, and the next `Store` opened on the file (or the next
import) deletes its rows. Rows that already exist (same content key, same rollout/verdict/job
key, same annotator on the same step) are left as they are, so importing a file twice adds
nothing the second time.
"""

from __future__ import annotations

import os
import signal
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from core.errors import StepScopeError
from core.formats.records import Item, Job, RecordError, Trajectory
from core.steps import SPLITTERS
from core.store import ImportBatch, ImportRowError, Store, content_key, problem_key, segmentation_key
from core.store.problems import _check_spans

COUNTED = ("problems", "trajectories", "segmentations", "steps", "annotations", "rollouts",
           "verdicts", "jobs")
# Rows per batch: a few thousand keep a batch's transaction (the time a concurrent save can
# wait) around 0.1-0.3 s on a busy 2-core machine (benchmarks/scale.py measures it).
BATCH_ROWS = 5000
BATCH_ROWS_ENV = "STEPSCOPE_IMPORT_BATCH_ROWS"
# Test only: the importing process kills itself (SIGKILL) right after committing batch N, so a
# test interrupts a real import at a chosen point instead of racing a signal against it.
KILL_AFTER_BATCH_ENV = "STEPSCOPE_TEST_KILL_IMPORT_AFTER_BATCH"


@dataclass
class ImportReport:
    path: Path
    format: str
    records: int
    added: dict[str, int]

    def summary(self) -> str:
        added = ", ".join(f"{n} {table}" for table, n in self.added.items() if n)
        return f"read {self.records} records from {self.path} ({self.format}): " + (
            f"added {added}" if added else "nothing new"
        )


def ingest(
    store: Store,
    path: Path,
    format_name: str,
    records: Iterable[tuple[int, Item | Job]],
    *,
    batch_rows: int | None = None,
    after_batch: Callable[[int, int], None] | None = None,
) -> ImportReport:
    """Write (line, record) pairs batch by batch; any error leaves the store as it was.

    `after_batch(batches, records)` is called after each batch commits (a progress hook; tests
    use it to write from another connection between two batches)."""
    size = batch_rows or int(os.environ.get(BATCH_ROWS_ENV) or BATCH_ROWS)
    added = dict.fromkeys(COUNTED, 0)
    count = batches = 0
    try:
        store.recover_imports()
        import_id = store.begin_import(path, format_name)
    except sqlite3.OperationalError as error:
        raise StepScopeError(f"cannot write to {store.path}: {error}") from None
    try:
        batch = ImportBatch()
        for line, record in records:
            try:
                _add(batch, line, record)
            except (RecordError, StepScopeError) as error:
                raise StepScopeError(f"{path}, line {line}: {error}") from None
            except RecursionError:
                raise StepScopeError(f"{path}, line {line}: JSON nested too deeply") from None
            count += 1
            if batch.rows >= size:
                batches = _commit(store, import_id, batch, added, batches, count, after_batch)
                batch = ImportBatch()
        if batch.rows:
            _commit(store, import_id, batch, added, batches, count, after_batch)
        store.finish_import(import_id)
    except BaseException as error:
        _undo(store, import_id)
        if isinstance(error, ImportRowError):
            raise StepScopeError(f"{path}, line {error.line}: {error}") from None
        if isinstance(error, sqlite3.OperationalError):
            raise StepScopeError(f"cannot write to {store.path}: {error}") from None
        raise
    return ImportReport(path, format_name, count, added)


def _commit(store: Store, import_id: int, batch: ImportBatch, added: dict[str, int], batches: int,
            count: int, after_batch: Callable[[int, int], None] | None) -> int:  # fmt: skip
    for table, n in store.write_import_batch(import_id, batch).items():
        if table in added:
            added[table] += n
    batches += 1
    if os.environ.get(KILL_AFTER_BATCH_ENV) == str(batches):
        os.kill(os.getpid(), signal.SIGKILL)
    if after_batch is not None:
        after_batch(batches, count)
    return batches


def _undo(store: Store, import_id: int) -> None:
    try:
        store.undo_import(import_id)
    except (sqlite3.Error, StepScopeError, OSError):
        pass  # the file is unwritable now: the next Store opened on it finishes the undo


def _add(batch: ImportBatch, line: int, record: Item | Job) -> None:
    """Flatten one record into the batch (rows refer to each other by content key)."""
    if isinstance(record, Job):
        batch.jobs.append({"line": line, **vars(record)})
        batch.rows += 1
        return
    problem = record.problem
    key = problem_key(problem.dataset, problem.question, problem.gold)
    batch.problems.append({"line": line, "key": key, **vars(problem)})
    batch.rows += 1
    for trajectory in record.trajectories:
        _add_trajectory(batch, line, key, trajectory)


def _add_trajectory(batch: ImportBatch, line: int, pkey: str, t: Trajectory) -> None:
    tkey = content_key("trajectory", pkey, t.source, t.model, t.policy_prompt, t.solution)
    here = {"line": line, "trajectory_key": tkey}
    segmentation_keys = []
    for s in t.segmentations:
        if s.rule not in SPLITTERS:
            raise StepScopeError(f"unknown step splitter {s.rule!r}; choose one of: {', '.join(SPLITTERS)}")
        spans = [step.span for step in s.steps]
        _check_spans(t.solution, spans)
        skey = segmentation_key(s.rule, spans)
        segmentation_keys.append(skey)
        batch.segmentations.append({**here, "problem_key": pkey, "key": skey, "rule": s.rule,
                                    "created_at": s.created_at,
                                    "steps": [(span.text, span.start, span.end) for span in spans]})  # fmt: skip
        batch.rows += 1 + 2 * len(spans)  # the segmentation, its steps and their nodes
        for idx, step in enumerate(s.steps):
            at = {**here, "segmentation_key": skey, "idx": idx}
            for a in step.annotations:
                batch.annotators.append((line, a.annotator))
                batch.annotations.append({**at, **vars(a)})
            batch.rollouts.extend({**at, **vars(r)} for r in step.rollouts)
            batch.verdicts.extend({**at, **vars(v)} for v in step.verdicts)
            batch.rows += len(step.annotations) + len(step.rollouts) + len(step.verdicts)
    fields = {name: getattr(t, name) for name in ("source", "model", "policy_prompt", "solution",
                                                  "final_answer", "correct", "meta", "created_at")}  # fmt: skip
    current = segmentation_keys[t.current] if segmentation_keys else None
    batch.trajectories.append({"line": line, "key": tkey, "problem_key": pkey, **fields, "current": current})
    batch.verdicts.extend({**here, "segmentation_key": None, "idx": None, **vars(v)} for v in t.verdicts)
    for label in t.labels:
        batch.annotators.append((line, label.annotator))
        batch.labels.append({**here, **vars(label)})
    batch.rows += 1 + len(t.verdicts) + len(t.labels)
