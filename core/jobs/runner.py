"""Running jobs: queue a spec, claim a job, beat a heartbeat, run it, cancel or retry it.

A job is a row with a manifest (everything needed to rerun it and to know what produced its
results). Whoever runs it (the app's worker or the CLI in the foreground) claims it atomically,
beats a heartbeat while it runs, and writes progress the UI reads back. A job whose runner was
killed keeps status "running"; the next runner claims it again at once when the killed one ran on
this machine and its process is gone, otherwise once its heartbeat is stale, and, because every
kind plans from what is stored, continues without redoing any.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Callable

import psutil

from core.engines import load_engine
from core.errors import StepScopeError
from core.jobs.registry import spec_of
from core.jobs.spec import JobContext, JobSpec, Progress
from core.search.compute import ComputeRecord, MeteredEngine
from core.store import Store, now

HEARTBEAT_SECONDS = 5.0
# How often an idle worker looks for a queued job: a click's job starts within this (one indexed
# SELECT per look).
POLL_SECONDS = 0.5
STALE_AFTER_SECONDS = 30.0

log = logging.getLogger(__name__)


def queue(store: Store, spec: JobSpec) -> int:
    """Validate the spec once and store it as a queued job; returns the job id."""
    spec.validate(store)
    return store.create_job(spec.kind, spec.to_manifest(store), planned=spec.planned())


def this_runner() -> str:
    """This process as a job's runner: host, process id and the process's start time (a process id
    reused by a later process has another start time)."""
    process = psutil.Process()
    return f"{socket.gethostname()}:{process.pid}:{process.create_time():.2f}"


def runner_gone(runner: str) -> bool:
    """Whether a runner ran on this machine and its process no longer exists. A runner on another
    machine (a database on a shared disk) cannot be checked: only its heartbeat tells."""
    parts = runner.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    _, process_id, started = parts
    try:
        process = psutil.Process(int(process_id))
        return f"{process.create_time():.2f}" != started or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def claim_job(store: Store, job_id: int | None = None, stale_after: float = STALE_AFTER_SECONDS) -> dict | None:
    """Mark one job running here and return it: the given one, or the oldest queued or abandoned."""
    gone = [runner for runner in store.running_job_runners() if runner_gone(runner)]
    return store.claim_job(job_id, stale_after, runner=this_runner(), gone_runners=gone)


def cancel_job(store: Store, job_id: int) -> bool:
    """Ask a queued or running job to stop; the runner stops before its next engine call."""
    return store.cancel_job(job_id)


def retry_job(store: Store, job_id: int) -> None:
    """Queue a failed or cancelled job again; it continues from what it stored."""
    store.update_job(job_id, status="queued", error=None, finished_at=None)


class EngineCache:
    """Keeps the last engine loaded, so jobs for the same model reuse it instead of loading twice.

    One at a time: a second model would double the memory, and jobs run one after another.
    `preload` loads one before any job asks (the app's worker: the default policy, core.jobs.worker_process).
    """

    def __init__(self, loader: Callable[..., object] = load_engine,
                 on_change: Callable[[dict | None], None] = lambda info: None) -> None:  # fmt: skip
        self._loader = loader
        self._on_change = on_change  # told what is loaded after every change (the worker's status file)
        self._key: tuple | None = None
        self._engine = None
        self._lock = threading.Lock()  # held while a job's engine is looked up, loaded or swapped
        self._preloading: tuple[tuple, threading.Event] | None = None  # set and read under _lock

    @staticmethod
    def key(engine: str, model: str, options: dict) -> tuple:
        return (engine, model, tuple(sorted(options.items())))

    def get(self, engine: str, model: str, options: dict):
        key = self.key(engine, model, options)
        while True:
            with self._lock:
                preloading = self._preloading
                if preloading is None or preloading[0] != key:
                    if key != self._key:
                        self.drop()
                        self._engine = self._loader(engine, model, **options)
                        self._key = key
                        self._on_change(self.loaded())
                    return self._engine
            preloading[1].wait()  # the same model is loading already: take it, do not load it twice

    def preload(self, engine: str, model: str, options: dict) -> bool:
        """Load an engine before a job asks for it; whether the cache holds it afterwards.

        It loads outside the lock that jobs take: a job for this model waits for this load instead
        of starting a second one, and a job for another model does not wait at all. That job loads
        its own engine beside this one (both in memory for a moment) and keeps it; this one is
        closed unused. A failure is not raised: the job that needs the model loads it again and
        fails with the cause.
        """
        key, done = self.key(engine, model, options), threading.Event()
        with self._lock:
            if self._engine is not None or self._preloading is not None:
                return self._key == key  # a job (or another preload) got there first
            self._preloading = (key, done)
        try:
            loaded = self._loader(engine, model, **dict(options))
            with self._lock:  # before the waiting job is let go, so it finds the engine in place
                if self._engine is None:
                    self._engine, self._key = loaded, key
                    self._on_change(self.loaded())
                    return True
            loaded.close()
            return False
        except Exception:  # noqa: BLE001 - see the docstring: the job reports it
            log.warning("preloading %s on %s failed; the first job for it loads it again", model, engine,
                        exc_info=True)  # fmt: skip
            return False
        finally:
            with self._lock:
                self._preloading = None
            done.set()

    def preloading(self) -> str | None:
        """The model being preloaded now, or None."""
        preloading = self._preloading
        return None if preloading is None else preloading[0][1]

    def drop(self) -> None:
        if self._engine is not None:
            try:
                self._engine.close()
            finally:
                self._engine, self._key = None, None
                self._on_change(None)

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


def run_job(
    store: Store,
    job: dict,
    engines: EngineCache,
    on_progress: Callable[[Progress], None] = lambda progress: None,
) -> str:
    """Run a claimed job to its end; returns the final status (done, cancelled or failed)."""
    job_id = job["id"]
    heartbeat = _Heartbeat(store, job_id)
    heartbeat.start()
    try:
        spec = spec_of(job)
        engine = engines.get(spec.engine, spec.model_to_load(), dict(spec.engine_options))
        engine_info = {k: v for k, v in vars(engine.info).items() if k != "load_seconds"}
        store.update_job(job_id, manifest={**job["manifest"], "engine_info": engine_info})

        # What this run spends adds to what earlier runs of the job recorded (a resumed job).
        before, spent = ComputeRecord.from_manifest(job.get("compute")), ComputeRecord()
        metered = engine if spec.counts_compute else MeteredEngine(engine, spent, spec.engine_role)
        started = time.perf_counter()

        def compute() -> dict:
            spent.total_seconds = time.perf_counter() - started
            return before.plus(spent).as_manifest()

        def report(progress: Progress) -> None:
            counted = {} if spec.counts_compute else {"compute": compute()}
            store.update_job(job_id, planned=progress.planned, done=progress.done, tokens=progress.tokens,
                             heartbeat_at=now(), **counted)  # fmt: skip
            on_progress(progress)

        context = JobContext(store, job_id, job["key"], metered, lambda: store.job_status(job_id) == "cancelled", report)
        status = "cancelled" if spec.run(context) else "done"
        if not spec.counts_compute:
            finished, counted = store.get_job(job_id), compute()
            store.update_job(job_id, compute=counted, manifest={**finished["manifest"], "compute": counted})
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


class JobWorker(threading.Thread):
    """Runs queued (and abandoned) jobs one at a time until stopped.

    It never touches Streamlit; pages read progress from the store.
    """

    def __init__(self, db_path: str, poll_seconds: float = POLL_SECONDS, engines: EngineCache | None = None) -> None:
        super().__init__(daemon=True, name="stepscope-jobs")
        self.db_path, self.poll_seconds = db_path, poll_seconds
        self.engines = engines or EngineCache()
        self.stopped = threading.Event()

    def run(self) -> None:
        store = Store.open(self.db_path)
        while not self.stopped.is_set():
            job = claim_job(store)
            if job is None:
                self.stopped.wait(self.poll_seconds)
                continue
            run_job(store, job, self.engines)
