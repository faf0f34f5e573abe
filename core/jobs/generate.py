"""The generate job: the policy's own trajectories, k sampled solutions per problem, graded and
segmented.

Samples that are identical for the same problem and prompt are stored once (the store keys
trajectories by content); the job reports how many distinct ones it kept.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, ClassVar, Mapping, Sequence

from core.engines.base import Engine, SamplingParams
from core.errors import StepScopeError
from core.grading import GRADER_NAME, grade
from core.jobs.estimate import default_sampling
from core.jobs.spec import (
    MAX_K, MAX_PROBLEMS, JobContext, JobSpec, Progress, check_range, check_sampling, known_fields, require_ids,
    sampling_from,
)  # fmt: skip
from core.policy import DEFAULT_TEMPLATE, PolicyTemplate, load_template
from core.steps import check_cutting_rule
from core.store import Store

GENERATED_SOURCE = "policy"


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
    on_progress: Callable[[Progress], None] = lambda progress: None,
) -> Progress:
    """Sample k solutions for each problem not yet done by this job (so a rerun resumes)."""
    finished = store.problems_done_by_job(job_key)
    todo = [p for p in problem_ids if p not in finished]
    progress = Progress(planned=len(todo) * k)
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


@dataclass(frozen=True, kw_only=True)
class GenerateSpec(JobSpec):
    """k sampled solutions per problem from the policy, stored as its own trajectories."""

    kind: ClassVar[str] = "generate"
    unit: ClassVar[str] = "solutions"

    policy: str
    problem_ids: tuple[int, ...]
    k: int = 4
    sampling: SamplingParams = field(default_factory=default_sampling)
    template: str = DEFAULT_TEMPLATE
    splitter: str = "line"

    def model_to_load(self) -> str:
        return self.policy

    def validate(self, store: Store) -> None:
        if not self.policy.strip():
            raise StepScopeError("choose a policy model")
        check_range("k (solutions per problem)", self.k, 1, MAX_K)
        check_sampling(self.sampling)
        require_ids(self.problem_ids, "problems to generate solutions for")
        check_range("the number of problems", len(self.problem_ids), 1, MAX_PROBLEMS)
        check_cutting_rule(self.splitter)  # generated text is cut by a rule (not pre-split, not a model's)

    def planned(self) -> int:
        return len(self.problem_ids) * self.k

    def to_manifest(self, store: Store) -> dict:
        template = load_template(self.template)
        return {
            "policy": self.policy, **self.common_manifest(), "problem_ids": list(self.problem_ids), "k": self.k,
            "sampling": self.sampling.as_manifest(),
            "prompt_template": {"name": template.name, "sha256": template.sha256},
            "splitter": self.splitter, "grader": GRADER_NAME,
        }  # fmt: skip

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> "GenerateSpec":
        return cls(**known_fields(
            cls, manifest, problem_ids=tuple(manifest["problem_ids"]), sampling=sampling_from(manifest["sampling"]),
            template=manifest["prompt_template"]["name"],
        ))  # fmt: skip

    def run(self, context: JobContext) -> bool:
        store = context.store
        done_before = len(store.problems_done_by_job(context.job_key)) * self.k

        def report(progress: Progress) -> None:
            context.report(replace(progress, planned=self.planned(), done=done_before + progress.done))

        progress = run_generate(
            store, context.engine, self.problem_ids, self.k, self.policy, self.sampling,
            load_template(self.template), job_key=context.job_key, rule=self.splitter,
            should_stop=context.should_stop, on_progress=report,
        )  # fmt: skip
        return progress.cancelled
