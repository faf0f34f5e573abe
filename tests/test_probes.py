"""Probe verifiers on real hidden states (tiny model; SmolLM2 on its own sample-set solutions)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cli_runner import run_cli
from core.engines import load_engine
from core.errors import StepScopeError
from core.jobs.judge import ProbeJudgeSpec, run_judge
from core.jobs.runner import queue
from core.probes import (
    cross_fit,
    hidden_features,
    load_probe,
    outcome_examples,
    probe_text,
    step_examples,
    train_probe,
)
from core.store import Store

ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # for the CLI in a subprocess
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def sample_problems(store: Store, count: int) -> list[dict]:
    return [p for p in store.list_problems(dataset="sample") if p["meta"]["steps"] == 1][:count]


def add_marked_solutions(store: Store, problems: list[dict]) -> list[int]:
    """Per problem, solutions whose correctness flag matches their last word (Yes/No).

    The last-token hidden state of any model sees its own token, so a linear probe must
    separate these: a check that training and cross-fitting work, whatever the base model.
    """
    ids = []
    for problem in problems:
        for i, (word, correct) in enumerate((("Yes", True), ("No", False), ("Yes", True), ("No", False))):
            solution = f"The answer is {problem['gold']}.\nChecked {i}: {word}"
            ids.append(store.add_trajectory(problem["id"], solution, source="hand", correct=correct))
    return ids


def add_answer_variants(store: Store, problems: list[dict]) -> list[int]:
    """The gold answer and two wrong numbers per sample-set problem, graded by value."""
    ids = []
    for problem in problems:
        gold = int(problem["gold"])
        for value in (gold, gold + 1, gold * 2):
            ids.append(store.add_trajectory(problem["id"], f" The answer is {value}.", source="hand",
                                            correct=value == gold, final_answer=str(value)))  # fmt: skip
    return ids


def test_probe_text_is_question_and_solution_or_the_policy_prompt(tmp_path):
    store = Store.open(tmp_path / "p.db")
    [problem] = sample_problems(store, 1)
    trajectory_id = store.add_trajectory(problem["id"], " It is 15.\nThe answer is 15.", source="hand",
                                         policy_prompt="PROMPT Answer:")  # fmt: skip
    trajectory = store.get_trajectory(trajectory_id)
    text, start = probe_text(trajectory)
    assert text == f"Question: {problem['question']}\nAnswer: It is 15.\nThe answer is 15."
    assert text[start:] == trajectory["solution"]
    text, start = probe_text(trajectory, "policy-prompt")
    assert text == "PROMPT Answer: It is 15.\nThe answer is 15." and text[start:] == trajectory["solution"]


def test_probe_learns_a_visible_signal_and_never_scores_what_it_saw(tmp_path, tiny_model_dir, tiny_engine):
    store = Store.open(tmp_path / "p.db")
    ids = add_marked_solutions(store, sample_problems(store, 12))
    trained = train_probe(store, tiny_engine, str(tiny_model_dir), "outcome", ids, folds=4)
    metrics = trained.probe.manifest["metrics"]
    assert metrics["n"] == 48 and metrics["positives"] == 24 and metrics["problems"] == 12
    assert metrics["auroc"]["value"] >= 0.9
    assert metrics["auroc"]["low"] <= metrics["auroc"]["value"] <= metrics["auroc"]["high"]
    # Folds are grouped by problem: every solution of a problem is scored by the same fold's
    # probe, which was trained without any of them.
    folds = {}
    for problem, fold in zip(trained.examples.groups, trained.crossfit.folds):
        folds.setdefault(int(problem), set()).add(int(fold))
    assert all(len(f) == 1 for f in folds.values()) and len({min(f) for f in folds.values()}) == 4
    # The cross-fitted scores are stored as verdicts of the probe judge.
    name = f"probe-orm:{tiny_model_dir}"
    for trajectory_id, score in zip(trained.examples.trajectory_ids, trained.crossfit.scores):
        [verdict] = store.verdicts(int(trajectory_id), judge=name)
        assert verdict["kind"] == "outcome" and verdict["p_yes"] == pytest.approx(score)
        raw = json.loads(verdict["raw"])
        assert raw["crossfit"] is True and raw["artifact"] == trained.probe.name
        assert verdict["template_hash"] == trained.probe.sha256


def test_probe_on_sample_set_answers_reports_an_interval_and_reloads(tmp_path, tiny_model_dir, tiny_engine):
    store = Store.open(tmp_path / "p.db")
    ids = add_answer_variants(store, sample_problems(store, 16))
    trained = train_probe(store, tiny_engine, str(tiny_model_dir), "outcome", ids, folds=4, seed=3)
    folder = trained.probe.folder
    assert folder.parent == tmp_path / "verifiers" / "probe"
    assert {row["verifier_kind"] for row in trained.verdicts} == {"probe"}
    manifest = json.loads((folder / "manifest.json").read_text())
    for key in ("base", "labels", "layer", "context", "metrics", "data", "engine_info", "C", "model_sha256"):
        assert key in manifest, key
    assert manifest["labels"] == "outcome" and manifest["data"]["examples"] == 48
    auroc = manifest["metrics"]["auroc"]
    assert 0 <= auroc["low"] <= auroc["value"] <= auroc["high"] <= 1  # no target: the figure is the finding
    print(f"\ntiny-model probe on sample-set answers: cross-validated AUROC {auroc['value']:.3f} "
          f"[{auroc['low']:.3f}, {auroc['high']:.3f}]")  # fmt: skip
    with np.load(folder / "data.npz") as data:
        assert data["features"].shape == (48, 128)
        np.testing.assert_allclose(data["crossfit_scores"], trained.crossfit.scores)
    reloaded = load_probe(folder)
    X = hidden_features(store, tiny_engine, trained.examples)
    np.testing.assert_allclose(reloaded.predict(X), trained.probe.predict(X), rtol=1e-6)


def test_process_probes_train_on_mc_and_human_step_labels(tmp_path, tiny_model_dir, tiny_engine):
    store = Store.open(tmp_path / "p.db")
    problems = sample_problems(store, 8)
    ids = add_answer_variants(store, problems)
    rollouts = []
    for trajectory_id in ids:
        trajectory = store.get_trajectory(trajectory_id)
        for step in store.steps(trajectory_id):
            rollouts += [{"step_id": step["id"], "text": "x", "correct": trajectory["correct"] and i < 3, "model": "p"}
                         for i in range(4)]  # fmt: skip
            store.save_annotation("ann", step["id"], rating=1 if trajectory["correct"] else -1)
    store.add_rollouts(rollouts)
    soft = step_examples(store, ids, "mc-soft", policy="p")
    assert sorted(set(soft.labels.tolist())) == [0.0, 0.75]
    for labels in ("mc-soft", "mc-hard", "human"):
        trained = train_probe(store, tiny_engine, str(tiny_model_dir), labels, ids, folds=3, policy="p")
        assert trained.probe.judge == f"probe-prm-{labels}:{tiny_model_dir}"
        verdicts = store.verdicts(ids[0], judge=trained.probe.judge)
        assert verdicts and all(v["kind"] == "step" and v["step_id"] is not None for v in verdicts)


def test_probe_judge_job_scores_new_trajectories_and_keeps_cross_fitted_scores(tmp_path, tiny_model_dir, tiny_engine):
    """Issue 24: judging the trajectories a probe was trained on keeps their cross-fitted
    verdicts (none in-sample is stored over them), and the pages read those."""
    store = Store.open(tmp_path / "p.db")
    problems = sample_problems(store, 10)
    ids = add_answer_variants(store, problems[:8])
    trained = train_probe(store, tiny_engine, str(tiny_model_dir), "outcome", ids, folds=4)
    crossfit = {int(t): float(p) for t, p in zip(trained.examples.trajectory_ids, trained.crossfit.scores)}
    fresh = add_answer_variants(store, problems[8:])
    job_id = queue(store, ProbeJudgeSpec(verifier=str(trained.probe.folder), trajectory_ids=(*ids, *fresh)))
    manifest = store.get_job(job_id)["manifest"]
    assert manifest["policy"] == str(tiny_model_dir) and manifest["engine"] == "transformers"
    assert run_judge(store, tiny_engine, manifest, job_id=job_id).done == 6  # the fresh ones only
    assert store.get_job(job_id)["manifest"]["kept_held_out"] == 24
    judge = trained.probe.judge
    for trajectory_id in ids:
        [verdict] = store.verdicts(trajectory_id, judge=judge)  # the cross-fitted one, nothing newer
        assert json.loads(verdict["raw"])["crossfit"] is True and verdict["in_sample"] == 0
    for trajectory_id in fresh:
        [verdict] = [v for v in store.verdicts(trajectory_id, judge=judge) if v["job_id"] == job_id]
        assert json.loads(verdict["raw"]) == {"artifact": trained.probe.name, "crossfit": False, "in_sample": False}
    # The scores Explore and Best-of-N show are the cross-fitted ones.
    shown = store.latest_outcome_p_yes([*ids, *fresh])
    assert {t: shown[t][judge] for t in ids} == pytest.approx(crossfit)
    names, matrix = store.latest_outcome_score_arrays(np.array(ids))
    np.testing.assert_allclose(matrix[:, names.index(judge)], [crossfit[t] for t in ids])


def test_an_in_sample_score_never_hides_a_cross_fitted_one(tmp_path, tiny_model_dir, tiny_engine):
    """Where an in-sample score is stored after a cross-fitted one (a probe scored without the
    job's check), every page-facing read still returns the cross-fitted score."""
    from core.probes import probe_examples_for, score_with_probe

    store = Store.open(tmp_path / "p.db")
    problems = sample_problems(store, 8)
    ids = add_answer_variants(store, problems)
    trained = train_probe(store, tiny_engine, str(tiny_model_dir), "outcome", ids, folds=4)
    crossfit = {int(t): float(p) for t, p in zip(trained.examples.trajectory_ids, trained.crossfit.scores)}
    rows = score_with_probe(store, tiny_engine, trained.probe, probe_examples_for(store, trained.probe, ids))
    assert all(row["in_sample"] for row in rows)
    store.add_verdicts(rows)
    in_sample = {row["trajectory_id"]: row["p_yes"] for row in rows}
    assert in_sample != pytest.approx(crossfit)  # the full fit's scores differ: the check can fail
    judge = trained.probe.judge
    assert [v["in_sample"] for v in store.verdicts(ids[0], judge=judge)] == [0, 1]
    shown = store.latest_outcome_p_yes(ids)
    assert {t: shown[t][judge] for t in ids} == pytest.approx(crossfit)
    names, matrix = store.latest_outcome_score_arrays(np.array(ids))
    np.testing.assert_allclose(matrix[:, names.index(judge)], [crossfit[t] for t in ids])
    # The AUROC the CLI prints is on the cross-fitted scores, none of the in-sample ones.
    items = store.preferred_verdict_outcomes(judge, "outcome", ids)
    assert sorted(p for p, _, _ in items) == pytest.approx(sorted(crossfit.values()))
    assert {flag for _, flag, _ in items} == {0}


def test_step_readers_prefer_a_not_in_sample_step_verdict_to_a_newer_in_sample_one(tmp_path):
    """Compare, PRM aggregation, Explore's disagreement filter and the exports read a verifier's
    newest verdict that is not in-sample; an in-sample one only where there is no other."""
    store = Store.open(tmp_path / "s.db")
    [problem] = sample_problems(store, 1)
    trajectory_id = store.add_trajectory(problem["id"], "Step one.\n\nStep two.", source="hand", correct=True)
    first, second = [s["id"] for s in store.steps(trajectory_id)]
    judge = "probe-prm-mc-hard:x"
    store.add_verdicts([{"judge": judge, "kind": "step", "step_id": first, "p_yes": 0.9, "raw": '{"crossfit": true}'},
                        {"judge": judge, "kind": "step", "step_id": second, "p_yes": 0.8, "in_sample": True}],
                       verifier_kind="probe")  # fmt: skip
    store.add_verdicts([{"judge": judge, "kind": "step", "step_id": first, "p_yes": 0.1, "in_sample": True},
                        {"judge": judge, "kind": "step", "step_id": second, "p_yes": 0.7, "in_sample": True}],
                       verifier_kind="probe")  # fmt: skip
    expected = {first: 0.9, second: 0.7}  # the cross-fitted one; else the newest in-sample one
    assert store.latest_step_p_yes(judge, [first, second]) == expected
    assert store.latest_step_scores(judge, [first, second]) == expected
    steps, values = store.latest_step_score_arrays(judge)
    assert dict(zip(steps.tolist(), values.tolist())) == expected
    assert [r["p_yes"] for r in store.prm_step_scores(trajectory_id, judge)[judge]] == [0.9, 0.7]
    assert store.step_scores_by_trajectory(judge) == {trajectory_id: [0.9, 0.7]}
    assert store.step_score_arrays(judge)["score"].tolist() == [0.9, 0.7]
    # Explore: a rating of -1 on the first step disagrees with the cross-fitted 0.9, not with 0.1.
    from core.store.explore import TrajectoryFilter

    store.save_annotation("ann", first, rating=-1)
    assert [t["id"] for t in store.find_trajectories(TrajectoryFilter(disagree="judge"), limit=5)] == [trajectory_id]
    # MC agreement: hard label 0 on the first step disagrees with 0.9 (it would agree with 0.1).
    store.add_rollouts([{"step_id": first, "text": "x", "correct": False, "model": "p"}])
    assert store.mc_agreement_counts(judge, "p") == (1, 0, True)


def test_in_sample_is_classified_from_raw_where_a_writer_does_not_say(tmp_path):
    """Rows inserted without the column (an imported dump; rows before migration 0011) take it
    from the writer's record in raw: `in_sample`, or the older `in_training`."""
    store = Store.open(tmp_path / "r.db")
    [problem] = sample_problems(store, 1)
    trajectory_id = store.add_trajectory(problem["id"], "The answer is 1.", source="hand", correct=True)
    raws = ['{"in_training": true}', '{"in_sample": true}', '{"in_training": false}', '{"crossfit": true}',
            "not json", '["in_sample"]', None]  # fmt: skip
    store.add_verdicts([{"judge": "orm:x", "kind": "outcome", "trajectory_id": trajectory_id, "p_yes": 0.5, "raw": raw}
                        for raw in raws], verifier_kind="orm")  # fmt: skip
    assert [v["in_sample"] for v in store.verdicts(trajectory_id)] == [1, 1, 0, 0, 0, 0, 0]


def test_a_probe_needs_both_labels(tmp_path, tiny_model_dir, tiny_engine):
    store = Store.open(tmp_path / "p.db")
    [problem] = sample_problems(store, 1)
    ids = [store.add_trajectory(problem["id"], f"No. {i}", source="hand", correct=False) for i in range(5)]
    with pytest.raises(StepScopeError, match="both kinds"):
        train_probe(store, tiny_engine, str(tiny_model_dir), "outcome", ids)
    assert len(outcome_examples(store, ids)) == 5
    with pytest.raises(StepScopeError, match="at least two problems"):
        cross_fit(np.zeros((4, 2)), np.array([1.0, 0, 1, 0]), np.zeros(4, dtype=int))


def test_cli_train_verifier_then_judge_with_it(tmp_path, tiny_model_dir):
    db = tmp_path / "cli.db"
    store = Store.open(db)
    add_marked_solutions(store, sample_problems(store, 6))
    store.close()
    trained = run_cli("train-verifier", "--base", str(tiny_model_dir), "--labels", "outcome", "--source", "hand",
                      "--folds", "3", "--device", "cpu", "--db", str(db), env=ONE_THREAD)  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert "cross-validated AUROC" in trained.stdout and "24 (12 positive) from 6 problems" in trained.stdout
    [folder] = list((tmp_path / "verifiers" / "probe").iterdir())
    judged = run_cli("judge", "--verifier", str(folder), "--source", "hand", "--device", "cpu", "--db", str(db), env=ONE_THREAD)
    assert judged.returncode == 0, judged.stderr
    # Judged on the solutions it was trained on, the probe keeps their cross-fitted scores, and the
    # AUROC is theirs (issue 24: it used to print one over in-sample scores).
    assert "0 outcome verdicts" in judged.stdout and "24 targets kept their cross-fitted score" in judged.stdout
    assert "over 24 held-out or cross-fitted solutions" in judged.stdout and "in-sample" not in judged.stdout
    listed = run_cli("verifiers", "--db", str(db), env=ONE_THREAD)
    assert "probe-orm" in listed.stdout


@pytest.mark.smollm2
@pytest.mark.slow
def test_probe_on_the_embedded_models_own_sample_set_solutions(tmp_path, smollm2_dense_dir):
    """SmolLM2 samples solutions to one-step sample problems; a probe on its own hidden states
    learns their correctness. No target: the cross-validated AUROC is printed with its interval."""
    from core.jobs.generate import run_generate
    from core.jobs.estimate import default_sampling
    from core.policy import load_template

    store = Store.open(tmp_path / "p.db")
    problems = [p["id"] for p in sample_problems(store, 12)]
    engine = load_engine("transformers", "smollm2-135m")
    try:
        run_generate(store, engine, problems, 4, "smollm2-135m", default_sampling(40), load_template(),
                     job_key="probe-test")  # fmt: skip
        ids = [t["id"] for t in store.list_trajectories(source="policy")]
        trained = train_probe(store, engine, "smollm2-135m", "outcome", ids, folds=4)
    finally:
        engine.close()
    auroc = trained.probe.manifest["metrics"]["auroc"]
    assert trained.probe.manifest["metrics"]["positives"] > 0
    assert 0 <= auroc["low"] <= auroc["value"] <= auroc["high"] <= 1
    print(f"\nSmolLM2 probe ORM on {len(ids)} own solutions: cross-validated AUROC {auroc['value']:.3f} "
          f"[{auroc['low']:.3f}, {auroc['high']:.3f}]")  # fmt: skip
