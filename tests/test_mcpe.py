"""Monte Carlo values and strategies, checked against a simulated policy with known truth."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest
from scipy.stats import binom

from core.engines.base import SamplingParams
from core.jobs.estimate import load_tasks, run_estimate
from core.mcpe import Adaptive, Counts, FirstErrorSearch, FixedN, first_error, step_value, wilson_interval
from core.policy import load_template
from core.store import Store
from simulated_engine import SimulatedPolicy

GOLD = "42"
SAMPLING = SamplingParams(max_new_tokens=16, temperature=1.0, seed=7)


def make_trajectories(store: Store, count: int, num_steps: int) -> list[int]:
    """`count` distinct trajectories of `num_steps` lines "Step k: ..." each."""
    ids = []
    solution = "\n".join(f"Step {k}: we work on part {k}." for k in range(num_steps))
    for i in range(count):
        problem_id = store.add_problem("sim", f"Simulated problem {i}?", GOLD)
        ids.append(store.add_trajectory(problem_id, solution, source="sim", rule="line"))
    return ids


def step_probability(probabilities: list[float]):
    """Success probability of a prefix = that of the last step it contains."""

    def probability(prompt: str) -> float:
        answer_part = prompt.rsplit("Answer:", 1)[1]
        last = int(re.findall(r"Step (\d+):", answer_part)[-1])
        return probabilities[last]

    return probability


def estimate(store, ids, probabilities, strategy, policy="sim"):
    engine = SimulatedPolicy(step_probability(probabilities), GOLD)
    tasks = load_tasks(store, ids, load_template())
    progress = run_estimate(store, engine, tasks, strategy, policy, SAMPLING, rows_per_call=4096)
    counts = [
        [Counts(v["n"], v["n_correct"]) for v in store.step_values(t, model=policy)] for t in ids
    ]
    return progress, counts


def test_step_value_and_wilson_interval():
    value = step_value(Counts(16, 4))
    assert value.soft == 0.25 and value.hard is True
    assert value.low == pytest.approx(0.1018, abs=1e-3) and value.high == pytest.approx(0.4950, abs=1e-3)
    assert step_value(Counts(0, 0)).soft is None and wilson_interval(Counts(0, 0)) == (0.0, 1.0)
    assert step_value(Counts(8, 0)).hard is False
    assert first_error([Counts(4, 1), Counts(4, 0), Counts(4, 0)]) == 1
    assert first_error([Counts(4, 1), Counts(0, 0)]) == -1


# Exact Wilson coverage at n = 16 dips to 92.3% at p = 0.5 (the binomial lattice); across these
# probabilities it averages about 95%. The test checks both the average and each step against
# the exact coverage, so a wrong interval or a biased sampler fails it.
PROBABILITIES = [0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2]
REPETITIONS = 1000


def test_wilson_interval_is_statsmodels_to_the_last_bit():
    # core.mcpe writes the interval out so that importing it does not load statsmodels.
    from statsmodels.stats.proportion import proportion_confint

    for confidence, most in ((0.95, 200), (0.9, 40)):
        for n in range(1, most + 1):
            for correct in range(n + 1):
                low, high = proportion_confint(correct, n, alpha=1 - confidence, method="wilson")
                assert wilson_interval(Counts(n, correct), confidence) == (float(low), float(high)), (n, correct)


@pytest.fixture(scope="module")
def fixed_run(tmp_path_factory):
    store = Store.open(tmp_path_factory.mktemp("mcpe") / "sim.db")
    ids = make_trajectories(store, REPETITIONS, len(PROBABILITIES))
    progress, counts = estimate(store, ids, PROBABILITIES, FixedN(16))
    return store, ids, progress, counts


def test_fixed_n_spends_exactly_n_per_step(fixed_run):
    _, ids, progress, counts = fixed_run
    assert progress.done == 16 * len(PROBABILITIES) * len(ids)
    assert all(c.n == 16 for row in counts for c in row)


def test_soft_value_is_unbiased(fixed_run):
    _, _, _, counts = fixed_run
    soft = np.array([[c.correct / c.n for c in row] for row in counts])
    means = soft.mean(axis=0)
    standard_errors = np.sqrt(np.array(PROBABILITIES) * (1 - np.array(PROBABILITIES)) / 16 / REPETITIONS)
    assert np.all(np.abs(means - PROBABILITIES) < 4 * standard_errors), (means, PROBABILITIES)


def exact_coverage(p: float, n: int) -> float:
    return sum(
        binom.pmf(k, n, p) for k in range(n + 1) if wilson_interval(Counts(n, k))[0] <= p <= wilson_interval(Counts(n, k))[1]
    )


def test_wilson_coverage(fixed_run):
    _, _, _, counts = fixed_run
    covered = np.array(
        [[wilson_interval(c)[0] <= p <= wilson_interval(c)[1] for c, p in zip(row, PROBABILITIES)] for row in counts]
    )
    per_step = covered.mean(axis=0)
    assert covered.mean() >= 0.93, per_step
    for observed, p in zip(per_step, PROBABILITIES):
        expected = exact_coverage(p, 16)
        assert abs(observed - expected) < 4 * np.sqrt(expected * (1 - expected) / REPETITIONS), (p, observed, expected)


def test_top_up_keeps_what_is_stored(fixed_run, tmp_path):
    store, ids, _, _ = fixed_run
    few = ids[:5]
    before = {r["id"] for t in few for r in store.trajectory_rollouts(t)}
    progress, counts = estimate(store, few, PROBABILITIES, FixedN(24))
    after = {r["id"] for t in few for r in store.trajectory_rollouts(t)}
    assert before < after and progress.done == 8 * len(PROBABILITIES) * 5
    assert all(c.n == 24 for row in counts for c in row)


# A policy whose reachability drops to zero at step 3 of 8: reachable steps succeed with
# probability >= 0.3, so 16 failures in a row on one of them happen with probability
# 0.7^16 = 0.3%; the stated rate for the true first error is therefore >= 95% for every strategy.
DROP = [0.9, 0.6, 0.3, 0.0, 0.0, 0.0, 0.0, 0.0]
TRUE_FIRST_ERROR = 3


@pytest.mark.parametrize("strategy", [FixedN(16), Adaptive(round_size=4, max_per_step=16, threshold=0.0), FirstErrorSearch(4, 16)], ids=lambda s: s.name)
def test_strategies_reach_the_true_first_error(strategy, tmp_path):
    store = Store.open(tmp_path / "drop.db")
    ids = make_trajectories(store, 200, len(DROP))
    progress, counts = estimate(store, ids, DROP, strategy)
    decide = strategy.decision if isinstance(strategy, FirstErrorSearch) else first_error
    decisions = [decide(row) for row in counts]
    rate = np.mean([d == TRUE_FIRST_ERROR for d in decisions])
    assert rate >= 0.95, (strategy.name, rate)
    spent = progress.done / len(ids)
    fixed_cost = 16 * len(DROP)
    if strategy.name == "first-error":
        # Binary search over 8 steps settles about 3 probes: well under a third of fixed N.
        assert spent <= 0.3 * fixed_cost, spent
    if strategy.name == "adaptive":
        assert spent < fixed_cost, spent


def test_first_error_search_reuses_stored_rollouts(tmp_path):
    store = Store.open(tmp_path / "reuse.db")
    ids = make_trajectories(store, 20, len(DROP))
    estimate(store, ids, DROP, FixedN(16))
    progress, counts = estimate(store, ids, DROP, FirstErrorSearch(4, 16))
    assert progress.done == 0  # everything it needs is already stored
    assert all(FirstErrorSearch(4, 16).decision(row) == first_error(row) for row in counts)


def test_first_error_search_settles_the_last_step_from_the_outcome():
    search = FirstErrorSearch(round_size=4, max_per_step=16)
    unsampled = [Counts()] * 5
    assert search.request(unsampled, outcome=True) == [0] * 5  # a correct answer: no error
    assert search.decision(unsampled, outcome=True) == -1
    # A wrong final answer makes the last step unreachable; the search starts in the middle.
    assert search.request(unsampled, outcome=False) == [0, 0, 4, 0, 0]
    settled = [Counts(4, 1), Counts(4, 2), Counts(16, 0), Counts(16, 0), Counts()]
    assert search.request(settled, outcome=False) == [0] * 5
    assert search.decision(settled, outcome=False) == 2
    # Without an outcome the last step must be sampled like any other.
    assert search.request(unsampled) == [0, 0, 4, 0, 0]


def rollouts_until_settled(strategy, correct_at: int | None = None) -> int:
    """Rollouts a one-step trajectory gets when every rollout fails, or the `correct_at`-th succeeds."""
    counts = Counts()
    while need := strategy.request([counts])[0]:
        successes = int(correct_at is not None and counts.n < correct_at <= counts.n + need)
        counts = Counts(counts.n + need, counts.correct + successes)
    return counts.n


def test_adaptive_samples_a_step_without_success_up_to_max_per_step():
    """The hard label (threshold 0): a step that never succeeds gets max_per_step rollouts, as with
    fixed N, though 0 of 12 already has a Wilson interval narrower than the default width."""
    default = Adaptive()
    assert wilson_interval(Counts(12, 0))[1] < default.width  # what used to stop it at 12
    assert rollouts_until_settled(default) == default.max_per_step == 16
    assert rollouts_until_settled(Adaptive(max_per_step=32)) == 32
    assert default.request([Counts(12, 0), Counts(16, 0)]) == [4, 0]
    # One success settles the hard label at once.
    assert rollouts_until_settled(default, correct_at=3) == 4
    assert rollouts_until_settled(default, correct_at=9) == 12


def test_adaptive_with_a_threshold_still_stops_on_a_narrow_interval():
    strategy = Adaptive(round_size=8, max_per_step=64, width=0.3, threshold=0.5)
    low, high = wilson_interval(Counts(48, 24))
    assert low < 0.5 < high and high - low < 0.3
    assert strategy.request([Counts(48, 24), Counts(16, 8), Counts(16, 0)]) == [0, 8, 0]


@pytest.mark.parametrize("strategy", [
    FixedN(24), Adaptive(round_size=8, max_per_step=32, width=0.2, threshold=0.25), FirstErrorSearch(2, 48),
], ids=lambda s: s.name)  # fmt: skip
def test_a_strategy_is_rebuilt_from_its_description(strategy):
    from core.mcpe import strategy_from_manifest

    assert strategy_from_manifest(strategy.describe()) == strategy
    # A manifest from before describe() used make_strategy's names ("max_per_step" for "n").
    old = {("max_per_step" if k == "n" else k): v for k, v in strategy.describe().items()}
    assert strategy_from_manifest(old) == strategy


def test_a_jobs_first_call_holds_only_its_shortest_continuation(tmp_path):
    """The first value must land after one short call: the prefix holding the most of its solution
    (the last step here) is sampled alone first; the rest follow in full calls, each step once."""
    store = Store.open(tmp_path / "s.db")
    ids = make_trajectories(store, 2, 4)
    engine = SimulatedPolicy(step_probability([0.9, 0.8, 0.7, 0.6]), GOLD)
    prompts_per_call = []
    generate = engine.generate
    engine.generate = lambda prompts, params: (prompts_per_call.append(list(prompts)), generate(prompts, params))[1]
    tasks = load_tasks(store, ids, load_template())
    run_estimate(store, engine, tasks, FixedN(4), "sim", SAMPLING, rows_per_call=4096)
    last_steps = {t.steps[-1].prompt for t in tasks}
    assert len(prompts_per_call[0]) == 1 and prompts_per_call[0][0] in last_steps
    assert [len(p) for p in prompts_per_call] == [1, 7]
    assert sorted(sum(prompts_per_call, [])) == sorted(s.prompt for t in tasks for s in t.steps)


def test_rollouts_of_a_paragraph_trace_are_not_stopped_at_a_blank_line(tmp_path):
    """A trace cut into paragraphs has blank lines between its steps: a rollout stopped at one would
    write one step and never reach an answer. Its calls drop that stop (keeping "\\nQuestion:");
    a line-split solution in the same job keeps both, in a call of its own."""
    from core.policy import POLICY_STOP

    store = Store.open(tmp_path / "s.db")
    [lines] = make_trajectories(store, 1, 3)
    problem = store.add_problem("sim", "A long problem?", GOLD)
    paragraphs = store.add_trajectory(problem, "Step 0: we think.\n\nStep 1: wait, check it.\n\nStep 2: so it is 42.",
                                      source="sim", rule="paragraph")  # fmt: skip
    engine = SimulatedPolicy(step_probability([0.5, 0.5, 0.5]), GOLD)
    stops_per_prompt = {}
    generate = engine.generate
    engine.generate = lambda prompts, params: (
        stops_per_prompt.update({p: params.stop for p in prompts}), generate(prompts, params))[1]
    tasks = load_tasks(store, [lines, paragraphs], load_template())
    run_estimate(store, engine, tasks, FixedN(2), "sim", replace(SAMPLING, stop=POLICY_STOP), rows_per_call=4096)
    by_trajectory = {t.trajectory_id: {stops_per_prompt[s.prompt] for s in t.steps} for t in tasks}
    assert by_trajectory == {lines: {POLICY_STOP}, paragraphs: {("\nQuestion:",)}}
