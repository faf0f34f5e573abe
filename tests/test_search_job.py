"""The search job (core/jobs/search.py): searches stored in the rollout tree with their marks,
final beams as graded trajectories, resumed after a kill to the identical stored tree, and the
compute every job records (here the search, generate and estimate jobs; tokens checked against
the tiny transformer's own outputs)."""

from __future__ import annotations

import json

import pytest
from simulated_steps import SteppedPolicy

from core.jobs.estimate import EstimateSpec, default_sampling
from core.jobs.generate import GenerateSpec
from core.jobs.runner import EngineCache, claim_job, queue, run_job
from core.jobs.search import SearchSpec
from core.policy import load_template
from core.search.config import SearchConfig, SearchProblem
from core.search.run import STRATEGIES, run_search
from core.search.scorers import MCScorer, RandomScorer
from core.store import Store

GOLD = "42"


class CrashingEngine:
    """A policy that is killed (as by kill -9: nothing after the call is written) at its
    `crash_at`-th call; every other attribute is the policy's."""

    def __init__(self, policy, crash_at: int | None = None) -> None:
        self.policy, self.crash_at, self.calls = policy, crash_at, 0

    def generate(self, prompts, params):
        if self.crash_at is not None and self.calls >= self.crash_at:
            raise KeyboardInterrupt
        self.calls += 1
        return self.policy.generate(prompts, params)

    def __getattr__(self, name):
        return getattr(self.policy, name)


def _problems(store: Store, count: int = 2) -> tuple[int, ...]:
    return tuple(store.add_problem("search-job", f"What is the number, case {i}?", GOLD) for i in range(count))


def _run(store: Store, engine, job_id: int) -> str:
    job = claim_job(store, job_id, stale_after=0)
    return run_job(store, job, EngineCache(loader=lambda *args, **kwargs: engine))


def _spec(problem_ids, scorer: str = "mc:2", **config) -> SearchSpec:
    settings = {"strategy": "beam", "n": 4, "beam_width": 2, "max_steps": 3, "seed": 7, **config}
    return SearchSpec(policy="simulated-steps", problem_ids=problem_ids, config=SearchConfig(**settings), scorer=scorer)


def _stored_tree(store: Store, job_id: int) -> list:
    """Every search of the job by content: candidates with their node's step path, score, rank,
    mark and beam; the beams' trajectories; the rollouts at nodes; the outcome and the compute
    (seconds left out: they are the only thing a rerun may change)."""
    out = []
    for search in store.job_searches(job_id):
        paths = {n["id"]: n for n in store.problem_nodes(search["problem_id"])}

        def path(node_id):
            steps = []
            while paths[node_id]["parent_id"] is not None:
                steps.append(paths[node_id]["text"])
                node_id = paths[node_id]["parent_id"]
            return tuple(reversed(steps))

        candidates = [(c["candidate"], c["parent"], c["depth"], c["text"], c["num_tokens"], c["score"], c["rank"],
                       c["mark"], c["subtree"], c["visits"], path(c["node_id"]),
                       None if c["trajectory_id"] is None else store.get_trajectory(c["trajectory_id"])["solution"])
                      for c in store.search_candidates(search["id"])]  # fmt: skip
        rollouts = sorted((path(r["node_id"]), r["text"], r["correct"], r["num_tokens"])
                          for r in store.problem_rollouts(search["problem_id"], "simulated-steps"))  # fmt: skip
        compute = {k: v for k, v in search["compute"].items() if not k.endswith("seconds")}
        out.append((search["problem_id"], search["answer"], search["correct"], search["stopped"], candidates, rollouts,
                    compute))  # fmt: skip
    return out


def test_search_job_stores_every_candidate_with_the_marks_of_the_search(tmp_path):
    store = Store.open(tmp_path / "search.db")
    problems = _problems(store)
    spec = _spec(problems)
    job_id = queue(store, spec)
    assert _run(store, SteppedPolicy([0.7] * 3), job_id) == "done"
    template = load_template(spec.template)
    searches = store.job_searches(job_id)
    assert [s["problem_id"] for s in searches] == list(problems)
    for search in searches:
        problem = store.get_problem(search["problem_id"])
        # The same search run in memory: the store holds exactly what it considered.
        context = template.render(problem["question"])
        expected = run_search(SearchProblem(problem["question"], GOLD, context), SteppedPolicy([0.7] * 3),
                              MCScorer(SteppedPolicy([0.7] * 3), 2, delimiter="\n", seed=7), spec.config)  # fmt: skip
        stored = store.search_candidates(search["id"])
        assert [(c["candidate"], c["parent"], c["depth"], c["text"], c["score"], c["rank"], c["mark"])
                for c in stored] == [(n.id, n.parent, n.depth, n.text, n.score, n.rank, n.mark)
                                     for n in expected.nodes]  # fmt: skip
        assert {"chosen", "pruned"} <= {c["mark"] for c in stored}
        # Each candidate is the node of its step path, one below its parent's node.
        for candidate, row in zip(stored, expected.candidate_rows()):
            assert store.ensure_node_path(problem["id"], row["steps"])[-1] == candidate["node_id"]
        # Final beams: graded trajectories of source "search", whose steps end at the beam's node.
        beams = {b.node: b for b in expected.beams}
        with_trajectory = [c for c in stored if c["trajectory_id"] is not None]
        assert {c["candidate"] for c in with_trajectory} == set(beams) and beams
        for candidate in with_trajectory:
            trajectory = store.get_trajectory(candidate["trajectory_id"])
            beam = beams[candidate["candidate"]]
            assert trajectory["source"] == "search" and trajectory["model"] == "simulated-steps"
            assert trajectory["solution"] == beam.solution and trajectory["correct"] == beam.correct
            assert trajectory["final_answer"] == beam.answer and trajectory["policy_prompt"] == context
            assert store.trajectory_nodes(trajectory["id"])[-1] == candidate["node_id"]
        # The MC scorer's rollouts are rollouts at the nodes they continue: they count in node values.
        counts = store.node_counts(problem["id"], "simulated-steps")
        assert sum(n for n, _ in counts.values()) == len(expected.rollouts) > 0
        assert search["answer"] == expected.answer and search["correct"] == expected.correct
        assert search["scorer_kind"] == "mc" and search["scorer_fingerprint"]["k"] == 2
    assert store.verifier_kind(searches[0]["scorer"]) == "mc"  # the scorer's identity is data
    # The job's summary counts, in one query, what the candidate rows hold.
    for summary, search in zip(store.job_search_summary(job_id), searches):
        marks = [c["mark"] for c in store.search_candidates(search["id"])]
        beams = sum(c["trajectory_id"] is not None for c in store.search_candidates(search["id"]))
        assert (summary["candidates"], summary["chosen"], summary["pruned"], summary["pending"], summary["beams"]) == (
            len(marks), marks.count("chosen"), marks.count("pruned"), marks.count("pending"), beams)


def test_search_job_manifest_holds_every_parameter_the_scorer_and_the_splitter(tmp_path):
    store = Store.open(tmp_path / "search.db")
    spec = _spec(_problems(store, 1), scorer="random:3", strategy="dvts", token_budget=500)
    job_id = queue(store, spec)
    assert _run(store, SteppedPolicy([0.7] * 3), job_id) == "done"
    job = store.get_job(job_id)
    manifest = job["manifest"]
    assert manifest["search"] == spec.config.as_manifest() and set(manifest["search"]) == set(SearchConfig().as_manifest())
    assert manifest["scorer_fingerprint"] == RandomScorer(3).fingerprint
    assert manifest["splitter"] == {"rule": "line", "delimiter": "\n"} and manifest["grader"]
    assert SearchSpec.from_manifest(manifest) == spec  # what runs on resume is what was queued
    assert store.verifier_kind("random:3") == "random"


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_a_search_job_killed_part_way_resumes_to_the_identical_stored_tree(tmp_path, strategy):
    whole = Store.open(tmp_path / "whole.db")
    whole_job = queue(whole, _spec(_problems(whole), strategy=strategy, expansions=5))
    uninterrupted = CrashingEngine(SteppedPolicy([0.6] * 3))
    assert _run(whole, uninterrupted, whole_job) == "done"

    killed = Store.open(tmp_path / "killed.db")
    killed_job = queue(killed, _spec(_problems(killed), strategy=strategy, expansions=5))
    # Killed at a third of the engine calls, then again half way through what is left: calls the
    # journal holds are not made again, so each run makes only the calls past the last kill.
    total = uninterrupted.calls
    kills = [max(1, total // 3)]
    if total - kills[0] >= 2:
        kills.append((total - kills[0]) // 2)
    mid_search = False
    for crash_at in kills:
        with pytest.raises(KeyboardInterrupt):
            _run(killed, CrashingEngine(SteppedPolicy([0.6] * 3), crash_at=crash_at), killed_job)
        assert killed.get_job(killed_job)["status"] == "running"  # as after a kill -9
        mid_search |= any(s["status"] == "running" and killed.search_events(s["id"])
                          for s in killed.job_searches(killed_job))  # fmt: skip
    assert mid_search or strategy == "bon"  # best-of-N's search of a problem is one engine call
    resumed = CrashingEngine(SteppedPolicy([0.6] * 3))
    assert _run(killed, resumed, killed_job) == "done"
    assert resumed.calls == total - sum(kills)  # no call the journal holds was made again
    assert _stored_tree(killed, killed_job) == _stored_tree(whole, whole_job)
    spent = {k: v for k, v in killed.get_job(killed_job)["compute"].items() if not k.endswith("seconds")}
    assert spent == {k: v for k, v in whole.get_job(whole_job)["compute"].items() if not k.endswith("seconds")}


def test_search_job_records_its_compute_on_the_job_row_and_in_the_manifest(tmp_path):
    store = Store.open(tmp_path / "search.db")
    job_id = queue(store, _spec(_problems(store)))
    policy = SteppedPolicy([0.7] * 3, parameters=2_000)
    assert _run(store, policy, job_id) == "done"
    job = store.get_job(job_id)
    compute = job["compute"]
    assert job["manifest"]["compute"] == compute
    candidates = [c for s in store.job_searches(job_id) for c in store.search_candidates(s["id"])]
    # The policy's tokens are its candidates'; the MC scorer's rollouts are the verifier's.
    assert compute["policy_tokens"] == sum(c["num_tokens"] for c in candidates) == job["tokens"] > 0
    assert compute["verifier_generated_tokens"] == store.job_rollout_totals(job_id)[1] > 0
    # The engine and scorer together sampled every token the policy wrote.
    assert compute["policy_tokens"] + compute["verifier_generated_tokens"] == sum(s.num_tokens for s in policy.samples)
    assert compute["prompt_tokens"] > 0 and compute["prompt_tokens_cached"] is None  # the simulation has no cache
    tokens = compute["policy_tokens"] + compute["prompt_tokens"] + compute["verifier_tokens"] + compute["verifier_generated_tokens"]
    assert compute["flops"] == pytest.approx(2 * 2_000 * tokens)
    assert compute["engine_seconds"] >= 0 and compute["total_seconds"] >= compute["engine_seconds"]


def test_estimate_job_records_its_compute_and_says_null_for_what_the_engine_cannot_count(tmp_path):
    from simulated_engine import SimulatedPolicy

    store = Store.open(tmp_path / "estimate.db")
    problem = store.add_problem("estimate", "What is the number?", GOLD)
    trajectory = store.add_trajectory(problem, "First.\nThe answer is 42.", source="test")
    job_id = queue(store, EstimateSpec(policy="simulated", trajectory_ids=(trajectory,), n=4))
    assert _run(store, SimulatedPolicy(lambda prompt: 0.5, GOLD), job_id) == "done"
    job = store.get_job(job_id)
    compute = job["compute"]
    assert compute["policy_tokens"] == store.job_rollout_totals(job_id)[1] == job["tokens"] > 0
    assert compute["engine_calls"] >= 1
    # No tokenizer and no declared size: prompt tokens, cache and FLOPs are unknown, not guessed.
    assert compute["prompt_tokens"] is None and compute["prompt_tokens_cached"] is None and compute["flops"] is None
    assert job["manifest"]["compute"] == compute


def test_generate_job_counts_the_tokens_of_the_tiny_transformers_own_outputs(tmp_path, tiny_engine, one_torch_thread):
    """Token counts equal the tokenizer's count of the engine's own outputs (issue 25's check)."""
    store = Store.open(tmp_path / "generate.db")
    problems = _problems(store, 2)
    produced, prefilled, run = [], [], tiny_engine._decoder.run

    def spy(*args, **kwargs):
        rollouts = run(*args, **kwargs)
        produced.extend(r for row in rollouts for r in row)
        prefilled.append((tiny_engine._decoder.stats.prefill_tokens, tiny_engine._decoder.stats.reused_prefix_tokens))
        return rollouts

    tiny_engine._decoder.run = spy
    try:
        spec = GenerateSpec(policy="tiny", problem_ids=problems, k=3, sampling=default_sampling(max_new_tokens=12, temperature=1.0))
        job_id = queue(store, spec)
        assert _run(store, tiny_engine, job_id) == "done"
    finally:
        tiny_engine._decoder.run = run
    compute = store.get_job(job_id)["compute"]
    tokenizer = tiny_engine.tokenizer
    assert compute["policy_tokens"] == sum(len(r.tokens) for r in produced) > 0
    # Every sample's text is its tokens decoded (up to a stop string): the counts are of those tokens.
    texts = [tokenizer.decode(r.tokens, skip_special_tokens=True) for r in produced]
    stored = [t["solution"] for t in store.list_trajectories(source="policy")]
    assert stored and all(any(text.startswith(s) for text in texts) for s in stored)
    template = load_template(spec.template)
    prompts = [template.render(store.get_problem(p)["question"]) for p in problems]
    assert compute["prompt_tokens"] == sum(len(tokenizer(p)["input_ids"]) for p in prompts)
    assert compute["prompt_tokens"] == sum(computed + reused for computed, reused in prefilled)
    assert compute["prompt_tokens_cached"] == sum(reused for _, reused in prefilled)
    parameters = sum(p.numel() for p in tiny_engine.model.parameters())
    assert compute["flops"] == pytest.approx(2 * parameters * (compute["policy_tokens"] + compute["prompt_tokens"]))
    json.dumps(compute)


def test_judge_job_counts_what_its_judge_read_as_verifier_tokens(tmp_path, tiny_engine, one_torch_thread):
    from core.jobs.judge import JudgeSpec

    store = Store.open(tmp_path / "judge.db")
    problem = store.add_problem("judge", "What is 6 * 4?", "24")
    trajectory = store.add_trajectory(problem, "6 * 4 = 24.\nThe answer is 24.", source="test")
    read, scoring = [], tiny_engine.candidate_logprobs

    def spy(prompts, candidates):
        read.extend(prompts)
        return scoring(prompts, candidates)

    tiny_engine.candidate_logprobs = spy
    try:
        job_id = queue(store, JudgeSpec(judge="tiny", verdict="step", trajectory_ids=(trajectory,)))
        assert _run(store, tiny_engine, job_id) == "done"
    finally:
        del tiny_engine.candidate_logprobs
    compute = store.get_job(job_id)["compute"]
    assert len(read) >= 2  # a verdict per step, besides the spellings probe
    assert compute["verifier_tokens"] == sum(len(tiny_engine.tokenizer(p)["input_ids"]) for p in read)
    assert compute["policy_tokens"] == 0 and compute["prompt_tokens"] == 0  # no policy in a judge's job
    parameters = sum(p.numel() for p in tiny_engine.model.parameters())
    assert compute["verifier_parameters"] == parameters
    assert compute["flops"] == pytest.approx(2 * parameters * compute["verifier_tokens"])


def test_search_command_runs_a_beam_search_and_jobs_show_prints_its_compute(tmp_path, tiny_model_dir):
    from cli_runner import run_cli

    db = tmp_path / "cli.db"
    # The random model seldom writes a newline: "e" as the delimiter gives it steps of a few tokens.
    result = run_cli("search", "--policy", str(tiny_model_dir), "--device", "cpu", "--strategy", "beam", "--n", "2",
                     "--width", "1", "--max-steps", "2", "--max-step-tokens", "6", "--max-solution-tokens", "8",
                     "--step-delimiter", "e", "--solution-stop", "Question:", "--scorer", "random:1",
                     "--dataset", "sample", "--limit", "2", "--db", str(db))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "of 2 searches answered correctly" in result.stdout and "policy tokens generated" in result.stdout
    store = Store.open(db)
    [job] = store.list_jobs()
    assert job["kind"] == "search" and job["status"] == "done" and job["done"] == 2
    assert job["manifest"]["search"]["step_delimiter"] == "e" and job["manifest"]["search"]["solution_stops"] == ["Question:"]
    candidates = [c for s in store.job_searches(job["id"]) for c in store.search_candidates(s["id"])]
    assert job["compute"]["policy_tokens"] == sum(c["num_tokens"] for c in candidates) > 0
    shown = run_cli("jobs", "show", str(job["id"]), "--db", str(db))
    assert shown.returncode == 0, shown.stderr
    assert f"policy tokens generated     {job['compute']['policy_tokens']:,}" in shown.stdout
    assert "estimated FLOPs" in shown.stdout and '"strategy": "beam"' in shown.stdout
    missing = run_cli("jobs", "show", "99", "--db", str(db))
    assert missing.returncode == 1 and missing.stderr.strip() == "error: job 99 does not exist"


class CancellingEngine(CrashingEngine):
    """Cancels its job (as the app's Cancel button does) once it has answered `cancel_at` calls."""

    def __init__(self, policy, store: Store, job_id: int, cancel_at: int) -> None:
        super().__init__(policy)
        self.store, self.job_id, self.cancel_at = store, job_id, cancel_at

    def generate(self, prompts, params):
        results = super().generate(prompts, params)
        if self.calls == self.cancel_at:
            self.store.cancel_job(self.job_id)
        return results


def test_a_search_job_cancelled_mid_search_stops_at_the_next_call_and_retried_finishes_the_same_tree(tmp_path):
    from core.jobs.runner import retry_job

    whole = Store.open(tmp_path / "whole.db")
    whole_job = queue(whole, _spec(_problems(whole)))
    assert _run(whole, SteppedPolicy([0.6] * 3), whole_job) == "done"

    store = Store.open(tmp_path / "cancelled.db")
    job_id = queue(store, _spec(_problems(store)))
    cancelling = CancellingEngine(SteppedPolicy([0.6] * 3), store, job_id, cancel_at=2)
    assert _run(store, cancelling, job_id) == "cancelled"
    assert cancelling.calls == 2  # no engine call after the cancel
    [search] = store.job_searches(job_id)
    assert search["status"] == "running" and len(store.search_events(search["id"])) >= 2
    retry_job(store, job_id)
    assert _run(store, SteppedPolicy([0.6] * 3), job_id) == "done"
    assert _stored_tree(store, job_id) == _stored_tree(whole, whole_job)


def test_a_search_job_is_refused_before_it_is_queued_when_its_problems_or_scorer_are_wrong(tmp_path):
    from core.errors import StepScopeError

    store = Store.open(tmp_path / "refused.db")
    [problem] = _problems(store, 1)
    no_gold = store.add_problem("search-job", "A question without an answer", None)
    for spec, cause in [(_spec((problem, problem)), "listed twice"), (_spec((no_gold,)), "no gold answer"),
                        (_spec((999,)), "problem 999 does not exist"), (_spec((problem,), scorer="best"), "a scorer is one of"),
                        (_spec((problem,), scorer="prm"), "needs the PRM's folder"),
                        (_spec((problem,), scorer=f"prm:{tmp_path}"), "not a model folder"),
                        (_spec((problem,), scorer="mc:0"), "mc scorer rollouts"), (_spec((problem,), n=300, beam_width=3), "n is between")]:  # fmt: skip
        with pytest.raises(StepScopeError, match=cause):
            queue(store, spec)
    assert store.list_jobs() == []


def test_a_search_job_guided_by_a_prm_folder_stores_the_prms_scores_of_each_candidate(tmp_path, one_torch_thread):
    from tiny_prm import build_token_classification_prm

    from core.engines import load_engine
    from core.prm import FAMILY_DEFAULTS
    from core.search.scorers import PRMScorer

    folder = build_token_classification_prm(tmp_path / "prm")
    store = Store.open(tmp_path / "prm.db")
    problems = _problems(store, 1)
    spec = _spec(problems, scorer=f"prm:{folder}")
    job_id = queue(store, spec)
    assert _run(store, SteppedPolicy([0.7] * 3), job_id) == "done"
    [search] = store.job_searches(job_id)
    assert search["scorer_kind"] == "prm" and search["scorer_fingerprint"]["family"] == "token-classification"
    assert store.verifier_kind(search["scorer"]) == "prm"
    # The same search run in memory with the PRM loaded by hand: the same candidates and scores.
    problem = store.get_problem(problems[0])
    engine = load_engine("prm:transformers", str(folder), family="token-classification", device="cpu")
    expected = run_search(SearchProblem(problem["question"], GOLD, load_template(spec.template).render(problem["question"])),
                          SteppedPolicy([0.7] * 3), PRMScorer(engine, FAMILY_DEFAULTS["token-classification"]),
                          spec.config)  # fmt: skip
    engine.close()
    stored = store.search_candidates(search["id"])
    assert [(c["text"], c["mark"]) for c in stored] == [(n.text, n.mark) for n in expected.nodes]
    assert [c["score"] for c in stored] == pytest.approx([n.score for n in expected.nodes], abs=1e-6)
    assert any(0.0 < c["score"] < 1.0 for c in stored)
    assert search["compute"]["verifier_tokens"] > 0 and search["compute"]["scorer_calls"] > 0


def test_the_migration_that_admits_the_random_kind_keeps_every_verifier(tmp_path):
    import sqlite3

    from sqlite_utils import Database

    from core.errors import StepScopeError
    from core.store import MIGRATIONS

    path = tmp_path / "before.db"
    db = Database(sqlite3.connect(path))
    MIGRATIONS.apply(db, stop_before="0014_random_verifier_kind")
    db.conn.execute("INSERT INTO verifiers (name, kind, fingerprint, created_at, updated_at)"
                    " VALUES ('prm:x', 'prm', '{\"a\": 1}', 't0', 't1')")  # fmt: skip
    db.conn.commit()
    with pytest.raises(sqlite3.IntegrityError):  # the old CHECK refuses the kind
        db.conn.execute("INSERT INTO verifiers (name, kind, created_at, updated_at) VALUES ('r', 'random', 't', 't')")
    db.conn.close()
    store = Store.open(path)  # migrates
    assert store.verifiers() == [{"name": "prm:x", "kind": "prm", "fingerprint": '{"a": 1}'}]
    store.start_search(job_id=None, problem_id=1, policy="p", strategy="beam", config={}, scorer=RandomScorer(2).fingerprint)
    assert store.verifier_kind("random:2") == "random"
    with pytest.raises(StepScopeError, match="already names a random verifier"):
        store.start_search(job_id=None, problem_id=1, policy="p", strategy="beam", config={},
                           scorer={"kind": "mc", "name": "random:2"})  # fmt: skip
