"""Search with a verifier in the loop (core/search): strategies on simulated step-wise policies
whose truth is known, their records and compute counts, and the scorers on tiny real models."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest
from simulated_steps import (
    CONTEXT,
    ScriptedPolicy,
    SteppedPolicy,
    count_tokens,
    is_sound,
)

from core.errors import StepScopeError
from core.mcpe import Counts, wilson_interval
from core.search.answers import weighted_vote
from core.search.compute import VerifierCost
from core.search.config import SearchConfig, SearchProblem
from core.search.journal import ScorerCall, event_from_dict, event_to_dict
from core.search.records import FinalBeam
from core.search.run import STRATEGIES, run_search
from core.search.scorers import JudgeScorer, MCScorer, PRMScorer, RandomScorer, Scorer

PROBLEM = SearchProblem("What is the number?", "42", CONTEXT)
CONFIDENCE = 0.999  # every statistical check here fails by chance about once in a thousand seeds


class OracleScorer:
    """Knows the truth of the simulated policy: 1 for a prefix with no slip, else 0."""

    name, kind = "oracle", "mc"

    def __init__(self) -> None:
        self.cost = VerifierCost(parameters=0)
        self.calls = []

    @property
    def fingerprint(self) -> dict:
        return {"kind": self.kind, "name": self.name}

    def score(self, problem, prefixes):
        self.calls.append(len(prefixes))
        return [float(is_sound(steps)) for steps in prefixes]


class TableScorer:
    """Scores a step by the first word of its newest step, from a table (hand-worked trees)."""

    name, kind = "table", "judge"

    def __init__(self, table: dict[str, float]) -> None:
        self.table, self.cost, self.seen = table, VerifierCost(parameters=0), []

    @property
    def fingerprint(self) -> dict:
        return {"kind": self.kind, "name": self.name}

    def score(self, problem, prefixes):
        self.seen.append([steps[-1].split()[0] for steps in prefixes])
        return [self.table[steps[-1].split()[0]] for steps in prefixes]


def top_beam_correct(result) -> bool:
    best = result.best_beam
    return best is not None and best.correct


def in_interval(hits: int, runs: int, predicted: float) -> tuple[bool, tuple[float, float]]:
    low, high = wilson_interval(Counts(runs, hits), CONFIDENCE)
    return low <= predicted <= high, (low, high)


def beam_oracle_rate(success, n: int, width: int) -> float:
    """P(some beam survives every depth) for beam search with an oracle: depth 1 draws n first
    steps; each depth keeps up to n / M sound ones (the oracle ranks them first), each expanded
    into M; a sound prefix's next step is sound with probability success[depth]."""
    keep = n // width
    dist = {0: 1.0}  # sound survivors before depth 1 do not apply: the root draws n
    first = {min(keep, a): 0.0 for a in range(n + 1)}
    for a in range(n + 1):
        first[min(keep, a)] += math.comb(n, a) * success[0] ** a * (1 - success[0]) ** (n - a)
    dist = first
    for p in success[1:]:
        nxt: dict[int, float] = {}
        for alive, weight in dist.items():
            draws = alive * width
            for a in range(draws + 1):
                nxt[min(keep, a)] = nxt.get(min(keep, a), 0.0) + weight * math.comb(draws, a) * p**a * (1 - p) ** (draws - a)
        dist = nxt
    return 1.0 - dist.get(0, 0.0)


# --- strategies on the simulated policy ---------------------------------------------------------

SUCCESS = [0.5, 0.6, 0.5]
RUNS = 1000


def test_beam_search_with_an_oracle_finds_the_correct_path_at_the_predicted_rate():
    config = {"strategy": "beam", "n": 4, "beam_width": 2, "max_steps": len(SUCCESS)}
    hits = sum(
        top_beam_correct(run_search(PROBLEM, SteppedPolicy(SUCCESS), OracleScorer(), SearchConfig(seed=seed, **config)))
        for seed in range(RUNS)
    )
    predicted = beam_oracle_rate(SUCCESS, 4, 2)
    ok, interval = in_interval(hits, RUNS, predicted)
    assert ok, f"{hits}/{RUNS} correct, {interval}, predicted {predicted:.3f}"
    # The check has power: plain sampling's rate lies far outside the same interval.
    assert not in_interval(hits, RUNS, math.prod(SUCCESS))[0]


def test_beam_search_with_the_random_scorer_is_as_accurate_as_plain_sampling():
    config = {"strategy": "beam", "n": 4, "beam_width": 2, "max_steps": len(SUCCESS)}
    hits = sum(
        top_beam_correct(run_search(PROBLEM, SteppedPolicy(SUCCESS), RandomScorer(seed), SearchConfig(seed=seed, **config)))
        for seed in range(RUNS)
    )
    ok, interval = in_interval(hits, RUNS, math.prod(SUCCESS))
    assert ok, f"{hits}/{RUNS} correct, {interval}, plain sampling {math.prod(SUCCESS):.3f}"


def _any_of(chains: int, chain_rate: float) -> float:
    return 1 - (1 - chain_rate) ** chains


# With an oracle, the top-scored final beam is correct exactly when some path the strategy kept
# stayed sound: best-of-N, when any of n samples is sound; DVTS, when any of n / M greedy paths
# (each depth: some of M candidates sound) is; rejection, when any of n chains (each depth: some
# of R + 1 tries sound) is.
ORACLE_RATES = {
    "bon": ({"n": 4}, _any_of(4, math.prod(SUCCESS))),
    "dvts": ({"n": 4, "beam_width": 2}, _any_of(2, math.prod(1 - (1 - p) ** 2 for p in SUCCESS))),
    "reject": ({"n": 2, "threshold": 0.5, "max_resamples": 1}, _any_of(2, math.prod(1 - (1 - p) ** 2 for p in SUCCESS))),
}


@pytest.mark.parametrize("strategy", sorted(ORACLE_RATES))
def test_other_strategies_with_an_oracle_find_the_correct_path_at_the_predicted_rate(strategy):
    params, predicted = ORACLE_RATES[strategy]
    hits = sum(
        top_beam_correct(run_search(PROBLEM, SteppedPolicy(SUCCESS), OracleScorer(), config))
        for config in (SearchConfig(strategy, max_steps=len(SUCCESS), seed=seed, **params) for seed in range(RUNS // 2))
    )
    ok, interval = in_interval(hits, RUNS // 2, predicted)
    assert ok, f"{strategy}: {hits}/{RUNS // 2} correct, {interval}, predicted {predicted:.3f}"


def test_beam_search_keeps_n_over_m_and_expands_each_into_m():
    policy, scorer = SteppedPolicy([0.7] * 4), OracleScorer()
    result = run_search(PROBLEM, policy, scorer, SearchConfig("beam", n=6, beam_width=3, max_steps=4, seed=1))
    by_depth = Counter(node.depth for node in result.nodes)
    assert by_depth == {1: 6, 2: 6, 3: 6, 4: 6}
    assert scorer.calls == [6, 6, 6, 6]  # each depth's candidates in one batch
    for depth in (1, 2, 3):
        kept = [n for n in result.nodes if n.depth == depth and n.mark == "chosen"]
        assert len(kept) == 2
        assert sorted(Counter(n.parent for n in result.nodes if n.depth == depth + 1).values()) == [3, 3]
        assert {n.parent for n in result.nodes if n.depth == depth + 1} == {n.id for n in kept}
        pruned = [n for n in result.nodes if n.depth == depth and n.mark == "pruned"]
        assert min(n.score for n in kept) >= max(n.score for n in pruned)
    assert len(result.beams) == 6 and all(result.nodes[b.node].finished for b in result.beams)


def test_beam_search_stops_once_n_beams_have_finished():
    # Scripted: of the four first steps, two finish at once and two go on; at depth 2 one open
    # beam finishes twice and the other does not: the n = 4 final beams are there, so the two
    # open candidates are pruned and never expanded (search-and-learn would go on with them).
    children = {(): ["a", "b The answer is 2.", "c", "d The answer is 2."],
                ("a",): ["e The answer is 2."], ("c",): ["f"]}  # fmt: skip
    policy = ScriptedPolicy(children, rest="g")
    result = run_search(SearchProblem("q", "2", CONTEXT), policy, RandomScorer(0),
                        SearchConfig("beam", n=4, beam_width=2, max_steps=5))  # fmt: skip
    assert policy.calls == 2 and len(result.beams) == 4
    assert [result.nodes[b.node].text.split()[0] for b in result.beams] == ["b", "d", "e", "e"]
    assert [n.mark for n in result.nodes if n.text.startswith(" f")] == ["pruned", "pruned"]
    assert result.answer == "2" and result.correct


def test_dvts_subtrees_share_no_nodes_below_the_root():
    result = run_search(PROBLEM, SteppedPolicy([0.6] * 4), RandomScorer(3),
                        SearchConfig("dvts", n=8, beam_width=2, max_steps=4, seed=3))  # fmt: skip
    nodes = result.nodes
    assert {n.subtree for n in nodes} == {0, 1, 2, 3}
    for node in nodes:
        if node.parent is None:
            assert node.depth == 1
        else:
            assert nodes[node.parent].subtree == node.subtree  # no edge crosses subtrees
    for subtree in range(4):
        mine = [n for n in nodes if n.subtree == subtree]
        assert Counter(n.depth for n in mine) == {1: 2, 2: 2, 3: 2, 4: 2}  # M candidates per depth
        # One path per subtree: each depth's candidates share one parent, the chosen one above.
        for depth in (2, 3, 4):
            parents = {n.parent for n in mine if n.depth == depth}
            assert len(parents) == 1 and nodes[parents.pop()].mark == "chosen"
    assert len(result.beams) == 8


def test_mcts_visit_counts_follow_puct_on_a_hand_worked_tree():
    # Root -> A (0.6), B (0.4); A -> A1 (0.2), A2 (0.3); B -> B1 (0.9), B2 (0.7). Depth 2 is the
    # last (max_steps=2), so A1..B2 are finished solutions. c_puct = 1, no rollouts (lambda = 0):
    # a leaf's value is its score. Priors: P(A)=.6, P(B)=.4, P(A1)=.4, P(A2)=.6, P(B1)=.5625,
    # P(B2)=.4375. Unvisited Q = score. Score = Q + P * sqrt(N(parent)) / (1 + N).
    # 1: root expanded.                                              N(root)=1
    # 2: A 0.6+0.6*1/1=1.2 > B 0.4+0.4=0.8 -> A, expanded, v=.6.     A: N1 W.6; N(root)=2
    # 3: A .6+.6*1.414/2=1.024 > B .4+.4*1.414=.966 -> A;
    #    A1 .2+.4*1=.6 < A2 .3+.6*1=.9 -> A2 (finished), v=.3.       A: N2 W.9; A2: N1
    # 4: A .45+.6*1.732/3=.796 < B .4+.4*1.732=1.093 -> B, expanded, v=.4.   B: N1 W.4
    # 5: A .45+.6*2/3=.85 > B .4+.4*2/2=.8 -> A;
    #    A1 .2+.4*1.414/1=.766 > A2 .3+.6*1.414/2=.724 -> A1, v=.2.  A: N3 W1.1; A1: N1
    # 6: A .367+.6*2.236/4=.702 < B .4+.4*2.236/2=.847 -> B;
    #    B1 .9+.5625*1/1=1.4625 > B2 .7+.4375=1.1375 -> B1, v=.9.    B: N2 W1.3; B1: N1
    children = {(): ["A", "B"], ("A",): ["A1 The answer is 1.", "A2 The answer is 2."],
                ("B",): ["B1 The answer is 3.", "B2 The answer is 4."]}  # fmt: skip
    table = {"A": 0.6, "B": 0.4, "A1": 0.2, "A2": 0.3, "B1": 0.9, "B2": 0.7}
    config = SearchConfig("mcts", n=1, beam_width=2, max_steps=2, expansions=6, c_puct=1.0, rollout_weight=0.0)
    result = run_search(SearchProblem("q", "2", CONTEXT), ScriptedPolicy(children), TableScorer(table), config)
    visits = {n.text.split()[0]: n.visits for n in result.nodes}
    assert visits == {"A": 3, "B": 2, "A1": 1, "A2": 1, "B1": 1, "B2": 0}
    values = {n.text.split()[0]: round(n.value_sum, 9) for n in result.nodes}
    assert values == {"A": 1.1, "B": 1.3, "A1": 0.2, "A2": 0.3, "B1": 0.9, "B2": 0.0}
    # The answer follows the most visited child: A (3), then A2 (tied on visits, higher Q).
    assert result.answer == "2" and result.correct
    assert [n.text.split()[0] for n in result.nodes if n.mark == "chosen"] == ["A", "A2"]


def test_mcts_rollouts_are_simulations_recorded_and_counted():
    policy = SteppedPolicy([0.6] * 3)
    result = run_search(PROBLEM, policy, RandomScorer(0),
                        SearchConfig("mcts", beam_width=2, max_steps=3, expansions=8, rollout_weight=0.5))  # fmt: skip
    simulations = [r for r in result.rollouts if r.source == "simulation"]
    assert simulations and all(r.prefix for r in simulations)
    assert result.compute.policy_tokens == sum(s.num_tokens for s in policy.samples)
    assert result.beams and result.answer is not None


class QueueScorer:
    """Hands out scores in a fixed order, one per candidate."""

    name, kind = "queue", "judge"

    def __init__(self, scores) -> None:
        self.scores, self.cost = list(scores), VerifierCost(parameters=0)

    @property
    def fingerprint(self) -> dict:
        return {"kind": self.kind}

    def score(self, problem, prefixes):
        return [self.scores.pop(0) for _ in prefixes]


def test_rejection_resamples_a_doubted_step_and_keeps_the_best_after_r_tries():
    # Depth 1: 0.1, 0.3, 0.2 (R=2 resamples, all under 0.5: the best, 0.3, is kept);
    # depth 2: 0.9 (accepted at once); depth 3: 0.4, 0.6 (accepted on the first resample).
    result = run_search(PROBLEM, SteppedPolicy([0.9] * 3), QueueScorer([0.1, 0.3, 0.2, 0.9, 0.4, 0.6]),
                        SearchConfig("reject", n=1, max_steps=3, threshold=0.5, max_resamples=2))  # fmt: skip
    tries = {depth: [(n.score, n.mark) for n in result.nodes if n.depth == depth] for depth in (1, 2, 3)}
    assert tries == {1: [(0.1, "pruned"), (0.3, "chosen"), (0.2, "pruned")], 2: [(0.9, "chosen")],
                     3: [(0.4, "pruned"), (0.6, "chosen")]}  # fmt: skip


@pytest.mark.parametrize("seed", range(20))
def test_rejection_resamples_only_under_the_threshold_and_at_most_r_times(seed):
    result = run_search(PROBLEM, SteppedPolicy([0.7] * 4), RandomScorer(seed),
                        SearchConfig("reject", n=3, max_steps=4, threshold=0.6, max_resamples=2, seed=seed))  # fmt: skip
    nodes = result.nodes
    for parent in {n.parent for n in nodes}:
        tries = [n for n in nodes if n.parent == parent]
        # Chains never share a parent below the root, so the root's tries hold all three chains'.
        chains = 3 if parent is None else 1
        for chain_tries in _split_chains(tries, chains):
            assert 1 <= len(chain_tries) <= 3
            assert all(t.score < 0.6 for t in chain_tries[:-1])  # every resample followed a doubted step
            accepted = [t for t in chain_tries if t.mark == "chosen"]
            assert len(accepted) == 1
            if chain_tries[-1].score < 0.6:
                assert len(chain_tries) == 3 and accepted[0].score == max(t.score for t in chain_tries)


def _split_chains(tries, chains):
    if chains == 1:
        return [tries]
    # The root's tries: calls hold one candidate per waiting chain, in chain order.
    by_call: dict[int, list] = {}
    for node in tries:
        by_call.setdefault(node.call, []).append(node)
    waiting, split = list(range(chains)), {c: [] for c in range(chains)}
    for call in sorted(by_call):
        for chain, node in zip(waiting, by_call[call]):
            split[chain].append(node)
        waiting = [c for c in waiting if split[c][-1].score < 0.6]
    return list(split.values())


def test_best_of_n_scores_whole_samples_and_votes_by_summed_scores():
    policy, scorer = SteppedPolicy([0.5, 0.5]), OracleScorer()
    result = run_search(PROBLEM, policy, scorer, SearchConfig("bon", n=8, seed=5))
    assert policy.calls == 1 and scorer.calls == [8]
    assert len(result.beams) == 8 and all(n.depth == 1 and n.finished for n in result.nodes)
    assert all(len(result.tree.steps(n.id)) == 2 for n in result.nodes)  # a sample holds both steps
    assert result.correct == any(b.correct for b in result.beams)


def test_weighted_vote_sums_scores_per_answer():
    beams = [FinalBeam(0, "", "7", False, 0.9), FinalBeam(1, "", "5", True, 0.5), FinalBeam(2, "", "5.0", True, 0.5),
             FinalBeam(3, "", None, False, 5.0)]  # fmt: skip
    assert weighted_vote(beams) == "5"  # 0.5 + 0.5 (equal answers) beat 0.9; no answer never votes
    assert weighted_vote(beams[:1] + [FinalBeam(1, "", "5", True, 0.9)]) == "7"  # a tie: the first seen
    assert weighted_vote([]) is None


# --- compute ------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_compute_counts_every_token_the_engine_returned(strategy):
    policy = SteppedPolicy([0.6] * 3, parameters=1_000_000)
    scorer = MCScorer(SteppedPolicy([0.6] * 3, parameters=2_000_000), k=3, seed=1)
    result = run_search(PROBLEM, policy, scorer, SearchConfig(strategy, n=4, beam_width=2, max_steps=3, expansions=6))
    compute = result.compute
    assert compute.policy_tokens == sum(s.num_tokens for s in policy.samples) > 0
    assert compute.prompt_tokens == sum(count_tokens(p) for p in policy.prompts)
    assert compute.engine_calls == policy.calls
    # The MC scorer's rollouts are verifier compute, not policy compute.
    assert compute.verifier_generated_tokens == sum(s.num_tokens for s in scorer.engine.samples)
    assert compute.verifier_generated_tokens == sum(r.num_tokens for r in result.rollouts if r.source == "scorer")
    assert compute.flops == 2 * 1_000_000 * (compute.policy_tokens + compute.prompt_tokens) + 2 * 2_000_000 * (
        compute.verifier_tokens + compute.verifier_generated_tokens)
    assert compute.total_seconds >= compute.engine_seconds + compute.scorer_seconds
    assert compute.overhead_seconds == pytest.approx(compute.total_seconds - compute.engine_seconds - compute.scorer_seconds)
    manifest = compute.as_manifest()
    assert manifest["policy_tokens"] == compute.policy_tokens and "overhead_seconds" in manifest


def test_a_token_budget_stops_the_search():
    policy = SteppedPolicy([0.6] * 6)
    result = run_search(PROBLEM, policy, RandomScorer(0), SearchConfig("beam", n=4, beam_width=2, max_steps=6,
                                                                       token_budget=30))  # fmt: skip
    assert result.stopped == "budget"
    assert 30 <= result.compute.policy_tokens < 30 + 4 * 8  # at most one call past the budget
    assert any(n.mark == "chosen" and not n.finished for n in result.nodes) and result.answer is None


def test_mc_scorer_values_are_the_fraction_of_rollouts_that_reach_the_answer():
    policy = SteppedPolicy([0.5, 0.6, 0.7])
    scorer = MCScorer(policy, k=400, seed=7)
    sound, slipped = ["step 1: ok #0"], ["step 1: slip #0"]
    value_sound, value_slipped, finished = scorer.score(PROBLEM, [sound, slipped, sound + ["x: The answer is 42."]])
    ok, interval = in_interval(round(value_sound * 400), 400, 0.6 * 0.7)
    assert ok, (value_sound, interval)
    assert value_slipped == 0.0 and finished == 1.0
    assert policy.calls == 1  # one call for both open prefixes; the finished one is graded as it stands
    assert len(scorer.rollouts) == 800 and scorer.cost.tokens_generated == sum(r.num_tokens for r in scorer.rollouts)


# --- configuration and records ------------------------------------------------------------------


def test_config_is_validated_and_round_trips_through_its_manifest():
    config = SearchConfig("dvts", n=8, beam_width=4, token_budget=1000)
    assert SearchConfig.from_manifest(config.as_manifest()) == config
    assert SearchConfig.from_manifest(json.loads(json.dumps(config.as_manifest()))) == config
    options = SearchConfig.options()
    assert [name for name, _, _ in options] == list(config.as_manifest()) and all(text for _, _, text in options)
    assert dict((name, default) for name, default, _ in options)["step_delimiter"] == "\n"
    assert config.survivors == 2
    with pytest.raises(StepScopeError, match="multiple of the beam width"):
        SearchConfig("beam", n=6, beam_width=4)
    with pytest.raises(StepScopeError, match="strategy"):
        SearchConfig("greedy")
    with pytest.raises(StepScopeError, match="unknown search parameters"):
        SearchConfig.from_manifest({"strategy": "bon", "width": 3})


def test_scorers_declare_a_verifier_kind_and_a_fingerprint():
    from core.store.verifier_identity import VERIFIER_KINDS

    scorer = RandomScorer(4)
    assert isinstance(scorer, Scorer) and scorer.fingerprint["seed"] == 4
    assert MCScorer(SteppedPolicy([0.5]), k=2).kind in VERIFIER_KINDS
    from core.search.scorers import SCORER_KINDS, ORMScorer, ProbeScorer

    assert {JudgeScorer.kind, PRMScorer.kind, ProbeScorer.kind, ORMScorer.kind} <= set(VERIFIER_KINDS)
    assert set(SCORER_KINDS) <= set(VERIFIER_KINDS)  # every scorer's scores can be stored under its kind
    assert RandomScorer.kind == "random"
    # A function of (seed, problem, prefix), whatever the batch: a resumed search sees the same scores.
    first, second = scorer.score(PROBLEM, [["a"], ["a", "b"]])
    assert RandomScorer(4).score(PROBLEM, [["a", "b"], ["c"]])[0] == second and first != second
    assert RandomScorer(5).score(PROBLEM, [["a"]]) != [first]


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_a_search_is_a_function_of_its_seed(strategy):
    def tree(seed):
        config = SearchConfig(strategy, n=4, beam_width=2, max_steps=3, expansions=6, seed=seed)
        result = run_search(PROBLEM, SteppedPolicy([0.6] * 3), RandomScorer(seed), config)
        return [(n.parent, n.text, n.score, n.mark, n.visits) for n in result.nodes]

    assert tree(1) == tree(1)
    assert tree(1) != tree(2)


def _snapshot(result):
    return ([(n.parent, n.depth, n.text, n.num_tokens, n.score, n.rank, n.mark, n.subtree, n.prior, n.visits,
              round(n.value_sum, 12)) for n in result.nodes],
            result.beams, result.rollouts, result.answer, result.stopped,
            {k: v for k, v in vars(result.compute).items() if not k.endswith("seconds")})  # fmt: skip


def _timeless(event) -> dict:
    entry = event_to_dict(event)
    return {**entry, "counted": [c for c in entry["counted"] if not c[0].endswith("seconds")]}


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_a_search_killed_after_any_event_resumes_to_the_identical_tree(strategy):
    """Kill after each journal event in turn (the events a job would have stored), resume from
    the stored ones: the same tree, the same beams, the same counts, and the same journal."""
    config = SearchConfig(strategy, n=4, beam_width=2, max_steps=3, expansions=5, rollout_weight=0.5, seed=9)

    def fresh():
        return SteppedPolicy([0.6] * 3), MCScorer(SteppedPolicy([0.6] * 3), k=2, seed=4)

    events = []
    whole = run_search(PROBLEM, *fresh(), config, on_event=events.append)
    stored = [json.loads(json.dumps(event_to_dict(e))) for e in events]  # what a job row would hold
    assert len(stored) >= 2
    for kill_after in range(len(stored) + 1):
        policy, scorer = fresh()
        later = []
        resumed = run_search(PROBLEM, policy, scorer, config, journal=[event_from_dict(e) for e in stored[:kill_after]],
                             on_event=later.append)  # fmt: skip
        assert _snapshot(resumed) == _snapshot(whole), f"killed after event {kill_after}"
        assert [_timeless(e) for e in later] == [_timeless(e) for e in events[kill_after:]]
        # Only the calls past the kill reach the engines.
        assert policy.calls + scorer.engine.calls == len(later) - sum(
            1 for e in later if isinstance(e, ScorerCall) and not e.rollouts)


def test_a_journal_from_another_search_is_refused():
    events = []
    run_search(PROBLEM, SteppedPolicy([0.6] * 3), RandomScorer(0), SearchConfig("beam", n=4, beam_width=2, seed=1),
               on_event=events.append)  # fmt: skip
    with pytest.raises(StepScopeError, match="journal does not match"):
        run_search(PROBLEM, SteppedPolicy([0.6] * 3), RandomScorer(0), SearchConfig("beam", n=4, beam_width=2, seed=2),
                   journal=events)  # fmt: skip


def test_every_candidate_maps_onto_the_rollout_tree(tmp_path):
    from core.store import Store

    result = run_search(PROBLEM, SteppedPolicy([0.6] * 3), RandomScorer(1),
                        SearchConfig("beam", n=4, beam_width=2, max_steps=3, seed=2))  # fmt: skip
    store = Store.open(tmp_path / "search.db")
    problem_id = store.add_problem("search-test", PROBLEM.question, PROBLEM.gold)
    node_of = {}
    rows = result.candidate_rows()
    assert [row["order"] for row in rows] == [node.id for node in result.nodes]
    for node, row in zip(result.nodes, rows):
        path = store.ensure_node_path(problem_id, row["steps"])
        node_of[node.id] = path[-1]
        parent_node = path[0] if node.parent is None else node_of[node.parent]
        assert store.get_node(path[-1])["parent_id"] == parent_node  # one step below its parent's node
        assert store.get_node(path[-1])["depth"] == node.depth
        assert row["mark"] == node.mark and row["score"] == node.score
    store.close()
    manifest = result.manifest()
    assert manifest["config"]["n"] == 4 and manifest["splitter"] == {"rule": "line", "delimiter": "\n"}
    assert manifest["scorer"] == RandomScorer(1).fingerprint and manifest["compute"]["policy_tokens"] > 0
    json.dumps(manifest)


# --- tiny real models ---------------------------------------------------------------------------


def _spy_on_decoder(engine):
    """Every token list the engine's decoder produced, and the prompt tokens of each of its
    prefills, as the decoder itself reports them."""
    produced, prefilled, run = [], [], engine._decoder.run

    def spy(*args, **kwargs):
        rollouts = run(*args, **kwargs)
        produced.extend(r for row in rollouts for r in row)
        stats = engine._decoder.stats
        prefilled.append((stats.prefill_tokens, stats.reused_prefix_tokens))
        return rollouts

    engine._decoder.run = spy
    return produced, prefilled, run


def test_beam_search_on_the_tiny_transformer_counts_the_engines_own_tokens(tiny_engine, one_torch_thread):
    produced, prefilled, original = _spy_on_decoder(tiny_engine)
    try:
        problem = SearchProblem("Tom has 3 apples and buys 5 more.", "8", "Question: Tom has 3 apples. Answer:")
        # The random model seldom writes a newline: "e" as the delimiter gives it steps of a few
        # tokens, so the search goes three steps deep, prunes, and stops beams at every depth.
        config = SearchConfig("beam", n=4, beam_width=2, max_steps=3, max_step_tokens=12, max_solution_tokens=16,
                              temperature=1.0, seed=3, step_delimiter="e", solution_stops=())  # fmt: skip
        result = run_search(problem, tiny_engine, RandomScorer(0), config)
    finally:
        tiny_engine._decoder.run = original
    assert max(n.depth for n in result.nodes) == 3 and any(n.mark == "pruned" for n in result.nodes)
    assert result.compute.policy_tokens == sum(len(r.tokens) for r in produced) > 0
    assert result.compute.policy_tokens == sum(n.num_tokens for n in result.nodes)
    tokenizer = tiny_engine.tokenizer
    # Each candidate's text is the decoder's tokens decoded, up to the stop string.
    decoded = [tokenizer.decode(r.tokens, skip_special_tokens=True) for r in produced]
    assert all(any(d.startswith(n.text) for d in decoded) for n in result.nodes)
    # Prompt tokens: the tokenizer's count of what was sent is what the decoder prefilled.
    assert result.compute.prompt_tokens == sum(computed + reused for computed, reused in prefilled)
    assert result.compute.prompt_tokens_cached == sum(reused for _, reused in prefilled)
    parameters = sum(p.numel() for p in tiny_engine.model.parameters())
    assert result.compute.policy_parameters == parameters
    assert result.compute.flops == 2 * parameters * (result.compute.policy_tokens + result.compute.prompt_tokens)
    assert len(result.beams) == 4 and all(result.nodes[b.node].finished for b in result.beams)


def test_rejection_with_the_policy_as_its_own_judge_on_the_tiny_transformer(tiny_engine, one_torch_thread):
    problem = SearchProblem("Tom has 3 apples and buys 5 more.", "8", "Question: Tom has 3 apples. Answer:")
    config = SearchConfig("reject", n=2, max_steps=2, max_resamples=1, threshold=0.7, max_step_tokens=8,
                          max_solution_tokens=8, step_delimiter="e", solution_stops=())  # fmt: skip
    result = run_search(problem, tiny_engine, JudgeScorer(tiny_engine), config)
    assert all(n.score is not None and 0 <= n.score <= 1 for n in result.nodes if n.text)
    assert result.compute.verifier_tokens > 0 and result.compute.verifier_parameters == result.compute.policy_parameters
    assert result.compute.scorer_calls >= 2  # a batch per depth, and one per round of resamples


def test_judge_scorer_on_the_tiny_transformer(tiny_engine, one_torch_thread):
    scorer = JudgeScorer(tiny_engine)
    prefixes = [["Tom has 3 + 5 = 8 apples."], ["Tom has 3 + 5 = 8 apples.", "The answer is 8."]]
    scores = scorer.score(PROBLEM, prefixes)
    assert len(scores) == 2 and all(0.0 <= s <= 1.0 for s in scores)
    expected_tokens = sum(len(tiny_engine.tokenizer(p)["input_ids"]) for p in scorer.prompts(PROBLEM, prefixes))
    assert scorer.cost.tokens_scored == expected_tokens
    assert scorer.kind == "judge" and scorer.fingerprint["template_sha256"]
    assert "Step 2: The answer is 8." in scorer.prompts(PROBLEM, prefixes)[1]


def test_prm_scorer_on_a_tiny_prm_scores_the_newest_step(tmp_path, one_torch_thread):
    from tiny_prm import build_token_classification_prm

    from core.engines import load_engine
    from core.prm import FAMILY_DEFAULTS, build_input, readout_for, scores_from_logits

    directory = build_token_classification_prm(tmp_path / "prm")
    engine = load_engine("prm:transformers", str(directory), family="token-classification", device="cpu")
    fmt = FAMILY_DEFAULTS["token-classification"]
    scorer = PRMScorer(engine, fmt)
    steps = ["Tom has 3 + 5 = 8 apples.", "The answer is 8."]
    scores = scorer.score(PROBLEM, [steps[:1], steps])
    assert len(scores) == 2 and all(0.0 < s < 1.0 for s in scores)
    readout = readout_for(fmt, engine.tokenizer)
    whole = build_input(fmt, engine.tokenizer, PROBLEM.question, steps)
    [rows] = engine.position_logits([whole], readout)
    assert scores[1] == pytest.approx(scores_from_logits(rows, readout)[0][-1], abs=1e-6)
    assert scorer.cost.tokens_scored == len(build_input(fmt, engine.tokenizer, PROBLEM.question, steps[:1]).token_ids) + len(whole.token_ids)
    engine.close()


def test_probe_scorer_on_the_tiny_transformer_reads_the_end_of_the_newest_step(tiny_engine, tmp_path, one_torch_thread):
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from core.probes import Probe
    from core.search.scorers import ProbeScorer

    rng = np.random.default_rng(0)
    hidden = tiny_engine.model.config.hidden_size
    model = LogisticRegression().fit(rng.normal(size=(40, hidden)), np.arange(40) % 2)
    probe = Probe(tmp_path, {"judge": "probe-prm-mc-hard:tiny", "layer": -1, "context": "question",
                             "model_sha256": "test"}, model)  # fmt: skip
    scorer = ProbeScorer(tiny_engine, probe)
    prefixes = [["Tom has 3 + 5 = 8 apples."], ["Tom has 3 + 5 = 8 apples.", "The answer is 8."]]
    scores = scorer.score(PROBLEM, prefixes)
    assert len(scores) == 2 and all(0.0 < s < 1.0 for s in scores)
    text = "Question: What is the number?\nAnswer: Tom has 3 + 5 = 8 apples.\nThe answer is 8."
    assert scorer.texts(PROBLEM, prefixes)[1] == text
    [states] = tiny_engine.hidden_states([text], [[len(text)]], layer=-1)
    assert scores[1] == pytest.approx(float(model.predict_proba(states)[0, 1]), abs=1e-6)
    assert scorer.kind == "probe" and scorer.cost.tokens_scored > 0


def test_orm_scorer_on_a_tiny_sequence_classifier_reads_the_solution_so_far(tiny_model_dir, tmp_path, one_torch_thread):
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    from core.orm_training import OrmExample, predict
    from core.search.scorers import ORMScorer

    torch.manual_seed(0)
    config = LlamaConfig.from_pretrained(tiny_model_dir, num_labels=2)
    model = LlamaForSequenceClassification(config).float().eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    scorer = ORMScorer(model, tokenizer, {"judge": "orm:tiny", "context": "question", "fingerprint": "test"})
    prefixes = [["Tom has 3 + 5 = 8 apples."], ["Tom has 3 + 5 = 8 apples.", "The answer is 8."]]
    scores = scorer.score(PROBLEM, prefixes)
    assert len(scores) == 2 and all(0.0 < s < 1.0 for s in scores)
    text = "Question: What is the number?\nAnswer: Tom has 3 + 5 = 8 apples.\nThe answer is 8."
    assert scorer.texts(PROBLEM, prefixes)[1] == text
    [expected] = predict(model, [OrmExample(0, 0, tokenizer(text)["input_ids"], math.nan)])
    assert scores[1] == pytest.approx(float(expected), abs=1e-6)
    assert scorer.kind == "orm" and scorer.cost.tokens_scored == sum(len(tokenizer(t)["input_ids"]) for t in scorer.texts(PROBLEM, prefixes))
    # Loaded from a trained ORM's folder, it scores the same.
    from core.orm_training import VERIFIER_TYPE
    from core.verifier_folders import write_manifest

    folder = tmp_path / "orm"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    write_manifest(folder, {"verifier": VERIFIER_TYPE, "judge": "orm:tiny", "context": "question", "fingerprint": "f"})
    loaded = ORMScorer.from_folder(folder)
    assert loaded.score(PROBLEM, prefixes) == pytest.approx(scores, abs=1e-5) and loaded.name == "orm:tiny"


def test_generative_judge_scorer_on_the_tiny_transformer_counts_what_it_wrote(tiny_engine, one_torch_thread):
    from core.engines.base import SamplingParams
    from core.verdicts import load_judge_template

    template = load_judge_template("step", mode="generative")
    scorer = JudgeScorer(tiny_engine, template, sampling=SamplingParams(n=2, max_new_tokens=6, seed=0))
    prefixes = [["Tom has 3 + 5 = 8 apples."], ["Tom has 3 + 5 = 8 apples.", "The answer is 8."]]
    scores = scorer.score(PROBLEM, prefixes)
    assert len(scores) == 2 and all(0.0 <= s <= 1.0 for s in scores)
    assert 0 < scorer.cost.tokens_generated <= 2 * 2 * 6  # two verdicts of at most 6 tokens per prefix
    assert scorer.fingerprint["mode"] == "generative" and scorer.fingerprint["sampling"]["n"] == 2
