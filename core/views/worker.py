"""The app's job worker: a supervised process per database file (core.jobs.worker_process).

The Streamlit server starts it, watches it, and starts it again if it dies (kill -9, out of
memory). It runs at a lower CPU priority than the server; nothing on the save path waits for
it (pages only read job rows). What it has loaded is read from the store: the running job's
manifest records its engine.

`supervise(path)` is the server's one supervisor per database file, kept in a module-level
registry under a lock, not in st.cache_resource: Streamlit's `clear_cache` message, which any
client can send, empties that cache, and each emptying started another supervisor. Across
servers, the worker's lock file (`DB.worker.lock`, core.jobs.worker_process) keeps it to one
working process per file.

Warm start: `supervise(path, preload=MODEL)` has the worker load MODEL before the first job asks
(the app asks it for its default database and policy; pages/_shared.worker_for); what it holds is
then read from its status file (`worker_status`), not only from a running job.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import psutil

from core.jobs.worker_process import LOCK_HELD_EXIT, lock_path, status_path

# Cheap to import (core.store is imported where a store is opened): the app starts its worker
# from this module before it imports the rest of itself (pages/_warm_start.py).

REPO = Path(__file__).resolve().parents[2]
RESTART_SECONDS = 1.0
# Another process holds the file's worker lock (a second server, or an orphan still exiting):
# look again now and then, and take over when it is gone.
LOCK_RETRY_SECONDS = 5.0

log = logging.getLogger(__name__)


def worker_status(db_path: str | os.PathLike[str]) -> dict | None:
    """What the live worker of `db_path` says it holds ({"pid", "loaded", "preloading"}), if it
    keeps a status file (a preloading one does); None otherwise, or when the file is a dead
    worker's (its process is gone, or another holds the lock file now)."""
    try:
        status = json.loads(status_path(db_path).read_text())
        holder = int(lock_path(db_path).read_text().strip() or 0)
        alive = psutil.Process(holder).status() != psutil.STATUS_ZOMBIE
    except (OSError, ValueError, psutil.Error):
        return None
    return status if alive and isinstance(status, dict) and status.get("pid") == holder else None


class LoadedEngine:
    """`worker.engines.loaded()` for a worker in another process: what its status file says it
    holds, else the running job's engine (from the job's manifest)."""

    def __init__(self, db_path: str) -> None:
        self.db_path = db_path
        self._store = None

    def loaded(self) -> dict | None:
        status = worker_status(self.db_path)
        if status and status.get("loaded"):
            return status["loaded"]
        if self._store is None:
            from core.store import Store

            self._store = Store.open(self.db_path)
        for job in self._store.list_jobs(status="running"):
            info = (job.get("manifest") or {}).get("engine_info")
            if info:
                return info
        return None

    def preloading(self) -> str | None:
        """The model the worker is loading before any job asked for it, or None."""
        status = worker_status(self.db_path)
        return status.get("preloading") if status else None


class WorkerSupervisor(threading.Thread):
    """Keeps one worker process alive for a database file, for as long as the server runs."""

    def __init__(self, db_path: str, preload: str | None = None) -> None:
        super().__init__(daemon=True, name=f"worker-supervisor:{Path(db_path).name}")
        self.db_path = str(db_path)
        self.preload = preload
        self.engines = LoadedEngine(self.db_path)
        self.process: subprocess.Popen | None = None
        self.restarts = 0
        self.stopped = threading.Event()
        atexit.register(self.stop)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process and self.process.poll() is None else None

    def _spawn(self) -> subprocess.Popen:
        env = {**os.environ, "STEPSCOPE_WORKER_FOLLOW_PARENT": "1",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}  # fmt: skip
        preload = ["--preload", self.preload] if self.preload else []
        return subprocess.Popen([sys.executable, "-m", "core.jobs.worker_process", self.db_path, *preload],
                                cwd=REPO, env=env, stdin=subprocess.DEVNULL)  # fmt: skip

    def run(self) -> None:
        while not self.stopped.is_set():
            self.process = self._spawn()
            code = self.process.wait()
            if self.stopped.is_set():
                return
            if code == LOCK_HELD_EXIT:
                self.stopped.wait(LOCK_RETRY_SECONDS)
                continue
            self.restarts += 1
            log.warning("job worker for %s exited with %s; starting it again", self.db_path, code)
            self.stopped.wait(RESTART_SECONDS)

    def stop(self) -> None:
        self.stopped.set()
        process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()


_SUPERVISORS: dict[str, WorkerSupervisor] = {}
_SUPERVISORS_LOCK = threading.Lock()


def supervise(db_path: str | os.PathLike[str], preload: str | None = None) -> WorkerSupervisor:
    """The running supervisor of the database file `db_path`, started on first use: one per file
    for the life of the server, whatever sessions or clients ask for. `preload` (a model name) is
    what its worker loads before any job asks; it counts when the supervisor starts, and a
    restarted worker preloads it again."""
    key = str(Path(db_path).resolve())
    with _SUPERVISORS_LOCK:
        worker = _SUPERVISORS.get(key)
        if worker is None or worker.stopped.is_set() or not worker.is_alive():
            worker = WorkerSupervisor(key, preload=preload)
            worker.start()
            _SUPERVISORS[key] = worker
        return worker


def supervisor(db_path: str | os.PathLike[str]) -> WorkerSupervisor | None:
    """The supervisor of `db_path` if this server started one."""
    with _SUPERVISORS_LOCK:
        return _SUPERVISORS.get(str(Path(db_path).resolve()))
