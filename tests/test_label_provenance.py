"""Labels that say where they came from (issue 24, item 1): MC labels sampled, implied by the
first-error search, or implied by the graded outcome; exports and PRM training take implied
labels by default and count them; a one-class training set is refused in one line; `human`
(every annotator) reads a 0 rating as right in exports as in training."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from cli_runner import assert_one_line_error, run_cli
from core.errors import StepScopeError
from core.formats import ProvenanceTally, export_file, parse_label_source
from core.formats.labels import mc_labels
from core.store import Store

ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def _trajectory(store: Store, i: int, lines: int, correct: bool | None) -> list[int]:
    problem = store.add_problem("prov", f"Problem {i}: what is {i} + 1?", str(i + 1))
    solution = "\n".join(f"Step {k} of {i}." for k in range(lines))
    trajectory = store.add_trajectory(problem, solution, source="test", rule="line", correct=correct)
    return [s["id"] for s in store.steps(trajectory)]


def _rollouts(store: Store, step_id: int, n: int, correct: int, model: str = "policy") -> None:
    store.add_rollouts({"step_id": step_id, "text": f"r{k}", "correct": k < correct, "model": model}
                       for k in range(n))  # fmt: skip


@pytest.fixture()
def searched(tmp_path):
    """What a first-error search leaves behind, and two trajectories that test its edges:
    A correct, never sampled; B wrong, step 1 reached (1 of 4), step 2 not (0 of 4), steps 0, 3,
    4 unsampled; C wrong and not monotone (0 of 4 at step 0, 1 of 4 at step 2); D ungraded."""
    store = Store.open(tmp_path / "prov.db")
    a = _trajectory(store, 0, 3, True)
    b = _trajectory(store, 1, 5, False)
    _rollouts(store, b[1], 4, 2)
    _rollouts(store, b[2], 4, 0)
    c = _trajectory(store, 2, 3, False)
    _rollouts(store, c[0], 4, 0)
    _rollouts(store, c[2], 4, 1)
    d = _trajectory(store, 3, 2, None)
    yield store, {"a": a, "b": b, "c": c, "d": d}
    store.close()


def _read(store, ids, spec, **kw):
    found = mc_labels(store, ids, parse_label_source(spec) if isinstance(spec, str) else spec, **kw)
    return found.label_list(), found.provenance_list(), [None if r == 0 else r for r in found.rule.tolist()]


def test_mc_hard_labels_say_whether_they_were_sampled_or_implied(searched):
    store, ids = searched
    labels, provenance, _ = _read(store, ids["a"], "mc-hard")
    assert labels == [True] * 3 and provenance == ["implied-by-outcome"] * 3
    found = mc_labels(store, ids["b"], parse_label_source("mc-hard"))
    assert found.label_list() == [True, True, False, False, False]
    assert found.provenance_list() == ["implied-by-search", "sampled", "sampled", "implied-by-search",
                                       "implied-by-outcome"]  # fmt: skip
    from core.formats.labels import RULE_NAMES

    assert [RULE_NAMES[r] for r in found.rule.tolist()] == ["before-reached", None, None, "after-first-error",
                                                              "outcome-wrong"]  # fmt: skip
    assert found.n.tolist() == [0, 4, 4, 0, 0] and found.correct.tolist() == [0, 2, 0, 0, 0]
    # Step 1 of C is after a failed step and before a reached one: the data break the search's
    # assumption there, so it says nothing; an ungraded, unsampled trajectory says nothing either.
    labels, provenance, _ = _read(store, ids["c"], "mc-hard")
    assert labels == [False, None, True] and provenance == ["sampled", None, "sampled"]
    assert _read(store, ids["d"], "mc-hard")[0] == [None, None]
    # The steps of several trajectories at once, in any order, read the same (one query).
    mixed = ids["b"][::-1] + ids["a"]
    assert _read(store, mixed, "mc-hard")[0] == [False, False, False, True, True, True, True, True]


def test_sampled_only_and_mc_soft_take_what_they_can_stand_behind(searched):
    from dataclasses import replace

    store, ids = searched
    only = replace(parse_label_source("mc-hard"), sampled_only=True)
    assert _read(store, ids["a"], only)[0] == [None] * 3
    assert _read(store, ids["b"], only)[0] == [None, True, False, None, None]
    # mc-soft: an implied unreachable step has value 0; an implied reachable one has no fraction.
    found = mc_labels(store, ids["b"], parse_label_source("mc-soft:0.5"))
    assert found.label_list() == [None, True, False, False, False]
    assert found.values[1] == 0.5 and np.isnan(found.values[0])
    assert _read(store, ids["a"], "mc-soft:0.5")[0] == [None] * 3
    # Another policy's rollouts are not this policy's evidence.
    assert _read(store, ids["b"], "mc-hard", policy="other")[1][1:3] == [None, None]


def test_exports_take_implied_labels_and_mark_them(searched, tmp_path):
    store, _ = searched
    tally = ProvenanceTally()
    out = tmp_path / "trl.jsonl"
    written = export_file(store, "trl", out, labels="mc-hard", tally=tally)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert written == len(rows) == 3  # A (correct, never sampled), B, and C's first step
    by_prompt = {row["prompt"].split(":")[0]: row for row in rows}
    assert by_prompt["Problem 0"]["labels"] == [True] * 3
    assert by_prompt["Problem 0"]["provenance"] == ["implied-by-outcome"] * 3
    b = by_prompt["Problem 1"]
    assert b["provenance"][0] == "implied-by-search"
    assert b["provenance_rule"] == ["before-reached", "own-rollouts", "own-rollouts", "after-first-error",
                                    "outcome-wrong"]  # fmt: skip
    assert b["rollouts"] == [0, 4, 4, 0, 0] and b["rollouts_reached"] == [0, 2, 0, 0, 0]
    assert by_prompt["Problem 2"]["labels"] == [False]  # cut before its unlabelled step
    counts = tally.as_dict()
    assert counts["sampled"] == 3 and counts["implied-by-search"] == 2 and counts["implied-by-outcome"] == 4
    assert counts["rules"] == {"outcome-correct": 3, "outcome-wrong": 1, "before-reached": 1, "after-first-error": 1}
    summary = tally.summary()
    assert "3 sampled" in summary and "implied-by-outcome (outcome-correct 3, outcome-wrong 1)" in summary
    # --sampled-only: the never-sampled correct solution is left out, B starts unlabelled.
    written = export_file(store, "trl", out, labels="mc-hard", sampled_only=True)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["prompt"].split(":")[0] for row in rows] == ["Problem 2"]
    # ProcessBench: the correct solution is there, label -1, every step's provenance given.
    out = tmp_path / "pb.jsonl"
    export_file(store, "processbench", out, labels="mc-hard")
    records = {r["problem"].split(":")[0]: r for r in map(json.loads, out.read_text().splitlines())}
    assert records["Problem 0"]["label"] == -1 and records["Problem 0"]["provenance"] == ["implied-by-outcome"] * 3
    assert records["Problem 1"]["label"] == 2 and len(records["Problem 1"]["provenance"]) == 3
    assert records["Problem 1"]["rollouts"] == [0, 4, 4]
    # Math-Shepherd carries the same columns beside its tagged text.
    out = tmp_path / "ms.jsonl"
    export_file(store, "math-shepherd", out, labels="mc-hard")
    first = json.loads(out.read_text().splitlines()[0])
    assert first["provenance"] == ["implied-by-outcome"] * 3 and first["provenance_rule"] == ["outcome-correct"] * 3
    # Parquet keeps the column; both files load with `datasets`.
    export_file(store, "trl", tmp_path / "trl.jsonl", labels="mc-hard")
    export_file(store, "trl-parquet", tmp_path / "trl.parquet", labels="mc-hard")
    datasets = pytest.importorskip("datasets")
    for kind, path in (("json", tmp_path / "trl.jsonl"), ("parquet", tmp_path / "trl.parquet")):
        loaded = datasets.load_dataset(kind, data_files=str(path), split="train", cache_dir=str(tmp_path / "hf"))
        assert set(loaded.column_names) == {"prompt", "completions", "labels", "provenance", "provenance_rule",
                                            "rollouts", "rollouts_reached"}  # fmt: skip
        assert len(loaded) == 3 and sorted(map(len, loaded["provenance_rule"])) == [1, 3, 5]


def test_human_without_a_name_pools_every_annotator_and_counts_neutral_as_right(tmp_path):
    from core.prm_training import step_labels

    store = Store.open(tmp_path / "human.db")
    steps = _trajectory(store, 0, 3, False)
    store.add_annotation("ann", steps[0], rating=0)  # neutral: right, as PRM800K counts it
    store.add_annotation("ann", steps[1], rating=1)
    store.add_annotation("ann", steps[2], rating=-1, first_error=True)
    store.add_annotation("bob", steps[0], rating=0)
    store.add_annotation("bob", steps[1], rating=-1, first_error=True)
    out = tmp_path / "human.jsonl"
    assert export_file(store, "trl", out, labels="human") == 1
    [row] = map(json.loads, out.read_text().splitlines())
    # More than half say right: step 0 (both neutral) yes, step 1 (a tie) no, step 2 no.
    assert row["labels"] == [True, False, False] and "provenance" not in row
    export_file(store, "trl", out, labels="human:ann")
    assert json.loads(out.read_text())["labels"] == [True, True, False]
    # Training reads the same ratings: the share of annotators who say right.
    [trajectory] = store.list_trajectories(dataset="prov")
    labels = step_labels(store, [trajectory["id"]], "human")
    assert [label for _, label in labels.by_trajectory[trajectory["id"]]] == [1.0, 0.5, 0.0]
    # human:NAME, the grammar's spelling, is one annotator in training as in exports.
    named = step_labels(store, [trajectory["id"]], "human:ann")
    assert [label for _, label in named.by_trajectory[trajectory["id"]]] == [1.0, 1.0, 0.0]
    with pytest.raises(StepScopeError, match="name two annotators"):
        step_labels(store, [trajectory["id"]], "human:ann", annotator="bob")
    result = run_cli("export", "trl", str(out), "--labels", "human", "--db", str(store.path))
    assert result.returncode == 0 and "wrote 1 records" in result.stdout, result.stderr
    store.close()


def test_training_refuses_one_class_and_warns_on_a_small_heldout_set(searched):
    from core.prm_training import OneClassLabels, check_two_classes, heldout_warning, step_labels

    store, _ = searched
    correct = [t["id"] for t in store.list_trajectories(dataset="prov") if t["correct"]]
    labels = step_labels(store, correct, "mc-hard")
    assert labels.provenance["implied-by-outcome"] == 3 and labels.targets() == [1.0] * 3
    with pytest.raises(OneClassLabels, match=r"all 3 mc-hard step labels are right"):
        check_two_classes(labels.targets(), "mc-hard step labels")
    everything = [t["id"] for t in store.list_trajectories(dataset="prov")]
    assert sorted(set(step_labels(store, everything, "mc-hard").targets())) == [0.0, 1.0]
    small = heldout_warning({"heldout_problems": 2, "heldout_steps": 9, "heldout_positives": 7})
    assert "2 problems, 7 positive and 2 negative examples" in small
    assert heldout_warning({"heldout_problems": 40, "heldout_steps": 400, "heldout_positives": 200}) is None


# --- the flow of issue 24's first check, through the real CLI -------------------------------------


def _model_solutions(path: Path, problems: int) -> Path:
    """GSM8K-style model solutions: per problem a correct 3-line solution and a wrong 5-line one
    (a binary search over its 4 undecided steps samples at most 3 of them)."""
    rows = []
    for i in range(problems):
        a, b = 3 + i, 7
        rows.append({
            "question": f"Ann has {a} boxes of {b} pens. How many pens does she have?",
            "ground_truth": f"She has {a} * {b} = <<{a}*{b}={a * b}>>{a * b} pens.\nA: {a * b}",
            "good": {"is_correct": True, "solution": f"{a} boxes of {b} pens.\n{a} * {b} = {a * b}\nA: {a * b}"},
            "bad": {"is_correct": False, "solution": f"{a} boxes and {b} pens.\nWe add them.\n{a} + {b} = {a + b}\n"
                                                     f"That is all.\nA: {a + b}"},
        })  # fmt: skip
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_first_error_estimate_export_and_training_flow(tmp_path, tiny_model_dir):
    db = str(tmp_path / "flow.db")
    common = ("--db", db, "--source", "model-solutions")
    result = run_cli("import", str(_model_solutions(tmp_path / "solutions.jsonl", 8)), "--format", "model-solutions",
                     "--dataset", "flow", "--db", db)  # fmt: skip
    assert result.returncode == 0, result.stderr
    result = run_cli("estimate", "--policy", str(tiny_model_dir), "--strategy", "first-error", "--n", "4",
                     "--round-size", "4", "--max-new-tokens", "8", "--device", "cpu", *common,
                     env=ONE_THREAD)  # fmt: skip
    assert result.returncode == 0, result.stderr
    store = Store.open(db)
    trajectories = store.list_trajectories(source="model-solutions")
    right = [t["id"] for t in trajectories if t["correct"]]
    assert len(right) == 8 and len(trajectories) == 16
    # The search sampled no step of a correct solution: before issue 24 they had no mc-hard label.
    steps = [s["id"] for t in right for s in store.steps(t)]
    assert sum(n for n, _ in store.step_value_counts(steps).values()) == 0

    out = tmp_path / "flow.jsonl"
    result = run_cli("export", "trl", str(out), "--labels", "mc-hard", "--dataset", "flow", "--db", db)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    keys = {store.get_trajectory(t)["question"] for t in right}
    correct_rows = [row for row in rows if all(row["labels"]) and row["completions"][-1].startswith("A: ")
                    and row["prompt"] in keys and "implied-by-outcome" in row["provenance"]]  # fmt: skip
    assert len(correct_rows) >= 8, rows  # the correct solutions (and the reference ones) are exported
    assert all(set(row["provenance"]) <= {"sampled", "implied-by-search", "implied-by-outcome"} for row in rows)
    [counted] = [line for line in result.stdout.splitlines() if line.startswith("labels: ")]
    kinds = {kind: int(n) for n, kind in re.findall(r"(\d+) (sampled|implied-by-search|implied-by-outcome)", counted)}
    sampled, by_search, by_outcome = kinds["sampled"], kinds["implied-by-search"], kinds["implied-by-outcome"]
    assert sampled > 0 and by_search > 0 and by_outcome >= 8 * 3, counted
    wrong = [row for row in rows if row["completions"][-1].startswith("A: ") and not row["labels"][-1]]
    assert wrong and all(row["provenance"][-1] == "implied-by-outcome" for row in wrong)
    pb = tmp_path / "flow-pb.jsonl"
    result = run_cli("export", "processbench", str(pb), "--labels", "mc-hard", "--dataset", "flow", "--db", db)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in pb.read_text().splitlines()]
    assert sum(r["final_answer_correct"] is True and r["label"] == -1 for r in records) >= 8

    # Only the correct solutions: every label says reachable, a one-class set, refused in one line.
    output = tmp_path / "one-class"
    result = run_cli("train-prm", "--base", str(tiny_model_dir), "--labels", "mc-hard", "--model", "good",
                     "--output", str(output), "--device", "cpu", *common, env=ONE_THREAD)  # fmt: skip
    line = assert_one_line_error(result, "all", "are right", "both classes")
    assert result.returncode == 2 and not output.exists(), line
    assert not [job for job in store.list_jobs() if job["kind"] == "train-prm"]

    # Every solution: implied labels give both classes; the manifest counts them, the held-out
    # set (a few problems) is called small.
    output = tmp_path / "sorm"
    result = run_cli("train-prm", "--base", str(tiny_model_dir), "--labels", "mc-hard", "--epochs", "1",
                     "--heldout-fraction", "0.5", "--output", str(output), "--device", "cpu", *common,
                     env=ONE_THREAD)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((output / "manifest.json").read_text())
    provenance = manifest["label_provenance"]
    assert provenance["implied-by-outcome"] >= 8 * 3 and provenance["sampled"] > 0
    assert manifest["sampled_only"] is False and "labels: " in result.stdout
    assert "warning: the held-out set is small" in result.stderr and manifest["heldout_warning"]
    store.close()


def test_an_outcome_verifier_on_one_class_of_solutions_is_refused_in_one_line(tmp_path, tiny_model_dir):
    db = tmp_path / "right.db"
    store = Store.open(db)
    for i in range(4):
        _trajectory(store, i, 2, True)
    store.close()
    for kind in ("orm-finetune", "orm-probe"):
        output = tmp_path / kind
        result = run_cli("train-verifier", "--kind", kind, "--base", str(tiny_model_dir), "--dataset", "prov",
                         "--output", str(output), "--db", str(db), env=ONE_THREAD)  # fmt: skip
        assert_one_line_error(result, "all 4 graded outcomes of these solutions are right", "both classes")
        assert result.returncode == 2 and not output.exists()
    assert Store.open(db).list_jobs() == []


def test_labels_with_provenance_cost_the_same_queries_for_any_number_of_trajectories(tmp_path):
    """Set-wise (the store's scale rules): MC labels of any number of steps are one query, a PRM
    training's label set three, an export one more per page than without provenance."""
    from core.formats.base import ExportOptions
    from core.formats.labels import labelled_rows
    from core.prm_training import step_labels

    store = Store.open(tmp_path / "queries.db")
    statements: list[str] = []
    store.conn.set_trace_callback(statements.append)
    counted = []
    for more in (3, 30):
        for i in range(more):
            steps = _trajectory(store, len(counted) * 100 + i, 4, i % 2 == 0)
            _rollouts(store, steps[1], 2, i % 3 == 0)
        ids = [t["id"] for t in store.list_trajectories(dataset="prov")]
        steps = [s["id"] for t in store.current_steps(ids).values() for s in t]
        statements.clear()
        mc_labels(store, steps, parse_label_source("mc-hard"))
        reads = len(statements)
        statements.clear()
        step_labels(store, ids, "mc-hard")
        training = len(statements)
        statements.clear()
        rows = list(labelled_rows(store, ExportOptions(labels=parse_label_source("mc-hard")), page=1000))
        counted.append((reads, training, len(statements), len(rows)))
    assert counted[0][:3] == counted[1][:3] and counted[0][0] == 1, counted
    assert counted[1][3] > counted[0][3] >= 2
    store.close()


def test_sampled_only_with_a_source_that_is_not_mc_is_a_usage_error(tmp_path):
    db = tmp_path / "none.db"
    for args in (("export", "trl", str(tmp_path / "x.jsonl"), "--labels", "human"),
                 ("train-prm", "--labels", "human")):  # fmt: skip
        result = run_cli(*args, "--sampled-only", "--db", str(db))
        assert_one_line_error(result, "--sampled-only", "only MC labels")
        assert result.returncode == 2 and not db.exists()
