"""A seeded simulated multi-step policy with a known truth at every prefix, for the tree search.

Solutions have `length` steps. A step is sound or a slip, and says so in its text ("step 3: slip
#1f0a...", the tag keeps different rollouts' prefixes apart), so the true first error of any path
is readable from the path itself. From a prefix with no slip (alive) a rollout reaches the answer
with probability p(depth); otherwise its first slip falls on one of the remaining steps,
uniformly, and its answer is wrong. From a prefix with a slip (dead) a rollout reaches the answer
with probability `dead_success` (0 by default: a slip cannot be recovered from; above 0, the
"lucky guess" variant that breaks the monotonicity the binary search relies on). A complete
alive solution is correct.
"""

from __future__ import annotations

import random
from typing import Callable, Sequence

from core.tree_search import Prefix, SampledRollout

SLIP = "slip"


class SimulatedReasoner:
    def __init__(
        self,
        length: int,
        success: float | Callable[[int], float],
        dead_success: float = 0.0,
        tokens_per_step: int = 20,
    ) -> None:
        self.length = length
        self.success = success if callable(success) else (lambda depth, p=success: p)
        self.dead_success = dead_success
        self.tokens_per_step = tokens_per_step
        self.calls = 0
        self.sampled = 0

    @staticmethod
    def first_error(path: Sequence[str]) -> int:
        """Index of the first slip in `path`, or -1."""
        for index, step in enumerate(path):
            if step.split()[2] == SLIP:
                return index
        return -1

    def success_probability(self, prefix: Prefix) -> float:
        if self.first_error(prefix) >= 0:
            return self.dead_success
        return 1.0 if len(prefix) >= self.length else self.success(len(prefix))

    def _step(self, rng: random.Random, depth: int, sound: bool) -> str:
        return f"step {depth + 1}: {'ok' if sound else SLIP} #{rng.getrandbits(40):010x}"

    def __call__(self, prefix: Prefix, k: int, seed: int) -> list[SampledRollout]:
        rng = random.Random(seed)
        self.calls += 1
        self.sampled += k
        start = len(prefix)
        remaining = self.length - start
        alive = self.first_error(prefix) < 0
        rollouts = []
        for _ in range(k):
            correct = rng.random() < self.success_probability(prefix)
            if alive and not correct:
                slip_at = start + rng.randrange(remaining)  # remaining >= 1: a complete alive prefix is correct
            else:
                slip_at = self.length  # none in this continuation
            steps = tuple(self._step(rng, d, d != slip_at) for d in range(start, self.length))
            rollouts.append(SampledRollout(steps, correct, self.tokens_per_step * len(steps)))
        return rollouts

    def wrong_solution(self, seed: int) -> tuple[tuple[str, ...], int]:
        """A complete wrong-answer solution from the question and its true first error: the
        input a per-trajectory labeller gets."""
        rng = random.Random(seed)
        while True:
            (rollout,) = self((), 1, rng.getrandbits(63))
            if not rollout.correct:
                return rollout.steps, self.first_error(rollout.steps)
