"""OmegaPRM's tree search, checked against a simulated policy whose every prefix's truth is known."""

from __future__ import annotations

import math
import random

import pytest
from statsmodels.stats.proportion import proportion_confint

from core.errors import StepScopeError
from core.mcpe import Counts
from core.tree_search import (
    BranchExpanded,
    FirstErrorLocated,
    OmegaPRM,
    Rollout,
    RolloutKey,
    RolloutSelected,
    RolloutsSampled,
    RolloutTree,
    SampledRollout,
    expand,
    locate_first_error,
    score,
    search,
    select,
)
from simulated_tree import SimulatedReasoner


def predicted_success(depth: int, n: int, error: int, k: int, p_at) -> float:
    """Exact probability that the binary search of an n-step rollout starting at `depth`, whose
    first slip is its step `error`, finds it: every probe before the slip must see a success
    (probes at or after it never do), so the path of probes is fixed."""
    low, high, probability = 0, n, 1.0
    while high - low > 1:
        middle = (low + high) // 2
        if middle > error:
            high = middle
        else:
            probability *= 1 - (1 - p_at(depth + middle)) ** k
            low = middle
    return probability


def assert_rate_matches(successes: int, predicted: list[float]) -> None:
    """Successes of independent searches against their exact probabilities (Poisson binomial),
    within 4 standard deviations."""
    mean = sum(predicted)
    sd = math.sqrt(sum(p * (1 - p) for p in predicted))
    assert abs(successes - mean) <= 4 * sd + 1e-9, (successes, mean, sd)


def single_rollout_tree(steps: tuple[str, ...]) -> tuple[RolloutTree, RolloutKey]:
    key = RolloutKey((), 0)
    tree = RolloutTree()
    tree.apply(RolloutsSampled((), (Rollout(key, steps, False, 20 * len(steps)),), seed=0))
    return tree, key


def binary_search_trials(length: int, p: float, k: int, trials: int, seed: int):
    policy = SimulatedReasoner(length, p)
    successes, predicted = 0, []
    for trial in range(trials):
        steps, truth = policy.wrong_solution(seed * 100_000 + trial)
        tree, key = single_rollout_tree(steps)
        found, report = locate_first_error(tree, policy, key, k, budget=10_000, seed=trial)
        assert report.spent == k * (len(tree.rollouts) - 1)  # k per probe; the solution itself is not sampled
        successes += found == truth
        predicted.append(predicted_success(0, length, truth, k, lambda depth: p))
    return successes, predicted


def test_binary_search_rate_is_the_predicted_one_at_k8_p03():
    successes, predicted = binary_search_trials(16, 0.3, 8, trials=1500, seed=1)
    assert_rate_matches(successes, predicted)
    # The claim's bound, (1 - 0.7 ** 8) ** ceil(log2 16) = 0.789; the rate is above it.
    low, high = proportion_confint(successes, len(predicted), alpha=0.05, method="wilson")
    assert high >= (1 - 0.7**8) ** 4 and sum(predicted) / len(predicted) >= (1 - 0.7**8) ** 4


def test_binary_search_meets_the_claim_at_k16_p03():
    """The module's claim: k = 16 and p >= 0.3 find the first error at least 98% of the time up
    to 32 steps."""
    successes, predicted = binary_search_trials(32, 0.3, 16, trials=1000, seed=2)
    assert_rate_matches(successes, predicted)
    low, high = proportion_confint(successes, len(predicted), alpha=0.05, method="wilson")
    assert high >= 0.98, (successes, len(predicted))
    assert min(predicted) >= 0.98


def test_tree_search_locates_true_first_errors_at_the_predicted_rate():
    """Whole searches on many seeded problems, with a success probability that changes with depth:
    every located first error is checked against the truth in the path."""
    k = 8
    p_at = lambda depth: 0.3 + 0.05 * depth  # noqa: E731
    successes, predicted = 0, []
    for problem in range(60):
        policy = SimulatedReasoner(10, p_at)
        tree = RolloutTree()
        events = []
        report = search(tree, policy, OmegaPRM(k=k), budget=240, seed=problem, on_event=events.append)
        assert report.spent == policy.sampled == tree.size() <= 240
        for event in events:
            if isinstance(event, FirstErrorLocated):
                rollout = tree.rollout(event.key)
                truth = SimulatedReasoner.first_error(rollout.path)
                depth = len(event.key.prefix)
                assert depth <= event.first_error < len(rollout.path)
                successes += event.first_error == truth
                predicted.append(predicted_success(depth, len(rollout.steps), truth - depth, k, p_at))
    assert len(predicted) >= 300
    assert_rate_matches(successes, predicted)


@pytest.mark.parametrize("budget", [0, 7, 8, 30, 63, 200])
def test_budget_is_never_exceeded(budget):
    policy = SimulatedReasoner(12, 0.4)
    tree = RolloutTree()
    report = search(tree, policy, OmegaPRM(k=8), budget=budget, seed=3)
    assert report.spent == tree.size() == policy.sampled <= budget
    assert report.stopped in ("budget", "pool empty")
    # A fresh tree: every state holds exactly k rollouts, none sampled twice.
    assert all(len(at) == 8 for at in tree.rollouts.values())


def scripted(script: dict):
    def sampler(prefix, k, seed):
        rollouts = script[prefix]
        assert len(rollouts) == k
        return rollouts

    return sampler


def wrong(*steps):
    return SampledRollout(tuple(steps), False, 10 * len(steps))


def right(*steps):
    return SampledRollout(tuple(steps), True, 10 * len(steps))


HAND_BUILT = {
    (): [right("a", "b"), wrong("s1", "s2", "s3", "s4")],
    ("s1", "s2"): [right("x"), wrong("y1", "y2")],
    ("s1", "s2", "s3"): [wrong("z"), wrong("w")],
    ("s1", "s2", "y1"): [wrong("q"), right("t")],
}


def test_hand_built_tree_has_exactly_the_expected_nodes():
    tree = RolloutTree()
    events = []
    report = search(tree, scripted(HAND_BUILT), OmegaPRM(k=2), budget=100, on_event=events.append)
    # Root (MC 1/2): its wrong rollout s1..s4 is searched: probe s1 s2 (positive), then s1 s2 s3
    # (negative): s3 is the first error. Then s1 s2's wrong rollout y1 y2: probe s1 s2 y1
    # (positive): y2. Then s1 s2 y1's one-step wrong rollout: q, no probe needed. Pool empty.
    assert report.stopped == "pool empty" and report.spent == 8 and report.searches == 3
    assert tree.states() == [(), ("s1", "s2"), ("s1", "s2", "s3"), ("s1", "s2", "y1")]
    assert [tree.counts(s) for s in tree.states()] == [Counts(2, 1), Counts(2, 1), Counts(2, 0), Counts(2, 1)]
    assert tree.located == {
        RolloutKey((), 1): 2,
        RolloutKey(("s1", "s2"), 1): 3,
        RolloutKey(("s1", "s2", "y1"), 0): 3,
    }
    assert [tree.visits(s) for s in tree.states()] == [1, 1, 0, 1]
    assert [type(e).__name__ for e in events] == [
        "RolloutsSampled", "RolloutSelected", "RolloutsSampled", "RolloutsSampled", "FirstErrorLocated",
        "RolloutSelected", "RolloutsSampled", "FirstErrorLocated", "RolloutSelected", "FirstErrorLocated",
    ]  # fmt: skip

    cut_short = RolloutTree()
    report = search(cut_short, scripted(HAND_BUILT), OmegaPRM(k=2), budget=6)
    assert report.stopped == "budget" and report.spent == 6 and cut_short.size() == 6
    assert len(cut_short.located) == 1 and cut_short.unfinished() is None


def test_score_on_hand_worked_cases():
    """Q = alpha^(1 - MC) * beta^(len / L) and U = c_puct * sqrt(visits of all states) / (1 + N),
    the paper's definitions, worked by hand on values chosen to come out exact."""
    paper = OmegaPRM()  # alpha 0.5, beta 0.9, L 500, c_puct 0.125
    assert score(1.0, 0, 0, 0, paper) == pytest.approx(1.0)  # MC 1, no length, no visits: Q = 1
    assert score(0.0, 0, 0, 0, paper) == pytest.approx(0.5)  # MC 0: Q = alpha
    assert score(1.0, 500, 0, 0, paper) == pytest.approx(0.9)  # one L of length: Q = beta
    assert score(1.0, 1000, 0, 0, paper) == pytest.approx(0.81)  # two L: 0.9 * 0.9
    assert score(1.0, 0, 1, 4, paper) == pytest.approx(1.125)  # U = 0.125 * 2 / 2
    assert score(0.5, 0, 0, 0, paper) == pytest.approx(0.70710678)  # alpha^(1/2) = 1 / sqrt 2
    other = OmegaPRM(alpha=0.25, beta=0.5, length_scale=100, c_puct=1.0)
    assert score(0.5, 100, 0, 0, other) == pytest.approx(0.25)  # 0.5 * 0.5 + 0
    assert score(0.0, 200, 1, 9, other) == pytest.approx(1.5625)  # 0.25 * 0.25 + 3 / 2
    assert score(1.0, 0, 3, 16, other) == pytest.approx(2.0)  # 1 + 4 / 4


def test_selection_follows_the_papers_q_and_u():
    params = OmegaPRM()
    rows = [
        Rollout(RolloutKey(("hi",), 0), ("a",), True, 10),
        Rollout(RolloutKey(("hi",), 1), ("a",), True, 10),
        Rollout(RolloutKey(("hi",), 2), ("a",), True, 10),
        Rollout(RolloutKey(("hi",), 3), ("long", "wrong"), False, 400),
        Rollout(RolloutKey(("hi",), 4), ("short", "wrong"), False, 40),
        Rollout(RolloutKey(("hi",), 5), ("short", "too"), False, 40),
        Rollout(RolloutKey(("lo",), 0), ("a",), True, 10),
        Rollout(RolloutKey(("lo",), 1), ("b", "wrong"), False, 40),
        Rollout(RolloutKey(("lo",), 2), ("c", "wrong"), False, 40),
        Rollout(RolloutKey(("lo",), 3), ("d", "wrong"), False, 40),
        Rollout(RolloutKey(("all-wrong",), 0), ("e", "wrong"), False, 1),
    ]
    tree = RolloutTree.rebuild(reversed(rows))  # the order rows come back in does not matter
    # Nothing visited: pure Q. "hi" (MC 1/2) beats "lo" (MC 1/4); the short rollout beats the
    # long one; the tie between the two short ones goes to the lower key; MC 0 is not in the pool.
    assert select(tree, params).key == RolloutKey(("hi",), 4)
    # "hi" visited twice: its remaining (long) rollout has the higher Q, but the exploration
    # bonus sqrt(2) * c_puct / (1 + N) now favours the unvisited "lo".
    visited = RolloutTree.rebuild(rows, selected=[RolloutKey(("hi",), 4), RolloutKey(("hi",), 5)])
    assert score(1 / 2, 400, 2, 2, params) < score(1 / 4, 40, 0, 2, params)
    assert select(visited, params).key == RolloutKey(("lo",), 1)
    assert select(visited, OmegaPRM(c_puct=0.0)).key == RolloutKey(("hi",), 3)
    everything = RolloutTree.rebuild(rows, selected=[r.key for r in rows if not r.correct and r.key.prefix != ("all-wrong",)])
    assert select(everything, params) is None


class StoredRows:
    """What a store keeps for a tree: rollout rows, selection marks, located first errors,
    expansion marks. Writing raises at the `kill_at`-th event, as a kill between two writes."""

    def __init__(self, kill_at: int | None = None) -> None:
        self.rollouts: list[Rollout] = []
        self.selected: set[RolloutKey] = set()
        self.located: dict[RolloutKey, int] = {}
        self.expanded: set[RolloutKey] = set()
        self.kill_at = kill_at
        self.written = 0

    def write(self, event) -> None:
        if self.written == self.kill_at:
            raise KeyboardInterrupt("killed")
        if isinstance(event, RolloutsSampled):
            self.rollouts.extend(event.rollouts)
        elif isinstance(event, RolloutSelected):
            self.selected.add(event.key)
        elif isinstance(event, FirstErrorLocated):
            self.located[event.key] = event.first_error
        elif isinstance(event, BranchExpanded):
            self.expanded.add(event.key)
        self.written += 1

    def tree(self) -> RolloutTree:
        shuffled = list(self.rollouts)
        random.Random(0).shuffle(shuffled)
        return RolloutTree.rebuild(shuffled, self.selected, self.located, self.expanded)

    def snapshot(self):
        return (sorted(self.rollouts, key=lambda r: r.key), self.selected, self.located, self.expanded)


def test_a_killed_search_resumes_into_the_same_tree():
    budget, params = 90, OmegaPRM(k=4)
    whole = StoredRows()
    search(RolloutTree(), SimulatedReasoner(9, 0.45), params, budget, seed=11, on_event=whole.write)
    assert len(whole.located) >= 4
    for kill_at in range(whole.written):
        rows = StoredRows(kill_at)
        with pytest.raises(KeyboardInterrupt):
            search(RolloutTree(), SimulatedReasoner(9, 0.45), params, budget, seed=11, on_event=rows.write)
        rows.kill_at = None
        report = search(rows.tree(), SimulatedReasoner(9, 0.45), params, budget - len(rows.rollouts),
                        seed=11, on_event=rows.write)  # fmt: skip
        assert rows.snapshot() == whole.snapshot(), kill_at
        assert report.spent <= budget


def test_expand_grows_every_rollout_n_levels_and_resumes():
    rows = StoredRows()
    tree = RolloutTree()
    report = expand(tree, SimulatedReasoner(3, 0.5), (), depth=2, k=2, budget=1000, seed=5, on_event=rows.write)
    # Root: 2 rollouts of 3 steps -> 2 intermediate nodes each (the complete solution is graded,
    # not sampled): 4 nodes x 2 rollouts. Level 2: the 2 depth-1 nodes' rollouts have 2 steps
    # -> 1 intermediate node each (4 x 2 rollouts); the depth-2 nodes' one-step rollouts add none.
    assert report.stopped == "done" and report.spent == 2 + 8 + 8 == tree.size()
    assert len(tree.states()) == 1 + 4 + 4
    assert len(tree.expanded) == 2 + 8
    for kill_at in (0, 3, 7, 12):
        cut = StoredRows(kill_at)
        with pytest.raises(KeyboardInterrupt):
            expand(RolloutTree(), SimulatedReasoner(3, 0.5), (), 2, 2, 1000, seed=5, on_event=cut.write)
        cut.kill_at = None
        expand(cut.tree(), SimulatedReasoner(3, 0.5), (), 2, 2, 1000 - len(cut.rollouts), seed=5, on_event=cut.write)
        assert cut.snapshot() == rows.snapshot()
    small = RolloutTree()
    assert expand(small, SimulatedReasoner(3, 0.5), (), 2, 2, budget=5, seed=5).spent == 4 == small.size()


def test_user_errors_are_stepscope_errors():
    with pytest.raises(StepScopeError, match="at least 1"):
        OmegaPRM(k=0)
    with pytest.raises(StepScopeError, match="alpha and beta"):
        OmegaPRM(alpha=1.5)
    with pytest.raises(StepScopeError, match="missing"):
        RolloutTree.rebuild([Rollout(RolloutKey((), 1), ("a",), False, 1)])
    tree, key = single_rollout_tree(("a", "b"))
    tree.apply(RolloutsSampled(("x",), (Rollout(RolloutKey(("x",), 0), ("c",), True, 1),), seed=0))
    with pytest.raises(StepScopeError, match="no first error"):
        locate_first_error(tree, SimulatedReasoner(2, 0.5), RolloutKey(("x",), 0), 4, budget=10)
    with pytest.raises(StepScopeError, match="returned 1 rollouts"):
        search(RolloutTree(), lambda prefix, k, seed: [SampledRollout(("a",), True, 1)], OmegaPRM(k=2), budget=10)
