"""Job commands of the `stepscope` CLI: generate, estimate, and `jobs list|show|resume|cancel|worker`.

They create the same jobs the app's worker runs, and run them here in the foreground with a
progress bar. Ctrl-C, or a kill, leaves the job resumable: `stepscope jobs resume ID`.
"""

import time
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from core.cli.options import (
    Database, Dataset, EngineChoice, Policy, Sampling, TrajectorySelection, as_usage_error, command_group, open_store,
    spec_default,
    with_option_groups,
)  # fmt: skip
from core.cli.output import console
from core.errors import StepScopeError
from core.jobs.estimate import EstimateSpec
from core.mcpe import FIRST_ERROR_FROM_STEPS, ROUND_SIZE
from core.models import DEFAULT_MODEL

jobs_app = command_group("List, resume and cancel jobs.")
JobId = Annotated[int, typer.Argument(help="the job's id (stepscope jobs list)")]
DEFAULT_STRATEGY = spec_default(EstimateSpec, "strategy")
SUMMARY_TRAJECTORIES = 10  # an estimate's table after the run: a glance, not the data


def run_in_foreground(store, job_id: int, wait_for_stale: float = 0.0, engines=None) -> str:
    """Claim the job and run it here with a progress bar; returns its final status. Jobs run one
    after another with the same `engines` (a core.jobs.runner.EngineCache) load their model once."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

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

        status = run_job(store, job, engines or EngineCache(), on_progress=update)
    finished = store.get_job(job_id)
    if status == "failed":
        raise StepScopeError(f"job {job_id} failed: {finished['error']}")
    from core.jobs.registry import unit_of

    console.print(
        f"job {job_id} {status}: {finished['done']} {unit_of(job['kind'])}, {finished['tokens']} tokens", highlight=False
    )
    return status


@with_option_groups
def generate_command(
    policy: Policy = DEFAULT_MODEL,
    k: Annotated[int, typer.Option("--k", min=1, help="solutions per problem")] = 4,
    dataset: Dataset = "sample",
    limit: Annotated[Optional[int], typer.Option(min=1, help="at most this many problems")] = None,
    engine: EngineChoice = EngineChoice(),
    sampling: Sampling = Sampling(),
    db: Database = None,
) -> None:
    """Sample k solutions per problem from the policy: its own trajectories, graded and segmented."""
    from core.jobs.generate import GenerateSpec
    from core.jobs.runner import queue

    store = open_store(db)
    problems = [p["id"] for p in store.list_problems(dataset=dataset, limit=limit)]
    if not problems:
        raise StepScopeError(f"dataset {dataset!r} has no problems")
    job_id = queue(store, GenerateSpec(
        policy=policy, problem_ids=tuple(problems), k=k, sampling=sampling.params(), **engine.spec_fields(),
    ))  # fmt: skip
    run_in_foreground(store, job_id)
    rows = store.list_trajectories(dataset=dataset, source="policy", model=policy)
    correct = sum(1 for r in rows if r.get("correct"))
    console.print(f"{len(rows)} distinct policy trajectories in {dataset!r}; {correct} reach the gold answer", highlight=False)


@with_option_groups
def estimate_command(
    policy: Policy = DEFAULT_MODEL,
    n: Annotated[int, typer.Option(
        "--n", min=1, help="rollouts per step (the most per step for adaptive and first-error)",
    )] = DEFAULT_STRATEGY.most_per_step,
    strategy: Annotated[Optional[str], typer.Option(
        help=f"fixed | adaptive | first-error, for every trajectory (default: first-error on those longer than "
             f"{FIRST_ERROR_FROM_STEPS} steps, fixed on the others)",
    )] = None,
    round_size: Annotated[int, typer.Option(min=1, help="adaptive and first-error: rollouts per round")] = ROUND_SIZE,
    selection: TrajectorySelection = TrajectorySelection(),
    engine: EngineChoice = EngineChoice(),
    sampling: Sampling = Sampling(),
    rows_per_call: Annotated[int, typer.Option(min=1, help="sequences per engine call")] = spec_default(
        EstimateSpec, "rows_per_call"
    ),
    db: Database = None,
) -> None:
    """Monte Carlo values for every step: rollouts from each step's prefix, graded and stored.
    Before it samples it says the budget: the most rollouts the jobs can take (exact for fixed N)."""
    from core.jobs.estimate import plan_estimate
    from core.jobs.runner import EngineCache, queue
    from core.mcpe import make_strategy

    chosen = None if strategy is None else as_usage_error(
        lambda: make_strategy(strategy, n=n, round_size=round_size), "--strategy"
    )  # fmt: skip
    store = open_store(db)
    ids = selection.resolve(store)

    def spec(plan_strategy, trajectory_ids) -> EstimateSpec:
        return EstimateSpec(
            policy=policy, trajectory_ids=trajectory_ids, strategy=plan_strategy,
            sampling=sampling.params(), rows_per_call=rows_per_call, **engine.spec_fields(),
        )  # fmt: skip

    # Checked on every trajectory before anything is read for the budget, as a job checks it.
    spec(chosen or make_strategy("first-error", n=n, round_size=round_size), ids).validate(store)
    plans = plan_estimate(store, ids, policy, chosen, n=n, round_size=round_size)
    if chosen is None:
        console.print(strategy_line(plans), highlight=False)
    console.print(budget_line(plans), highlight=False)
    engines = EngineCache()  # the search's job and fixed N's share the loaded policy
    for plan in plans:
        run_in_foreground(store, queue(store, spec(plan.strategy, plan.trajectory_ids)), engines=engines)
    print_values(store, ids[:SUMMARY_TRAJECTORIES], policy)
    if len(ids) > SUMMARY_TRAJECTORIES:
        console.print(f"the first {SUMMARY_TRAJECTORIES} of {len(ids)} trajectories shown; every value is stored "
                      "(stepscope export, or Explore in the app)", highlight=False)  # fmt: skip


def _trajectories(count: int) -> str:
    return f"{count:,} trajectory" if count == 1 else f"{count:,} trajectories"


def strategy_line(plans) -> str:
    """Which strategy the trajectories get when --strategy names none (core.mcpe.default_strategy_name)."""
    parts = []
    for plan in plans:
        count = len(plan.trajectory_ids)
        if plan.strategy.name == "first-error":
            parts.append(f"first-error search on {_trajectories(count)} longer than {FIRST_ERROR_FROM_STEPS} steps")
        elif len(plans) > 1:
            parts.append(f"fixed N on {count:,}")
        else:
            parts.append(f"fixed N on {_trajectories(count)} of at most {FIRST_ERROR_FROM_STEPS} steps")
    return "; ".join(parts) + " (--strategy sets one for all)"


def budget_line(plans) -> str:
    """The most rollouts the jobs take, said before they start: exact for fixed N, an upper bound
    for adaptive and the first-error search (core.mcpe's most_to_spend; stored rollouts count)."""
    parts = []
    for plan in plans:
        strategy, count = plan.strategy, _trajectories(len(plan.trajectory_ids))
        if strategy.name == "fixed":
            parts.append(f"exactly {plan.most_rollouts:,} by fixed N = {strategy.n} on {count}")
        elif strategy.name == "first-error":
            parts.append(f"at most {plan.most_rollouts:,} by the first-error search on {count} of up to "
                         f"{plan.longest:,} steps (at most {strategy.max_per_step} a probed step)")  # fmt: skip
        else:
            parts.append(f"at most {plan.most_rollouts:,} by adaptive on {count} (at most {strategy.max_per_step} a step)")
    total = sum(plan.most_rollouts for plan in plans)
    bound = "" if all(plan.exact for plan in plans) else "at most "
    return f"budget: {bound}{total:,} rollouts: {'; '.join(parts)}"


def print_values(store, trajectory_ids, policy: str) -> None:
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
def jobs_list(db: Database = None) -> None:
    """Jobs, newest first, with their progress."""
    table = Table("id", "kind", "status", "done/planned", "tokens", "policy", "error")
    for job in open_store(db).list_jobs(limit=50):
        table.add_row(
            str(job["id"]), job["kind"], job["status"], f"{job['done']}/{job['planned']}", str(job["tokens"]),
            escape(str(job["manifest"].get("policy", ""))), escape(job["error"] or ""),
        )  # fmt: skip
    console.print(table)


@jobs_app.command("show")
def jobs_show(job_id: JobId, db: Database = None) -> None:
    """One job: its status, progress, what it spent (tokens, seconds, FLOPs) and its manifest."""
    import json

    job = open_store(db).get_job(job_id)
    if job is None:
        raise StepScopeError(f"job {job_id} does not exist")
    console.print(f"job {job_id} ({job['kind']}): {job['status']}, {job['done']}/{job['planned']}, "
                  f"{job['tokens']} tokens", highlight=False)  # fmt: skip
    if job["error"]:
        console.print(f"error: {job['error']}", highlight=False, markup=False)
    print_compute(job)
    manifest = {k: v for k, v in job["manifest"].items() if k != "compute"}
    console.print(json.dumps(manifest, indent=2, sort_keys=True), highlight=False, markup=False)


def print_compute(job: dict) -> None:
    """What a job spent, as its runner counted it; "unknown" where the engine could not say."""
    compute = job.get("compute")
    if not compute:
        console.print("compute: not recorded (the job has not run, or ran before compute was counted)", highlight=False)
        return

    def shown(value, unit: str = "", digits: int = 0) -> str:
        if value is None:
            return "unknown"
        return f"{value:,.{digits}f}{unit}" if isinstance(value, float) else f"{value:,}{unit}"

    flops = compute.get("flops")
    lines = {
        "policy tokens generated": shown(compute.get("policy_tokens")),
        "prompt tokens processed": shown(compute.get("prompt_tokens")),
        "  of them from a cache": shown(compute.get("prompt_tokens_cached")),
        "verifier tokens scored": shown(compute.get("verifier_tokens")),
        "verifier tokens generated": shown(compute.get("verifier_generated_tokens")),
        "tokens trained on": shown(compute.get("training_tokens", 0)),
        "engine seconds": shown(compute.get("engine_seconds"), " s", 2),
        "scorer seconds": shown(compute.get("scorer_seconds"), " s", 2),
        "total seconds": shown(compute.get("total_seconds"), " s", 2),
        "estimated FLOPs": "unknown" if flops is None else f"{flops:.3g}",
    }
    for name, value in lines.items():
        console.print(f"{name:<27} {value}", highlight=False)


@jobs_app.command("resume")
def jobs_resume(job_id: JobId, db: Database = None) -> None:
    """Run a queued, failed, cancelled or abandoned job to its end, reusing what it stored."""
    from core.jobs.runner import STALE_AFTER_SECONDS, retry_job

    store = open_store(db)
    job = store.get_job(job_id)
    if job is None:
        raise StepScopeError(f"job {job_id} does not exist")
    if job["status"] in ("failed", "cancelled"):
        retry_job(store, job_id)
    run_in_foreground(store, job_id, wait_for_stale=STALE_AFTER_SECONDS)


@jobs_app.command("cancel")
def jobs_cancel(job_id: JobId, db: Database = None) -> None:
    """Ask a queued or running job to stop (it stops before its next engine call)."""
    from core.jobs.runner import cancel_job

    if not cancel_job(open_store(db), job_id):
        raise StepScopeError(f"job {job_id} is not queued or running")
    console.print(f"job {job_id} cancelled")


@jobs_app.command("worker")
def jobs_worker(db: Database = None) -> None:
    """Run queued jobs of the database as they come, until stopped: the app's worker process,
    in the foreground (at a lower CPU priority; one per database file)."""
    from core.jobs.worker_process import LOCK_HELD_EXIT, serve
    from core.store import default_db_path

    path = str(db or default_db_path())
    open_store(path).close()  # a bad file fails here, with its cause
    if serve(path) == LOCK_HELD_EXIT:
        raise StepScopeError(f"another job worker already serves {path}")


def register(app: typer.Typer) -> None:
    app.command("generate")(generate_command)
    app.command("estimate")(estimate_command)
    app.add_typer(jobs_app, name="jobs")
