"""Fine-tuned outcome reward models (core/orm_training.py, the train-orm and orm-score jobs) on the
tiny model: they learn a separable task and are judged on problems they never saw; the split is
by problem; bad input fails with one clear message."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cli_runner import assert_one_line_error, run_cli
from core.errors import StepScopeError
from core.jobs.orm_score import OrmScoreSpec
from core.jobs.runner import EngineCache, claim_job, queue, run_job
from core.jobs.train_orm import TrainOrmSpec
from core.orm_training import list_orms
from core.splits import problem_split, question_split, split_trajectories
from core.store import Store
from core.synth import write_synth
from core.views.best_of_n import curves, judges_of, samples_by_problem, verifier_info
from core.views.jobs import queue_judging, trained_verifiers

ONE_THREAD = {"OMP_NUM_THREADS": "1"}
# A tiny random model needs a larger step than a pretrained one to move in a few dozen steps.
TINY_TRAINING = {"epochs": 6.0, "learning_rate": 1e-3, "batch_size": 8}
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def add_marked_problems(store: Store, count: int, dataset: str = "toy") -> list[int]:
    """`count` problems, four solutions each, correct exactly when the last word is Yes: a task
    any model that reads the last token can separate."""
    ids = []
    for p in range(count):
        problem_id = store.add_problem(dataset, f"What is {p} + {p + 7}?", str(2 * p + 7))
        for i, (word, correct) in enumerate((("Yes", True), ("No", False), ("Yes", True), ("No", False))):
            ids.append(store.add_trajectory(problem_id, f"{p} + {p + 7} = {2 * p + 7}.\nChecked {i}: {word}",
                                            source="policy", model="toy", correct=correct))  # fmt: skip
    return ids


def run(store: Store, spec) -> dict:
    job_id = queue(store, spec)
    status = run_job(store, claim_job(store, job_id), EngineCache())
    job = store.get_job(job_id)
    assert status == "done", job["error"]
    return job


def test_the_split_is_by_problem_from_meta_or_question_hash(tmp_path):
    store = Store.open(tmp_path / "s.db")
    counts = write_synth(store, "synth", (1, 2), 40, seed=5)
    assert counts["train"] and counts["test"]
    ids = [t["id"] for t in store.list_trajectories(dataset="synth")]
    ids += add_marked_problems(store, 12)
    # The same question in another dataset: the hash of the question decides, so the same side.
    copy = store.add_problem("toy-copy", "What is 3 + 10?", "13")
    ids.append(store.add_trajectory(copy, "3 + 10 = 13.\nChecked: Yes", source="policy", correct=True))
    split = split_trajectories(store, ids)
    assert set(split.problems["train"]).isdisjoint(split.problems["test"])
    assert sorted(split.train + split.test) == sorted(ids)
    for side, trajectory_ids in (("train", split.train), ("test", split.test)):
        for trajectory_id in trajectory_ids:
            assert trajectory_id not in (split.test if side == "train" else split.train)
            assert store.get_trajectory(trajectory_id)["problem_id"] in split.problems[side]
    for problem in store.list_problems(dataset="synth"):
        assert problem_split(problem) == problem["meta"]["split"]
    assert split.sources == {"meta": 40, "hash": 13}
    assert question_split("What is 3 + 10?") == problem_split(store.get_problem(copy))
    toy_sides = {problem_split(p) for p in store.list_problems(dataset="toy")}
    assert toy_sides == {"train", "test"}  # 12 questions: both sides drawn (fixed hashes)
    with pytest.raises(StepScopeError, match="test fraction is between 0 and 1"):
        split_trajectories(store, ids, test_fraction=1.0)


def test_trained_verifiers_are_found_in_this_layout_and_the_old_one(tmp_path):
    from core.verifier_folders import verifier_folder, verifier_folders, write_manifest

    store = Store.open(tmp_path / "f.db")
    new = verifier_folder(store, "orm", "orm-owner/model name")
    assert new == tmp_path / "verifiers" / "orm" / "orm-owner-model-name"
    for folder in (new, tmp_path / "orms" / "old", tmp_path / "prms" / "sorm", tmp_path / "verifiers" / "probe-old"):
        write_manifest(folder, {"judge": folder.name})
    (tmp_path / "orms" / "no-manifest").mkdir()
    assert verifier_folders(store, "orm") == [new, tmp_path / "orms" / "old"]
    assert verifier_folders(store, "prm") == [tmp_path / "prms" / "sorm"]
    assert verifier_folders(store, "probe") == [tmp_path / "verifiers" / "probe-old"]
    with pytest.raises(StepScopeError, match="kind is one of probe, orm, prm"):
        verifier_folder(store, "judge", "x")
    store.close()


def test_a_finetuned_orm_learns_a_separable_task_on_problems_it_never_saw(tmp_path, tiny_model_dir):
    store = Store.open(tmp_path / "orm.db")
    ids = add_marked_problems(store, 16)
    output = tmp_path / "orms" / "tiny"  # the layout before verifiers/orm/: still listed
    job = run(store, TrainOrmSpec(base=str(tiny_model_dir), trajectory_ids=tuple(ids), output=str(output),
                                  engine_options={"device": "cpu"}, **TINY_TRAINING))  # fmt: skip
    manifest = json.loads((output / "manifest.json").read_text())
    split = manifest["split"]
    assert set(split["train_problems"]).isdisjoint(split["test_problems"]) and split["test_problems"]
    assert manifest["data_hash"] and manifest["base"] == str(tiny_model_dir) and manifest["training"]["steps"] > 0
    test = manifest["metrics"]["test"]
    print(f"\ntiny fine-tuned ORM, marked task: test-split AUROC {test['auroc']['value']:.3f} "
          f"({test['n']} solutions of {test['problems']} problems)")  # fmt: skip
    assert test["auroc"]["value"] > 0.9
    assert test["problems"] == len(split["test_problems"]) and job["manifest"]["metrics"] == manifest["metrics"]
    # Verdicts: exactly the test split's solutions, none of the train split's.
    judge = f"orm:{tiny_model_dir}"
    for trajectory_id in split["test_trajectories"]:
        [verdict] = store.verdicts(trajectory_id, judge=judge)
        assert json.loads(verdict["raw"]) == {"artifact": "tiny", "split": "test", "in_sample": False}
        assert verdict["in_sample"] == 0
    assert all(not store.verdicts(t, judge=judge) for t in split["train_trajectories"])
    # Scoring with the folder later, queued as Explore and Jobs and data queue it (the folder is
    # offered among the trained verifiers): new solutions are scored, trained ones flagged, none twice.
    assert trained_verifiers(store) == {str(output): judge}
    fresh = add_marked_problems(store, 2, dataset="fresh")
    targets = (split["train_trajectories"][0], split["test_trajectories"][0], *fresh)
    [scored_id] = queue_judging(store, [], [], [str(output)], targets)
    assert run_job(store, claim_job(store, scored_id), EngineCache()) == "done"
    scored = store.get_job(scored_id)
    assert scored["kind"] == "orm-score"
    assert scored["manifest"]["judge"] == judge
    [trained_one] = store.verdicts(targets[0], judge=judge)
    # Its score on a solution it trained on is in-sample (there is no held-out one to keep): marked,
    # so that a page prefers any held-out verdict; the test split's is held-out.
    assert json.loads(trained_one["raw"])["in_sample"] is True and trained_one["in_sample"] == 1
    assert scored["manifest"]["kept_held_out"] == 0
    assert [v["in_sample"] for v in store.verdicts(targets[1], judge=judge)] == [0, 0]
    assert [v["job_id"] for v in store.verdicts(targets[1], judge=judge)] == [job["id"], scored["id"]]
    assert store.verdicts(targets[1], judge=judge)[1]["p_yes"] == pytest.approx(store.verdicts(targets[1], judge=judge)[0]["p_yes"], abs=1e-4)
    fresh_scores = [store.verdicts(t, judge=judge)[0]["p_yes"] for t in fresh]
    fresh_correct = [store.get_trajectory(t)["correct"] for t in fresh]
    assert min(p for p, c in zip(fresh_scores, fresh_correct) if c) > max(p for p, c in zip(fresh_scores, fresh_correct) if not c)
    assert [o["judge"] for o in list_orms(store)] == [judge]
    # Best-of-N on the test split: the ORM reranks, and says which base it was trained on.
    groups = samples_by_problem(store, "toy", "toy", split="test")
    assert sorted(groups) == sorted(split["test_problems"]) and judges_of(groups) == [judge]
    [info] = verifier_info(store, [judge])
    assert (info.type, info.base) == ("fine-tuned ORM", str(tiny_model_dir))
    points, _ = curves(groups, verifiers=[judge])
    at_4 = {p.method: p.value for p in points if p.k == 4}
    assert at_4[f"best-of-k: {judge}"] == pytest.approx(1.0) and at_4["pass@k"] == pytest.approx(1.0)
    assert not [p for p in curves(groups, verifiers=[])[0] if p.method.startswith("best-of-k")]
    store.close()
    best_of_n_page(tmp_path / "orm.db", judge, str(tiny_model_dir))


def best_of_n_page(db, judge: str, base: str) -> None:
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(Path(__file__).parent.parent / "pages" / "best_of_n.py"), default_timeout=60)
    at.session_state["db_path"] = str(db)
    at.run()
    at.selectbox(key="bon_split").set_value("test split").run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.multiselect[0].value == [judge]
    curves_frame, verifiers_frame = at.dataframe[0].value, at.dataframe[1].value
    assert f"best-of-k: {judge}" in set(curves_frame["method"])
    assert verifiers_frame.to_dict("records") == [{"judge": judge, "type": "fine-tuned ORM", "base": base}]
    at.multiselect[0].set_value([]).run()
    assert not [m for m in at.dataframe[0].value["method"] if m.startswith("best-of-k")] and len(at.dataframe) == 1


def test_random_init_takes_the_architecture_not_the_weights(tmp_path, tiny_model_dir):
    from safetensors.torch import load_file

    store = Store.open(tmp_path / "orm.db")
    ids = add_marked_problems(store, 12)
    output = tmp_path / "orms" / "floor"
    run(store, TrainOrmSpec(base=f"random-init:{tiny_model_dir}", trajectory_ids=tuple(ids), output=str(output),
                            engine_options={"device": "cpu"}, epochs=1.0, batch_size=8))  # fmt: skip
    [listed] = list_orms(store)
    assert listed["judge"] == f"orm:random-init:{tiny_model_dir}" and listed["random_init"] is True
    assert listed["architecture"] == str(tiny_model_dir) and listed["base_fingerprint"].startswith("random-init(seed=0):")
    base = load_file(str(tiny_model_dir / "model.safetensors"))
    trained = load_file(str(output / "model.safetensors"))
    # The embeddings are frozen during training: a difference means they were drawn afresh.
    name = "model.embed_tokens.weight"
    assert base[name].shape == trained[name].shape and not np.allclose(base[name].float().numpy(), trained[name].numpy())


def test_bad_input_is_one_clear_error(tmp_path, tiny_model_dir):
    store = Store.open(tmp_path / "orm.db")
    ids = add_marked_problems(store, 8)
    everything_right = [t for t in ids if store.get_trajectory(t)["correct"]]
    spec = TrainOrmSpec(base=str(tiny_model_dir), trajectory_ids=tuple(everything_right), output=str(tmp_path / "o"),
                        engine_options={"device": "cpu"})  # fmt: skip
    job_id = queue(store, spec)
    assert run_job(store, claim_job(store, job_id), EngineCache()) == "failed"
    assert "an ORM needs right and wrong solutions" in store.get_job(job_id)["error"]
    for bad, match in (
        ({"base": "random-init:"}, "random-init:MODEL names the model"),
        ({"engine": "vllm"}, "ORMs train on the transformers engine"),
        ({"test_fraction": 0.0}, "test fraction is between 0 and 1"),
        ({"context": "everything"}, "context is one of"),
        ({"trajectory_ids": ()}, "no trajectories to train on"),
    ):
        with pytest.raises(StepScopeError, match=match):
            queue(store, TrainOrmSpec(**{"base": str(tiny_model_dir), "trajectory_ids": tuple(ids), "output": "o", **bad}))
    with pytest.raises(StepScopeError, match="not a trained verifier's folder"):
        queue(store, OrmScoreSpec(verifier=str(tmp_path / "nowhere"), trajectory_ids=tuple(ids)))
    store.close()
    db = str(tmp_path / "orm.db")
    result = run_cli("train-verifier", "--kind", "orm-tuned", "--db", db, env=ONE_THREAD)
    assert_one_line_error(result, "verifier kind is one of orm-finetune, orm-probe")
    result = run_cli("train-verifier", "--kind", "orm-finetune", "--labels", "mc-hard", "--base", str(tiny_model_dir),
                     "--db", db, env=ONE_THREAD)  # fmt: skip
    assert_one_line_error(result, "a fine-tuned ORM learns outcome labels")


def test_cli_trains_an_orm_lists_it_and_judges_with_it(tmp_path, tiny_model_dir):
    db = tmp_path / "cli.db"
    store = Store.open(db)
    add_marked_problems(store, 12)
    store.close()
    common = ("--db", str(db), "--device", "cpu")
    trained = run_cli("train-verifier", "--kind", "orm-finetune", "--base", str(tiny_model_dir), "--source", "policy",
                      "--epochs", "2", "--learning-rate", "1e-3", *common, env=ONE_THREAD)  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "test-split AUROC" in trained.stdout and "train problems" in trained.stdout
    [folder] = list((tmp_path / "verifiers" / "orm").iterdir())  # the default folder
    listed = run_cli("verifiers", "--db", str(db), env=ONE_THREAD)
    assert "orm-finetune" in listed.stdout and f"orm:{tiny_model_dir}"[:20] in listed.stdout
    judged = run_cli("judge", "--verifier", str(folder), "--source", "policy", *common, env=ONE_THREAD)
    assert judged.returncode == 0, judged.stderr[-3000:]
    assert "48 outcome verdicts" in judged.stdout and "AUROC vs final-answer correctness" in judged.stdout
    # Issue 24: the AUROC is over the test split's (held-out) scores; the train split's in-sample
    # ones are counted and left out.
    split = json.loads((folder / "manifest.json").read_text())["split"]
    assert f"over {len(split['test_trajectories'])} held-out or cross-fitted solutions" in judged.stdout
    assert f"{len(split['train_trajectories'])} in-sample scores" in judged.stdout
