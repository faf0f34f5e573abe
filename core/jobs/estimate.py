"""Running a Monte Carlo estimate: rounds of batched rollouts, graded and stored as they come.

Each round asks the strategy, for every trajectory, how many more rollouts each step needs
given what is stored; all those requests are sampled together in batched engine calls (n > 1
per prefix, many prefixes per call); each call's rollouts are graded and written to the store
in one transaction before the next call starts. A killed run therefore loses at most the call
in flight, and a rerun plans from the stored counts, so nothing stored is redone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

from core.engines.base import Engine, SamplingParams
from core.errors import StepScopeError
from core.grading import grade
from core.mcpe import Counts
from core.policy import PolicyTemplate, policy_context, step_prefixes
from core.store import Store


@dataclass(frozen=True)
class StepTask:
    step_id: int
    prompt: str  # the text sent to the engine
    solution_prefix: str  # the part of it that is solution (graded with the rollout)


@dataclass(frozen=True)
class TrajectoryTask:
    trajectory_id: int
    gold: str
    steps: tuple[StepTask, ...]
    outcome: bool | None = None  # is the trajectory's own final answer correct


def load_tasks(store: Store, trajectory_ids: Sequence[int], template: PolicyTemplate) -> list[TrajectoryTask]:
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
                tuple(StepTask(s["id"], p, part) for s, (p, part) in zip(steps, prefixes)),
                grade(trajectory["solution"], trajectory["gold"]).correct,
            )
        )
    return tasks


@dataclass
class Progress:
    planned: int
    done: int = 0
    tokens: int = 0
    seconds: float = 0.0  # time inside engine calls and bookkeeping, for tokens/s
    engine_seconds: float = 0.0
    calls: int = 0
    cancelled: bool = False
    per_round: list[int] = field(default_factory=list)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


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


def batch_requests(requests: Sequence[Request], rows_per_call: int) -> list[list[Request]]:
    """Group requests with the same n into calls of at most `rows_per_call` sequences."""
    by_n: dict[int, list[Request]] = {}
    for request in requests:
        by_n.setdefault(request.n, []).append(request)
    batches = []
    for n, group in by_n.items():
        per_call = max(1, rows_per_call // n)
        batches.extend(group[i : i + per_call] for i in range(0, len(group), per_call))
    return batches


def planned_rollouts(store: Store, tasks: Sequence[TrajectoryTask], strategy, policy: str) -> int:
    """Exact for fixed N; for adaptive and first-error search an upper bound (their budget)."""
    first_round = sum(r.n for r in plan_round(store, tasks, strategy, policy))
    if strategy.name == "fixed":
        return first_round
    step_ids = [s.step_id for t in tasks for s in t.steps]
    stored = sum(n for n, _ in store.step_value_counts(step_ids, model=policy).values())
    budget = sum(strategy.budget(len(t.steps)) for t in tasks)
    return max(first_round, budget - stored)


def run_estimate(
    store: Store,
    engine: Engine,
    tasks: Sequence[TrajectoryTask],
    strategy,
    policy: str,
    sampling: SamplingParams,
    *,
    job_id: int | None = None,
    rows_per_call: int = 64,
    should_stop: Callable[[], bool] = lambda: False,
    on_progress: Callable[[Progress], None] = lambda progress: None,
) -> Progress:
    """Sample until the strategy is satisfied on every trajectory, or `should_stop()`."""
    progress = Progress(planned=planned_rollouts(store, tasks, strategy, policy))
    seed = sampling.seed if sampling.seed is not None else 0
    while True:
        requests = plan_round(store, tasks, strategy, policy)
        if not requests:
            break
        progress.per_round.append(sum(r.n for r in requests))
        for batch in batch_requests(requests, rows_per_call):
            if should_stop():
                progress.cancelled = True
                return progress
            # A fresh seed per call keeps rollouts of the same prefix independent across rounds.
            call_seed = seed + progress.calls
            params = replace(sampling, n=batch[0].n, seed=call_seed)
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
