"""Search orchestration overhead (issue 25): each distinct answer graded once per problem, the
journal committed in batches, and a search killed with its last batch unwritten (as by kill -9)
still resuming to the identical stored tree."""

from __future__ import annotations

import pytest
import test_search_job as job_tests
from simulated_steps import CONTEXT, SteppedPolicy

import core.search.answers as answers_module
from core.grading import answers_equal, grade
from core.jobs import search as search_job
from core.search.config import SearchConfig, SearchProblem
from core.search.run import STRATEGIES, run_search
from core.search.scorers import MCScorer, RandomScorer
from core.store import Store

PROBLEM = SearchProblem("What is the number?", "42", CONTEXT)


@pytest.fixture
def comparisons(monkeypatch):
    """Every answers_equal call the search's grader makes, as (predicted, gold)."""
    made = []

    def counting(predicted, gold):
        made.append((predicted, gold))
        return answers_equal(predicted, gold)

    monkeypatch.setattr(answers_module, "answers_equal", counting)
    return made


def test_a_search_compares_each_distinct_answer_with_the_gold_once(comparisons):
    config = SearchConfig(strategy="bon", n=16, max_steps=3, seed=3)
    result = run_search(PROBLEM, SteppedPolicy([0.5] * 3), RandomScorer(1), config)
    answers = [beam.answer for beam in result.beams]
    assert len(answers) == 16 and len(set(answers)) < len(answers)  # answers repeat: memory helps
    # No comparison made twice (with the gold, or between two answers in the vote), and every
    # distinct answer compared with the gold.
    assert len(comparisons) == len(set(comparisons)) < 16 + 16 * 15
    assert {a for a, gold in comparisons if gold == PROBLEM.gold} >= {a for a in answers if a is not None}
    # The same grades as core.grading's, beam by beam, and the same vote.
    for beam in result.beams:
        graded = grade(beam.solution, PROBLEM.gold)
        assert (beam.answer, beam.correct) == (graded.answer, graded.correct)
    assert result.answer == answers_module.weighted_vote(result.beams, answers_equal)
    assert result.correct == answers_equal(result.answer, PROBLEM.gold)


def test_the_mc_scorer_grades_each_distinct_rollout_answer_once_with_unchanged_values(comparisons):
    scorer = MCScorer(SteppedPolicy([0.6] * 3), k=8, delimiter="\n", seed=5)
    prefixes = [["step 1: ok #a"], ["step 1: slip #b"], ["step 1: ok #c", "step 2: ok #d"]]
    scores = scorer.score(PROBLEM, prefixes)
    rollouts = scorer.rollouts
    assert len(rollouts) == 24
    with_gold = [pair for pair in comparisons if pair[1] == PROBLEM.gold]
    assert len(with_gold) == len(set(with_gold)) == len({r.answer for r in rollouts if r.answer is not None}) < 24
    for rollout in rollouts:  # each rollout graded as core.grading grades it
        graded = grade("\n".join(rollout.prefix) + "\n" + rollout.text, PROBLEM.gold)
        assert (rollout.answer, rollout.correct) == (graded.answer, graded.correct)
    for steps, score in zip(prefixes, scores):
        mine = [r for r in rollouts if list(r.prefix) == steps]
        assert score == sum(r.correct for r in mine) / len(mine)


def test_a_search_job_commits_its_journal_in_batches_not_per_event(tmp_path, monkeypatch):
    commits = []
    add = Store.add_search_events

    def counting(self, search_id, events):
        commits.append(len(events))
        return add(self, search_id, events)

    monkeypatch.setattr(Store, "add_search_events", counting)
    store = Store.open(tmp_path / "batched.db")
    job_id = job_tests.queue(store, job_tests._spec(job_tests._problems(store, 2), scorer="random"))
    assert job_tests._run(store, SteppedPolicy([0.6] * 3), job_id) == "done"
    stored = [len(store.search_events(s["id"])) for s in store.job_searches(job_id)]
    # The simulated calls take microseconds: each search's journal is written once, with its outcome.
    assert sum(commits) == sum(stored) > 2 * len(stored) and len(commits) == len(stored)
    assert all(seqs == list(range(count)) for seqs, count in zip(
        [[row[0] for row in store.conn.execute("SELECT seq FROM search_events WHERE search_id = ? ORDER BY seq", [s["id"]])]
         for s in store.job_searches(job_id)], stored))  # fmt: skip


def test_a_slow_call_commits_its_event_at_once(tmp_path):
    store = Store.open(tmp_path / "slow.db")
    [problem] = job_tests._problems(store, 1)
    search = store.start_search(job_id=None, problem_id=problem, policy="p", strategy="beam", config={},
                                scorer=RandomScorer(1).fingerprint)  # fmt: skip
    events = list(_events())
    writer = search_job.JournalWriter(store, search["id"], 0, seconds=0.0)  # every call slower than 0 s
    for event in events[:3]:
        writer.add(event)
        assert writer.waiting == []
    writer = search_job.JournalWriter(store, search["id"], 3, seconds=3600.0, events=2)
    writer.add(events[3])
    assert len(writer.waiting) == 1 and len(store.search_events(search["id"])) == 3
    writer.add(events[4])  # the second waiting one: committed with the first
    assert writer.waiting == [] and len(store.search_events(search["id"])) == 5 and writer.commits == 1


def _events():
    from core.search.journal import Journal

    seen = []
    journal_runs = run_search(PROBLEM, SteppedPolicy([0.6] * 3), RandomScorer(1),
                              SearchConfig(strategy="beam", n=4, beam_width=2, max_steps=3, seed=1),
                              on_event=seen.append)  # fmt: skip
    assert journal_runs.nodes and Journal  # the events a job would store
    return seen


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
@pytest.mark.parametrize("batch", [1, 3, None])  # events per commit; None: nothing committed until the search ends
def test_a_search_job_killed_with_its_last_batch_unwritten_resumes_to_the_identical_tree(tmp_path, monkeypatch,
                                                                                         strategy, batch):  # fmt: skip
    """A kill -9 runs no `except` and no `finally`: the events waiting in the writer are lost, and
    resuming makes their calls again, to the same results."""
    monkeypatch.setattr(search_job, "JOURNAL_COMMIT_SECONDS", float("inf"))
    monkeypatch.setattr(search_job, "JOURNAL_COMMIT_EVENTS", batch or 10**9)
    spec = {"strategy": strategy, "expansions": 5}
    whole = Store.open(tmp_path / "whole.db")
    whole_job = job_tests.queue(whole, job_tests._spec(job_tests._problems(whole), **spec))
    uninterrupted = job_tests.CrashingEngine(SteppedPolicy([0.6] * 3))
    assert job_tests._run(whole, uninterrupted, whole_job) == "done"

    monkeypatch.setattr(search_job.JournalWriter, "close", lambda self: None)  # nothing written on the way out
    killed = Store.open(tmp_path / "killed.db")
    killed_job = job_tests.queue(killed, job_tests._spec(job_tests._problems(killed), **spec))
    total = uninterrupted.calls
    crash_at = max(1, (2 * total) // 3)
    with pytest.raises(KeyboardInterrupt):
        job_tests._run(killed, job_tests.CrashingEngine(SteppedPolicy([0.6] * 3), crash_at=crash_at), killed_job)
    resumed = job_tests.CrashingEngine(SteppedPolicy([0.6] * 3))
    assert job_tests._run(killed, resumed, killed_job) == "done"
    assert job_tests._stored_tree(killed, killed_job) == job_tests._stored_tree(whole, whole_job)
    if batch == 1:
        assert resumed.calls == total - crash_at  # every event was committed as it came: no call made twice
    elif batch is None and strategy != "bon":  # bon's killed search had made no call yet
        assert resumed.calls > total - crash_at  # the lost batch's calls were made again
    spent = {k: v for k, v in killed.get_job(killed_job)["compute"].items() if not k.endswith("seconds")}
    assert spent == {k: v for k, v in whole.get_job(whole_job)["compute"].items() if not k.endswith("seconds")}


def test_the_overhead_benchmark_runs_search_jobs_on_the_tiny_model_and_compares_labels(tmp_path, tiny_model_dir):
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import search_overhead

    out = tmp_path / "after.json"
    assert search_overhead.main(["--label", "after", "--strategies", "bon,beam", "--scorers", "random", "--repeats", "1",
                                 "--problems", "1", "--model", str(tiny_model_dir), "--out", str(out)]) == 0  # fmt: skip
    run = json.loads(out.read_text())
    assert [(j["strategy"], j["scorer"]) for j in run["jobs"]] == [("bon", "random"), ("beam", "random")]
    assert len(run["warmup_jobs"]) == 2
    for job in run["jobs"]:
        assert 0 <= job["overhead_fraction"] < 1 and job["engine_seconds"] > 0 and job["engine_calls"] >= 1
        assert job["total_seconds"] <= job["wall_seconds"]
    before = tmp_path / "before.json"
    before.write_text(json.dumps({**run, "label": "before"}))
    combined = tmp_path / "combined.json"
    assert search_overhead.main(["--combine", str(before), str(out), "--out", str(combined), "--note", "smoke"]) == 0
    figures = json.loads(combined.read_text())
    assert figures["note"] == "smoke" and figures["labels"]["after"]["jobs"] == 2
    assert figures["before_vs_after"]["per_job_median"][0] == figures["before_vs_after"]["per_job_median"][1]
    assert set(figures["before_vs_after"]["by_cell_median"]) == {"bon/random", "beam/random"}
