"""Job commands of the `stepscope` CLI: generate, estimate, and `jobs list|resume|cancel|worker`.

They create the same jobs the app's worker runs, and run them here in the foreground with a
progress bar. Ctrl-C, or a kill, leaves the job resumable: `stepscope jobs resume ID`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from core.errors import StepScopeError

console = Console()
DB_HELP = "database file (default: $STEPSCOPE_DB or data/stepscope.db)"
jobs_app = typer.Typer(no_args_is_help=True, help="List, resume and cancel jobs.")


def _store(db: Optional[Path]):
    from core.store import Store

    return Store.open(db)


def _engine_options(engine: str, base_url: list[str] | None, device: str) -> dict:
    if engine == "openai":
        if not base_url:
            raise StepScopeError("engine openai needs --base-url (an OpenAI-compatible server …/v1)")
        return {"base_urls": list(base_url)}
    if engine == "transformers":
        return {"device": device}
    return {}


def run_in_foreground(store, job_id: int, wait_for_stale: float = 0.0) -> str:
    """Claim the job and run it here with a progress bar; returns its final status."""
    from core.jobs.runner import HEARTBEAT_SECONDS, EngineCache, claim_job, run_job

    job = claim_job(store, job_id, stale_after=2 * HEARTBEAT_SECONDS)
    deadline = time.monotonic() + wait_for_stale
    while job is None and time.monotonic() < deadline:
        time.sleep(1)  # the previous runner may have just died: its heartbeat goes stale soon
        job = claim_job(store, job_id, stale_after=2 * HEARTBEAT_SECONDS)
    if job is None:
        current = store.get_job(job_id)
        if current is None:
            raise StepScopeError(f"job {job_id} does not exist")
        raise StepScopeError(f"job {job_id} is {current['status']} and cannot be run now")
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]}"), TimeRemainingColumn()]  # fmt: skip
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(f"job {job_id} ({job['kind']}): loading model", total=None, rate="")

        def update(progress) -> None:
            bar.update(
                task, description=f"job {job_id} ({job['kind']})", completed=progress.done,
                total=max(progress.planned, progress.done), rate=f"{progress.tokens_per_second:.0f} tok/s",
            )  # fmt: skip

        status = run_job(store, job, EngineCache(), on_progress=update)
    finished = store.get_job(job_id)
    if status == "failed":
        raise StepScopeError(f"job {job_id} failed: {finished['error']}")
    console.print(
        f"job {job_id} {status}: {finished['done']} samples, {finished['tokens']} tokens", highlight=False
    )
    return status


def generate_command(
    policy: str = typer.Option("smollm2-135m", help="policy model: preset, directory or hub id"),
    k: int = typer.Option(4, "--k", min=1, help="solutions per problem"),
    dataset: str = typer.Option("sample", help="problems of this dataset"),
    limit: Optional[int] = typer.Option(None, min=1, help="at most this many problems"),
    engine: str = typer.Option("transformers", help="transformers | vllm | openai"),
    base_url: Optional[list[str]] = typer.Option(None, help="engine openai: server URL(s) …/v1"),
    device: str = typer.Option("auto", help="engine transformers: cpu, cuda or auto"),
    max_new_tokens: int = typer.Option(128, min=1, help="the most new tokens per sample"),
    temperature: float = typer.Option(0.7, min=0.0, help="sampling temperature"),
    seed: int = typer.Option(0, help="sampling seed: the same seed draws the same samples"),
    db: Optional[Path] = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """Sample k solutions per problem from the policy: its own trajectories, graded and segmented."""
    from core.jobs.estimate import default_sampling
    from core.jobs.generate import GenerateSpec
    from core.jobs.runner import queue

    store = _store(db)
    problems = [p["id"] for p in store.list_problems(dataset=dataset, limit=limit)]
    if not problems:
        raise StepScopeError(f"dataset {dataset!r} has no problems")
    job_id = queue(store, GenerateSpec(
        policy=policy, problem_ids=tuple(problems), k=k, engine=engine,
        engine_options=_engine_options(engine, base_url, device),
        sampling=default_sampling(max_new_tokens, temperature, seed),
    ))  # fmt: skip
    run_in_foreground(store, job_id)
    rows = store.list_trajectories(dataset=dataset, source="policy", model=policy)
    correct = sum(1 for r in rows if r.get("correct"))
    console.print(f"{len(rows)} distinct policy trajectories in {dataset!r}; {correct} reach the gold answer", highlight=False)


def _trajectory_ids(store, ids: Optional[str], dataset: Optional[str], source: Optional[str], limit: Optional[int]) -> list[int]:
    if ids:
        try:
            return [int(part) for part in ids.split(",") if part.strip()]
        except ValueError:
            raise StepScopeError(f"--trajectories takes ids separated by commas, not {ids!r}") from None
    rows = store.list_trajectories(dataset=dataset, source=source, limit=limit)
    return [row["id"] for row in rows]


def estimate_command(
    policy: str = typer.Option("smollm2-135m", help="policy model: preset, directory or hub id"),
    n: int = typer.Option(16, "--n", min=1, help="rollouts per step (the most per step for adaptive and first-error)"),
    strategy: str = typer.Option("fixed", help="fixed | adaptive | first-error"),
    round_size: int = typer.Option(4, min=1, help="adaptive and first-error: rollouts per round"),
    trajectories: Optional[str] = typer.Option(None, help="trajectory ids, comma-separated"),
    dataset: Optional[str] = typer.Option(None, help="else: trajectories of this dataset"),
    source: Optional[str] = typer.Option(None, help="…and of this source (e.g. policy, gsm8k)"),
    limit: Optional[int] = typer.Option(None, min=1, help="at most this many trajectories"),
    engine: str = typer.Option("transformers", help="transformers | vllm | openai"),
    base_url: Optional[list[str]] = typer.Option(None, help="engine openai: server URL(s) …/v1"),
    device: str = typer.Option("auto", help="engine transformers: cpu, cuda or auto"),
    max_new_tokens: int = typer.Option(128, min=1, help="the most new tokens per sample"),
    temperature: float = typer.Option(0.7, min=0.0, help="sampling temperature"),
    seed: int = typer.Option(0, help="sampling seed: the same seed draws the same samples"),
    rows_per_call: Optional[int] = typer.Option(None, min=1, help="sequences per engine call (default: the job's, 256)"),
    db: Optional[Path] = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """Monte Carlo values for every step: rollouts from each step's prefix, graded and stored."""
    from core.jobs.estimate import EstimateSpec, default_sampling
    from core.jobs.runner import queue

    store = _store(db)
    ids = _trajectory_ids(store, trajectories, dataset, source, limit)
    job_id = queue(store, EstimateSpec(
        policy=policy, trajectory_ids=tuple(ids), strategy=strategy, n=n, round_size=round_size, engine=engine,
        engine_options=_engine_options(engine, base_url, device),
        sampling=default_sampling(max_new_tokens, temperature, seed),
        **({} if rows_per_call is None else {"rows_per_call": rows_per_call}),
    ))  # fmt: skip
    run_in_foreground(store, job_id)
    print_values(store, ids[:10], policy)


def print_values(store, trajectory_ids: list[int], policy: str) -> None:
    from core.mcpe import Counts, step_value

    table = Table("trajectory", "step", "n", "soft", "95% interval", "hard", "text")
    for trajectory_id in trajectory_ids:
        for row, step in zip(store.step_values(trajectory_id, model=policy), store.steps(trajectory_id)):
            value = step_value(Counts(row["n"], row["n_correct"]))
            soft = "—" if value.soft is None else f"{value.soft:.2f}"
            table.add_row(
                str(trajectory_id), str(row["idx"]), str(value.n), soft,
                f"[{value.low:.2f}, {value.high:.2f}]", "—" if value.hard is None else str(int(value.hard)),
                escape(step["text"][:60]),
            )  # fmt: skip
    console.print(table)


@jobs_app.command("list")
def jobs_list(db: Optional[Path] = typer.Option(None, "--db", help=DB_HELP)) -> None:
    """Jobs, newest first, with their progress."""
    table = Table("id", "kind", "status", "done/planned", "tokens", "policy", "error")
    for job in _store(db).list_jobs(limit=50):
        table.add_row(
            str(job["id"]), job["kind"], job["status"], f"{job['done']}/{job['planned']}", str(job["tokens"]),
            escape(str(job["manifest"].get("policy", ""))), escape(job["error"] or ""),
        )  # fmt: skip
    console.print(table)


@jobs_app.command("resume")
def jobs_resume(
    job_id: int = typer.Argument(..., help="the job's id (stepscope jobs list)"),
    db: Optional[Path] = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """Run a queued, failed, cancelled or abandoned job to its end, reusing what it stored."""
    from core.jobs.runner import STALE_AFTER_SECONDS, retry_job

    store = _store(db)
    job = store.get_job(job_id)
    if job is None:
        raise StepScopeError(f"job {job_id} does not exist")
    if job["status"] in ("failed", "cancelled"):
        retry_job(store, job_id)
    run_in_foreground(store, job_id, wait_for_stale=STALE_AFTER_SECONDS)


@jobs_app.command("cancel")
def jobs_cancel(job_id: int = typer.Argument(..., help="the job's id (stepscope jobs list)"), db: Optional[Path] = typer.Option(None, "--db", help=DB_HELP)) -> None:
    """Ask a queued or running job to stop (it stops before its next engine call)."""
    from core.jobs.runner import cancel_job

    if not cancel_job(_store(db), job_id):
        raise StepScopeError(f"job {job_id} is not queued or running")
    console.print(f"job {job_id} cancelled")


@jobs_app.command("worker")
def jobs_worker(db: Optional[Path] = typer.Option(None, "--db", help=DB_HELP)) -> None:
    """Run queued jobs of the database as they come, until stopped: the app's worker process,
    in the foreground (at a lower CPU priority; one per database file)."""
    from core.jobs.worker_process import LOCK_HELD_EXIT, serve
    from core.store import default_db_path

    path = str(db or default_db_path())
    _store(path).close()  # a bad file fails here, with its cause
    if serve(path) == LOCK_HELD_EXIT:
        raise StepScopeError(f"another job worker already serves {path}")


def register(app: typer.Typer) -> None:
    app.command("generate")(generate_command)
    app.command("estimate")(estimate_command)
    app.add_typer(jobs_app, name="jobs")
