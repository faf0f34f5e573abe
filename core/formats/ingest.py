"""Write imported records into the store: all of one file in one transaction.

A file either imports completely or not at all: the first bad record raises, the transaction
rolls back, and the error names the file and the line. Rows that already exist (same content
key, same rollout/verdict/job key, same annotator on the same step) are left as they are, so
importing a file twice adds nothing the second time.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from core.errors import StepScopeError
from core.formats.records import LATENT_FIELDS, Item, Job, RecordError, Rollout, Trajectory, Verdict
from core.store import Store, legacy_verifier_kind

COUNTED = ("problems", "trajectories", "segmentations", "steps", "annotations", "rollouts",
           "verdicts", "jobs")


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
    store: Store, path: Path, format_name: str, records: Iterable[tuple[int, Item | Job]]
) -> ImportReport:
    """Write (line, record) pairs in one transaction; any error leaves the store unchanged."""
    count = 0
    try:
        with store.transaction():
            before = store.counts()
            for line, record in records:
                try:
                    _write(store, record)
                except (RecordError, StepScopeError, sqlite3.IntegrityError) as error:
                    raise StepScopeError(f"{path}, line {line}: {error}") from None
                except RecursionError:
                    raise StepScopeError(f"{path}, line {line}: JSON nested too deeply") from None
                count += 1
            after = store.counts()
    except sqlite3.OperationalError as error:
        raise StepScopeError(f"cannot write to {store.path}: {error}") from None
    return ImportReport(path, format_name, count, {t: after[t] - before[t] for t in COUNTED})


def _write(store: Store, record: Item | Job) -> None:
    if isinstance(record, Job):
        store.insert_job(**vars(record))
        return
    problem = record.problem
    problem_id = store.add_problem(
        problem.dataset, problem.question, problem.gold, meta=problem.meta,
        created_at=problem.created_at,
    )
    for trajectory in record.trajectories:
        _write_trajectory(store, problem_id, trajectory)


def _write_trajectory(store: Store, problem_id: int, t: Trajectory) -> None:
    trajectory_id, created = store.insert_trajectory(
        problem_id, t.solution, source=t.source, model=t.model, policy_prompt=t.policy_prompt,
        final_answer=t.final_answer, correct=t.correct, meta=t.meta, created_at=t.created_at,
    )
    segmentation_ids = [
        store.add_segmentation(
            trajectory_id, s.rule, [step.span for step in s.steps], make_current=False,
            created_at=s.created_at,
        )
        for s in t.segmentations
    ]
    # An existing trajectory keeps the segmentation its user last chose.
    if created and segmentation_ids:
        store.set_current_segmentation(trajectory_id, segmentation_ids[t.current])
    for segmentation, segmentation_id in zip(t.segmentations, segmentation_ids):
        step_ids = [row["id"] for row in store.steps(trajectory_id, segmentation_id)]
        for step, step_id in zip(segmentation.steps, step_ids):
            for a in step.annotations:
                store.add_annotation(
                    a.annotator, step_id, rating=a.rating, first_error=a.first_error,
                    flagged=a.flagged, note=a.note, created_at=a.created_at,
                    updated_at=a.updated_at, **{k: getattr(a, k) for k in LATENT_FIELDS},
                )
            store.add_rollouts(_rollout_row(store, r, step_id) for r in step.rollouts)
            store.add_verdicts(
                _verdict_row(store, v, trajectory_id, step_id) for v in step.verdicts
            )
    store.add_verdicts(_verdict_row(store, v, trajectory_id, None) for v in t.verdicts)
    for label in t.labels:
        store.add_trajectory_label(label.annotator, trajectory_id, flawed_process=label.flawed_process,
                                   dwell_ms=label.dwell_ms, created_at=label.created_at)


def _job_id(store: Store, key: str | None) -> int | None:
    if key is None:
        return None
    job_id = store.job_id_for_key(key)
    if job_id is None:
        raise RecordError(f"refers to job {key!r}, which is neither stored nor earlier in the file")
    return job_id


def _rollout_row(store: Store, r: Rollout, step_id: int) -> dict:
    row = {name: value for name, value in vars(r).items() if name != "job"}
    return {**row, "step_id": step_id, "job_id": _job_id(store, r.job)}


def _verdict_row(store: Store, v: Verdict, trajectory_id: int, step_id: int | None) -> dict:
    row = {name: value for name, value in vars(v).items() if name != "job"}
    job_id = _job_id(store, v.job)
    if v.verifier_kind is None:  # a dump from before kinds were stored: classified as the migration does
        job = store.get_job(job_id) if job_id is not None else None
        row["verifier_kind"] = legacy_verifier_kind(v.judge, [job["kind"]] if job else [])
    return {**row, "trajectory_id": trajectory_id, "step_id": step_id, "job_id": job_id}
