"""The job worker as a process of its own: `python -m core.jobs.worker_process DB`.

The app starts one per database file (core.views.worker.WorkerSupervisor) and `stepscope jobs
worker` runs the same code in the foreground; either way the loop is `runner.JobWorker`.
A process, not a thread of the Streamlit server: a job's Python work (tokenising, grading,
storing rollouts) would otherwise hold the server's interpreter lock while people click.
It runs at a lower CPU priority (os.nice) than the server, so on a small busy machine the
annotators' saves come first and the job takes what is left.

One worker per database file: an exclusive lock on `DB.worker.lock` (released by the kernel
when the process dies, kill -9 included), so a second server on the same file, or a restart
while an orphan is still exiting, does not run jobs twice. A worker whose parent has gone
(the app was killed) exits within a second; a job it was running resumes in the next worker
as soon as that sees its process gone (core.jobs.runner.runner_gone), from the rollouts already
stored.

Warm start: the app's worker for its default database is asked to preload the default policy
(`--preload MODEL`, core.views.worker). After the imports it loads that model in a thread while
the job loop already runs, so the first Estimate click finds it loaded instead of waiting ~30 s on
a cold server; core.jobs.runner.EngineCache.preload says what a job arriving meanwhile waits for.
What the worker holds is written to `DB.worker.json` (pid, loaded engine, model preloading), which
the app's sidebar and benchmarks/first_value.py read.
"""

from __future__ import annotations

import fcntl
import importlib
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from core.jobs.runner import EngineCache

# core.jobs.runner (and through it every job kind) is imported where a worker runs, not here: the
# app imports this module's names to start its worker before it imports the rest (pages/_preload.py).

# The lowest priority: a background job yields to every interactive process (the server and the
# annotators' browsers when they share the machine) and still runs on whatever they leave idle.
NICENESS = 19
# An operator's choice (a machine that only runs jobs; a test whose worker shares its scheduling
# group with CPU-bound processes, where 19 would starve it): 0-19, how much lower than the server.
NICENESS_ENV = "STEPSCOPE_WORKER_NICENESS"
LOCK_HELD_EXIT = 3  # another worker serves this database file
# core.grading brings sympy and math_verify (1-2 s): every rollout is graded, so an estimate job's
# first value would wait for them.
WARM_MODULES = ("torch", "transformers", "core.engines.transformers_engine", "core.grading")
PRELOAD_ENGINE = "transformers"  # the sidebar's first engine (core.engines.ENGINE_NAMES), no options

log = logging.getLogger(__name__)


def lock_path(db_path: str | os.PathLike[str]) -> Path:
    return Path(f"{Path(db_path).resolve()}.worker.lock")


def status_path(db_path: str | os.PathLike[str]) -> Path:
    return Path(f"{Path(db_path).resolve()}.worker.json")


def write_status(db_path: str | os.PathLike[str], **status) -> None:
    """What this worker holds, for readers in other processes (core.views.worker.worker_status):
    written whole to a temporary file and renamed, so a reader never sees half of it."""
    target = status_path(db_path)
    temporary = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(json.dumps({"pid": os.getpid(), **status}, default=str))
        os.replace(temporary, target)
    except OSError:  # only the sidebar's caption depends on it; jobs go on
        log.debug("cannot write %s", target, exc_info=True)


def take_lock(db_path: str | os.PathLike[str]) -> IO | None:
    """The open lock file while this process holds the database's worker lock; None if taken."""
    # The app may start its worker before anything opened the database (the warm start), so the
    # folder may not exist yet; Store.open would create it the same way.
    lock_path(db_path).parent.mkdir(parents=True, exist_ok=True)
    handle = open(lock_path(db_path), "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def warm_up() -> None:
    """Import the model libraries before the first job asks (10-30 s on a small busy machine);
    no weights are loaded until a job needs them."""
    for name in WARM_MODULES:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a missing library fails the job that needs it, with its cause
            log.debug("warm-up import of %s failed", name, exc_info=True)


def exit_with_parent(parent_pid: int, every: float = 0.5) -> None:
    """End this process when the process that started it is gone (re-parented)."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(every)
        os._exit(0)  # the job row names this process as its runner; the next worker resumes it

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def preload_in_background(engines: EngineCache, db_path: str, model: str) -> threading.Thread:
    """Load `model` into the worker's engine cache in a thread of its own (at the process's low
    priority), so that jobs are claimed meanwhile; returns the thread."""

    def load() -> None:
        engines.preload(PRELOAD_ENGINE, model, {})
        write_status(db_path, loaded=engines.loaded(), preloading=None)

    thread = threading.Thread(target=load, daemon=True, name="preload")
    thread.start()
    return thread


def serve(db_path: str, *, niceness: int = NICENESS, warm: bool = True, preload: str | None = None,
          follow_parent: bool = False) -> int:
    """Run jobs of `db_path` until killed; returns LOCK_HELD_EXIT if another worker serves it.
    With `preload`, that model is loaded (PRELOAD_ENGINE) before any job asks for it."""
    if niceness:
        os.nice(niceness)  # before the lock: a process that holds it runs at the lower priority
    held = take_lock(db_path)
    if held is None:
        return LOCK_HELD_EXIT
    if follow_parent:
        exit_with_parent(os.getppid())
    from core.jobs.runner import EngineCache, JobWorker

    engines = EngineCache()
    if preload:  # only a preloading worker keeps a status file; the others' show in their jobs' manifests

        def changed(loaded: dict | None) -> None:
            write_status(db_path, loaded=loaded, preloading=engines.preloading())

        engines = EngineCache(on_change=changed)
        write_status(db_path, loaded=None, preloading=preload)  # the imports below come first
    if warm or preload:
        warm_up()  # here, not in the preload thread: two threads importing torch at once can deadlock
    if preload:
        preload_in_background(engines, db_path, preload)
    worker = JobWorker(db_path, engines=engines)
    worker.run()  # in this thread: the process is the worker
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    preload = None
    if len(args) == 3 and args[1] == "--preload":
        args, preload = args[:1], args[2]
    if len(args) != 1:
        print("usage: python -m core.jobs.worker_process DATABASE [--preload MODEL]", file=sys.stderr)
        return 2
    niceness = os.environ.get(NICENESS_ENV, "").strip()
    if niceness and not (niceness.isdigit() and int(niceness) <= 19):
        print(f"{NICENESS_ENV} is 0-19, not {niceness!r}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING)
    return serve(args[0], preload=preload, niceness=int(niceness) if niceness else NICENESS,
                 follow_parent=os.environ.get("STEPSCOPE_WORKER_FOLLOW_PARENT") == "1")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
