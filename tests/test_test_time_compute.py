"""Test-time compute on the Best-of-N page (issue 25): search settings aggregated set-wise
(core.store.test_time_compute), their accuracy with Wilson intervals against tokens per problem
and the policy's own samples as pass@k / majority-vote references (core.views.test_time_compute),
checked against a row-by-row hand computation; a bounded number of statements at any number of
searches; the page's section with and without searches (AppTest)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from simulated_steps import SteppedPolicy
from streamlit.testing.v1 import AppTest

from core import metrics
from core.jobs.runner import EngineCache, claim_job, queue, run_job
from core.jobs.search import SearchSpec
from core.mcpe import Counts
from core.metrics import wilson_interval
from core.search.compute import ComputeRecord
from core.search.config import SearchConfig
from core.store import Store
from core.views.test_time_compute import (
    compute_chart,
    compute_curves,
    point_rows,
    policies,
    version,
)

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # pages import pages._shared, as under `streamlit run app.py`

POLICY = "pol"
DATASET = "ttc"


# --- a small store, written through the real store API ----------------------------------------


def add_search(store: Store, problem_id: int, *, job_id: int, correct: bool, policy_tokens: int,
               scorer_tokens: int = 0, policy: str = POLICY, scorer: tuple[str, str] = ("random:1", "random"),
               finish: bool = True, **config) -> int:  # fmt: skip
    """One search of the problem as core.jobs.search stores it: started, then finished with one
    candidate (a whole solution), its final beam and the compute record."""
    settings = SearchConfig(**{"strategy": "bon", "n": 4, "seed": 1, **config})
    search = store.start_search(job_id=job_id, problem_id=problem_id, policy=policy, strategy=settings.strategy,
                                config=settings.as_manifest(), scorer={"name": scorer[0], "kind": scorer[1]})  # fmt: skip
    if not finish:
        return search["id"]
    answer = "4" if correct else "5"
    text = f"So the answer is {answer}."
    candidate = {"order": 0, "parent_order": None, "steps": [text], "depth": 1, "call": 0, "text": text,
                 "num_tokens": policy_tokens, "finish_reason": "stop", "finished": True, "score": 0.5, "rank": 0,
                 "mark": "chosen", "subtree": None, "prior": None, "visits": 0, "value_sum": 0.0}  # fmt: skip
    store.finish_search(
        search["id"], candidates=[candidate],
        beams=[{"node": 0, "solution": text, "answer": answer, "correct": correct, "score": 0.5}], rollouts=[],
        answer=answer, correct=correct, stopped="done",
        compute=ComputeRecord(policy_tokens=policy_tokens, verifier_generated_tokens=scorer_tokens).as_manifest(),
        policy_prompt="Question", delimiter="\n",
    )  # fmt: skip
    return search["id"]


def add_samples(store: Store, problem_id: int, samples: list[tuple[str | None, bool, int | None]],
                model: str = POLICY) -> None:  # fmt: skip
    """The policy's own graded solutions (answer, correct, tokens: None when the job did not say)."""
    for i, (answer, correct, tokens) in enumerate(samples):
        meta = {} if tokens is None else {"num_tokens": tokens}
        store.add_trajectory(problem_id, f"Sample {i}: the answer is {answer}.", source="policy", model=model,
                             final_answer=answer, correct=correct, meta=meta)  # fmt: skip


def seeded(path: Path) -> tuple[Store, list[int]]:
    """Four searched problems of dataset "ttc" and settings that test each rule: a rerun with another
    seed (pooled, its latest search per problem counted), another budget, another strategy and
    scorer, a search still running, another policy, another dataset; the policy's own samples."""
    store = Store.open(path)
    problems = [store.add_problem(DATASET, f"What is 2 + 2, case {i}?", "4") for i in range(5)]
    other = store.add_problem("other", "What is 2 + 2, elsewhere?", "4")
    job = lambda: store.create_job("search", {})
    first = job()
    for problem, correct, tokens in zip(problems, [True, False, True, False], [100, 120, 80, 100]):
        add_search(store, problem, job_id=first, correct=correct, policy_tokens=tokens)
    rerun = job()  # the same setting with another seed (and so another random scorer): P0 and P1 again
    for problem, correct, tokens in zip(problems, [False, True], [90, 110]):
        add_search(store, problem, job_id=rerun, correct=correct, policy_tokens=tokens, seed=2,
                   scorer=("random:2", "random"))  # fmt: skip
    larger = job()
    for problem in problems[:4]:
        add_search(store, problem, job_id=larger, correct=True, policy_tokens=200, n=8)
    beam = job()
    for problem, correct, tokens in zip(problems, [True, True, False], [200, 220, 240]):
        add_search(store, problem, job_id=beam, correct=correct, policy_tokens=tokens, scorer_tokens=50,
                   strategy="beam", n=4, beam_width=2, scorer=(f"mc:{POLICY}:k2", "mc"))  # fmt: skip
    add_search(store, problems[3], job_id=job(), correct=True, policy_tokens=10, finish=False)  # still running
    add_search(store, problems[0], job_id=job(), correct=True, policy_tokens=10, policy="another-policy")
    add_search(store, other, job_id=job(), correct=True, policy_tokens=999)  # another dataset
    add_samples(store, problems[0], [("4", True, 10), ("4", True, 20), ("5", False, 30)])
    add_samples(store, problems[1], [("7", False, 40), ("8", False, None)])
    add_samples(store, problems[2], [("4", True, 10)] * 4)
    add_samples(store, problems[3], [("4", True, 50)])  # one sample: nothing to choose between
    add_samples(store, problems[4], [("4", True, 5)] * 3)  # a problem no search searched
    add_samples(store, other, [("4", True, 5)] * 3)
    return store, problems


# --- the hand computation, row by row -----------------------------------------------------------


def hand_points(store: Store, dataset: str | None, policy: str, scorer_tokens: bool = False) -> dict:
    """(strategy, scorer, config without seed) -> (problems, correct, tokens per problem): every
    search read on its own, the latest finished one of each problem per setting kept."""
    latest: dict[tuple, dict] = {}
    for job in store.list_jobs():
        for search in store.job_searches(job["id"]):
            problem = store.get_problem(search["problem_id"])
            if search["status"] != "done" or search["policy"] != policy:
                continue
            if dataset and problem["dataset"] != dataset:
                continue
            scorer = "random" if search["scorer_kind"] == "random" else search["scorer"]
            config = tuple(sorted((k, repr(v)) for k, v in search["config"].items() if k != "seed"))
            key = (search["strategy"], scorer, config, search["problem_id"])
            if key not in latest or latest[key]["id"] < search["id"]:
                latest[key] = search
    settings: dict[tuple, list] = {}
    for (strategy, scorer, config, _), search in latest.items():
        tokens = search["compute"]["policy_tokens"]
        if scorer_tokens:
            tokens += search["compute"]["verifier_generated_tokens"]
        settings.setdefault((strategy, scorer, config), []).append((bool(search["correct"]), tokens))
    return {key: (len(rows), sum(c for c, _ in rows), sum(t for _, t in rows) / len(rows))
            for key, rows in settings.items()}  # fmt: skip


def computed_points(curves) -> dict:
    return {(p.strategy, p.scorer, p.setting): p for p in curves.points}


@pytest.mark.parametrize("scorer_tokens", [False, True])
def test_accuracy_and_tokens_equal_the_hand_computation(tmp_path, scorer_tokens):
    store, _ = seeded(tmp_path / "ttc.db")
    curves = compute_curves(store, DATASET, scorer_tokens=scorer_tokens)
    assert curves.policy == POLICY and curves.searched_problems == 4
    hand = hand_points(store, DATASET, POLICY, scorer_tokens)
    assert len(curves.points) == len(hand) == 3
    found = computed_points(curves)
    assert set(found) == {("bon", "random", "n=4"), ("bon", "random", "n=8"), ("beam", f"mc:{POLICY}:k2", "n=4, M=2")}
    for (strategy, scorer, config), (problems, correct, tokens) in hand.items():
        size = dict(config)
        label = f"n={size['n']}" + (f", M={size['beam_width']}" if strategy == "beam" else "")
        point = found[(strategy, scorer, label)]
        assert (point.problems, point.correct) == (problems, correct)
        assert point.tokens == pytest.approx(tokens) and point.accuracy == pytest.approx(correct / problems)
        assert (point.low, point.high) == wilson_interval(Counts(problems, correct))
    # The rerun replaced P0 and P1 of the first job: 2 of 4 right, (90 + 110 + 80 + 100) / 4 tokens.
    pooled = found[("bon", "random", "n=4")]
    assert (pooled.problems, pooled.correct, pooled.tokens, pooled.searches) == (4, 2, 95.0, 6)
    beam = found[("beam", f"mc:{POLICY}:k2", "n=4, M=2")]
    assert beam.tokens == (270.0 if scorer_tokens else 220.0) and beam.scorer_generated_tokens == 50.0
    # Without the dataset filter the other dataset's search joins the first setting.
    everywhere = computed_points(compute_curves(store, None, POLICY))[("bon", "random", "n=4")]
    assert (everywhere.problems, everywhere.correct) == (5, 3)
    assert policies(store, DATASET) == [POLICY, "another-policy"]
    assert [p.policy for p in compute_curves(store, DATASET, "another-policy").points] == ["another-policy"]


def test_references_are_pass_at_k_and_majority_vote_of_the_policys_samples(tmp_path):
    store, _ = seeded(tmp_path / "ttc.db")
    curves = compute_curves(store, DATASET)
    # Searched problems with two or more samples: P0 (3), P1 (2), P2 (4); P3 has one, P4 was not searched.
    groups = [(["4", "4", "5"], [True, True, False]), (["7", "8"], [False, False]), (["4"] * 4, [True] * 4)]
    assert (curves.reference_problems, curves.largest_k) == (3, 2)
    per_sample = (20 + 40 + 10) / 3  # each problem's mean tokens (P1: the one that says), then their mean
    assert curves.samples_per_problem == pytest.approx(per_sample)
    found = {(r.reference, r.k): r for r in curves.references}
    assert set(found) == {(name, k) for name in ("pass@k", "majority vote") for k in (1, 2)}
    for k in (1, 2):
        passes = [metrics.pass_at_k(len(c), sum(c), k) for _, c in groups]
        votes = [metrics.majority_vote(a, c, k) for a, c in groups]
        assert found[("pass@k", k)].value == pytest.approx(sum(passes) / 3)
        assert found[("majority vote", k)].value == pytest.approx(sum(votes) / 3)
        assert found[("pass@k", k)].tokens == pytest.approx(k * per_sample) and found[("pass@k", k)].problems == 3
    assert curves.note is None


def test_no_references_without_samples_says_how_to_get_them(tmp_path):
    store = Store.open(tmp_path / "bare.db")
    problem = store.add_problem(DATASET, "2 + 2?", "4")
    add_search(store, problem, job_id=store.create_job("search", {}), correct=True, policy_tokens=40)
    curves = compute_curves(store, DATASET)
    assert [(p.problems, p.correct, p.tokens, p.low, p.high) for p in curves.points] == [
        (1, 1, 40.0, *wilson_interval(Counts(1, 1)))]
    assert not curves.references and "stepscope generate" in curves.note
    assert compute_curves(store, "nothing-here").points == [] and compute_curves(store, "nothing-here").policy is None


def test_the_chart_has_a_log_token_axis_strategy_colours_scorer_shapes_and_reference_lines(tmp_path):
    store, _ = seeded(tmp_path / "ttc.db")
    curves = compute_curves(store, DATASET)
    spec = compute_chart(curves)
    layers = spec["layer"]
    assert all(layer["encoding"]["x"]["scale"] == {"type": "log"} for layer in layers)
    marks = [layer["mark"]["type"] for layer in layers]
    assert marks == ["rule", "line", "point", "line"]
    assert layers[0]["encoding"]["y2"]["field"] == "high" and layers[2]["encoding"]["shape"]["field"] == "scorer"
    assert layers[2]["encoding"]["color"]["field"] == "strategy" and layers[3]["encoding"]["strokeDash"]["field"] == "reference"
    # three settings (error bars, lines, points), two references at two k each
    assert [len(layer["data"]["values"]) for layer in layers] == [3, 3, 3, 4]
    assert {r["scorer"] for r in point_rows(curves)} == {"random", f"mc:{POLICY}:k2"}


def test_a_real_search_job_is_read_as_it_stored_its_searches(tmp_path):
    """Searches as `stepscope search` stores them (the simulated stepped policy): the point is the
    job's searches, their graded answers and their compute records."""
    store = Store.open(tmp_path / "job.db")
    problems = tuple(store.add_problem(DATASET, f"What is the number, case {i}?", "42") for i in range(3))
    spec = SearchSpec(policy="simulated-steps", problem_ids=problems, scorer="random",
                      config=SearchConfig(strategy="bon", n=3, max_steps=3, seed=5))  # fmt: skip
    job_id = queue(store, spec)
    status = run_job(store, claim_job(store, job_id, stale_after=0),
                     EngineCache(loader=lambda *args, **kwargs: SteppedPolicy([0.7] * 3)))  # fmt: skip
    assert status == "done"
    searches = store.job_searches(job_id)
    [point] = compute_curves(store, DATASET).points
    assert (point.strategy, point.scorer, point.setting, point.problems) == ("bon", "random", "n=3", 3)
    assert point.correct == sum(bool(s["correct"]) for s in searches)
    tokens = [s["compute"]["policy_tokens"] for s in searches]
    assert point.tokens == pytest.approx(sum(tokens) / 3) and all(t > 0 for t in tokens)
    assert sum(tokens) == store.get_job(job_id)["compute"]["policy_tokens"]


def test_the_view_runs_a_bounded_number_of_statements(tmp_path):
    """The same statements for 8 searches as for 32 (and for 4 samples a problem as for 7)."""
    counted = []
    for size in (1, 4):
        store = Store.open(tmp_path / f"count-{size}.db")
        problems = [store.add_problem(DATASET, f"2 + {i}?", str(2 + i)) for i in range(4 * size)]
        for n, strategy in ((4, "bon"), (8, "bon")):
            job = store.create_job("search", {})
            for i, problem in enumerate(problems):
                add_search(store, problem, job_id=job, correct=i % 3 == 0, policy_tokens=10 * n + i, n=n,
                           strategy=strategy)  # fmt: skip
        for i, problem in enumerate(problems):
            add_samples(store, problem, [(str(j % 2), j % 2 == 0, 7 + j) for j in range(3 + size)])
        statements: list[str] = []
        store.conn.set_trace_callback(statements.append)
        version(store)
        policies(store, DATASET)
        curves = compute_curves(store, DATASET, POLICY)
        compute_chart(curves)
        store.conn.set_trace_callback(None)
        assert len(curves.points) == 2 and curves.references
        counted.append(len(statements))
        store.close()
    assert counted[0] == counted[1] <= 6, counted


# --- the page ----------------------------------------------------------------------------------


def page(db: Path) -> AppTest:
    at = AppTest.from_file(str(REPO / "pages" / "best_of_n.py"), default_timeout=60)
    at.session_state["db_path"] = str(db)
    at.session_state["policy_model"] = "tiny-policy"
    return at


def test_the_page_says_how_to_create_searches_when_there_are_none(tmp_path, monkeypatch):
    db = tmp_path / "data" / "empty.db"
    monkeypatch.setenv("STEPSCOPE_DB", str(db))
    at = page(db)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert [h.value for h in at.header] == ["Test-time compute"]
    empty = [i.value for i in at.info if "No finished searches yet" in i.value]
    assert empty and "stepscope search" in empty[0] and "Search page" in empty[0]


def test_the_page_draws_the_section_with_searches_and_filters_by_dataset(tmp_path, monkeypatch):
    db = tmp_path / "data" / "ttc.db"
    monkeypatch.setenv("STEPSCOPE_DB", str(db))
    seeded(db)
    at = page(db)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert "Test-time compute" in [h.value for h in at.header]
    assert at.selectbox(key="ttc_policy").value == POLICY
    frame = at.dataframe[-1].value
    assert len(frame) == 3 and set(frame["strategy"]) == {"bon", "beam"}
    assert sorted(frame["problems"]) == [3, 4, 5]  # any dataset: the other dataset's search joins bon n=4
    charts = [json.loads(chart.proto.spec) for chart in at.get("vega_lite_chart")]
    assert charts and charts[-1]["layer"][0]["encoding"]["x"]["scale"] == {"type": "log"}
    at.selectbox(key="bon_dataset").set_value(DATASET).run()
    assert not at.exception, [e.message for e in at.exception]
    assert sorted(at.dataframe[-1].value["problems"]) == [3, 4, 4]
    assert "3 settings over 4 problems searched; references over 3 of them, k up to 2." in [t.value for t in at.text]
    at.checkbox(key="ttc_scorer_tokens").check().run()
    frame = at.dataframe[-1].value
    assert set(frame.loc[frame["strategy"] == "beam", "tokens / problem"]) == {270.0}
    at.selectbox(key="ttc_policy").set_value("another-policy").run()
    assert len(at.dataframe[-1].value) == 1
    assert any("No references" in t.value for t in at.text)
