"""Seeded simulated policies that write one step per call, for the search tests.

`SteppedPolicy`: solutions of `len(success)` steps. Each step is sound or a slip and says so
("step 2: ok #1f0a..."; the tag keeps candidates apart). From a prefix with no slip the next
step is sound with probability `success[depth]`; after a slip every step is a slip. The last
step states the answer: the gold one when the whole path is sound, else a wrong one. So a path
is correct with probability prod(success), and every prefix's truth is readable from its text
(what the oracle scorer reads).

`ScriptedPolicy`: fixed children per prefix, in order, whatever the seed: a tree small enough to
work a search through by hand.

Both are Engines: prompts are the search's own (context, then the steps one per line), a call
whose stop strings include the delimiter writes one step, otherwise the rest of the solution.
Every Sample returned is kept in `samples` and every prompt in `prompts`, so tests can count.
"""

from __future__ import annotations

import random
from typing import Sequence

from core.engines.base import EngineInfo, Sample, SamplingParams

CONTEXT = "Solve it.\n\nQuestion: What is the number?\nAnswer:"
SLIP = "slip"


def steps_in(prompt: str) -> list[str]:
    """The steps a search prompt holds: the lines after the last "Answer:"."""
    return [line.strip() for line in prompt.rsplit("Answer:", 1)[1].split("\n") if line.strip()]


def is_sound(steps: Sequence[str]) -> bool:
    return not any(SLIP in step.split() for step in steps)


def count_tokens(text: str) -> int:
    """The simulated tokenizer: one token per word."""
    return len(text.split())


class _Recording:
    def __init__(self, parameters: int) -> None:
        self.info = EngineInfo(engine="simulated", model="simulated-steps", device="cpu",
                               extra={"parameters": parameters})  # fmt: skip
        self.samples: list[Sample] = []
        self.prompts: list[str] = []
        self.calls = 0

    def count_tokens(self, prompt: str) -> int:
        return count_tokens(prompt)

    def _sample(self, text: str) -> Sample:
        sample = Sample(text, count_tokens(text) + 1, "stop")  # + 1: the stop token the policy wrote
        self.samples.append(sample)
        return sample

    def candidate_logprobs(self, prompts, candidates):
        raise NotImplementedError("a simulated policy only samples")

    def render_chat(self, messages, add_generation_prompt=True):
        raise NotImplementedError("a simulated policy only samples")

    def close(self) -> None:
        pass


class SteppedPolicy(_Recording):
    def __init__(self, success: Sequence[float], gold: str = "42", parameters: int = 1_000_000) -> None:
        super().__init__(parameters)
        self.success = list(success)
        self.gold = gold

    @property
    def length(self) -> int:
        return len(self.success)

    def _step(self, rng: random.Random, depth: int, sound_so_far: bool) -> tuple[str, bool]:
        sound = sound_so_far and rng.random() < self.success[depth]
        text = f" step {depth + 1}: {'ok' if sound else SLIP} #{rng.getrandbits(32):08x}"
        if depth == self.length - 1:
            answer = self.gold if sound else str(int(self.gold) + 1 + rng.randrange(20))
            text += f" The answer is {answer}."
        return text, sound

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[list[Sample]]:
        rng = random.Random(params.seed)
        self.calls += 1
        one_step = "\n" in params.stop
        results = []
        for prompt in prompts:
            self.prompts.append(prompt)
            steps = steps_in(prompt)
            row = []
            for _ in range(params.n):
                depth, sound, pieces = len(steps), is_sound(steps), []
                while depth < self.length:
                    text, sound = self._step(rng, depth, sound)
                    pieces.append(text)
                    depth += 1
                    if one_step:
                        break
                row.append(self._sample("\n".join(pieces)))  # past the last step: empty, the solution is over
            results.append(row)
        return results


class ScriptedPolicy(_Recording):
    """`children[prefix]` lists the next steps of a prefix (a tuple of step texts); the i-th
    sample of a call is the i-th child (cycling). A call that writes the rest of the solution
    returns `rest` (one step with an answer) for any prefix without children."""

    def __init__(self, children: dict[tuple[str, ...], list[str]], rest: str = "done The answer is 0.",
                 parameters: int = 1000) -> None:  # fmt: skip
        super().__init__(parameters)
        self.children, self.rest = children, rest

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[list[Sample]]:
        self.calls += 1
        results = []
        for prompt in prompts:
            self.prompts.append(prompt)
            options = self.children.get(tuple(steps_in(prompt)), [self.rest])
            results.append([self._sample(" " + options[i % len(options)]) for i in range(params.n)])
        return results


class KilledAt:
    """The policy killed (nothing after the call is written) at its `at`-th call."""

    def __init__(self, policy, at: int) -> None:
        self.policy, self.at, self.calls = policy, at, 0

    def generate(self, prompts, params):
        if self.calls >= self.at:
            raise KeyboardInterrupt
        self.calls += 1
        return self.policy.generate(prompts, params)

    def __getattr__(self, name):
        return getattr(self.policy, name)
