"""Jobs on a real tiny model and a real SQLite file: resume after kill -9, cancel, fail, queue."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_runner import run_cli
from core.engines import load_engine
from core.jobs.estimate import EstimateSpec, default_sampling
from core.jobs.runner import (EngineCache, JobWorker, cancel_job, claim_job, queue, retry_job, run_job, runner_gone,
                              this_runner)
from core.store import Store

SOLUTIONS = [
    "Tom has 8 + 5 = 13 apples.\nThe answer is 13.",
    "First, 6 * 4 = 24.\nThen 24 - 4 = 20.\nThe answer is 20.",
    "The baker sells 24 - 9 = 15.\nSo 15 muffins are left.\nThe answer is 15.",
]


def add_trajectories(store: Store, count: int) -> list[int]:
    ids = []
    for i in range(count):
        problem_id = store.add_problem("jobs-test", f"Problem {i}: what is {i} + 13?", str(13 + i))
        solution = SOLUTIONS[i % len(SOLUTIONS)] + f" (variant {i})"
        ids.append(store.add_trajectory(problem_id, solution, source="test", rule="line"))
    return ids


def per_step_counts(db: Path, policy: str) -> dict[int, int]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT step_id, COUNT(*) FROM rollouts WHERE model = ? GROUP BY step_id", [policy]))


def test_estimate_job_runs_and_records_its_manifest(tmp_path, tiny_model_dir):
    store = Store.open(tmp_path / "jobs.db")
    ids = add_trajectories(store, 2)
    policy = str(tiny_model_dir)
    job_id = queue(store, EstimateSpec(policy=policy, trajectory_ids=tuple(ids), n=3, sampling=default_sampling(8)))
    status = run_job(store, claim_job(store, job_id), EngineCache())
    job = store.get_job(job_id)
    assert status == "done" and job["status"] == "done"
    steps = sum(len(store.steps(t)) for t in ids)
    assert job["done"] == job["planned"] == 3 * steps and job["tokens"] > 0
    manifest = job["manifest"]
    for key in ("policy", "engine", "strategy", "sampling", "prompt_template", "grader", "code_version", "engine_info"):
        assert key in manifest, key
    assert manifest["engine_info"]["extra"]["fingerprint"].startswith("dir:")
    assert set(per_step_counts(tmp_path / "jobs.db", policy).values()) == {3}


def test_cancel_stops_before_the_next_engine_call(tmp_path, tiny_model_dir):
    store = Store.open(tmp_path / "cancel.db")
    ids = add_trajectories(store, 4)
    job_id = queue(store, EstimateSpec(
        policy=str(tiny_model_dir), trajectory_ids=tuple(ids), n=4, sampling=default_sampling(8), rows_per_call=4,
    ))
    calls = []

    def cancel_after_first_call(progress):
        calls.append(progress.done)
        cancel_job(store, job_id)

    status = run_job(store, claim_job(store, job_id), EngineCache(), on_progress=cancel_after_first_call)
    assert status == "cancelled" and store.get_job(job_id)["status"] == "cancelled"
    assert len(calls) == 1 and store.get_job(job_id)["done"] == 4


def test_failure_is_recorded_with_its_cause_and_retry_works(tmp_path, tiny_model_dir):
    store = Store.open(tmp_path / "fail.db")
    ids = add_trajectories(store, 1)
    model = tmp_path / "model-not-there-yet"
    job_id = queue(store, EstimateSpec(policy=str(model), trajectory_ids=tuple(ids), n=2, sampling=default_sampling(8)))
    engines = EngineCache()
    assert run_job(store, claim_job(store, job_id), engines) == "failed"
    failed = store.get_job(job_id)
    assert failed["status"] == "failed" and "unknown model" in failed["error"] and failed["finished_at"]

    # The cause goes away (the model arrives where the job expects it); a retry finishes the job.
    model.symlink_to(tiny_model_dir, target_is_directory=True)
    retry_job(store, job_id)
    assert store.get_job(job_id)["status"] == "queued" and store.get_job(job_id)["error"] is None
    assert run_job(store, claim_job(store), engines) == "done"  # the oldest queued job: this one
    job = store.get_job(job_id)
    steps = len(store.steps(ids[0]))
    assert (job["status"], job["error"], job["done"]) == ("done", None, 2 * steps)
    assert set(per_step_counts(tmp_path / "fail.db", str(model)).values()) == {2}


def test_jobs_for_the_same_model_load_it_once(tmp_path, tiny_model_dir):
    store = Store.open(tmp_path / "queue.db")
    ids = add_trajectories(store, 2)
    loads = []

    def counting_loader(engine, model, **options):
        loads.append(model)
        return load_engine(engine, model, **options)

    for trajectory in ids:
        queue(store, EstimateSpec(policy=str(tiny_model_dir), trajectory_ids=(trajectory,), n=2, sampling=default_sampling(8)))
    worker = JobWorker(str(tmp_path / "queue.db"), poll_seconds=0.2)
    worker.engines = EngineCache(counting_loader)
    worker.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and any(j["status"] != "done" for j in store.list_jobs()):
        time.sleep(0.5)
    worker.stopped.set()
    assert [j["status"] for j in store.list_jobs()] == ["done", "done"]
    assert loads == [str(tiny_model_dir)]


CLAIM_AND_WAIT = """import sys
from core.jobs.runner import claim_job
from core.store import Store
job = claim_job(Store.open(sys.argv[1]), int(sys.argv[2]))
print(job["status"], flush=True)
sys.stdin.read()  # hold the claim until the test lets go or kills this process
"""


def test_a_job_whose_runner_was_killed_is_claimed_at_once_and_a_live_ones_is_not(tmp_path):
    """A runner on this machine whose process is gone (kill -9, OOM) gives up its job at once;
    a live runner with a fresh heartbeat keeps it."""
    db = tmp_path / "runner.db"
    store = Store.open(db)
    job_id = queue(store, EstimateSpec(policy="some-policy", trajectory_ids=tuple(add_trajectories(store, 1))))
    holder = subprocess.Popen([sys.executable, "-c", CLAIM_AND_WAIT, str(db), str(job_id)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "running"
        assert claim_job(store, job_id) is None, "a live runner's job was taken"
        assert claim_job(store) is None
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        job = claim_job(store)  # the heartbeat is seconds old: only the runner's death frees the job
        assert job is not None and job["id"] == job_id and job["runner"] == this_runner()
    finally:
        holder.kill()
        holder.wait()


def test_a_runner_is_gone_only_when_its_process_on_this_machine_is():
    assert not runner_gone(this_runner())
    host, process_id, started = this_runner().rsplit(":", 2)
    assert runner_gone(f"{host}:{process_id}:{float(started) - 100:.2f}"), "a reused process id is another process"
    assert not runner_gone(f"another-host:{process_id}:{float(started) - 100:.2f}"), "cannot be checked from here"
    assert not runner_gone("not a runner")


def test_kill_minus_nine_then_resume_redoes_nothing(tmp_path, tiny_model_dir):
    db = tmp_path / "kill.db"
    store = Store.open(db)
    ids = add_trajectories(store, 6)
    steps = sum(len(store.steps(t)) for t in ids)
    policy, n = str(tiny_model_dir), 8
    args = ["estimate", "--policy", policy, "--n", str(n), "--trajectories", ",".join(map(str, ids)),
            "--max-new-tokens", "12", "--rows-per-call", "8", "--db", str(db)]  # fmt: skip
    code = "import sys\nfrom core.cli import main\nsys.argv[0] = 'stepscope'\nmain()"
    process = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Kill only once the job has stored rollouts (three engine calls' worth), never before it starts.
    deadline = time.monotonic() + 180
    while sum(per_step_counts(db, policy).values()) < 3 * 8:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the job stored no rollouts to kill it after (exit code {process.poll()})")
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    before = per_step_counts(db, policy)
    stored_before = sum(before.values())
    assert 0 < stored_before < n * steps, "the kill must land mid-job"
    with sqlite3.connect(db) as conn:
        ids_before = {row[0] for row in conn.execute("SELECT id FROM rollouts")}
        job_id, status = conn.execute("SELECT id, status FROM jobs").fetchone()
    assert status == "running"  # the killed runner could not say otherwise

    result = run_cli("jobs", "resume", str(job_id), "--db", str(db), timeout=300)
    assert result.returncode == 0, result.stderr
    after = per_step_counts(db, policy)
    assert len(after) == steps and set(after.values()) == {n}, after
    with sqlite3.connect(db) as conn:
        ids_after = {row[0] for row in conn.execute("SELECT id FROM rollouts")}
        job = conn.execute("SELECT status, done, planned FROM jobs WHERE id = ?", [job_id]).fetchone()
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert ids_before <= ids_after and len(ids_after) == n * steps
    assert job == ("done", n * steps, n * steps)
