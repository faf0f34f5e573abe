"""Monte Carlo per-step values (Math-Shepherd / MCPE) and the strategies that spend rollouts.

A step's value is estimated from the rollouts stored for the prefix that ends with it: soft =
fraction that reach the gold answer, hard = any did, with a 95% Wilson interval. Strategies
never hold state of their own: each round they look at the stored counts and say how many more
rollouts each step needs. That is what makes a job resumable after a kill and makes "more
rollouts" a top-up: the counts already stored are simply part of the picture.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from typing import Protocol, Sequence, Union

CONFIDENCE = 0.95
# Defaults of every way of starting an estimate (app, CLI, job spec): N rollouts per step (the
# most per step for adaptive and first-error) and the rollouts a round samples per step.
ROLLOUTS_PER_STEP = 16
ROUND_SIZE = 4
# Past this many steps an estimate that names no strategy runs the first-error search (Explore's
# Strategy default and `stepscope estimate` without --strategy): fixed N samples every step (N x
# 2,000 rollouts on a 2,000-step trace), the search at most N per halving of the steps.
FIRST_ERROR_FROM_STEPS = 60


@dataclass(frozen=True)
class Counts:
    n: int = 0
    correct: int = 0


@dataclass(frozen=True)
class StepValue:
    n: int
    correct: int
    soft: float | None  # fraction of rollouts that reached the gold answer
    hard: bool | None  # did any
    low: float  # Wilson interval
    high: float


def step_value(counts: Counts) -> StepValue:
    low, high = wilson_interval(counts)
    if counts.n == 0:
        return StepValue(0, 0, None, None, low, high)
    return StepValue(counts.n, counts.correct, counts.correct / counts.n, counts.correct > 0, low, high)


def wilson_interval(counts: Counts, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval, clipped to [0, 1]: statsmodels' proportion_confint(method="wilson")
    to the last bit, written out so that importing this module does not load statsmodels (seconds)."""
    if counts.n == 0:
        return 0.0, 1.0
    n, crit = counts.n, _critical_value(confidence)
    share, crit2 = counts.correct / n, crit**2
    denom = 1 + crit2 / n
    center = (share + crit2 / (2 * n)) / denom
    dist = crit * math.sqrt(share * (1.0 - share) / n + crit2 / (4.0 * n**2)) / denom
    return min(max(center - dist, 0.0), 1.0), min(max(center + dist, 0.0), 1.0)


@cache
def _critical_value(confidence: float) -> float:
    """The two-sided normal quantile, as statsmodels gets it (scipy's ndtri; the standard
    library's NormalDist differs in the last bit). scipy loads with the first interval."""
    from scipy.special import ndtri

    return float(-ndtri((1 - confidence) / 2))


def first_error(values: Sequence[Counts]) -> int:
    """Index of the first step after which no rollout reached the answer, or -1.

    A step counts as an error only once it has been sampled and every rollout failed; an
    unsampled step decides nothing.
    """
    for index, counts in enumerate(values):
        if counts.n > 0 and counts.correct == 0:
            return index
    return -1


class Strategy(Protocol):
    name: str

    def request(self, counts: Sequence[Counts], outcome: bool | None = None) -> list[int]:
        """How many more rollouts each step needs now; all zeros means finished.

        `outcome` is whether the trajectory's own final answer is correct, when known.
        """

    @property
    def most_per_step(self) -> int:
        """The most rollouts it asks for at one step: N."""

    def budget(self, num_steps: int) -> int:
        """The most rollouts this strategy can spend on a trajectory with nothing stored."""

    def most_to_spend(self, counts: Sequence[Counts], outcome: bool | None = None) -> int:
        """The most rollouts `request` can still ask for on a trajectory, given what is stored:
        the budget said before a job starts (exact for fixed N, an upper bound otherwise)."""

    def describe(self) -> dict:
        """Parameters for the job manifest."""


@dataclass(frozen=True)
class FixedN:
    """Math-Shepherd: exactly N rollouts per step."""

    n: int = ROLLOUTS_PER_STEP
    name: str = "fixed"

    @property
    def most_per_step(self) -> int:
        return self.n

    def request(self, counts: Sequence[Counts], outcome: bool | None = None) -> list[int]:
        return [max(0, self.n - c.n) for c in counts]

    def budget(self, num_steps: int) -> int:
        return self.n * num_steps

    def most_to_spend(self, counts: Sequence[Counts], outcome: bool | None = None) -> int:
        return sum(self.request(counts, outcome))  # one round tops every step up: exact

    def describe(self) -> dict:
        return {"strategy": self.name, "n": self.n}


@dataclass(frozen=True)
class Adaptive:
    """Sample in rounds; a step stops when its interval is narrow enough, lies wholly on one side
    of the threshold, or has used its budget.

    With `threshold=0` the one-sided rule reads "some rollout succeeded": the hard label is
    settled by one success, while a step with no success keeps sampling up to `max_per_step`,
    which is what a fixed-N hard label with N = max_per_step would see. The width rule does not
    cut that short: 0 of 12 already has a Wilson interval narrower than 0.3, but calling the
    step an error after 12 failures would make the hard label weaker than fixed N's.
    """

    round_size: int = ROUND_SIZE
    max_per_step: int = ROLLOUTS_PER_STEP
    width: float = 0.3
    threshold: float = 0.0
    name: str = "adaptive"

    @property
    def most_per_step(self) -> int:
        return self.max_per_step

    def settled(self, counts: Counts) -> bool:
        if counts.n >= self.max_per_step:
            return True
        if counts.n == 0:
            return False
        if self.threshold <= 0 and counts.correct == 0:
            return False  # only max_per_step failures settle "unreachable" (see the docstring)
        low, high = wilson_interval(counts)
        one_sided = low > self.threshold or high < self.threshold
        return one_sided or (high - low) < self.width

    def request(self, counts: Sequence[Counts], outcome: bool | None = None) -> list[int]:
        return [
            0 if self.settled(c) else min(self.round_size, self.max_per_step - c.n) for c in counts
        ]

    def budget(self, num_steps: int) -> int:
        return self.max_per_step * num_steps

    def most_to_spend(self, counts: Sequence[Counts], outcome: bool | None = None) -> int:
        return sum(0 if self.settled(c) else self.max_per_step - c.n for c in counts)

    def describe(self) -> dict:
        return {
            "strategy": self.name, "round_size": self.round_size, "n": self.max_per_step,
            "width": self.width, "threshold": self.threshold,
        }  # fmt: skip


@dataclass(frozen=True)
class FirstErrorSearch:
    """Binary search for the first step after which the policy can no longer reach the answer
    (OmegaPRM's idea). It assumes reachability only ever goes from yes to no along the steps.

    A probed step is reachable as soon as one rollout succeeds, and unreachable after
    `max_per_step` failures; it samples `round_size` at a time so that a success stops it early.
    Every stored rollout counts, whoever sampled it. The last step's prefix is the whole
    solution, final answer included, so when the trajectory's outcome is known it settles the
    last step without sampling (as OmegaPRM starts from the graded outcome).
    """

    round_size: int = ROUND_SIZE
    max_per_step: int = ROLLOUTS_PER_STEP
    name: str = "first-error"

    @property
    def most_per_step(self) -> int:
        return self.max_per_step

    def status(self, counts: Sequence[Counts], index: int, outcome: bool | None = None) -> bool | None:
        """True reachable, False unreachable, None not known yet."""
        step = counts[index]
        if step.correct > 0:
            return True
        if step.n >= self.max_per_step:
            return False
        if index == len(counts) - 1 and outcome is not None:
            return outcome
        return None

    def _search(self, counts: Sequence[Counts], outcome: bool | None) -> tuple[int | None, int]:
        """(the step to settle next or None when done, the first unreachable step or -1)."""
        step, first_unreachable, _ = self._walk(counts, outcome)
        return step, first_unreachable

    def _walk(self, counts: Sequence[Counts], outcome: bool | None) -> tuple[int | None, int, int]:
        """The binary search over what is known: `_search`'s pair and the number of steps still
        in its interval where it stops (0 when done)."""
        if not counts:
            return None, -1, 0
        last = len(counts) - 1
        if self.status(counts, last, outcome) is True:
            return None, -1, 0  # reachable to the end: by monotonicity no step is an error
        low, high, first_unreachable = 0, last, -1
        while low <= high:
            middle = (low + high) // 2
            known = self.status(counts, middle, outcome)
            if known is None:
                return middle, first_unreachable, high - low + 1
            if known:
                low = middle + 1
            else:
                first_unreachable, high = middle, middle - 1
        return None, first_unreachable, 0

    def request(self, counts: Sequence[Counts], outcome: bool | None = None) -> list[int]:
        need = [0] * len(counts)
        step, _ = self._search(counts, outcome)
        if step is not None:
            need[step] = min(self.round_size, self.max_per_step - counts[step].n)
        return need

    def decision(self, counts: Sequence[Counts], outcome: bool | None = None) -> int:
        """The first unreachable step once the search is over (-1: every step reachable)."""
        return self._search(counts, outcome)[1]

    def budget(self, num_steps: int) -> int:
        return self.max_per_step * max(1, math.ceil(math.log2(num_steps + 1)))

    def most_to_spend(self, counts: Sequence[Counts], outcome: bool | None = None) -> int:
        """The search settles one step per level of a binary search over the interval it has
        left (m steps: m.bit_length() = ceil(log2(m + 1)) levels), and settling a step takes at
        most `max_per_step - n` more rollouts (a round is cut to what the step lacks): the step it
        probes now, then at most N on each level below. None on a trajectory whose final answer is
        correct or whose search is over. A bound, not a forecast: a level whose step the stored
        rollouts settle costs nothing, and a reachable step stops at its first success. With
        nothing stored it is budget()."""
        step, _, interval = self._walk(counts, outcome)
        if step is None:
            return 0
        return self.max_per_step - counts[step].n + self.max_per_step * (interval.bit_length() - 1)

    def describe(self) -> dict:
        return {"strategy": self.name, "round_size": self.round_size, "n": self.max_per_step}


# The strategies a job can be given: frozen dataclasses, passed as they are from the CLI or the
# app through the job spec to the engine loop; `describe()` and `strategy_from_manifest` are the
# only conversions, at the job row's manifest.
AnyStrategy = Union[FixedN, Adaptive, FirstErrorSearch]
STRATEGY_NAMES = ("fixed", "adaptive", "first-error")


def default_strategy_name(num_steps: int) -> str:
    """The strategy an estimate of a trajectory of `num_steps` steps uses when none is named: the
    first-error search past FIRST_ERROR_FROM_STEPS steps, fixed N up to it."""
    return FirstErrorSearch.name if num_steps > FIRST_ERROR_FROM_STEPS else FixedN.name


def make_strategy(name: str, n: int = ROLLOUTS_PER_STEP, round_size: int = ROUND_SIZE, width: float = Adaptive.width,
                  threshold: float = Adaptive.threshold) -> AnyStrategy:  # fmt: skip
    """The strategy called `name` from the flat parameters a form or the command line gives."""
    from core.errors import StepScopeError

    if name == "fixed":
        return FixedN(n)
    if name == "adaptive":
        return Adaptive(round_size=round_size, max_per_step=n, width=width, threshold=threshold)
    if name == "first-error":
        return FirstErrorSearch(round_size=round_size, max_per_step=n)
    raise StepScopeError(f"unknown strategy {name!r}: choose one of {', '.join(STRATEGY_NAMES)}")


def strategy_from_manifest(described: dict) -> AnyStrategy:
    """The strategy a job manifest describes (`describe()`'s dict; make_strategy's names)."""
    params = {k: v for k, v in described.items() if k != "strategy"}
    if "max_per_step" in params:  # manifests written before describe() used make_strategy's names
        params["n"] = params.pop("max_per_step")
    return make_strategy(described["strategy"], **params)
