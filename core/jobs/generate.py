"""The policy's own trajectories: k sampled solutions per problem, graded and segmented.

Samples that are identical for the same problem and prompt are stored once (the store keys
trajectories by content); the job reports how many distinct ones it kept.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Callable, Sequence

from core.engines.base import Engine, SamplingParams
from core.grading import grade
from core.policy import PolicyTemplate
from core.store import Store

GENERATED_SOURCE = "policy"


@dataclass
class GenerateProgress:
    planned: int
    done: int = 0
    kept: int = 0
    tokens: int = 0
    seconds: float = 0.0
    cancelled: bool = False

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def problems_done_by_job(store: Store, job_key: str) -> set[int]:
    rows = store.db.execute(
        "SELECT DISTINCT problem_id FROM trajectories WHERE json_extract(meta, '$.job') = ?", [job_key]
    ).fetchall()
    return {row[0] for row in rows}


def run_generate(
    store: Store,
    engine: Engine,
    problem_ids: Sequence[int],
    k: int,
    policy: str,
    sampling: SamplingParams,
    template: PolicyTemplate,
    *,
    job_key: str,
    rule: str = "line",
    problems_per_call: int = 8,
    should_stop: Callable[[], bool] = lambda: False,
    on_progress: Callable[[GenerateProgress], None] = lambda progress: None,
) -> GenerateProgress:
    """Sample k solutions for each problem not yet done by this job (so a rerun resumes)."""
    finished = problems_done_by_job(store, job_key)
    todo = [p for p in problem_ids if p not in finished]
    progress = GenerateProgress(planned=len(todo) * k)
    seed = sampling.seed or 0
    for call, start in enumerate(range(0, len(todo), problems_per_call)):
        if should_stop():
            progress.cancelled = True
            break
        problems = [store.get_problem(p) for p in todo[start : start + problems_per_call]]
        prompts = [template.render(p["question"]) for p in problems]
        began = time.perf_counter()
        results = engine.generate(prompts, replace(sampling, n=k, seed=seed + call))
        with store.transaction():
            for problem, prompt, samples in zip(problems, prompts, results):
                for index, sample in enumerate(samples):
                    if not sample.text.strip():
                        continue  # an immediate stop has no steps to study
                    graded = grade(sample.text, problem["gold"]) if problem.get("gold") else None
                    store.add_trajectory(
                        problem["id"], sample.text, source=GENERATED_SOURCE, rule=rule, model=policy,
                        policy_prompt=prompt, final_answer=graded.answer if graded else None,
                        correct=graded.correct if graded else None,
                        meta={"job": job_key, "sample": index, "finish_reason": sample.finish_reason,
                              "num_tokens": sample.num_tokens, "template": template.name},
                    )  # fmt: skip
        progress.done += sum(len(s) for s in results)
        progress.tokens += sum(x.num_tokens for s in results for x in s)
        progress.seconds += time.perf_counter() - began
        on_progress(progress)
    return progress
