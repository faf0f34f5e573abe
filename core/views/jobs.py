"""Jobs as the app starts and shows them: queue an estimate or a top-up, read progress back.

The app never runs a model itself: a page queues a job here and the worker thread (one per
database file, started by app.py) runs it; pages re-read the jobs table to show progress.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Sequence

from core.errors import StepScopeError
from core.jobs.runner import cancel_job, create_estimate_job, create_generate_job, default_sampling, retry_job
from core.mcpe import STRATEGY_NAMES, make_strategy
from core.store import Store

ACTIVE = ("queued", "running")
MAX_N = 256
MAX_NEW_TOKENS = 2048
MAX_K = 256
MAX_PROBLEMS = 100_000


@dataclass(frozen=True)
class EstimateRequest:
    policy: str
    engine: str = "transformers"
    engine_options: dict | None = None
    strategy: str = "fixed"
    n: int = 8
    max_new_tokens: int = 128
    temperature: float = 0.7
    seed: int = 0

    def check(self) -> None:
        if not self.policy.strip():
            raise StepScopeError("choose a policy model in the sidebar")
        if self.strategy not in STRATEGY_NAMES:
            raise StepScopeError(f"unknown strategy {self.strategy!r}")
        if not 1 <= self.n <= MAX_N:
            raise StepScopeError(f"N is between 1 and {MAX_N}")
        if not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS:
            raise StepScopeError(f"max new tokens is between 1 and {MAX_NEW_TOKENS}")
        if not 0 <= self.temperature <= 5:
            raise StepScopeError("temperature is between 0 and 5")


def engine_options(engine: str, base_urls: str = "") -> dict:
    if engine == "openai":
        urls = [u.strip() for u in base_urls.split(",") if u.strip()]
        if not urls:
            raise StepScopeError("engine openai needs server URLs (…/v1) in the sidebar")
        return {"base_urls": urls}
    return {}


def _needs_gold(store: Store, trajectory_ids: Sequence[int]) -> None:
    for trajectory_id in trajectory_ids:
        trajectory = store.get_trajectory(trajectory_id)
        if trajectory is None:
            raise StepScopeError(f"trajectory {trajectory_id} does not exist")
        if not trajectory.get("gold"):
            raise StepScopeError(
                f"trajectory {trajectory_id}: its problem has no gold answer, so rollouts cannot be graded"
            )


def queue_estimate(store: Store, request: EstimateRequest, trajectory_ids: Sequence[int]) -> int:
    """Queue a Monte Carlo estimate of every step of these trajectories; returns the job id."""
    request.check()
    _needs_gold(store, trajectory_ids)
    return create_estimate_job(
        store, policy=request.policy, trajectory_ids=list(trajectory_ids), engine=request.engine,
        engine_options=request.engine_options or {},
        strategy=make_strategy(request.strategy, n=request.n),
        sampling=default_sampling(request.max_new_tokens, request.temperature, request.seed),
    )  # fmt: skip


def queue_top_up(store: Store, request: EstimateRequest, trajectory_id: int, extra: int) -> int:
    """More rollouts: every step of the trajectory gets up to (most it has now + extra).

    A fixed-N job plans from the stored rollouts, so the ones already there count and only the
    difference is sampled.
    """
    steps = store.steps(trajectory_id)
    counts = store.step_value_counts([s["id"] for s in steps], model=request.policy)
    most = max((n for n, _ in counts.values()), default=0)
    target = min(MAX_N, most + extra)
    # A seed far from the earlier jobs' (each uses seed, seed+1, ... per engine call): the same
    # seeds would repeat rollouts already stored.
    seed = request.seed + 10_000 * most
    topped = EstimateRequest(**{**request.__dict__, "strategy": "fixed", "n": target, "seed": seed})
    return queue_estimate(store, topped, [trajectory_id])


JUDGE_KINDS = ("step", "outcome")


def queue_judges(
    store: Store, judges: Sequence[str], kinds: Sequence[str], trajectory_ids: Sequence[int], *,
    mode: str = "logprob", engine: str = "transformers", engine_options: dict | None = None,
) -> list[int]:
    """One judge job per (judge model, verdict kind); returns their ids."""
    from core.jobs.judge import create_judge_job

    judges = [j.strip() for j in judges if j.strip()]
    if not judges:
        raise StepScopeError("name at least one judge model")
    if not kinds:
        raise StepScopeError("choose step and/or outcome verdicts")
    unknown = [k for k in kinds if k not in JUDGE_KINDS]
    if unknown:
        raise StepScopeError(f"verdict kinds are {', '.join(JUDGE_KINDS)}, not {', '.join(unknown)}")
    _exists(store, trajectory_ids)
    return [
        create_judge_job(store, judge=judge, kind=kind, trajectory_ids=list(trajectory_ids), mode=mode,
                         engine=engine, engine_options=engine_options or {})
        for judge in judges for kind in kinds
    ]  # fmt: skip


def queue_judge_solutions(
    store: Store, judges: Sequence[str], kinds: Sequence[str], dataset: str | None, solutions_of: str, **options,
) -> list[int]:
    """Judge every solution the policy `solutions_of` generated for the dataset's problems (None:
    every dataset): the verdicts Best-of-N reranks with. `options` go to queue_judges."""
    from core.jobs.generate import GENERATED_SOURCE

    ids = [row["id"] for row in store.list_trajectories(dataset=dataset, source=GENERATED_SOURCE, model=solutions_of)]
    if not ids:
        where = f"dataset {dataset!r}" if dataset else "any dataset"
        raise StepScopeError(f"{solutions_of} has no generated solutions in {where}: generate some first")
    return queue_judges(store, judges, kinds, ids, **options)


def probe_verifiers(store: Store) -> dict[str, str]:
    """Trained probe verifiers next to the database: folder -> judge name, for a picker."""
    from core.probes import list_probes

    try:
        return {v["folder"]: str(v.get("judge") or v["folder"]) for v in list_probes(store)}
    except (OSError, ValueError):  # a manifest being written or damaged: offer none rather than fail the page
        return {}


def queue_probe_judges(store: Store, verifiers: Sequence[str], trajectory_ids: Sequence[int]) -> list[int]:
    """One job per trained probe verifier (a folder that core.probes.list_probes found)."""
    from core.jobs.judge import create_probe_judge_job

    if not verifiers:
        raise StepScopeError("choose at least one probe verifier")
    _exists(store, trajectory_ids)
    try:
        return [create_probe_judge_job(store, verifier=folder, trajectory_ids=list(trajectory_ids))
                for folder in verifiers]  # fmt: skip
    except (OSError, KeyError, ValueError) as error:  # a folder removed or damaged since it was listed
        raise StepScopeError(f"cannot read the probe verifier: {error}") from None


def queue_judging(
    store: Store, judges: Sequence[str], kinds: Sequence[str], probes: Sequence[str], trajectory_ids: Sequence[int],
    **options,
) -> list[int]:
    """Explore's Judge button: the judge models give the chosen kinds of verdicts, and each
    chosen probe verifier scores too; `options` go to queue_judges (mode, engine, engine_options)."""
    if not kinds and not probes:
        raise StepScopeError("choose step and/or outcome verdicts, or a probe verifier")
    ids = queue_judges(store, judges, kinds, trajectory_ids, **options) if kinds else []
    return ids + (queue_probe_judges(store, probes, trajectory_ids) if probes else [])


def queue_generate(store: Store, request: EstimateRequest, dataset: str, k: int, limit: int | None = None) -> int:
    """Queue a job that samples k solutions per problem of the dataset (the first `limit`
    problems by id) from the policy; they become policy trajectories, graded and segmented.
    `request` carries the policy, engine and sampling (its strategy and N are not used)."""
    request.check()
    if not 1 <= k <= MAX_K:
        raise StepScopeError(f"k (solutions per problem) is between 1 and {MAX_K}")
    if limit is not None and not 1 <= limit <= MAX_PROBLEMS:
        raise StepScopeError(f"the number of problems is between 1 and {MAX_PROBLEMS:,}")
    problems = [p["id"] for p in store.list_problems(dataset=dataset, limit=limit)]
    if not problems:
        raise StepScopeError(f"dataset {dataset!r} has no problems")
    return create_generate_job(
        store, policy=request.policy, problem_ids=problems, k=k, engine=request.engine,
        engine_options=request.engine_options or {},
        sampling=default_sampling(request.max_new_tokens, request.temperature, request.seed),
    )  # fmt: skip


def _exists(store: Store, trajectory_ids: Sequence[int]) -> None:
    for trajectory_id in trajectory_ids:
        if store.get_trajectory(trajectory_id) is None:
            raise StepScopeError(f"trajectory {trajectory_id} does not exist")


def active_jobs(store: Store, trajectory_id: int | None = None) -> list[dict]:
    """Queued and running jobs, oldest first; only those touching the trajectory if one is given."""
    found = []
    for status in ACTIVE:
        found.extend(store.list_jobs(status=status, limit=200))
    if trajectory_id is not None:
        found = [j for j in found if trajectory_id in j["manifest"].get("trajectory_ids", ())]
    return sorted(found, key=lambda j: j["id"])


def _parse_time(stamp: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(stamp) if stamp else None


# What a job's done/planned counts, by kind (core.jobs.runner and core.jobs.judge count these).
PROGRESS_UNIT = {"estimate": "rollouts", "generate": "solutions", "judge": "verdicts"}


@dataclass(frozen=True)
class JobProgress:
    fraction: float | None  # None while the plan is not known yet
    text: str
    tokens_per_second: float | None


def job_progress(job: dict, now: dt.datetime | None = None) -> JobProgress:
    """Progress as a fraction and one line of text, tokens/s over the time since it started."""
    now = now or dt.datetime.now(dt.timezone.utc)
    started = _parse_time(job.get("started_at"))
    finished = _parse_time(job.get("finished_at"))
    elapsed = ((finished or now) - started).total_seconds() if started else 0.0
    rate = job["tokens"] / elapsed if elapsed > 0 and job["tokens"] else None
    planned, done = job["planned"], job["done"]
    fraction = min(1.0, done / planned) if planned else None
    if job["status"] == "queued":
        text = "queued: waits for the worker"
    elif job["status"] == "running" and done == 0:
        text = "running: loading the model / first batch"
    else:
        text = f"{job['status']}: {done}/{planned or '?'} {PROGRESS_UNIT.get(job.get('kind'), 'items')}"
    if rate:
        text += f" · {job['tokens']} tokens · {rate:.1f} tokens/s"
    if job.get("error"):
        text += f" · error: {job['error']}"
    return JobProgress(fraction, text, rate)


def job_table(store: Store, limit: int = 100) -> list[dict]:
    table = []
    for job in store.list_jobs(limit=limit):
        progress = job_progress(job)
        manifest = job["manifest"]
        table.append({
            "id": job["id"], "kind": job["kind"], "status": job["status"],
            "progress": progress.fraction if progress.fraction is not None else 0.0,
            "done": job["done"], "planned": job["planned"], "tokens": job["tokens"],
            "tokens/s": round(progress.tokens_per_second, 1) if progress.tokens_per_second else None,
            "policy": str(manifest.get("policy", "")), "engine": str(manifest.get("engine", "")),
            "strategy": str(manifest.get("strategy", {}).get("strategy", "")) if job["kind"] == "estimate" else "",
            "trajectories": len(manifest.get("trajectory_ids", manifest.get("problem_ids", []))),
            "created": job["created_at"], "error": job["error"] or "",
        })  # fmt: skip
    return table


def cancel(store: Store, job_id: int) -> str:
    if cancel_job(store, job_id):
        return f"job {job_id} cancelled"
    raise StepScopeError(f"job {job_id} is not queued or running")


def retry(store: Store, job_id: int) -> str:
    job = store.get_job(job_id)
    if job is None:
        raise StepScopeError(f"job {job_id} does not exist")
    if job["status"] not in ("failed", "cancelled"):
        raise StepScopeError(f"job {job_id} is {job['status']}; only failed or cancelled jobs are retried")
    retry_job(store, job_id)
    return f"job {job_id} queued again; it continues from its stored rollouts"
