"""Jobs as the app starts and shows them: the page's inputs become a job spec, and progress is
read back.

The app never runs a model itself: a page queues a job here and the worker (one per database
file, started by app.py) runs it; pages re-read the jobs table to show progress. Bounds and
checks live in the specs (core.jobs), shared with the CLI.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Sequence

from core.errors import StepScopeError
from core.jobs.estimate import EstimateSpec, default_sampling
from core.jobs.generate import GENERATED_SOURCE, GenerateSpec
from core.jobs.judge import JudgeSpec, ProbeJudgeSpec
from core.jobs.orm_score import OrmScoreSpec
from core.jobs.registry import unit_of
from core.jobs.runner import cancel_job, queue, retry_job
from core.jobs.spec import MAX_N, MAX_PROBLEMS, JobSpec, check_range
from core.mcpe import ROLLOUTS_PER_STEP, FixedN, make_strategy
from core.orm_training import is_orm_folder, list_orms
from core.probes import list_probes
from core.store import Store

ACTIVE = ("queued", "running")


# The app's, the CLI's and the job's defaults are one: the spec's and core.mcpe's.
_SAMPLING = default_sampling()


@dataclass(frozen=True)
class EstimateRequest:
    """The sidebar's policy and engine with a page's sampling choices (a form's flat fields;
    queue_estimate turns the strategy's name and N into core.mcpe's strategy)."""

    policy: str
    engine: str = JobSpec.engine
    engine_options: dict | None = None
    strategy: str = FixedN.name
    n: int = ROLLOUTS_PER_STEP
    max_new_tokens: int = _SAMPLING.max_new_tokens
    temperature: float = _SAMPLING.temperature
    seed: int = _SAMPLING.seed

    def sampling(self):
        return default_sampling(self.max_new_tokens, self.temperature, self.seed)

    def engine_fields(self) -> dict:
        return {"engine": self.engine, "engine_options": self.engine_options or {}}


def budget_text(n_steps: int, n: int = ROLLOUTS_PER_STEP) -> str:
    """What each strategy can spend on a trajectory of `n_steps`, said before a job starts."""
    spent = {name: make_strategy(name, n).budget(n_steps) for name in ("fixed", "adaptive", "first-error")}
    return (f"At N = {n} on its {n_steps:,} steps: fixed N samples {spent['fixed']:,} rollouts, adaptive at most "
            f"{spent['adaptive']:,}, the first-error search at most {spent['first-error']:,} (a binary search "
            "over the steps; it locates the first error, not every step's value)")  # fmt: skip


def engine_options(engine: str, base_urls: str = "") -> dict:
    if engine == "openai":
        urls = [u.strip() for u in base_urls.split(",") if u.strip()]
        if not urls:
            raise StepScopeError("engine openai needs server URLs (…/v1) in the sidebar")
        return {"base_urls": urls}
    return {}


def queue_estimate(store: Store, request: EstimateRequest, trajectory_ids: Sequence[int]) -> int:
    """Queue a Monte Carlo estimate of every step of these trajectories; returns the job id."""
    return queue(store, EstimateSpec(
        policy=request.policy, trajectory_ids=tuple(trajectory_ids), strategy=make_strategy(request.strategy, request.n),
        sampling=request.sampling(), **request.engine_fields(),
    ))  # fmt: skip


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
    judges = [j.strip() for j in judges if j.strip()]
    if not judges:
        raise StepScopeError("name at least one judge model")
    if not kinds:
        raise StepScopeError("choose step and/or outcome verdicts")
    unknown = [k for k in kinds if k not in JUDGE_KINDS]
    if unknown:
        raise StepScopeError(f"verdict kinds are {', '.join(JUDGE_KINDS)}, not {', '.join(unknown)}")
    specs = [JudgeSpec(judge=judge, verdict=kind, trajectory_ids=tuple(trajectory_ids), mode=mode, engine=engine,
                       engine_options=engine_options or {}) for judge in judges for kind in kinds]  # fmt: skip
    for spec in specs:
        spec.validate(store)  # every job checked before any is queued
    return [queue(store, spec) for spec in specs]


def queue_judge_solutions(
    store: Store, judges: Sequence[str], kinds: Sequence[str], dataset: str | None, solutions_of: str,
    verifiers: Sequence[str] = (), **options,
) -> list[int]:
    """Judge every solution the policy `solutions_of` generated for the dataset's problems (None:
    every dataset): the verdicts Best-of-N reranks with. The rest is queue_judging's."""
    ids = [row["id"] for row in store.list_trajectories(dataset=dataset, source=GENERATED_SOURCE, model=solutions_of)]
    if not ids:
        where = f"dataset {dataset!r}" if dataset else "any dataset"
        raise StepScopeError(f"{solutions_of} has no generated solutions in {where}: generate some first")
    return queue_judging(store, judges, kinds, verifiers, ids, **options)


def trained_verifiers(store: Store) -> dict[str, str]:
    """Verifiers trained next to the database, folder -> judge name, for a picker: probes
    (train-verifier) and fine-tuned ORMs (train-orm)."""
    found: dict[str, str] = {}
    for listed in (list_probes, list_orms):
        try:
            found |= {v["folder"]: str(v.get("judge") or v["folder"]) for v in listed(store)}
        except (OSError, ValueError, StepScopeError):  # a manifest being written or damaged: offer none of that kind
            continue
    return found


def verifier_job(folder: str, trajectory_ids: Sequence[int]):
    """The job that scores with a trained verifier's folder: a fine-tuned ORM's outcome verdicts
    (orm-score) or a probe's verdicts (probe-judge)."""
    spec = OrmScoreSpec if is_orm_folder(folder) else ProbeJudgeSpec
    return spec(verifier=folder, trajectory_ids=tuple(trajectory_ids))


def queue_verifier_scores(store: Store, verifiers: Sequence[str], trajectory_ids: Sequence[int]) -> list[int]:
    """One job per trained verifier folder (trained_verifiers' keys)."""
    if not verifiers:
        raise StepScopeError("choose at least one trained verifier")
    specs = [verifier_job(folder, trajectory_ids) for folder in verifiers]
    for spec in specs:
        spec.validate(store)  # every job checked before any is queued
    return [queue(store, spec) for spec in specs]


def queue_judging(
    store: Store, judges: Sequence[str], kinds: Sequence[str], verifiers: Sequence[str], trajectory_ids: Sequence[int],
    **options,
) -> list[int]:
    """The judge models give the chosen kinds of verdicts, and each chosen trained verifier
    scores too; `options` go to queue_judges (mode, engine, engine_options)."""
    if not kinds and not verifiers:
        raise StepScopeError("choose step and/or outcome verdicts, or a trained verifier")
    ids = queue_judges(store, judges, kinds, trajectory_ids, **options) if kinds else []
    return ids + (queue_verifier_scores(store, verifiers, trajectory_ids) if verifiers else [])


def queue_generate(store: Store, request: EstimateRequest, dataset: str, k: int, limit: int | None = None) -> int:
    """Queue a job that samples k solutions per problem of the dataset (the first `limit`
    problems by id) from the policy; they become policy trajectories, graded and segmented.
    `request` carries the policy, engine and sampling (its strategy and N are not used)."""
    if limit is not None:
        check_range("the number of problems", limit, 1, MAX_PROBLEMS)
    problems = [p["id"] for p in store.list_problems(dataset=dataset, limit=limit)]
    if not problems:
        raise StepScopeError(f"dataset {dataset!r} has no problems")
    return queue(store, GenerateSpec(policy=request.policy, problem_ids=tuple(problems), k=k,
                                     sampling=request.sampling(), **request.engine_fields()))  # fmt: skip


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
        text = f"{job['status']}: {done}/{planned or '?'} {unit_of(job.get('kind'))}"
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
            **compute_columns(job.get("compute")),
        })  # fmt: skip
    return table


def compute_columns(compute: dict | None) -> dict:
    """What a job spent (core.search.compute.ComputeRecord as stored): tokens by role, engine
    seconds and estimated FLOPs; None where the job has not run or the engine cannot count it."""
    compute = compute or {}
    flops = compute.get("flops")
    return {
        "policy tokens": compute.get("policy_tokens"), "prompt tokens": compute.get("prompt_tokens"),
        "cached prompt tokens": compute.get("prompt_tokens_cached"),
        "verifier tokens": compute.get("verifier_tokens"), "training tokens": compute.get("training_tokens"),
        "engine s": compute.get("engine_seconds"),
        "TFLOPs (est.)": None if flops is None else round(flops / 1e12, 4),
    }  # fmt: skip


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
