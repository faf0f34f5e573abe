"""Warm start (issue 24, item 7): the app's worker loads the default policy before the first job.

- core.jobs.runner.EngineCache.preload: a job for the preloaded model waits for that load instead
  of loading it twice and reuses the engine; a job for another model does not wait behind the
  preload, and the preloaded engine is closed unused; a failed preload leaves the job to load it
  and fail with the cause.
- A real worker process (`python -m core.jobs.worker_process DB --preload MODEL`, through the
  app's supervisor) loads the tiny model before any job, says so in its status file, and the
  first estimate job runs on that engine without loading it again.
- The pages ask for a preload only for a browser on the default database (an AppTest session,
  which has no HTTP headers, does not get one).
"""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from core.jobs.estimate import EstimateSpec, default_sampling
from core.jobs.runner import EngineCache, JobWorker, queue
from core.jobs.worker_process import NICENESS_ENV, preload_in_background
from core.sample_solutions import ensure_trajectories, featured_trajectory
from core.store import Store
from core.views.worker import WorkerSupervisor, worker_status

WAIT = 120.0


class FakeEngine:
    def __init__(self, model: str) -> None:
        self.info = SimpleNamespace(engine="fake", model=model, device="cpu")
        self.closed = False

    def close(self) -> None:
        self.closed = True


class GatedLoader:
    """A loader whose loads of `slow` block until `release` is set; it records every load."""

    def __init__(self, slow: str = "default") -> None:
        self.slow, self.release, self.started = slow, threading.Event(), threading.Event()
        self.loads: list[str] = []
        self.engines: list[FakeEngine] = []

    def __call__(self, engine: str, model: str, **options) -> FakeEngine:
        self.loads.append(model)
        if model == self.slow:
            self.started.set()
            assert self.release.wait(WAIT), "the test never released the slow load"
        loaded = FakeEngine(model)
        self.engines.append(loaded)
        return loaded


def in_thread(target, *args) -> tuple[threading.Thread, dict]:
    result: dict = {}

    def run() -> None:
        result["value"] = target(*args)
        result["at"] = time.monotonic()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def test_a_job_for_the_preloaded_model_waits_for_that_load_and_reuses_it():
    loader = GatedLoader()
    changes: list = []
    cache = EngineCache(loader, on_change=changes.append)
    preload, preloaded = in_thread(cache.preload, "transformers", "default", {})
    assert loader.started.wait(WAIT)
    assert cache.preloading() == "default"
    job, got = in_thread(cache.get, "transformers", "default", {})
    job.join(0.5)
    assert job.is_alive(), "the job loaded the model itself instead of waiting for the preload"
    loader.release.set()
    preload.join(WAIT)
    job.join(WAIT)
    assert preloaded["value"] is True and loader.loads == ["default"]  # loaded once
    assert got["value"] is loader.engines[0] and not got["value"].closed
    assert cache.get("transformers", "default", {}) is loader.engines[0] and loader.loads == ["default"]
    assert cache.preloading() is None and cache.loaded()["model"] == "default"
    assert [change["model"] for change in changes] == ["default"]


def test_a_job_for_another_model_does_not_wait_behind_the_preload():
    loader = GatedLoader()
    cache = EngineCache(loader)
    preload, preloaded = in_thread(cache.preload, "transformers", "default", {})
    assert loader.started.wait(WAIT)
    job, got = in_thread(cache.get, "transformers", "other", {})
    job.join(WAIT)
    assert not job.is_alive() and got["value"].info.model == "other"  # while the preload still loads
    assert preload.is_alive()
    loader.release.set()
    preload.join(WAIT)
    assert preloaded["value"] is False
    default, other = sorted(loader.engines, key=lambda e: e.info.model)
    assert default.closed and not other.closed  # the job's engine stays; the unused preload is closed
    assert cache.loaded()["model"] == "other" and cache.preloading() is None


def test_a_preload_after_a_job_loaded_its_model_loads_nothing():
    loader = GatedLoader(slow="none")
    cache = EngineCache(loader)
    cache.get("transformers", "other", {})
    assert cache.preload("transformers", "default", {}) is False
    assert loader.loads == ["other"] and cache.loaded()["model"] == "other"


def test_a_failed_preload_leaves_the_job_to_load_it_and_report_the_cause():
    attempts = []

    def broken(engine: str, model: str, **options):
        attempts.append(model)
        raise RuntimeError(f"no weights for {model}")

    cache = EngineCache(broken)
    assert cache.preload("transformers", "default", {}) is False
    assert cache.loaded() is None and cache.preloading() is None
    with pytest.raises(RuntimeError, match="no weights for default"):
        cache.get("transformers", "default", {})
    assert attempts == ["default", "default"]


def seeded_job(db, policy: str) -> tuple[Store, int]:
    store = Store.open(db)
    ensure_trajectories(store)
    spec = EstimateSpec(policy=policy, trajectory_ids=(featured_trajectory(store),), n=1, sampling=default_sampling(4))
    return store, queue(store, spec)


def wait_for(condition, what: str, timeout: float = WAIT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


def test_the_worker_preloads_in_the_background_and_its_first_job_reuses_the_engine(tmp_path, tiny_model_dir):
    """In process: the preload thread and the job loop of core.jobs.worker_process, the real
    tiny model; the job is queued before the preload ends and loads nothing itself."""
    from core.engines import load_engine

    loads = []

    def counting(engine: str, model: str, **options):
        loads.append(model)
        time.sleep(1.0)  # a load long enough for the job to arrive while it runs
        return load_engine(engine, model, **options)

    db, policy = tmp_path / "warm.db", str(tiny_model_dir)
    store, job_id = seeded_job(db, policy)
    engines = EngineCache(counting)
    preload = preload_in_background(engines, str(db), policy)
    worker = JobWorker(str(db), poll_seconds=0.1, engines=engines)
    worker.start()
    try:
        job = wait_for(lambda: (row := store.get_job(job_id))["status"] in ("done", "failed") and row, "the job")
        assert job["status"] == "done", job["error"]
        preload.join(WAIT)
        assert loads == [policy]  # one load: the preload's
        assert job["manifest"]["engine_info"]["model"] == engines.loaded()["model"]
    finally:
        worker.stopped.set()
        worker.join(WAIT)
        engines.drop()


def test_the_app_supervisor_starts_a_worker_that_preloads_and_reports_it(tmp_path, tiny_model_dir, monkeypatch):
    """A real worker process started the way the app starts it (core.views.worker), asked to
    preload the tiny model: its status file says it is loaded before any job, and the first job
    runs on that engine (the status's load time is unchanged: a second load would rewrite it)."""
    db, policy = tmp_path / "warm-process.db", str(tiny_model_dir)
    store = Store.open(db)
    ensure_trajectories(store)
    # The worker shares this test's scheduling group (CPU-bound processes beside the suite too, in a
    # loaded run), where the lowest priority would starve it: its priority is not what is tested here.
    monkeypatch.setenv(NICENESS_ENV, "0")
    supervisor = WorkerSupervisor(str(db.resolve()), preload=policy)
    supervisor.start()
    try:
        status = wait_for(lambda: (s := worker_status(db)) and s.get("loaded") and s, "the preloaded model")
        assert status["pid"] == supervisor.pid and status["preloading"] is None
        assert status["loaded"]["model"] == policy or status["loaded"]["model"].endswith(tiny_model_dir.name)
        assert supervisor.engines.loaded() == status["loaded"] and supervisor.engines.preloading() is None
        _, job_id = seeded_job(db, policy)
        job = wait_for(lambda: (row := store.get_job(job_id))["status"] in ("done", "failed") and row, "the job")
        assert job["status"] == "done", job["error"]
        assert worker_status(db)["loaded"] == status["loaded"]  # the same engine, not loaded again
    finally:
        supervisor.stop()
    assert worker_status(db) is None or not supervisor.pid  # a dead worker's status is not believed


class FakeQueryParams(dict):
    pass


@pytest.fixture
def browser(tmp_path, monkeypatch):
    """pages/_warm_start.py's view of a session: its headers, links and bind address; the
    supervisors it would start are recorded instead."""
    import pages._warm_start as warm

    default = tmp_path / "data" / "stepscope.db"
    monkeypatch.setenv("STEPSCOPE_DB", str(default))
    monkeypatch.setenv("STEPSCOPE_DEFAULT_POLICY", "some-policy")
    monkeypatch.delenv("STEPSCOPE_SERVED_REMOTELY", raising=False)
    session = SimpleNamespace(headers={"Host": "localhost:8501"}, params=FakeQueryParams(), address="localhost",
                              started=[], default=default)  # fmt: skip
    monkeypatch.setattr(warm, "browser_headers", lambda: session.headers)
    monkeypatch.setattr(warm.st, "query_params", session.params)
    monkeypatch.setattr(warm.st, "get_option", lambda name: session.address)
    monkeypatch.setattr(warm, "supervise", lambda path, preload=None: session.started.append((path, preload)))
    return session


def test_the_pages_ask_for_a_preload_only_for_a_browser_on_the_default_database(browser):
    from pages._warm_start import warm_start_model

    assert warm_start_model(str(browser.default)) == "some-policy"
    assert warm_start_model(str(browser.default.parent / "other.db")) is None
    browser.headers = {}  # AppTest: no browser, no preload
    assert warm_start_model(str(browser.default)) is None


def test_the_first_run_starts_the_default_worker_for_the_local_organiser_only(browser):
    from pages._warm_start import start_default_worker

    assert start_default_worker() is True
    assert browser.started == [(str(browser.default.resolve()), "some-policy")]
    refused = [
        {"headers": {}},  # AppTest or a plain import
        {"headers": {"Host": "rebound.example"}},  # the gate refuses it (DNS rebinding)
        {"address": "0.0.0.0"},  # served beyond loopback: nothing before a sign-in
        {"params": {"token": "x"}},  # an invitation: its own database file
        {"params": {"db": "other.db"}},  # a link to another file
    ]
    for case in refused:
        browser.started.clear()
        browser.headers = case.get("headers", {"Host": "localhost:8501"})
        browser.address = case.get("address", "localhost")
        browser.params.clear()
        browser.params.update(case.get("params", {}))
        assert start_default_worker() is False and browser.started == [], case
    browser.params.update({"db": "stepscope.db"})  # a link to the default file itself
    browser.headers = {"Host": "127.0.0.1:8501"}
    assert start_default_worker() is True and browser.started


def test_starting_the_worker_imports_no_job_kind_and_no_model_library():
    """pages/_preload.py starts the worker before its heavy imports: what that needs is cheap."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, pages._warm_start; "
            "print(sorted(m for m in ('core.jobs.runner', 'core.jobs.registry', 'torch', 'transformers', "
            "'core.sample_solutions') if m in sys.modules))")  # fmt: skip
    shown = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent,
                           capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert shown.strip() == "[]"


def test_config_turns_the_file_watcher_off():
    """The watcher watched the whole checkout (.venv/ too) and flooded the log while packages
    changed; a user who edits the code restarts the server."""
    import tomllib
    from pathlib import Path

    config = tomllib.loads((Path(__file__).resolve().parent.parent / ".streamlit" / "config.toml").read_text())
    assert config["server"]["fileWatcherType"] == "none" and config["server"]["runOnSave"] is False


def test_a_worker_started_before_its_data_folder_exists_creates_it(tmp_path):
    """The warm start may start the worker before the server's first store opened the file."""
    from core.jobs.worker_process import lock_path, take_lock

    db = tmp_path / "not-yet" / "stepscope.db"
    handle = take_lock(db)
    try:
        assert handle is not None and lock_path(db).read_text().strip().isdigit()
    finally:
        handle.close()


def test_first_value_results_name_each_figure_and_state_the_load():
    """benchmarks/results/first_value.json: per mode, medians over cold starts of figures named
    for what they measure, each run with the load average at its start and end; the target and
    whether the machine was quiet are stated beside them."""
    import json
    import statistics
    from pathlib import Path

    result = json.loads((Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "first_value.json").read_text())
    assert result["target"]["first_value_s"] == 3.0 and result["commit"] and result["date"]
    assert len(result["load_average_start"]) == len(result["load_average_end"]) == 3
    assert isinstance(result["quiet_machine"], bool)
    checkouts = [result["modes"]] + ([result["baseline"]["modes"]] if "baseline" in result else [])
    for modes in checkouts:
        assert "click_when_interactive" in modes
        for name, mode in modes.items():
            runs, figures = mode["runs"], mode["summary"]
            assert len(runs) >= 3, name  # a median of three cold starts at least
            for key in ("first_value_s", "first_value_harness_s", "server_start_to_interactive_s"):
                assert figures[key]["median"] == round(statistics.median(run[key] for run in runs), 3), (name, key)
            assert figures["model_loaded_at_click"] == [run["model_loaded_at_click"] for run in runs]
            assert figures["median_within_target"] == (figures["first_value_s"]["median"] <= 3.0)
            for run in runs:
                assert len(run["load_average_start"]) == len(run["load_average_end"]) == 3
                assert run["first_value_s"] > 0 and run["server_start_to_interactive_s"] > run["server_up_s"] > 0
