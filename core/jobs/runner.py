"""Background jobs that write to the store: resumable, cancellable, one model loaded at a time.

A job is a row with a manifest (everything needed to rerun it and to know what produced its
results). Whoever runs it (the app's worker thread or the CLI in the foreground) claims it
atomically, beats a heartbeat while it runs, and writes progress the UI reads back. A job whose
runner was killed keeps status "running" with a stale heartbeat; the next runner claims it again
and, because strategies plan from stored rollouts, continues without redoing any.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable

import core
from core.engines import SamplingParams, load_engine
from core.errors import StepScopeError
from core.jobs.estimate import Progress, load_tasks, run_estimate
from core.jobs.generate import GenerateProgress, problems_done_by_job, run_generate
from core.grading import GRADER_NAME
from core.jobs.judge import RUNNERS as JUDGING_RUNNERS
from core.mcpe import strategy_from_manifest
from core.policy import POLICY_STOP, load_template
from core.store import Store, now

HEARTBEAT_SECONDS = 5.0
STALE_AFTER_SECONDS = 30.0


def code_version() -> str:
    """The package version plus the git commit when running from a checkout."""
    root = Path(core.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=5,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        commit = ""
    return f"{core.__version__}+{commit}" if commit else core.__version__


def create_estimate_job(
    store: Store,
    *,
    policy: str,
    trajectory_ids: list[int],
    strategy,
    sampling: SamplingParams,
    engine: str = "transformers",
    engine_options: dict | None = None,
    template: str | None = None,
    rows_per_call: int = 64,
) -> int:
    """Queue a Monte Carlo estimation job; returns its id."""
    if not trajectory_ids:
        raise StepScopeError("no trajectories to estimate")
    policy_template = load_template(template) if template else load_template()
    manifest = {
        "policy": policy,
        "engine": engine,
        "engine_options": engine_options or {},
        "trajectory_ids": list(trajectory_ids),
        "strategy": strategy.describe(),
        "sampling": sampling.as_manifest(),
        "prompt_template": {"name": policy_template.name, "sha256": policy_template.sha256},
        "rows_per_call": rows_per_call,
        "grader": GRADER_NAME,
        "code_version": code_version(),
    }
    return store.create_job("estimate", manifest, planned=0)


def _timestamp_before(seconds: float) -> str:
    moment = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=seconds)
    return moment.isoformat(timespec="milliseconds")


def claim_job(store: Store, job_id: int | None = None, stale_after: float = STALE_AFTER_SECONDS) -> dict | None:
    """Mark one job running and return it: the given one, or the oldest queued or abandoned.

    The UPDATE is the lock: of two runners racing for a job, only one sees its row change.
    """
    stale = _timestamp_before(stale_after)
    claimable = "(status = 'queued' OR (status = 'running' AND (heartbeat_at IS NULL OR heartbeat_at < ?)))"
    with store.transaction() as conn:
        if job_id is None:
            row = conn.execute(
                f"SELECT id FROM jobs WHERE {claimable} ORDER BY id LIMIT 1", [stale]
            ).fetchone()
            if row is None:
                return None
            job_id = row[0]
        stamp = now()
        changed = conn.execute(
            f"UPDATE jobs SET status = 'running', heartbeat_at = ?, error = NULL,"
            f" started_at = COALESCE(started_at, ?) WHERE id = ? AND {claimable}",
            [stamp, stamp, job_id, stale],
        ).rowcount
    return store.get_job(job_id) if changed else None


def cancel_job(store: Store, job_id: int) -> bool:
    """Ask a queued or running job to stop; the runner stops before its next engine call."""
    with store.transaction() as conn:
        changed = conn.execute(
            "UPDATE jobs SET status = 'cancelled', finished_at = ? WHERE id = ? AND status IN ('queued', 'running')",
            [now(), job_id],
        ).rowcount
    return bool(changed)


def retry_job(store: Store, job_id: int) -> None:
    """Queue a failed or cancelled job again; it continues from its stored rollouts."""
    store.update_job(job_id, status="queued", error=None, finished_at=None)


class EngineCache:
    """Keeps the last engine loaded, so jobs for the same model reuse it instead of loading twice.

    One at a time: a second model would double the memory, and jobs run one after another.
    """

    def __init__(self, loader: Callable[..., object] = load_engine) -> None:
        self._loader = loader
        self._key: tuple | None = None
        self._engine = None
        self._lock = threading.Lock()

    def get(self, engine: str, model: str, options: dict):
        key = (engine, model, tuple(sorted(options.items())))
        with self._lock:
            if key != self._key:
                self.drop()
                self._engine = self._loader(engine, model, **options)
                self._key = key
            return self._engine

    def drop(self) -> None:
        if self._engine is not None:
            try:
                self._engine.close()
            finally:
                self._engine, self._key = None, None

    def loaded(self) -> dict | None:
        return None if self._engine is None else vars(self._engine.info)


class _Heartbeat(threading.Thread):
    """Marks the job alive every few seconds, even while one long engine call runs."""

    def __init__(self, store: Store, job_id: int) -> None:
        super().__init__(daemon=True, name=f"heartbeat-{job_id}")
        self.store, self.job_id, self.stopped = store, job_id, threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(HEARTBEAT_SECONDS):
            self.store.update_job(self.job_id, heartbeat_at=now())


def job_rollout_totals(store: Store, job_id: int) -> tuple[int, int]:
    """(rollouts, tokens) this job has stored, counted from the rollouts themselves."""
    row = store.db.execute(
        "SELECT COUNT(*), COALESCE(SUM(num_tokens), 0) FROM rollouts WHERE job_id = ?", [job_id]
    ).fetchone()
    return int(row[0]), int(row[1])


def create_generate_job(
    store: Store,
    *,
    policy: str,
    problem_ids: list[int],
    k: int,
    sampling: SamplingParams,
    engine: str = "transformers",
    engine_options: dict | None = None,
    template: str | None = None,
    rule: str = "line",
) -> int:
    """Queue a job that samples k solutions per problem from the policy; returns its id."""
    if not problem_ids:
        raise StepScopeError("no problems to generate solutions for")
    policy_template = load_template(template) if template else load_template()
    manifest = {
        "policy": policy, "engine": engine, "engine_options": engine_options or {},
        "problem_ids": list(problem_ids), "k": k, "sampling": sampling.as_manifest(),
        "prompt_template": {"name": policy_template.name, "sha256": policy_template.sha256},
        "splitter": rule, "grader": GRADER_NAME, "code_version": code_version(),
    }  # fmt: skip
    return store.create_job("generate", manifest, planned=len(problem_ids) * k)


def _sampling_from(manifest: dict) -> SamplingParams:
    return SamplingParams(**{**manifest["sampling"], "stop": tuple(manifest["sampling"]["stop"])})


def _estimate(store: Store, job: dict, engine, should_stop, on_progress) -> bool:
    """Returns whether the job was cancelled."""
    manifest, job_id = job["manifest"], job["id"]
    tasks = load_tasks(store, manifest["trajectory_ids"], load_template(manifest["prompt_template"]["name"]))
    done_before, tokens_before = job_rollout_totals(store, job_id)

    def report(progress: Progress) -> None:
        store.update_job(
            job_id, planned=done_before + progress.planned, done=done_before + progress.done,
            tokens=tokens_before + progress.tokens, heartbeat_at=now(),
        )  # fmt: skip
        on_progress(progress)

    progress = run_estimate(
        store, engine, tasks, strategy_from_manifest(manifest["strategy"]), manifest["policy"],
        _sampling_from(manifest), job_id=job_id, rows_per_call=manifest.get("rows_per_call", 64),
        should_stop=should_stop, on_progress=report,
    )  # fmt: skip
    return progress.cancelled


def _generate(store: Store, job: dict, engine, should_stop, on_progress) -> bool:
    manifest, job_id = job["manifest"], job["id"]
    done_before = len(problems_done_by_job(store, job["key"])) * manifest["k"]

    def report(progress: GenerateProgress) -> None:
        store.update_job(job_id, done=done_before + progress.done, tokens=progress.tokens, heartbeat_at=now())
        on_progress(progress)

    progress = run_generate(
        store, engine, manifest["problem_ids"], manifest["k"], manifest["policy"],
        _sampling_from(manifest), load_template(manifest["prompt_template"]["name"]),
        job_key=job["key"], rule=manifest.get("splitter", "line"), should_stop=should_stop,
        on_progress=report,
    )  # fmt: skip
    return progress.cancelled


RUNNERS = {"estimate": _estimate, "generate": _generate, **JUDGING_RUNNERS}


def run_job(
    store: Store,
    job: dict,
    engines: EngineCache,
    on_progress: Callable = lambda progress: None,
) -> str:
    """Run a claimed job to its end; returns the final status (done, cancelled or failed)."""
    job_id, manifest = job["id"], job["manifest"]
    heartbeat = _Heartbeat(store, job_id)
    heartbeat.start()
    try:
        runner = RUNNERS.get(job["kind"])
        if runner is None:
            raise StepScopeError(f"job {job_id}: unknown kind {job['kind']!r}")
        engine = engines.get(manifest["engine"], manifest["policy"], manifest.get("engine_options", {}))
        engine_info = {k: v for k, v in vars(engine.info).items() if k != "load_seconds"}
        store.update_job(job_id, manifest={**manifest, "engine_info": engine_info})
        cancelled = runner(
            store, job, engine, lambda: store.get_job(job_id)["status"] == "cancelled", on_progress
        )
        status = "cancelled" if cancelled else "done"
        store.update_job(job_id, status=status, finished_at=now())
        return status
    except StepScopeError as error:
        store.update_job(job_id, status="failed", error=str(error), finished_at=now())
        return "failed"
    except Exception as error:  # an engine crash or out of memory: the job fails, the app lives on
        engines.drop()  # a crashed engine may be unusable; the retry loads it afresh
        store.update_job(job_id, status="failed", error=f"{type(error).__name__}: {error}", finished_at=now())
        return "failed"
    finally:
        heartbeat.stopped.set()


def default_sampling(max_new_tokens: int = 128, temperature: float = 0.7, seed: int = 0) -> SamplingParams:
    return SamplingParams(
        n=1, max_new_tokens=max_new_tokens, temperature=temperature, top_p=1.0, stop=POLICY_STOP, seed=seed
    )


class JobWorker(threading.Thread):
    """The app's background worker: runs queued (and abandoned) jobs one at a time.

    It never touches Streamlit; pages read progress from the store.
    """

    def __init__(self, db_path: str, poll_seconds: float = 1.0) -> None:
        super().__init__(daemon=True, name="stepscope-jobs")
        self.db_path, self.poll_seconds = db_path, poll_seconds
        self.engines = EngineCache()
        self.stopped = threading.Event()

    def run(self) -> None:
        store = Store.open(self.db_path)
        while not self.stopped.is_set():
            job = claim_job(store)
            if job is None:
                self.stopped.wait(self.poll_seconds)
                continue
            run_job(store, job, self.engines)
