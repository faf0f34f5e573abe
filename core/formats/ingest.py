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

import copy
import os
import signal
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from core.errors import StepScopeError
from core.formats.records import Item, Job, RecordError, Trajectory, Tree, manifest_id_fields
from core.steps import SPLITTERS, is_rule
from core.store import ImportBatch, ImportRowError, Store, content_key, problem_key, segmentation_key
from core.store.nodes import child_key, root_key
from core.store.problems import _check_spans

COUNTED = ("problems", "trajectories", "segmentations", "steps", "annotations", "rollouts",
           "verdicts", "jobs", "searches")
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
        batch, keys = ImportBatch(), _Keys()
        for line, record in records:
            try:
                _add(batch, line, record, keys)
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
        _resolve_manifests(store, import_id, keys)  # before finish: it knows the import's own jobs
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


@dataclass
class _Keys:
    """What an import remembers across batches to name rows by key: the keyed job manifests (a
    dump's jobs come first, before the rows their manifests name), and, only where the file's
    keys differ from the stored ones (--dataset renames the problems: every key below a problem
    changes), file key -> stored key."""

    manifests: dict[str, tuple[object, list[str]]] = field(default_factory=dict)
    renamed: dict[str, str] = field(default_factory=dict)

    def __call__(self, key: str | None) -> str | None:
        return self.renamed.get(key, key) if key is not None else None


def _resolve_manifests(store: Store, import_id: int, keys: _Keys) -> None:
    """The keys in the manifests of the jobs this import added, as the ids of the rows now."""
    if not keys.manifests:
        return
    wanted: dict[str, set[str]] = {}
    fields = {}
    for job_key, (manifest, paths) in keys.manifests.items():
        fields[job_key] = [f for f in manifest_id_fields(manifest, ids=False) if f[0] in paths]
        for _, table, holder, name in fields[job_key]:
            values = holder[name] if isinstance(holder[name], list) else [holder[name]]
            wanted.setdefault(table, set()).update(keys(v) for v in values if v is not None)
    ids = {table: store.import_key_ids(table, found) for table, found in wanted.items()}
    for found in fields.values():
        for _, table, holder, name in found:
            value = holder[name]
            resolve = lambda v, t=table: None if v is None else ids[t].get(keys(v))
            holder[name] = [resolve(v) for v in value] if isinstance(value, list) else resolve(value)
    store.set_imported_manifests(import_id, {key: manifest for key, (manifest, _) in keys.manifests.items()})


def _add(batch: ImportBatch, line: int, record: Item | Job, keys: _Keys) -> None:
    """Flatten one record into the batch (rows refer to each other by content key)."""
    if isinstance(record, Job):
        batch.jobs.append({"line": line, **vars(record)})
        batch.rows += 1
        if record.ids_as_keys:
            keys.manifests.setdefault(record.key, (copy.deepcopy(record.manifest), record.ids_as_keys))
        return
    problem = record.problem
    key = problem_key(problem.dataset, problem.question, problem.gold)
    batch.problems.append({"line": line, "key": key, **vars(problem)})
    batch.rows += 1
    file_key = record.file_problem_key
    renamed = file_key is not None and file_key != key
    if renamed:
        keys.renamed[file_key] = key
        keys.renamed[root_key(file_key)] = root_key(key)
    for trajectory in record.trajectories:
        _add_trajectory(batch, line, key, trajectory)
        if renamed:
            _rename_trajectory(keys, file_key, key, trajectory)
    if record.tree is not None:
        _add_tree(batch, line, key, record.tree, keys)
    for search in record.searches:  # its candidates' nodes and beams by their stored keys
        batch.searches.append({"line": line, "problem_key": key, **vars(search), "candidates": [
            {**vars(c), "node": keys(c.node), "trajectory": keys(c.trajectory)} for c in search.candidates]})
        batch.rows += 1 + len(search.events) + len(search.candidates)


def _rename_trajectory(keys: _Keys, file_key: str, key: str, t: Trajectory) -> None:
    """File keys -> stored keys of the trajectory and of the nodes its steps end at."""
    name = ("trajectory", t.source, t.model, t.policy_prompt, t.solution)
    keys.renamed[content_key(name[0], file_key, *name[1:])] = content_key(name[0], key, *name[1:])
    for s in t.segmentations:
        old, new = root_key(file_key), root_key(key)
        for step in s.steps:
            old, new = child_key(old, step.span.text), child_key(new, step.span.text)
            keys.renamed[old] = new


def _add_tree(batch: ImportBatch, line: int, pkey: str, tree: Tree, keys: _Keys) -> None:
    here = {"line": line, "problem_key": pkey}
    for n in tree.nodes:
        if keys.renamed:  # a renamed node's key follows from its parent's, as nodes' keys do
            parent = keys(n.parent)
            keys.renamed[n.key] = child_key(parent, n.text) if parent is not None else root_key(pkey)
        batch.nodes.append({**here, "key": keys(n.key), "parent": keys(n.parent), "text": n.text})
    batch.tree_rollouts.extend({**here, **vars(r), "node": keys(r.node)} for r in tree.rollouts)
    batch.marks.extend({**here, **vars(m), "branch": keys(m.branch)} for m in tree.marks)
    # file_node: the key the branch's meta names its node by in the file.
    batch.branches.extend({**here, "trajectory": keys(b.trajectory), "node": keys(b.node), "rollout": b.rollout,
                           "file_node": b.node} for b in tree.branches)  # fmt: skip
    batch.rows += len(tree.nodes) + len(tree.rollouts) + len(tree.marks) + len(tree.branches)


def _add_trajectory(batch: ImportBatch, line: int, pkey: str, t: Trajectory) -> None:
    tkey = content_key("trajectory", pkey, t.source, t.model, t.policy_prompt, t.solution)
    here = {"line": line, "trajectory_key": tkey}
    segmentation_keys = []
    for s in t.segmentations:
        if not is_rule(s.rule):
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
