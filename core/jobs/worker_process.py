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
"""

from __future__ import annotations

import fcntl
import importlib
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import IO

from core.jobs.runner import JobWorker

# The lowest priority: a background job yields to every interactive process (the server and the
# annotators' browsers when they share the machine) and still runs on whatever they leave idle.
NICENESS = 19
LOCK_HELD_EXIT = 3  # another worker serves this database file
WARM_MODULES = ("torch", "transformers", "core.engines.transformers_engine")

log = logging.getLogger(__name__)


def lock_path(db_path: str | os.PathLike[str]) -> Path:
    return Path(f"{Path(db_path).resolve()}.worker.lock")


def take_lock(db_path: str | os.PathLike[str]) -> IO | None:
    """The open lock file while this process holds the database's worker lock; None if taken."""
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


def serve(db_path: str, *, niceness: int = NICENESS, warm: bool = True, follow_parent: bool = False,
          poll_seconds: float = 1.0) -> int:
    """Run jobs of `db_path` until killed; returns LOCK_HELD_EXIT if another worker serves it."""
    if niceness:
        os.nice(niceness)  # before the lock: a process that holds it runs at the lower priority
    held = take_lock(db_path)
    if held is None:
        return LOCK_HELD_EXIT
    if follow_parent:
        exit_with_parent(os.getppid())
    if warm:
        warm_up()
    worker = JobWorker(db_path, poll_seconds=poll_seconds)
    worker.run()  # in this thread: the process is the worker
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m core.jobs.worker_process DATABASE", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING)
    return serve(args[0], follow_parent=os.environ.get("STEPSCOPE_WORKER_FOLLOW_PARENT") == "1")


if __name__ == "__main__":
    sys.exit(main())
