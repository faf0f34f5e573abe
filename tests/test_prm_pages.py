"""PRMs on the pages (issue 11): Explore's step cards and chart, Compare's PRM source with
ProcessBench F1's two parts and the threshold chosen on held-out problems, Best-of-N's
aggregation picker and weighted majority vote; and the view models behind them."""

from __future__ import annotations

import json


from core import metrics
from core.jobs.prm_score import prm_score_spec
from core.jobs.runner import EngineCache, claim_job, queue, run_job
from core.prm import prm_step_scores
from core.store import Store
from core.views.charts import THRESHOLD_CHART_TITLE
from core.views.prm import choose_threshold, first_error_at
from test_app_pages import db, no_exceptions, page, seeded, texts  # noqa: F401 (db is a fixture)
from tiny_prm import build_token_classification_prm

# A name that does not say "PRM": the kind is data the writer gives (core.store.verifiers), and every
# page must treat these scores as a PRM's, never as a judge's P(yes).
PRM = "tiny"
PRM_SOURCE = f"prm:{PRM}"


def charts(at) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("vega_lite_chart")]


def chart_datasets(at, index: int = 0) -> dict:
    """A chart's named datasets: Streamlit moves them out of the spec into Arrow tables."""
    import pyarrow as pa

    proto = at.get("vega_lite_chart")[index].proto
    return {d.name: pa.ipc.open_stream(d.data.data).read_pandas().to_dict("records") for d in proto.datasets}


def metric_values(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


# --- Explore: a real prm-score job on a tiny PRM --------------------------------------------


def test_explore_shows_a_prm_in_the_step_cards_and_on_the_chart(db, tmp_path, one_torch_thread):
    store = seeded(db)
    prm_dir = build_token_classification_prm(tmp_path / "prm")
    spec = prm_score_spec(str(prm_dir), [1], family="token-classification", name=PRM, engine_options={"device": "cpu"})
    job_id = queue(store, spec)
    assert run_job(store, claim_job(store, job_id), EngineCache()) == "done", store.get_job(job_id)["error"]
    scores = [row["p_yes"] for row in prm_step_scores(store, 1, PRM)[PRM]]
    assert scores and all(0 < s < 1 for s in scores)
    at = page("explore", db, explore_tid=1)
    at.run()
    no_exceptions(at)
    shown = [t for t in texts(at) if t.startswith(f"{PRM}: PRM score")]
    assert shown == [f"{PRM}: PRM score {s:.2f}" for s in scores]  # one line per step card, in order
    assert not any(t.startswith(f"{PRM}: P(yes)") for t in texts(at))  # not shown as a judge
    datasets = chart_datasets(at)
    assert datasets["prm"] == [{"step": i, "prm": PRM, "score": s} for i, s in enumerate(scores)]
    assert "verdicts" not in datasets or datasets["verdicts"] == []


# --- Compare: PRM verdicts and human labels, problems on both sides of the split -------------


# (split, human ratings per step, PRM scores per step): the human's first error is the first -1.
COMPARE_CASES = [
    ("train", (1, 1, -1), (0.9, 0.8, 0.35)),
    ("train", (1, 1, 1), (0.9, 0.7, 0.6)),
    ("train", (1, -1, -1), (0.8, 0.2, 0.1)),
    ("test", (1, 1, 1), (0.95, 0.45, 0.8)),
    ("test", (1, -1, 1), (0.7, 0.3, 0.9)),
]


def compare_store(db) -> Store:
    store = seeded(db)
    for i, (split, ratings, prm_scores) in enumerate(COMPARE_CASES):
        problem = store.add_problem("prm-compare", f"What is {i} + 1?", str(i + 1), meta={"split": split})
        trajectory = store.add_trajectory(problem, f"First {i}.\nSecond {i}.\nSo {i + 1}.", source="policy",
                                          model="pol", final_answer=str(i + 1), correct=True)  # fmt: skip
        for step, rating, score in zip(store.steps(trajectory), ratings, prm_scores):
            store.save_annotation("alice", step["id"], rating=rating)
            store.add_verdicts([{"trajectory_id": trajectory, "step_id": step["id"], "judge": PRM, "kind": "step",
                                 "p_yes": score}], verifier_kind="prm")  # fmt: skip
    return store


def expected_threshold_choice():
    """Independently: the first step below t is the predicted first error; F1 on the train cases."""
    gold = [next((i for i, r in enumerate(ratings) if r < 0), -1) for _, ratings, _ in COMPARE_CASES]
    def f1(split, t):
        chosen = [(g, s) for (sp, _, s), g in zip(COMPARE_CASES, gold) if sp == split]
        return metrics.processbench_f1([next((i for i, x in enumerate(s) if x < t), -1) for _, s in chosen],
                                       [g for g, _ in chosen])  # fmt: skip
    return f1


def test_compare_offers_a_prm_with_its_threshold_chosen_on_held_out_problems(db):
    compare_store(db)
    at = page("compare", db)
    at.run()
    no_exceptions(at)
    assert PRM_SOURCE in at.selectbox(key="cmp_source").options
    at.selectbox(key="cmp_source").set_value(PRM_SOURCE).run()
    at.selectbox(key="cmp_human").set_value("alice").run()
    no_exceptions(at)
    shown = metric_values(at)
    # At the slider's 0.5: ProcessBench's two parts over all five trajectories, shown apart.
    f1 = expected_threshold_choice()
    gold = [next((i for i, r in enumerate(ratings) if r < 0), -1) for _, ratings, _ in COMPARE_CASES]
    at_half = metrics.processbench_f1([first_error_at(s, 0.5) for _, _, s in COMPARE_CASES], gold)
    assert shown["Accuracy on erroneous"] == f"{at_half.error_accuracy:.2f}"
    assert shown["Accuracy on correct"] == f"{at_half.correct_accuracy:.2f}"
    assert shown["ProcessBench F1"] == f"{at_half.f1:.2f}"
    # The threshold: best train-split F1 (train cases are perfect for 0.35 < t <= 0.6; 0.5 is nearest).
    chosen = float(shown["Chosen threshold (train problems)"])
    assert f1("train", chosen).f1 == 1.0 and chosen == 0.5
    assert shown["Held-out F1"] == f"{f1('test', chosen).f1:.2f}"
    assert shown["Held-out accuracy on erroneous"] == f"{f1('test', chosen).error_accuracy:.2f}"
    assert any(c.get("title") == THRESHOLD_CHART_TITLE for c in charts(at))
    assert any(f"MC-agreement labels with {PRM_SOURCE}" in c.value.replace("\\", "") for c in at.caption)  # none: says why


def test_choose_threshold_picks_on_train_and_reports_on_test():
    cases = [{"split": "train", "gold": 1, "scores": [0.9, 0.3]}, {"split": "train", "gold": -1, "scores": [0.9, 0.7]},
             {"split": "test", "gold": -1, "scores": [0.65, 0.9]}]  # fmt: skip
    choice = choose_threshold(cases, thresholds=[0.2, 0.5, 0.8])
    assert choice.threshold == 0.5  # 0.2 misses the error, 0.8 calls the clean one wrong
    assert (choice.train.f1, choice.test.correct_accuracy, choice.test.error_accuracy) == (1.0, 1.0, None)
    assert choice.trajectories == {"train": 2, "test": 1}
    assert {(r["threshold"], r["split"]) for r in choice.rows} == {(t, s) for t in (0.2, 0.5, 0.8) for s in ("train", "test")}
    assert choose_threshold([c for c in cases if c["gold"] == -1]).threshold is None  # F1 needs both kinds


# --- Best-of-N: the aggregation picker changes the curves ------------------------------------


# (answer, correct, PRM step scores): min picks "5" (wrong), mean picks "4" (right).
SAMPLES = [("4", True, (0.9, 0.2)), ("5", False, (0.4, 0.5)), ("6", False, (0.3, 0.3))]


def at_k(frame, k: int) -> dict:
    """Best-of-N's curve table: method -> value at k."""
    return {m: v for m, kk, v in zip(frame["method"], frame["k"], frame["value"]) if kk == k}


def add_scored_samples(store: Store) -> None:
    """The policy's SAMPLES of one problem, each step with its PRM verdict."""
    problem = store.add_problem("bon", "2 + 2?", "4")
    for answer, correct, step_scores in SAMPLES:
        trajectory = store.add_trajectory(problem, f"Adding.\nThe answer is {answer}.", source="policy", model="pol",
                                          final_answer=answer, correct=correct)  # fmt: skip
        store.add_verdicts([{"trajectory_id": trajectory, "step_id": step["id"], "judge": PRM, "kind": "step",
                             "p_yes": score} for step, score in zip(store.steps(trajectory), step_scores)],
                           verifier_kind="prm")  # fmt: skip


def test_best_of_n_aggregation_picker_changes_the_prm_curves(db):
    store = seeded(db)
    add_scored_samples(store)
    at = page("best_of_n", db)
    at.run()
    no_exceptions(at)
    assert at.multiselect(key="bon_aggregations").value == ["min"]

    def at_k3(frame):
        return at_k(frame, 3)

    values = at_k3(at.dataframe[0].value)
    assert values[f"best-of-k: {PRM} · min"] == 0.0 and values[f"weighted vote: {PRM} · min"] == 0.0
    at.multiselect(key="bon_aggregations").set_value(["mean", "product"]).run()
    no_exceptions(at)
    values = at_k3(at.dataframe[0].value)
    assert f"best-of-k: {PRM} · min" not in values
    assert values[f"best-of-k: {PRM} · mean"] == 1.0 and values[f"weighted vote: {PRM} · mean"] == 1.0
    assert values[f"best-of-k: {PRM} · product"] == 0.0  # products 0.18, 0.20, 0.09: "5"
    assert at.dataframe[1].value["type"].tolist() == ["PRM (mean)", "PRM (product)"]


# --- a PRM under a name of the user's choosing is a PRM everywhere ----------------------------


def test_prm_scores_stored_under_any_name_show_as_a_prm_everywhere(db, tmp_path):
    """`stepscope prm score --name foo`: the kind is stored with the name, so Explore, Compare and
    Best-of-N treat foo as a PRM although nothing in the name says so; a judge can't take the name."""
    from cli_runner import run_cli

    store = seeded(db)
    problem = store.add_problem("bon", "2 + 2?", "4")
    ids = [store.add_trajectory(problem, f"Adding.\nThe answer is {answer}.", source="policy", model="pol",
                                final_answer=answer, correct=correct)
           for answer, correct, _ in SAMPLES]  # fmt: skip
    prm_dir = build_token_classification_prm(tmp_path / "prm")
    result = run_cli("prm", "score", "--prm", str(prm_dir), "--family", "token-classification", "--name", "foo",
                     "--dataset", "bon", "--device", "cpu", "--db", str(db), env={"OMP_NUM_THREADS": "1"})  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert store.verifier_kinds() == {"foo": "prm"}
    for step in store.steps(ids[0]):
        store.save_annotation("alice", step["id"], rating=1)

    explore = page("explore", db, explore_tid=ids[0])
    explore.run()
    no_exceptions(explore)
    assert [t for t in texts(explore) if t.startswith("foo: PRM score")]
    assert not [t for t in texts(explore) if t.startswith("foo: P(yes)")]
    compare = page("compare", db)
    compare.run()
    no_exceptions(compare)
    assert "prm:foo" in compare.selectbox(key="cmp_source").options
    assert "judge:foo" not in compare.selectbox(key="cmp_source").options
    best = page("best_of_n", db)
    best.run()
    no_exceptions(best)
    assert best.multiselect(key="bon_aggregations").value == ["min"]  # offered only when a PRM is stored
    assert at_k(best.dataframe[0].value, 3)["best-of-k: foo · min"] is not None

    refused = run_cli("judge", "--judge", "tiny-model", "--name", "foo", "--kind", "step", "--trajectories", "1",
                      "--db", str(db))  # fmt: skip
    assert refused.returncode != 0 and "'foo' already names a prm verifier" in refused.stderr
    assert len(store.list_jobs()) == 1 and store.verifier_kinds() == {"foo": "prm"}
