"""The tree-search job: OmegaPRM and N-level expansion grown in the store, resumed after a kill,
on a simulated multi-step policy with a known truth (tests/simulated_tree.py) behind the engine
interface, and on the real tiny transformer."""

from __future__ import annotations

import pytest
from scipy.stats import binom

from core.engines.base import EngineInfo, Sample
from core.jobs.runner import EngineCache, claim_job, queue, run_job
from core.jobs.tree_search import TreeSearchSpec, rebuild_tree
from core.jobs.estimate import default_sampling
from core.store import Store
from simulated_tree import SimulatedReasoner

GOLD = "8"
CONTEXT = "Question: a simulated problem\nAnswer:"


class ReasonerEngine:
    """The simulated reasoner as an engine: it reads the prefix's steps back from the prompt (the
    lines after the context) and writes each rollout as its steps, one per line, then the answer."""

    def __init__(self, reasoner: SimulatedReasoner, crash_after: int | None = None) -> None:
        self.reasoner, self.crash_after = reasoner, crash_after
        self.info = EngineInfo(engine="simulated", model="simulated", device="cpu")
        self.calls = 0

    def generate(self, prompts, params):
        results = []
        for prompt in prompts:
            if self.crash_after is not None and self.calls >= self.crash_after:
                raise KeyboardInterrupt  # like a kill: nothing after this call is written
            self.calls += 1
            assert prompt.startswith(CONTEXT)
            prefix = tuple(line.strip() for line in prompt[len(CONTEXT):].splitlines() if line.strip())
            samples = []
            for rollout in self.reasoner(prefix, params.n, params.seed):
                answer = GOLD if rollout.correct else "9"
                text = "".join(f"\n{step}" for step in rollout.steps) + f"\nThe answer is {answer}"
                samples.append(Sample(text if prefix else text.lstrip("\n"), rollout.tokens, "stop"))
            results.append(samples)
        return results

    def close(self) -> None:
        pass


def _anchor(store: Store, reasoner: SimulatedReasoner) -> int:
    problem = store.add_problem("sim", "a simulated problem", GOLD)
    steps, _ = reasoner.wrong_solution(seed=3)
    solution = "\n".join(steps) + "\nThe answer is 9"
    return store.add_trajectory(problem, solution, source="sim", policy_prompt=CONTEXT, correct=False)


def _run(store: Store, engine, job_id: int) -> str:
    job = claim_job(store, job_id, stale_after=0)
    return run_job(store, job, EngineCache(loader=lambda *args, **kwargs: engine))


def _tree_contents(store: Store, trajectory_id: int) -> tuple:
    """The grown tree by content (prefixes, rollout texts and grades, marks), not by row ids."""
    problem = store.get_trajectory(trajectory_id)["problem_id"]
    tree, ids = rebuild_tree(store, problem, "sim", "line")
    texts = {rollout_id: text for rollout_id, text in
             ((r["id"], r["text"]) for r in store.problem_rollouts(problem, "sim"))}  # fmt: skip
    rollouts = sorted((key.prefix, key.ordinal, texts[ids[key]], tree.rollout(key).correct) for key in tree.keys())
    return rollouts, sorted(tree.selected), sorted(tree.located.items()), sorted(tree.expanded)


def _spec(trajectory_id: int, **overrides) -> TreeSearchSpec:
    fields = dict(policy="sim", trajectory_id=trajectory_id, budget=160, k=8, sampling=default_sampling(seed=5))
    return TreeSearchSpec(**{**fields, **overrides})


# Each binary search of a 6-step rollout probes at most ceil(log2 6) = 3 prefixes before its
# first error; each such prefix is alive (p = 0.6) and misleads the search only when all k = 8
# of its rollouts fail: a search is right with probability at least (1 - 0.4^8)^3 = 0.998.
SEARCH_RIGHT = (1 - 0.4**8) ** 3
# The located errors that are right may fall short of that only as far as a binomial with that
# rate does with probability 1e-3 (searches that share a probed prefix are not quite
# independent; the bound treats them as if they were). With about 95 searches it asks for 93
# right: a search right 85% of the time (a regression) passes with probability 3e-5.
TAIL = 1e-3


def fewest_right(searches: int) -> int:
    return min(r for r in range(searches + 1) if binom.cdf(r, searches, SEARCH_RIGHT) >= TAIL)


def test_omegaprm_job_grows_the_tree_in_the_store_and_locates_true_first_errors(tmp_path):
    reasoner = SimulatedReasoner(length=6, success=0.6)
    store = Store.open(tmp_path / "sim.db")
    trajectory = _anchor(store, reasoner)
    budget = 1200  # the pool empties at about 1,100: ~95 searches, enough for the rate below to fail
    job = queue(store, _spec(trajectory, budget=budget))
    assert _run(store, ReasonerEngine(reasoner), job) == "done"
    row = store.get_job(job)
    assert row["done"] == store.job_rollout_totals(job)[0] <= budget and row["done"] >= 100
    assert row["manifest"]["stopped"].startswith(f"OmegaPRM's pool is empty after {row['done']} of {budget} rollouts")
    problem = store.get_trajectory(trajectory)["problem_id"]
    tree, ids = rebuild_tree(store, problem, "sim", "line")
    assert tree.size() == row["done"]
    assert tree.located, "the search finished no binary search"
    right = 0
    for key, first_error in tree.located.items():
        path = tree.rollout(key).path
        right += first_error == SimulatedReasoner.first_error(path)
    assert len(tree.located) >= 80, "too few searches for the rate check to tell 0.998 from 0.85"
    assert right >= fewest_right(len(tree.located)), (right, len(tree.located), fewest_right(len(tree.located)))
    # Every probed prefix is a node of the problem, holding its k rollouts.
    counts = store.node_counts(problem, "sim")
    assert sum(n for n, _ in counts.values()) == tree.size()
    assert all(n % 8 == 0 for n in counts.values() for n in [n[0]])
    # Rollouts from the anchor's own step prefixes are also that step's rollouts.
    step_counts = store.step_value_counts([s["id"] for s in store.steps(trajectory)])
    nodes = store.trajectory_nodes(trajectory)
    for step, node in zip(store.steps(trajectory), nodes[1:]):
        assert step_counts[step["id"]][0] == counts.get(node, (0, 0))[0]


def test_a_killed_search_resumes_to_the_tree_an_uninterrupted_run_grows(tmp_path):
    reasoner = SimulatedReasoner(length=8, success=0.5)
    whole = Store.open(tmp_path / "whole.db")
    whole_trajectory = _anchor(whole, reasoner)
    assert _run(whole, ReasonerEngine(reasoner), queue(whole, _spec(whole_trajectory))) == "done"

    killed = Store.open(tmp_path / "killed.db")
    trajectory = _anchor(killed, reasoner)
    job = queue(killed, _spec(trajectory))
    for crash_after in (4, 3):  # killed twice, mid-search
        with pytest.raises(KeyboardInterrupt):
            _run(killed, ReasonerEngine(reasoner, crash_after=crash_after), job)
        assert killed.get_job(job)["status"] == "running"  # as after a kill -9
    assert 0 < killed.job_rollout_totals(job)[0] < whole.job_rollout_totals(1)[0]
    assert _run(killed, ReasonerEngine(reasoner), job) == "done"
    assert _tree_contents(killed, trajectory) == _tree_contents(whole, whole_trajectory)
    assert killed.get_job(job)["done"] == whole.get_job(1)["done"]
    assert killed.get_job(job)["manifest"]["stopped"] == whole.get_job(1)["manifest"]["stopped"] != ""


def test_expand_job_makes_branches_n_levels_deep(tmp_path):
    reasoner = SimulatedReasoner(length=4, success=0.5)
    store = Store.open(tmp_path / "expand.db")
    trajectory = _anchor(store, reasoner)
    job = queue(store, _spec(trajectory, mode="expand", k=2, depth=2, budget=400))
    assert _run(store, ReasonerEngine(reasoner), job) == "done"
    assert store.get_job(job)["manifest"]["stopped"].startswith("every level was expanded (2 deep, ")
    problem = store.get_trajectory(trajectory)["problem_id"]
    root = store.root_node(problem)
    branches = store.branches(root)
    assert len(branches) == 2  # the root's k rollouts, each a branch
    for branch in branches:
        row = store.get_trajectory(branch["id"])
        assert row["source"] == "rollout" and row["parent_node_id"] == root
        # A branch from the root: its steps are the rollout's lines, each a node with k rollouts.
        nodes = store.trajectory_nodes(branch["id"])
        counts = store.node_counts(problem, "sim")
        assert all(counts[node][0] == 2 for node in nodes[1:-1])
    # The second level: the rollouts of the first level's nodes became branches too.
    assert sum(1 for m in store.problem_marks(problem) if m["branch_id"]) > 2


@pytest.mark.slow
def test_tree_search_job_on_the_tiny_transformer(tmp_path, tiny_model_dir, one_torch_thread):
    store = Store.open(tmp_path / "tiny.db")
    problem = store.list_problems()[0]
    trajectory = store.add_trajectory(problem["id"], "First step.\nSecond step.", source="ref")
    sampling = default_sampling(max_new_tokens=12, seed=1)
    job = queue(store, TreeSearchSpec(policy=str(tiny_model_dir), trajectory_id=trajectory, mode="expand",
                                      k=2, depth=1, budget=12, sampling=sampling))  # fmt: skip
    assert run_job(store, claim_job(store, job), EngineCache()) == "done", store.get_job(job)["error"]
    root = store.root_node(problem["id"])
    rollouts = store.node_rollouts(root)
    assert len(rollouts) == 2 and all(r["job_id"] == job for r in rollouts)
    with_steps = [r for r in rollouts if r["text"].strip()]
    assert len(store.branches(root)) == len({r["text"] for r in with_steps})
    assert store.get_job(job)["done"] == store.job_rollout_totals(job)[0] <= 12


# --- splitters the search rebuilds prefixes with ---------------------------------------------


@pytest.mark.parametrize("rule", ["line", "blank-line", "paragraph", "step-marker", "sentence"])
def test_a_prefix_off_the_trajectory_splits_back_into_its_steps(tmp_path, rule):
    """A prefix that is no trajectory's own text is joined by the splitter's separator; cut again
    by the same splitter it must give the same steps (paragraph once joined by a single line
    break, which the paragraph splitter does not cut at)."""
    from core.jobs.tree_search import Anchor, split_steps

    steps = {"step-marker": ("Step 1: 3 + 4 = 7.", "Step 2: 7 * 2 = 14.", "Step 3: so 14.")}.get(
        rule, ("First, 3 + 4 = 7.", "Then 7 * 2 = 14.", "So the total is 14.")
    )
    store = Store(tmp_path / "db.sqlite")
    problem = store.add_problem("sim", "a simulated problem", GOLD)
    trajectory = store.add_trajectory(problem, "Something else entirely.", source="sim", rule=rule)
    anchor = Anchor.load(store, trajectory)
    part, spans = anchor.solution_part(steps)
    assert split_steps(part, rule) == steps
    assert [part[s.start : s.end] for s in spans] == list(steps)


@pytest.mark.parametrize("rule", ["sentence-merged", "sentence-merged:20-200", "reflection", "reflection:Wait|Hmm"])
def test_tree_search_refuses_a_splitter_it_cannot_rebuild_in_one_line(tmp_path, rule):
    from core.errors import StepScopeError

    store = Store(tmp_path / "db.sqlite")
    problem = store.add_problem("sim", "a simulated problem", GOLD)
    solution = "First, 3 + 4 = 7. Then 7 * 2 = 14.\n\nWait, check: 7 * 2 = 14. So the answer is 14."
    trajectory = store.add_trajectory(problem, solution, source="sim", rule=rule)
    with pytest.raises(StepScopeError) as refused:
        queue(store, _spec(trajectory))
    message = str(refused.value)
    assert "\n" not in message and f"trajectory {trajectory} is cut by {rule!r}" in message
    assert "cannot rebuild" in message and "paragraph" in message
    assert store.list_jobs() == []  # refused at queueing: nothing to run and mis-split later


def test_a_search_queued_before_the_trajectory_was_resegmented_fails_in_one_line(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    reasoner = SimulatedReasoner(length=4, success=0.5)
    trajectory = _anchor(store, reasoner)
    job = queue(store, _spec(trajectory, budget=8))
    store.resegment(trajectory, "reflection")
    assert _run(store, ReasonerEngine(reasoner), job) == "failed"
    error = store.get_job(job)["error"]
    assert "cannot rebuild exactly" in error and "\n" not in error.strip()
    assert store.problem_rollouts(store.get_trajectory(trajectory)["problem_id"], "sim") == []
