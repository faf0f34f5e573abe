"""Issue 24 (items 5 and 6): Best-of-N on any sample set, Compare without human labels, and a
deep link that always opens its trajectory.

- Best-of-N reranks imported solutions: GSM8K's model solutions (one per model and problem, so
  reranked as a whole source) and a jsonl file's (a source and a model with several per problem);
- Compare measures an automatic source against another one (a judge against MC hard) on the steps
  both labelled, with the same figures as against an annotator who gave exactly those labels;
- Explore opens a linked trajectory far beyond the first LIST_LIMIT listed.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core import metrics
from core.formats import import_file
from core.store import Store
from core.views import best_of_n as bon
from core.views import compare as cmp
from core.views.explore import LIST_LIMIT, keeps_current
from core.views.prm import curves_with_weighted_vote, step_level_rows, threshold_choice

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # pages import pages._shared, as under `streamlit run app.py`

MODELS = ("175b_verification", "6b_verification", "175b_finetune", "6b_finetune")
IMPORTED = "model-solutions"  # core.formats.model_solutions' source
OUTCOME_JUDGE = "oj"
STEP_JUDGE = "jj"
POLICY = "mc-pol"


# --- stores built through the batch import path ---------------------------------------------------


def write_model_solutions(path: Path, problems: int, seed: int = 24) -> Path:
    """GSM8K's example_model_solutions.jsonl in shape: a question, a ground truth ending `#### n`,
    and one solution per model (its answer right about half the time), as one file."""
    rng = random.Random(seed)
    lines = []
    for p in range(problems):
        gold = p % 89 + 3
        line = {"question": f"Question {p}: Ann has {gold - 1} apples and finds one more. How many now?",
                "ground_truth": f"Ann has {gold - 1} + 1 = {gold} apples.\n#### {gold}"}  # fmt: skip
        for model in MODELS:
            answer = gold if rng.random() < 0.5 else gold + rng.choice([1, 2])
            line[model] = {"solution": f"She starts with {gold - 1} apples.\nThen {gold - 1} + 1 = {answer}.\n#### {answer}",
                           "is_correct": answer == gold}  # fmt: skip
        lines.append(json.dumps(line))
    path.write_text("\n".join(lines) + "\n")
    return path


def imported_store(db: Path, problems: int = 12) -> Store:
    """Model solutions imported (4 models x `problems`, plus a reference solution each), with an
    outcome judge's verdicts on every model solution (written as one batch)."""
    store = Store.open(db)
    import_file(store, write_model_solutions(db.parent / "model_solutions.jsonl", problems), "model-solutions")
    add_outcome_verdicts(store)
    return store


def add_outcome_verdicts(store: Store, seed: int = 7) -> None:
    rng = random.Random(seed)
    rows = store.conn.execute(
        "SELECT id, correct FROM trajectories WHERE source = ? ORDER BY id", [IMPORTED]).fetchall()
    store.add_verdicts([{"trajectory_id": tid, "judge": OUTCOME_JUDGE, "kind": "outcome",
                         "p_yes": round((0.55 if ok else 0.25) + 0.4 * rng.random(), 6)} for tid, ok in rows])  # fmt: skip


def add_step_sources(store: Store, trajectories: int, seed: int = 11) -> dict:
    """On the first `trajectories` model solutions: the policy's MC rollouts on every step but the
    last of each (a judge-only step), and a step judge's verdict on every step but the first of the
    first solution (an MC-only step). Returns what was written, by step id."""
    rng = random.Random(seed)
    ids = [r[0] for r in store.conn.execute(
        "SELECT id FROM trajectories WHERE source = ? ORDER BY id LIMIT ?", [IMPORTED, trajectories])]
    rollouts, verdicts, written = [], [], {"mc": {}, "judge": {}}
    for t, tid in enumerate(ids):
        steps = store.steps(tid)
        for k, step in enumerate(steps):
            if k < len(steps) - 1:
                outcomes = [rng.random() < 0.5 for _ in range(3)]
                rollouts += [{"step_id": step["id"], "text": " so", "correct": ok, "model": POLICY} for ok in outcomes]
                written["mc"][step["id"]] = outcomes
            if not (t == 0 and k == 0):
                p_yes = round(rng.random(), 6)
                verdicts.append({"trajectory_id": tid, "step_id": step["id"], "judge": STEP_JUDGE, "kind": "step",
                                 "p_yes": p_yes})  # fmt: skip
                written["judge"][step["id"]] = p_yes
    store.add_rollouts(rollouts)
    store.add_verdicts(verdicts, verifier_kind="judge")
    return written


@pytest.fixture
def db(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "data" / "any-source.db"
    path.parent.mkdir()
    monkeypatch.setenv("STEPSCOPE_DB", str(path))
    return path


def page(name: str, db: Path, **state) -> AppTest:
    at = AppTest.from_file(str(REPO / "pages" / f"{name}.py"), default_timeout=60)
    at.session_state["db_path"] = str(db)
    at.session_state["policy_model"] = POLICY
    for key, value in state.items():
        at.session_state[key] = value
    return at


def no_exceptions(at: AppTest) -> None:
    assert not at.exception, [e.message for e in at.exception]


# --- Best-of-N on any sample set ------------------------------------------------------------------


def test_sample_sets_offer_imported_solutions_as_a_whole_source_and_a_model_with_several(db):
    store = imported_store(db, problems=6)
    # A jsonl file: source "sampled", model "m" with three solutions per problem on two problems.
    lines = [{"question": f"Jsonl question {p}?", "gold": "4", "solution": f"Try {i}.\nSo {a}.", "source": "sampled",
              "model": "m", "final_answer": a, "correct": a == "4"}
             for p in range(2) for i, a in enumerate(["4", "5", "4"])]  # fmt: skip
    (db.parent / "sampled.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    import_file(store, db.parent / "sampled.jsonl", "jsonl")
    problem = store.add_problem("own", "2 + 2?", "4")
    for answer in ("4", "5"):
        store.add_trajectory(problem, f"So {answer}.", source="policy", model="pol", final_answer=answer,
                             correct=answer == "4")  # fmt: skip
    sets = bon.sample_sets(store)
    # One solution per model and problem, and one reference solution per problem: nothing to
    # choose between there; the imported source as a whole has four per problem.
    assert [s.key for s in sets] == [("policy", "pol"), (IMPORTED, None), ("sampled", "m")]
    assert [(s.problems, s.solutions) for s in sets] == [(1, 2), (6, 24), (2, 6)]
    assert sets[1].describe() == f"{IMPORTED} · every model (6 problems, 24 solutions)"
    assert [s.key for s in bon.sample_sets(store, "gsm8k")] == [(IMPORTED, None)]
    assert bon.sample_set_of(sets, ("sampled", "m")).solutions == 6
    # Solutions that name no model are a set of their source as a whole.
    (db.parent / "anonymous.jsonl").write_text("".join(json.dumps(
        {"question": "Anonymous question?", "gold": "1", "solution": f"Guess {a}.", "source": "anonymous",
         "final_answer": a, "correct": a == "1"}) + "\n" for a in ("1", "2")))  # fmt: skip
    import_file(store, db.parent / "anonymous.jsonl", "jsonl")
    assert bon.sample_set_of(bon.sample_sets(store), ("anonymous", None)).solutions == 2
    assert len(bon.sample_table(store, None, source="anonymous").trajectory_id) == 2
    table = bon.sample_table(store, "m", source="sampled")
    assert len(table.trajectory_id) == 6 and set(table.correct.tolist()) == {True, False}


def test_best_of_n_reranks_imported_solutions_with_an_outcome_judge(db):
    store = imported_store(db, problems=12)
    table = bon.sample_table(store, None, source=IMPORTED)
    groups = bon.samples_by_problem(store, None, source=IMPORTED)
    sources = dict(store.conn.execute("SELECT id, source FROM trajectories").fetchall())
    assert {sources[int(t)] for t in table.trajectory_id} == {IMPORTED}  # never the reference solutions
    assert len(table.trajectory_id) == 48 and table.verifiers == (OUTCOME_JUDGE,)
    points, largest = curves_with_weighted_vote(table, None, [OUTCOME_JUDGE], [OUTCOME_JUDGE])
    assert largest == 4
    value = {(p.method, p.k): p.value for p in points}
    # pass@1 is the mean correctness; best-of-4 the correctness of each problem's top-scored one.
    expected_pass1 = np.mean([np.mean([s.correct for s in samples]) for samples in groups.values()])
    top = [max(samples, key=lambda s: s.scores[OUTCOME_JUDGE]).correct for samples in groups.values()]
    assert value[("pass@k", 1)] == pytest.approx(expected_pass1)
    assert value[(f"best-of-k: {OUTCOME_JUDGE}", 4)] == pytest.approx(np.mean(top))
    assert value[(f"best-of-k: {OUTCOME_JUDGE}", 4)] > value[("pass@k", 1)]  # the judge ranks right ones higher
    assert (f"weighted vote: {OUTCOME_JUDGE}", 4) in value
    # The objects path (for tests and small data) gives the same curves.
    assert [(p.method, p.k, p.value) for p in bon.curves(groups, None, [OUTCOME_JUDGE])[0]] == \
        [(p.method, p.k, p.value) for p in bon.curves(table, None, [OUTCOME_JUDGE])[0]]  # fmt: skip


def test_best_of_n_page_offers_and_reranks_an_imported_set(db):
    store = imported_store(db, problems=8)
    problem = store.add_problem("own", "2 + 2?", "4")
    for i, answer in enumerate(("4", "5", "4")):
        store.add_trajectory(problem, f"Try {i}: so {answer}.", source="policy", model="pol", final_answer=answer,
                             correct=answer == "4")  # fmt: skip
    at = page("best_of_n", db)
    at.run()
    no_exceptions(at)
    picker = at.selectbox(key="bon_set")
    assert picker.options == ["policy · pol (1 problem, 3 solutions)", f"{IMPORTED} · every model (8 problems, 32 solutions)"]
    assert set(at.dataframe[0].value["method"]) == {"pass@k", "majority vote"}  # the policy's: no outcome judge
    picker.set_value((IMPORTED, None)).run()
    no_exceptions(at)
    frame = at.dataframe[0].value
    assert {f"best-of-k: {OUTCOME_JUDGE}", f"weighted vote: {OUTCOME_JUDGE}"} <= set(frame["method"])
    assert list(frame["k"].unique()) == [1, 2, 4] and frame["problems"].max() == 8
    assert any("8 problems with at least 4 solutions" in t.value for t in at.text)


def test_best_of_n_page_without_any_set_says_what_to_do(db):
    store = Store.open(db)
    problem = store.add_problem("one", "1 + 1?", "2")
    store.add_trajectory(problem, "So 2.", source="handwritten", final_answer="2", correct=True)
    at = page("best_of_n", db)
    at.run()
    no_exceptions(at)
    assert "No policy solutions yet" in at.info[0].value and "model-solutions" in at.info[0].value


# --- Compare without human labels -----------------------------------------------------------------


def test_reference_steps_are_the_automatic_sources_labels_on_every_step_it_labelled(db):
    store = imported_store(db, problems=4)
    written = add_step_sources(store, 6)
    steps = cmp.reference_steps(store, "mc-hard", POLICY)
    assert steps.automatic and steps.annotators == ("mc-hard",)
    assert sorted(steps.step_id.tolist()) == sorted(written["mc"])
    order = [(int(t), int(i)) for t, i in zip(steps.trajectory_id, steps.idx)]
    assert order == sorted(order)  # by trajectory and position
    assert steps.ratings[:, 0].tolist() == [1 if any(written["mc"][int(s)]) else -1 for s in steps.step_id]
    soft = cmp.reference_steps(store, "mc-soft", POLICY, threshold=0.6)
    assert soft.ratings[:, 0].tolist() == [1 if np.mean(written["mc"][int(s)]) >= 0.6 else -1 for s in soft.step_id]
    judged = cmp.reference_steps(store, f"judge:{STEP_JUDGE}", POLICY)
    assert sorted(judged.step_id.tolist()) == sorted(written["judge"])
    assert len(cmp.reference_steps(store, "mc-hard", POLICY, dataset="no-such-dataset")) == 0


def test_a_judge_against_mc_hard_without_humans(db):
    store = imported_store(db, problems=4)
    written = add_step_sources(store, 6)
    steps = cmp.reference_steps(store, "mc-hard", POLICY)
    result = cmp.compare(store, steps, f"judge:{STEP_JUDGE}", "mc-hard", POLICY)
    both = [s for s in steps.step_id.tolist() if s in written["judge"]]
    reference = [any(written["mc"][s]) for s in both]
    scores = [written["judge"][s] for s in both]
    judged = [p >= 0.5 for p in scores]
    assert (result.n, result.missing) == (len(both), len(written["mc"]) - len(both)) and result.missing == 1
    assert result.accuracy == pytest.approx(metrics.accuracy(reference, judged))
    assert result.kappa.value == pytest.approx(metrics.cohen_kappa(reference, judged).value)
    assert result.auroc == pytest.approx(metrics.auroc(reference, scores))
    assert result.automatic_reference and result.reference == "mc-hard"
    assert result.disagreement_count == sum(r != j for r, j in zip(reference, judged))
    assert set(result.disagreements[0]) == {"trajectory", "step", "reference", "automatic", "score", "explore"}
    # And the other way round: MC hard (its value as the score) against the judge.
    back = cmp.compare(store, cmp.reference_steps(store, f"judge:{STEP_JUDGE}", POLICY), "mc-hard",
                       f"judge:{STEP_JUDGE}", POLICY)  # fmt: skip
    assert back.n == result.n and back.accuracy == pytest.approx(result.accuracy)


def test_an_automatic_reference_gives_the_figures_of_an_annotator_who_gave_its_labels(db):
    """The old-vs-new check: the set-wise human path, long checked against the row-by-row code
    (tests/test_compare_at_scale.py), on an annotator whose ratings are exactly MC hard's labels."""
    store = imported_store(db, problems=6)
    written = add_step_sources(store, 12)
    for step_id, outcomes in written["mc"].items():
        store.add_annotation("mirror", step_id, rating=1 if any(outcomes) else -1)
    automatic = cmp.reference_steps(store, "mc-hard", POLICY)
    human = cmp.labelled_steps(store)
    assert human.step_id.tolist() == automatic.step_id.tolist()
    for source in (f"judge:{STEP_JUDGE}", "mc-soft"):
        for threshold in (0.5, 0.3):
            a = cmp.compare(store, automatic, source, "mc-hard", POLICY, threshold)
            h = cmp.compare(store, human, source, "mirror", POLICY, threshold)
            assert (a.n, a.missing, a.accuracy, a.auroc, a.confusion, a.ece) == (h.n, h.missing, h.accuracy, h.auroc,
                                                                                  h.confusion, h.ece)  # fmt: skip
            assert a.kappa == h.kappa and a.by_position == h.by_position and a.processbench == h.processbench
            assert a.calibration == h.calibration and a.disagreement_count == h.disagreement_count
            assert [{("human" if k == "reference" else k): v for k, v in d.items()} for d in a.disagreements] == \
                h.disagreements  # fmt: skip
    assert threshold_choice(store, automatic, f"judge:{STEP_JUDGE}", "mc-hard") == \
        threshold_choice(store, human, f"judge:{STEP_JUDGE}", "mirror")  # fmt: skip
    rows = step_level_rows(store, automatic, "mc-hard", POLICY)
    assert {r["source"] for r in rows} == {"mc-soft", "mc-hard", f"judge:{STEP_JUDGE}"}
    assert next(r for r in rows if r["source"] == "mc-hard")["accuracy"] == 1.0


def test_reference_names_offer_humans_first_then_every_other_source():
    sources = ["mc-soft", "mc-hard", "judge:jj", "prm:pp"]
    assert cmp.reference_names(sources, [], "judge:jj") == ["mc-soft", "mc-hard", "prm:pp"]
    assert cmp.reference_names(sources, ["alice"], "mc-soft") == ["majority", "consensus", "alice", "mc-hard",
                                                                  "judge:jj", "prm:pp"]  # fmt: skip
    # An annotator who happens to be called mc-hard is the human, not the source.
    assert cmp.reference_names(sources, ["mc-hard"], "mc-soft").count("mc-hard") == 1
    assert cmp.is_human_reference("mc-hard", ["mc-hard"]) and not cmp.is_human_reference("mc-hard", ["alice"])
    assert cmp.is_human_reference("majority", [])


def test_compare_page_measures_a_judge_against_mc_hard_without_human_labels(db):
    store = imported_store(db, problems=4)
    written = add_step_sources(store, 6)
    both = sum(1 for s in written["mc"] if s in written["judge"])
    at = page("compare", db)
    at.run()
    no_exceptions(at)
    assert "No human labels yet" in at.info[0].value
    at.selectbox(key="cmp_source").set_value(f"judge:{STEP_JUDGE}").run()
    assert at.selectbox(key="cmp_human").options == ["mc-soft", "mc-hard"]
    at.selectbox(key="cmp_human").set_value("mc-hard").run()
    no_exceptions(at)
    figures = {m.label: m.value for m in at.metric}
    expected = cmp.compare(store, cmp.reference_steps(store, "mc-hard", POLICY), f"judge:{STEP_JUDGE}", "mc-hard", POLICY)
    assert figures["Steps compared"] == str(both) == str(expected.n)
    assert figures["Accuracy"] == f"{expected.accuracy:.2f}" and figures["AUROC"] == f"{expected.auroc:.2f}"
    assert not [s for s in at.subheader if s.value in ("Agreement between annotators", "Human latents")]
    assert not [r for r in at.radio if r.key == "cmp_which"]  # first or final human labels: none to choose
    # MC soft against MC hard: the threshold applies, and the unit is a step with rollouts.
    at.selectbox(key="cmp_source").set_value("mc-soft").run()
    at.selectbox(key="cmp_human").set_value("mc-hard").run()
    no_exceptions(at)
    assert {m.label: m.value for m in at.metric}["Steps compared"] == str(len(written["mc"]))
    assert not at.slider(key="cmp_threshold").disabled


# --- Explore: a deep link beyond the listed trajectories ------------------------------------------


def test_keeps_current():
    assert keeps_current(5, {1, 2}, linked=True, filters_changed=True)
    assert keeps_current(5, {1, 2}, linked=False, filters_changed=False)  # a first visit, N / P
    assert not keeps_current(5, {1, 2}, linked=False, filters_changed=True)
    assert keeps_current(2, {1, 2}, linked=False, filters_changed=True)
    assert not keeps_current(None, {1, 2}, linked=True, filters_changed=False)


def test_explore_deep_link_opens_a_trajectory_beyond_the_listed_ones(db):
    store = imported_store(db, problems=(LIST_LIMIT + 50) // 5 + 1)
    total = store.count_trajectories()
    target = total - 3
    assert target > LIST_LIMIT
    question = store.get_trajectory(target)["question"]
    at = page("explore", db)
    at.query_params["trajectory"] = str(target)
    at.run()
    no_exceptions(at)
    assert at.session_state["explore_tid"] == target
    assert at.selectbox(key="ex_pick").value == target
    assert any(f"trajectory \\#{target}" in c.value for c in at.caption)
    assert any(question.split(":")[0] in m.value for m in at.markdown)
    # A later change of filters still moves off it when they no longer list it.
    at.selectbox(key="ex_correct").set_value("correct").run()
    no_exceptions(at)
    assert at.session_state["explore_tid"] != target or store.get_trajectory(target)["correct"]
