"""The estimate job: Monte Carlo step values from rounds of batched rollouts, graded and stored
as they come.

Each round asks the strategy, for every trajectory, how many more rollouts each step needs
given what is stored; all those requests are sampled together in batched engine calls (n > 1
per prefix, many prefixes per call); each call's rollouts are graded and written to the store
in one transaction before the next call starts. A killed run therefore loses at most the call
in flight, and a rerun plans from the stored counts, so nothing stored is redone.
"""

from __future__ import annotations

import time
from dataclasses import InitVar, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping, Sequence

from core.engines.base import Engine, SamplingParams
from core.errors import StepScopeError
from core.jobs.spec import (
    MAX_N, JobContext, JobSpec, Progress, check_range, check_sampling, known_fields, require_ids, sampling_from,
    splitters_of,
)  # fmt: skip
from core.mcpe import (
    ROLLOUTS_PER_STEP, ROUND_SIZE, STRATEGY_NAMES, AnyStrategy, Counts, FixedN, default_strategy_name, make_strategy,
    strategy_from_manifest,
)  # fmt: skip
from core.policy import (
    DEFAULT_TEMPLATE, PolicyTemplate, load_template, policy_context, rollout_stops, step_prefixes,
)  # fmt: skip

# The CLI reads this module's defaults when it starts, so what is slow to import (the grader's
# sympy, the store's sqlite-utils and pandas) is imported where it is used.
if TYPE_CHECKING:
    from core.store import Store


@dataclass(frozen=True)
class StepTask:
    step_id: int
    prompt: str  # the text sent to the engine
    solution_prefix: str  # the part of it that is solution (graded with the rollout)
    solution: str = field(default="", repr=False)  # the whole trajectory's (the same string for its steps)


@dataclass(frozen=True)
class TrajectoryTask:
    trajectory_id: int
    gold: str
    steps: tuple[StepTask, ...]
    outcome: bool | None = None  # is the trajectory's own final answer correct


def load_tasks(store: Store, trajectory_ids: Sequence[int], template: PolicyTemplate) -> list[TrajectoryTask]:
    from core.grading import grade

    tasks = []
    for trajectory_id in trajectory_ids:
        trajectory = store.get_trajectory(trajectory_id)
        if trajectory is None:
            raise StepScopeError(f"trajectory {trajectory_id} does not exist")
        if not trajectory.get("gold"):
            raise StepScopeError(f"trajectory {trajectory_id}: its problem has no gold answer to grade against")
        steps = store.steps(trajectory_id)
        spans = store.step_spans(trajectory_id)
        context = policy_context(trajectory["question"], trajectory.get("policy_prompt"), template)
        prefixes = step_prefixes(context, trajectory["solution"], spans)
        tasks.append(
            TrajectoryTask(
                trajectory_id,
                trajectory["gold"],
                tuple(StepTask(s["id"], p, part, trajectory["solution"]) for s, (p, part) in zip(steps, prefixes)),
                grade(trajectory["solution"], trajectory["gold"]).correct,
            )
        )
    return tasks


@dataclass(frozen=True)
class Request:
    task: StepTask
    gold: str
    n: int


def plan_round(store: Store, tasks: Sequence[TrajectoryTask], strategy, policy: str) -> list[Request]:
    step_ids = [s.step_id for t in tasks for s in t.steps]
    stored = store.step_value_counts(step_ids, model=policy)
    requests = []
    for task in tasks:
        counts = [Counts(*stored[s.step_id]) for s in task.steps]
        for step, need in zip(task.steps, strategy.request(counts, task.outcome)):
            if need > 0:
                requests.append(Request(step, task.gold, need))
    return requests


# Sequences per engine call. Large, because the engines batch continuously within a call: with
# 16 prompts of N = 16 the batch stays full while the longest rollouts finish and the prompts
# share their few-shot prefix (transformers on 2 CPU cores: 15% faster than 4 prompts per call).
# A call is also the unit of storing and of cancelling: about 10-15 s of SmolLM2 on such a CPU.
ROWS_PER_CALL = 256


def batch_requests(requests: Sequence[Request], rows_per_call: int, *, quick_first: bool = False,
                   stops: tuple[str, ...] = ()) -> list[list[Request]]:  # fmt: skip
    """Group requests with the same n (and the same of `stops` left: core.policy.rollout_stops) into
    calls of at most `rows_per_call` sequences.

    With `quick_first`, the request whose prefix holds the most of its solution (so leaves the
    least to write: usually a trajectory's last step) goes alone in a first call: a job's first
    value is stored after that short call instead of a full one, so the page shows a value soon
    after the click (SmolLM2, 2 busy CPU cores, the sample trajectory at N = 8: 6.6 s for its last
    step alone, 24 s for all its steps in one call)."""
    batches = []
    if quick_first and len(requests) > 1:
        quick = max(requests, key=lambda r: len(r.task.solution_prefix))
        batches.append([quick])
        requests = [r for r in requests if r is not quick]
    by_call: dict[tuple, list[Request]] = {}
    for request in requests:
        by_call.setdefault((request.n, rollout_stops(stops, request.task.solution)), []).append(request)
    for (n, _), group in by_call.items():
        per_call = max(1, rows_per_call // n)
        batches.extend(group[i : i + per_call] for i in range(0, len(group), per_call))
    return batches


def planned_rollouts(store: Store, tasks: Sequence[TrajectoryTask], strategy, policy: str) -> int:
    """The most rollouts the strategy can still ask for on these tasks, given what is stored
    (core.mcpe's most_to_spend): exact for fixed N, an upper bound for adaptive and first-error."""
    step_ids = [s.step_id for t in tasks for s in t.steps]
    stored = store.step_value_counts(step_ids, model=policy)
    return sum(strategy.most_to_spend([Counts(*stored[s.step_id]) for s in t.steps], t.outcome) for t in tasks)


def stored_counts(store: Store, trajectory_ids: Sequence[int], policy: str) -> list[tuple[list[Counts], bool | None]]:
    """What a strategy sees when a job starts, for each trajectory: the stored counts of the
    policy's rollouts per step and the graded outcome (load_tasks' grade), without building
    the prompts."""
    from core.grading import grade

    steps, outcomes = [], []
    for trajectory_id in trajectory_ids:
        trajectory = store.get_trajectory(trajectory_id)
        if trajectory is None:
            raise StepScopeError(f"trajectory {trajectory_id} does not exist")
        if not trajectory.get("gold"):
            raise StepScopeError(f"trajectory {trajectory_id}: its problem has no gold answer to grade against")
        steps.append([s["id"] for s in store.steps(trajectory_id)])
        outcomes.append(grade(trajectory["solution"], trajectory["gold"]).correct)
    stored = store.step_value_counts([i for ids in steps for i in ids], model=policy)
    return [([Counts(*stored[i]) for i in ids], outcome) for ids, outcome in zip(steps, outcomes)]


@dataclass(frozen=True)
class EstimatePlan:
    """One estimate job as it will start: its strategy, its trajectories and the most rollouts it
    can sample on them given what is stored (exact for fixed N, an upper bound otherwise)."""

    strategy: AnyStrategy
    trajectory_ids: tuple[int, ...]
    most_rollouts: int
    longest: int  # steps of its longest trajectory

    @property
    def exact(self) -> bool:
        return self.strategy.name == FixedN.name


def plan_estimate(store: Store, trajectory_ids: Sequence[int], policy: str, strategy: AnyStrategy | None = None, *,
                  n: int = ROLLOUTS_PER_STEP, round_size: int = ROUND_SIZE) -> list[EstimatePlan]:  # fmt: skip
    """The estimate jobs to run on these trajectories with their budgets: one with `strategy`, or,
    when none is named, the first-error search on the trajectories longer than
    FIRST_ERROR_FROM_STEPS steps and fixed N on the others (core.mcpe.default_strategy_name),
    N and the round size as given. Empty groups make no plan."""
    state = stored_counts(store, trajectory_ids, policy)
    groups: dict[str, list[int]] = {}
    for trajectory_id, (counts, _) in zip(trajectory_ids, state):
        name = strategy.name if strategy is not None else default_strategy_name(len(counts))
        groups.setdefault(name, []).append(trajectory_id)
    by_id = dict(zip(trajectory_ids, state))
    plans = []
    for name in sorted(groups, key=STRATEGY_NAMES.index, reverse=True):  # first-error, then fixed
        chosen = strategy if strategy is not None else make_strategy(name, n=n, round_size=round_size)
        ids = tuple(groups[name])
        plans.append(EstimatePlan(
            chosen, ids, sum(chosen.most_to_spend(*by_id[i]) for i in ids), max(len(by_id[i][0]) for i in ids),
        ))  # fmt: skip
    return plans


def run_estimate(
    store: Store,
    engine: Engine,
    tasks: Sequence[TrajectoryTask],
    strategy,
    policy: str,
    sampling: SamplingParams,
    *,
    job_id: int | None = None,
    rows_per_call: int = ROWS_PER_CALL,
    should_stop: Callable[[], bool] = lambda: False,
    on_progress: Callable[[Progress], None] = lambda progress: None,
) -> Progress:
    """Sample until the strategy is satisfied on every trajectory, or `should_stop()`."""
    from core.grading import grade

    progress = Progress(planned=planned_rollouts(store, tasks, strategy, policy))
    seed = sampling.seed if sampling.seed is not None else 0
    while True:
        requests = plan_round(store, tasks, strategy, policy)
        if not requests:
            break
        progress.per_round.append(sum(r.n for r in requests))
        for batch in batch_requests(requests, rows_per_call, quick_first=progress.calls == 0, stops=sampling.stop):
            if should_stop():
                progress.cancelled = True
                return progress
            # A fresh seed per call keeps rollouts of the same prefix independent across rounds.
            call_seed = seed + progress.calls
            params = replace(sampling, n=batch[0].n, seed=call_seed,
                             stop=rollout_stops(sampling.stop, batch[0].task.solution))  # fmt: skip
            started = time.perf_counter()
            results = engine.generate([r.task.prompt for r in batch], params)
            engine_done = time.perf_counter()
            rows = []
            for request, samples in zip(batch, results):
                for sample in samples:
                    graded = grade(request.task.solution_prefix + sample.text, request.gold)
                    rows.append({
                        "step_id": request.task.step_id, "job_id": job_id, "text": sample.text,
                        "answer": graded.answer, "correct": graded.correct,
                        "num_tokens": sample.num_tokens, "finish_reason": sample.finish_reason,
                        "seed": call_seed, "model": policy,
                    })  # fmt: skip
            store.add_rollouts(rows)
            progress.calls += 1
            progress.done += len(rows)
            progress.tokens += sum(r["num_tokens"] for r in rows)
            progress.engine_seconds += engine_done - started
            progress.seconds += time.perf_counter() - started
            on_progress(progress)
    progress.planned = progress.done  # the strategy finished: what was spent is what was needed
    on_progress(progress)
    return progress


def default_sampling(max_new_tokens: int = 128, temperature: float = 0.7, seed: int = 0) -> SamplingParams:
    """Rollout sampling as the app and CLI default it: one sample per row, the policy's stops."""
    from core.policy import POLICY_STOP

    return SamplingParams(
        n=1, max_new_tokens=max_new_tokens, temperature=temperature, top_p=1.0, stop=POLICY_STOP, seed=seed
    )


@dataclass(frozen=True, kw_only=True)
class EstimateSpec(JobSpec):
    """Monte Carlo values for every step of the trajectories, spent by a strategy (core.mcpe)."""

    kind: ClassVar[str] = "estimate"
    unit: ClassVar[str] = "rollouts"

    policy: str
    trajectory_ids: tuple[int, ...]
    strategy: AnyStrategy = field(default_factory=FixedN)
    # Shorthand for strategy=FixedN(n), the common case (tests, benchmarks); not a field.
    n: InitVar[int | None] = None
    sampling: SamplingParams = field(default_factory=default_sampling)
    template: str = DEFAULT_TEMPLATE
    rows_per_call: int = ROWS_PER_CALL

    def __post_init__(self, n: int | None) -> None:
        if n is not None:
            object.__setattr__(self, "strategy", FixedN(n))  # frozen: the dataclass way to set it once

    def model_to_load(self) -> str:
        return self.policy

    def validate(self, store: Store) -> None:
        if not self.policy.strip():
            raise StepScopeError("choose a policy model")
        check_range("N", self.strategy.most_per_step, 1, MAX_N)
        check_range("round size", getattr(self.strategy, "round_size", 1), 1, MAX_N)
        check_range("rows per call", self.rows_per_call, 1, 65_536)
        check_sampling(self.sampling)
        require_ids(self.trajectory_ids, "trajectories to estimate")
        for trajectory_id in self.trajectory_ids:
            trajectory = store.get_trajectory(trajectory_id)
            if trajectory is None:
                raise StepScopeError(f"trajectory {trajectory_id} does not exist")
            if not trajectory.get("gold"):
                raise StepScopeError(
                    f"trajectory {trajectory_id}: its problem has no gold answer, so rollouts cannot be graded"
                )

    def to_manifest(self, store: Store) -> dict:
        from core.grading import GRADER_NAME

        template = load_template(self.template)
        return {
            "policy": self.policy, **self.common_manifest(), "trajectory_ids": list(self.trajectory_ids),
            "strategy": self.strategy.describe(), "sampling": self.sampling.as_manifest(),
            "prompt_template": {"name": template.name, "sha256": template.sha256},
            "rows_per_call": self.rows_per_call, "grader": GRADER_NAME,
            "splitters": splitters_of(store, self.trajectory_ids),
        }  # fmt: skip

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> "EstimateSpec":
        return cls(**known_fields(
            cls, manifest, trajectory_ids=tuple(manifest["trajectory_ids"]), sampling=sampling_from(manifest["sampling"]),
            template=manifest["prompt_template"]["name"], strategy=strategy_from_manifest(manifest["strategy"]),
        ))  # fmt: skip

    def run(self, context: JobContext) -> bool:
        store = context.store
        tasks = load_tasks(store, self.trajectory_ids, load_template(self.template))
        done_before, tokens_before = store.job_rollout_totals(context.job_id)

        def report(progress: Progress) -> None:
            context.report(replace(
                progress, planned=done_before + progress.planned, done=done_before + progress.done,
                tokens=tokens_before + progress.tokens,
            ))  # fmt: skip

        progress = run_estimate(
            store, context.engine, tasks, self.strategy, self.policy, self.sampling,
            job_id=context.job_id, rows_per_call=self.rows_per_call, should_stop=context.should_stop,
            on_progress=report,
        )  # fmt: skip
        return progress.cancelled
