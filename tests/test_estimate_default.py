"""Values on long traces (issue 26): an estimate that names no strategy runs the first-error search
on trajectories longer than FIRST_ERROR_FROM_STEPS steps and fixed N on the others, and says its
budget before it starts: exact for fixed N, an upper bound for the search that real runs never
exceed (checked on the simulated policy at several lengths, and as a property of the strategy)."""

from __future__ import annotations

import random
import re
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from cli_runner import run_in_process
from core.engines.base import SamplingParams
from core.jobs.estimate import load_tasks, plan_estimate, run_estimate
from core.mcpe import (
    FIRST_ERROR_FROM_STEPS, Adaptive, Counts, FirstErrorSearch, FixedN, default_strategy_name,
)  # fmt: skip
from core.policy import load_template
from core.store import Store
from core.views.explore import estimate_budget_text
from simulated_engine import SimulatedPolicy

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

GOLD = "42"
SAMPLING = SamplingParams(max_new_tokens=16, temperature=1.0, seed=3)


def test_the_default_strategy_turns_to_the_search_past_the_step_count():
    assert default_strategy_name(FIRST_ERROR_FROM_STEPS) == "fixed"
    assert default_strategy_name(FIRST_ERROR_FROM_STEPS + 1) == "first-error"
    assert default_strategy_name(1) == "fixed"


# --- the bound, as a property of the strategy ------------------------------------------------


def spend(strategy, probabilities: list[float], outcome: bool | None, stored: list[Counts], rng) -> int:
    """Run the strategy's rounds on Bernoulli rollouts until it asks for nothing; what it spent."""
    counts, spent = list(stored), 0
    while any(need := strategy.request(counts, outcome)):
        for index, more in enumerate(need):
            if more:
                hits = sum(rng.random() < probabilities[index] for _ in range(more))
                counts[index] = Counts(counts[index].n + more, counts[index].correct + hits)
                spent += more
    return spent


@pytest.mark.parametrize("strategy", [FirstErrorSearch(4, 16), FirstErrorSearch(3, 8), FirstErrorSearch(16, 16),
                                      Adaptive(round_size=4, max_per_step=16), FixedN(8)],
                         ids=lambda s: f"{s.name}-{s.most_per_step}")  # fmt: skip
def test_no_run_spends_more_than_the_budget_said_before_it(strategy):
    rng = random.Random(26)
    for trial in range(400):
        steps = rng.choice([1, 2, 3, 7, 8, 9, 31, 61, 64, 200, 1000])
        kind = trial % 4
        if kind == 0:  # reachable up to a drop, never after (the search's assumption)
            drop = rng.randint(0, steps)
            probabilities = [0.6 if i < drop else 0.0 for i in range(steps)]
        elif kind == 1:  # never reachable, or only by rare luck
            probabilities = [rng.choice([0.0, 0.02])] * steps
        else:  # anything at all, non-monotone included
            probabilities = [rng.random() ** 3 for _ in range(steps)]
        outcome = rng.choice([None, False, False, True])
        # Some stored rollouts beforehand: a partial earlier run, a top-up, another strategy's.
        stored = [Counts() for _ in range(steps)]
        for index in rng.sample(range(steps), k=rng.randint(0, min(steps, 5))):
            n = rng.randint(1, strategy.most_per_step + 2)
            stored[index] = Counts(n, sum(rng.random() < probabilities[index] for _ in range(n)))
        bound = strategy.most_to_spend(stored, outcome)
        spent = spend(strategy, probabilities, outcome, stored, rng)
        assert spent <= bound, (strategy, steps, kind, outcome, stored, spent, bound)
        if strategy.name == "fixed":
            assert spent == bound
    # With nothing stored it is the strategy's budget for the length.
    for steps in (1, 2, 60, 61, 300, 2000):
        assert strategy.most_to_spend([Counts()] * steps, None) == strategy.budget(steps)


def test_the_search_bound_is_reached_when_every_probe_fails_all_n():
    # 15 steps, outcome unknown, nothing ever reachable: the search probes 7, 3, 1, 0 (4 levels).
    search = FirstErrorSearch(4, 16)
    assert search.most_to_spend([Counts()] * 15, None) == 16 * 4
    assert spend(search, [0.0] * 15, None, [Counts()] * 15, random.Random(0)) == 16 * 4
    assert search.most_to_spend([Counts()] * 15, True) == 0  # a correct answer settles it unsampled


# --- the bound against real runs on the simulated policy -------------------------------------


def add_lines(store: Store, steps: int, index: int, *, answer: str | None = None) -> int:
    """A trajectory of `steps` lines "Step k: ..." (the last one "The answer is X." when `answer`)."""
    lines = [f"Step {k}: we work on part {k}." for k in range(steps)]
    if answer is not None:
        lines[-1] = f"Step {steps - 1}: The answer is {answer}."
    problem = store.add_problem("sim", f"Simulated problem {steps}-{index}?", GOLD)
    return store.add_trajectory(problem, "\n".join(lines), source="sim", rule="line")


def by_step(profile):
    def probability(prompt: str) -> float:
        return profile(int(re.findall(r"Step (\d+):", prompt.rsplit("Answer:", 1)[1])[-1]))

    return probability


@pytest.mark.parametrize("steps", [2, 9, 40, 61, 130, 300])
def test_real_runs_stay_within_the_budget_the_cli_says(steps, tmp_path):
    store = Store.open(tmp_path / "bound.db")
    # Where reachability drops, and the final answer: none (wrong), wrong, right, wrong.
    cases = [(steps // 3, None), (steps - 1, "41"), (0, "42"), (steps, "41")]
    ids = [add_lines(store, steps, i, answer=answer) for i, (_, answer) in enumerate(cases)]
    profiles = {tid: (lambda k, at=drop: 0.5 if k < at else 0.0) for tid, (drop, _) in zip(ids, cases)}
    policy, engine = "sim", SimulatedPolicy(lambda prompt: 0.0, GOLD)
    for n in (8, 16):  # a fresh run, then a top-up with a larger N on what is stored
        [plan] = plan_estimate(store, ids, policy, n=n, round_size=4)
        assert plan.strategy.name == default_strategy_name(steps) and plan.trajectory_ids == tuple(ids)
        bounds = {t: plan_estimate(store, [t], policy, n=n, round_size=4)[0].most_rollouts for t in ids}
        assert sum(bounds.values()) == plan.most_rollouts
        before = spent_by_trajectory(store, ids, policy)
        done = 0
        for task in load_tasks(store, ids, load_template()):
            engine.success_probability = by_step(profiles[task.trajectory_id])
            planned: list[int] = []  # what the job's progress plans after each call: the same bound
            progress = run_estimate(store, engine, [task], plan.strategy, policy, SAMPLING, rows_per_call=4096,
                                    on_progress=lambda p, seen=planned: seen.append(p.planned))  # fmt: skip
            assert planned[0] == (bounds[task.trajectory_id] if progress.calls else 0), planned
            done += progress.done
        spent = {t: spent_by_trajectory(store, [t], policy)[t] - before[t] for t in ids}
        assert all(spent[t] <= bounds[t] for t in ids), (steps, n, spent, bounds)
        assert sum(spent.values()) == done <= plan.most_rollouts
        if plan.exact:
            assert done == plan.most_rollouts
        if plan.strategy.name == "first-error":
            assert spent[ids[2]] == bounds[ids[2]] == 0  # a right answer: nothing to search


def spent_by_trajectory(store: Store, ids, policy: str) -> dict[int, int]:
    return {t: sum(v["n"] for v in store.step_values(t, model=policy)) for t in ids}


# --- the CLI on a short and a long trajectory (the tiny model) --------------------------------

LONG_STEPS = 64  # lines "k." keep the tiny model's prompt under its 1,024 positions


def short_and_long(db: Path) -> tuple[int, int]:
    store = Store.open(db)
    short = store.add_trajectory(store.add_problem("mixed", "What is 9000 + 137?", "9137"),
                                 "First, 9000 + 100 = 9100.\nThen 9100 + 36 = 9136.\nThe answer is 9136.",
                                 source="test", rule="line")  # fmt: skip
    long = store.add_trajectory(store.add_problem("mixed", "What is 9000 + 138?", "9138"),
                                "\n".join(f"{k}." for k in range(LONG_STEPS)) + "\nThe answer is 9137.",
                                source="test", rule="line")  # fmt: skip
    assert len(store.steps(short)) == 3 and len(store.steps(long)) == LONG_STEPS + 1 > FIRST_ERROR_FROM_STEPS
    store.close()
    return short, long


def estimate(monkeypatch, capsys, db: Path, policy: str, *args: str, n: int = 2):
    """`stepscope estimate` in this process (the model loads without a new interpreter's imports)."""
    return run_in_process(monkeypatch, capsys, "estimate", "--policy", policy, "--dataset", "mixed",
                          "--max-new-tokens", "4", "--device", "cpu", "--n", str(n), "--round-size", "2",
                          "--db", str(db), *args)  # fmt: skip


def test_estimate_without_a_strategy_searches_the_long_trajectory_and_says_its_budget(tmp_path, tiny_model_dir,
                                                                                     monkeypatch, capsys):  # fmt: skip
    db, policy = tmp_path / "mixed.db", str(tiny_model_dir)
    short, long = short_and_long(db)
    result = estimate(monkeypatch, capsys, db, policy)
    assert result.returncode == 0, result.stderr
    out = " ".join(result.stdout.split())
    assert f"first-error search on 1 trajectory longer than {FIRST_ERROR_FROM_STEPS} steps; fixed N on 1" in out
    # Fixed N = 2 on 3 steps: exactly 6. The search on 65 steps with the last one settled by the
    # wrong outcome: at most 2 at the first probe and 2 on each of the 6 levels below.
    assert ("budget: at most 20 rollouts: at most 14 by the first-error search on 1 trajectory of up to 65 steps "
            "(at most 2 a probed step); exactly 6 by fixed N = 2 on 1 trajectory") in out, out
    assert out.index("budget:") < out.index("job ")  # said before the jobs start
    store = Store.open(db)
    jobs = sorted(store.list_jobs(), key=lambda job: job["id"])
    assert [(j["status"], j["manifest"]["strategy"]["strategy"], j["manifest"]["trajectory_ids"]) for j in jobs] == [
        ("done", "first-error", [long]), ("done", "fixed", [short])]
    spent = spent_by_trajectory(store, (short, long), policy)
    assert spent[short] == 6 and 0 < spent[long] <= 14, spent


def test_an_explicit_strategy_still_wins(tmp_path, tiny_model_dir, monkeypatch, capsys):
    db, policy = tmp_path / "fixed.db", str(tiny_model_dir)
    short, long = short_and_long(db)
    result = estimate(monkeypatch, capsys, db, policy, "--strategy", "fixed", n=1)
    assert result.returncode == 0, result.stderr
    out = " ".join(result.stdout.split())
    assert "first-error search on" not in out
    assert "budget: 68 rollouts: exactly 68 by fixed N = 1 on 2 trajectories" in out, out
    store = Store.open(db)
    [job] = store.list_jobs()
    assert job["manifest"]["strategy"] == {"strategy": "fixed", "n": 1}
    assert spent_by_trajectory(store, (short, long), policy) == {short: 3, long: LONG_STEPS + 1}


# --- Explore: the budget beside the Estimate button ------------------------------------------


def test_explore_says_the_budget_beside_the_estimate_button(tmp_path, monkeypatch):
    path = tmp_path / "data" / "explore.db"
    monkeypatch.setenv("STEPSCOPE_DB", str(path))
    store = Store.open(path)
    long = add_lines(store, 300, 0, answer="41")
    short = add_lines(store, 12, 1, answer="41")
    problem = store.add_problem("sim", "Solved?", GOLD)
    right = store.add_trajectory(problem, "\n".join(f"Step {k}: part {k}." for k in range(80)) + "\nThe answer is 42.",
                                 source="sim", rule="line", final_answer=GOLD, correct=True)  # fmt: skip
    assert estimate_budget_text(store, right, "tiny-policy").startswith("no rollouts: the first-error search over 81")
    # 300 steps, the last settled by the wrong outcome: at most 16 + 16 x 8 = 144.
    assert estimate_budget_text(store, long, "tiny-policy") == "at most 144 rollouts: first-error search over 300 steps"
    assert estimate_budget_text(store, short, "tiny-policy") == "192 rollouts: fixed N = 16 over 12 steps"
    # Stored rollouts of the policy count: 4 on every step of the short one leave 12 each.
    steps = store.steps(short)
    store.add_rollouts([{"step_id": s["id"], "text": "x", "correct": False, "model": "tiny-policy"}
                        for s in steps for _ in range(4)])  # fmt: skip
    assert estimate_budget_text(store, short, "tiny-policy") == "144 rollouts: fixed N = 16 over 12 steps"
    assert estimate_budget_text(store, short, "another-policy").startswith("192 rollouts")
    for tid, caption in ((long, "at most 144 rollouts: first-error search over 300 steps"),
                         (short, "144 rollouts: fixed N = 16 over 12 steps")):  # fmt: skip
        at = AppTest.from_file(str(REPO / "pages" / "explore.py"), default_timeout=60)
        at.session_state["db_path"] = str(path)
        at.session_state["policy_model"] = "tiny-policy"
        at.session_state["explore_tid"] = tid
        at.run()
        assert not at.exception, [e.message for e in at.exception]
        assert caption in [c.value.replace("\\", "") for c in at.caption], [c.value for c in at.caption]
