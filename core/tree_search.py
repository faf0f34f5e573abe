"""OmegaPRM (Luo et al. 2024, "Improve Mathematical Reasoning in Language Models by Automated
Process Supervision"): a Monte Carlo tree search that labels steps by binary-searching rollouts
for their first error.

The tree's states are step prefixes of one problem (the empty prefix is the question). Every
state holds the rollouts sampled from it; its Monte Carlo value MC(s) is the fraction of them
that reach the gold answer, and its visit count N(s) is how many of its rollouts have been
selected. One iteration:

1. Select, from the pool of unselected wrong-answer rollouts whose state has 0 < MC(s) < 1, the
   rollout maximising Q(s, r) + U(s), where (the paper's equations)
   Q(s, r) = alpha ** (1 - MC(s)) * beta ** (len(r) / L)   (a "supposed-to-be-correct
   wrong-answer" rollout: its state is likely to succeed, yet it failed; short ones first) and
   U(s) = c_puct * sqrt(sum over states of N) / (1 + N(s))  (states seldom chosen get a turn).
2. Binary-search it for the first error: the state is known positive (MC(s) > 0) and the whole
   rollout known negative (wrong answer); the midpoint prefix gets k rollouts and is positive
   when any reaches the answer. Every probed prefix becomes a state with its k rollouts, and
   those rollouts join the pool when their state qualifies.
3. Repeat until the rollout budget is spent or the pool is empty.

The step found is the true first error when every probe that lies before it turns out positive
(probes after it are never positive when a wrong step cannot be recovered from), so with a
per-prefix success probability p before the error, a search over n steps is right with
probability prod(1 - (1 - p_i) ** k) over the at most ceil(log2 n) probes before the error, at
least (1 - (1 - p) ** k) ** ceil(log2 n). For k = 16 and p >= 0.3 that is >= 0.98 up to 32
steps; for k = 8 and p = 0.3 it falls to 0.79 at 16 steps (tests/test_tree_search.py checks
the rate against this prediction).

The search holds no state of its own beyond the tree, and the tree is a function of what a store
keeps: the rollouts (prefix, ordinal within the prefix, steps, correct, tokens), which rollouts
were selected and the first error each finished search located. Sampling seeds derive from
(seed, prefix, ordinal), so a search killed at any point and resumed on the rebuilt tree with
the unspent budget grows exactly the tree an uninterrupted run grows. Like core/mcpe.py's
strategies, a prefix that already holds k rollouts is not sampled again: stored rollouts count,
whoever sampled them.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Protocol, Sequence

from core.errors import StepScopeError
from core.mcpe import Counts, StepValue, step_value

Prefix = tuple[str, ...]


@dataclass(frozen=True)
class SampledRollout:
    """What a sampler returns: the continuation split into steps, graded."""

    steps: tuple[str, ...]
    correct: bool
    tokens: int  # the rollout's length for Q's length penalty (the paper counts tokens)


class Sampler(Protocol):
    def __call__(self, prefix: Prefix, k: int, seed: int) -> Sequence[SampledRollout]:
        """Exactly k rollouts continuing `prefix` (the question plus these steps), reproducible
        from `seed`."""


@dataclass(frozen=True, order=True)
class RolloutKey:
    """A rollout's identity in any store: the prefix it continues and its place among that
    prefix's rollouts (0, 1, 2... in the order they were stored)."""

    prefix: Prefix
    ordinal: int


@dataclass(frozen=True)
class Rollout:
    key: RolloutKey
    steps: tuple[str, ...]
    correct: bool
    tokens: int

    @property
    def path(self) -> Prefix:
        """The full solution: the prefix it continues, then its own steps."""
        return self.key.prefix + self.steps


# Events, in the order the search emits them. The callback is given each event before the tree
# applies it; a store that writes each one atomically can rebuild the tree after a kill.


@dataclass(frozen=True)
class RolloutsSampled:
    """New rollouts at `prefix` (written together: the batch is one sampler call). The prefix
    becomes a state if it was not one."""

    prefix: Prefix
    rollouts: tuple[Rollout, ...]
    seed: int


@dataclass(frozen=True)
class RolloutSelected:
    """The search chose this rollout (its state's N grows by one) and starts binary-searching it."""

    key: RolloutKey


@dataclass(frozen=True)
class FirstErrorLocated:
    """The binary search of a selected rollout finished. `first_error` indexes the rollout's full
    path (prefix + steps): steps from the state up to it are labelled positive (prefix
    `path[:first_error]` reaches the answer), the step itself negative."""

    key: RolloutKey
    first_error: int


@dataclass(frozen=True)
class BranchExpanded:
    """The rollout's steps become a child branch of its prefix: nodes path[:1..len(path)]."""

    key: RolloutKey


Event = RolloutsSampled | RolloutSelected | FirstErrorLocated | BranchExpanded


@dataclass(frozen=True)
class OmegaPRM:
    """Parameters: alpha, beta, L and c_puct default to the paper's settings."""

    k: int = 8  # rollouts per probed prefix
    alpha: float = 0.5
    beta: float = 0.9
    length_scale: float = 500  # the paper's L, in the sampler's length unit (tokens)
    c_puct: float = 0.125

    def __post_init__(self) -> None:
        if self.k < 1:
            raise StepScopeError(f"rollouts per prefix must be at least 1, got {self.k}")
        if not (0 < self.alpha <= 1 and 0 < self.beta <= 1):
            raise StepScopeError(f"alpha and beta must lie in (0, 1], got {self.alpha} and {self.beta}")
        if self.length_scale <= 0 or self.c_puct < 0:
            raise StepScopeError("L must be positive and c_puct not negative")

    def describe(self) -> dict:
        return {
            "strategy": "omegaprm", "k": self.k, "alpha": self.alpha, "beta": self.beta,
            "length_scale": self.length_scale, "c_puct": self.c_puct,
        }  # fmt: skip


@dataclass
class RolloutTree:
    """States (prefixes with rollouts) and the search's marks. Built by applying events, or
    rebuilt from stored rows with `rebuild`."""

    rollouts: dict[Prefix, list[Rollout]] = field(default_factory=dict)
    selected: set[RolloutKey] = field(default_factory=set)
    located: dict[RolloutKey, int] = field(default_factory=dict)
    expanded: set[RolloutKey] = field(default_factory=set)

    @classmethod
    def rebuild(
        cls,
        rollouts: Iterable[Rollout],
        selected: Iterable[RolloutKey] = (),
        located: Mapping[RolloutKey, int] | None = None,
        expanded: Iterable[RolloutKey] = (),
    ) -> RolloutTree:
        """The tree from stored rows, in any order."""
        tree = cls()
        for rollout in sorted(rollouts, key=lambda r: r.key):
            tree._add(rollout)
        tree.selected = set(selected)
        tree.located = dict(located or {})
        tree.expanded = set(expanded)
        unknown = (tree.selected | set(tree.located) | tree.expanded) - set(tree.keys())
        if unknown:
            raise StepScopeError(f"{len(unknown)} marked rollouts are not in the tree")
        return tree

    def _add(self, rollout: Rollout) -> None:
        at = self.rollouts.setdefault(rollout.key.prefix, [])
        if rollout.key.ordinal != len(at):
            raise StepScopeError(
                f"rollout {rollout.key.ordinal} of a prefix with {len(at)} rollouts: stored rollouts are missing"
            )
        at.append(rollout)

    def apply(self, event: Event) -> None:
        if isinstance(event, RolloutsSampled):
            for rollout in event.rollouts:
                self._add(rollout)
        elif isinstance(event, RolloutSelected):
            self.selected.add(event.key)
        elif isinstance(event, FirstErrorLocated):
            self.located[event.key] = event.first_error
        elif isinstance(event, BranchExpanded):
            self.expanded.add(event.key)
        else:
            raise TypeError(f"not a tree event: {event!r}")

    def keys(self) -> Iterable[RolloutKey]:
        for at in self.rollouts.values():
            for rollout in at:
                yield rollout.key

    def rollout(self, key: RolloutKey) -> Rollout:
        return self.rollouts[key.prefix][key.ordinal]

    def states(self) -> list[Prefix]:
        return sorted(self.rollouts, key=lambda p: (len(p), p))

    def counts(self, prefix: Prefix) -> Counts:
        at = self.rollouts.get(prefix, [])
        return Counts(len(at), sum(r.correct for r in at))

    def value(self, prefix: Prefix) -> StepValue:
        return step_value(self.counts(prefix))

    def mc(self, prefix: Prefix) -> float | None:
        counts = self.counts(prefix)
        return counts.correct / counts.n if counts.n else None

    def visits(self, prefix: Prefix) -> int:
        return sum(1 for key in self.selected if key.prefix == prefix)

    def size(self) -> int:
        return sum(len(at) for at in self.rollouts.values())

    def pool(self) -> list[Rollout]:
        """Unselected wrong-answer rollouts with steps, from states with 0 < MC(s) < 1."""
        candidates = []
        for prefix, at in self.rollouts.items():
            mc = self.mc(prefix)
            if mc is None or not 0 < mc < 1:
                continue
            candidates.extend(r for r in at if not r.correct and r.steps and r.key not in self.selected)
        return candidates

    def unfinished(self) -> RolloutKey | None:
        """A selected rollout whose binary search was cut short (by a kill or the budget)."""
        pending = sorted(self.selected - set(self.located))
        return pending[0] if pending else None


def derive_seed(seed: int, prefix: Prefix, ordinal: int) -> int:
    """A sampling seed that depends only on where the rollouts go, so a resumed search draws the
    same rollouts as an uninterrupted one."""
    digest = hashlib.blake2b(json.dumps([seed, list(prefix), ordinal]).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


@dataclass
class SearchReport:
    spent: int = 0  # rollouts sampled by this call
    searches: int = 0  # binary searches finished by this call
    stopped: str = ""  # "budget" | "pool empty" | "done"


class _Run:
    """One call's bookkeeping: the budget, the sampler and the event sink."""

    def __init__(self, tree: RolloutTree, sampler: Sampler, budget: int, seed: int,
                 on_event: Callable[[Event], None] | None) -> None:  # fmt: skip
        if budget < 0:
            raise StepScopeError(f"the rollout budget cannot be negative, got {budget}")
        self.tree, self.sampler, self.budget, self.seed = tree, sampler, budget, seed
        self.on_event = on_event
        self.report = SearchReport()

    def emit(self, event: Event) -> None:
        if self.on_event is not None:
            self.on_event(event)
        self.tree.apply(event)

    def affordable(self, count: int) -> bool:
        return self.report.spent + count <= self.budget

    def top_up(self, prefix: Prefix, k: int) -> bool:
        """Bring `prefix` to k rollouts; False when the budget does not allow it."""
        have = self.tree.counts(prefix).n
        need = k - have
        if need <= 0:
            return True
        if not self.affordable(need):
            return False
        seed = derive_seed(self.seed, prefix, have)
        sampled = list(self.sampler(prefix, need, seed))
        if len(sampled) != need:
            raise StepScopeError(f"the sampler returned {len(sampled)} rollouts, {need} were asked for")
        rollouts = tuple(
            Rollout(RolloutKey(prefix, have + i), tuple(s.steps), bool(s.correct), int(s.tokens))
            for i, s in enumerate(sampled)
        )
        self.emit(RolloutsSampled(prefix, rollouts, seed))
        self.report.spent += need
        return True


def score(mc: float, tokens: int, visits: int, total_visits: int, params: OmegaPRM) -> float:
    """Q(s, r) + U(s) for a rollout of `tokens` from a state with value `mc` and `visits` visits."""
    q = params.alpha ** (1 - mc) * params.beta ** (tokens / params.length_scale)
    u = params.c_puct * math.sqrt(total_visits) / (1 + visits)
    return q + u


def select(tree: RolloutTree, params: OmegaPRM) -> Rollout | None:
    """The pool's best rollout; ties go to the shallowest, then lowest key, so the choice never
    depends on the order a store returns rows in."""
    pool = tree.pool()
    if not pool:
        return None
    visits = Counter(key.prefix for key in tree.selected)
    total_visits = len(tree.selected)

    def rank(rollout: Rollout):
        prefix = rollout.key.prefix
        return (-score(tree.mc(prefix) or 0.0, rollout.tokens, visits[prefix], total_visits, params),
                len(prefix), rollout.key)  # fmt: skip

    return min(pool, key=rank)


def _binary_search(run: _Run, key: RolloutKey, k: int) -> int | None:
    """The located first error (an index into the rollout's path), or None when the budget ran
    out first. Probes that already hold k rollouts are read, not sampled, so a resumed search
    retraces the interrupted one for free."""
    rollout = run.tree.rollout(key)
    low, high = 0, len(rollout.steps)  # prefix + steps[:low] reaches the answer, [:high] does not
    while high - low > 1:
        middle = (low + high) // 2
        probe = key.prefix + rollout.steps[:middle]
        if not run.top_up(probe, k):
            return None
        if run.tree.counts(probe).correct > 0:
            low = middle
        else:
            high = middle
    return len(key.prefix) + high - 1


def search(
    tree: RolloutTree,
    sampler: Sampler,
    params: OmegaPRM,
    budget: int,
    seed: int = 0,
    on_event: Callable[[Event], None] | None = None,
) -> SearchReport:
    """Grow `tree` by OmegaPRM, sampling at most `budget` rollouts in this call.

    To resume after a kill: rebuild the tree from the store and call again with the budget that
    is left (the job's budget minus the rollouts it already stored) and the same seed.
    """
    run = _Run(tree, sampler, budget, seed, on_event)
    if not run.top_up((), params.k):
        run.report.stopped = "budget"
        return run.report
    while True:
        key = tree.unfinished()
        if key is None:
            if not run.affordable(params.k):
                run.report.stopped = "budget"
                return run.report
            chosen = select(tree, params)
            if chosen is None:
                run.report.stopped = "pool empty"
                return run.report
            key = chosen.key
            run.emit(RolloutSelected(key))
        first_error = _binary_search(run, key, params.k)
        if first_error is None:
            run.report.stopped = "budget"
            return run.report
        run.emit(FirstErrorLocated(key, first_error))
        run.report.searches += 1


def locate_first_error(
    tree: RolloutTree, sampler: Sampler, key: RolloutKey, k: int, budget: int, seed: int = 0,
    on_event: Callable[[Event], None] | None = None,
) -> tuple[int | None, SearchReport]:  # fmt: skip
    """Binary-search one stored wrong-answer rollout whose prefix is known to reach the answer
    (e.g. an imported trajectory under the question), outside the selection loop."""
    rollout = tree.rollout(key)
    if rollout.correct:
        raise StepScopeError("a rollout that reaches the answer has no first error to search for")
    run = _Run(tree, sampler, budget, seed, on_event)
    first_error = _binary_search(run, key, k)
    if first_error is not None:
        run.emit(FirstErrorLocated(key, first_error))
        run.report.searches = 1
    run.report.stopped = "done" if first_error is not None else "budget"
    return first_error, run.report


def expand(
    tree: RolloutTree,
    sampler: Sampler,
    prefix: Prefix,
    depth: int,
    k: int,
    budget: int,
    seed: int = 0,
    on_event: Callable[[Event], None] | None = None,
) -> SearchReport:
    """Expand every rollout of `prefix`, `depth` levels deep: each rollout's steps become a child
    branch, and every new intermediate node gets k rollouts (its Monte Carlo value); those
    rollouts are the next level's. A complete solution's node is not sampled: its grade is its
    value. Resumable like `search`: nodes holding k rollouts are not sampled again.
    """
    if depth < 1:
        raise StepScopeError(f"expansion depth must be at least 1, got {depth}")
    run = _Run(tree, sampler, budget, seed, on_event)
    if not run.top_up(prefix, k):
        run.report.stopped = "budget"
        return run.report
    frontier = [prefix]
    for _ in range(depth):
        next_frontier: list[Prefix] = []
        for node in frontier:
            for rollout in list(tree.rollouts.get(node, [])):
                if not rollout.steps:
                    continue
                if rollout.key not in tree.expanded:
                    run.emit(BranchExpanded(rollout.key))
                for cut in range(1, len(rollout.steps)):
                    child = node + rollout.steps[:cut]
                    if not run.top_up(child, k):
                        run.report.stopped = "budget"
                        return run.report
                    next_frontier.append(child)
        frontier = next_frontier
    run.report.stopped = "done"
    return run.report
