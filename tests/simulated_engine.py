"""A seeded simulated policy whose success probability per prefix is known.

The only stand-in for a model in the test suite, because statistical tests need the truth: a
real model's probability of reaching the answer from a prefix is unknown.
"""

from __future__ import annotations

import random
from typing import Callable, Sequence

from core.engines.base import EngineInfo, Sample, SamplingParams


class SimulatedPolicy:
    def __init__(self, success_probability: Callable[[str], float], gold: str) -> None:
        self.success_probability = success_probability
        self.gold = gold
        self.wrong = str(int(gold) + 1)
        self.info = EngineInfo(engine="simulated", model="simulated", device="cpu")
        self.calls = 0

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[list[Sample]]:
        rng = random.Random(params.seed)
        self.calls += 1
        results = []
        for prompt in prompts:
            p = self.success_probability(prompt)
            results.append([
                Sample(f" The answer is {self.gold if rng.random() < p else self.wrong}.", 6, "stop")
                for _ in range(params.n)
            ])  # fmt: skip
        return results

    def candidate_logprobs(self, prompts, candidates):
        raise NotImplementedError("the simulated policy only samples")

    def render_chat(self, messages, add_generation_prompt=True):
        raise NotImplementedError("the simulated policy only samples")

    def close(self) -> None:
        pass
