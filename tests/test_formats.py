"""Importers and exporters on real files and real database files."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from core.errors import StepScopeError
from core.formats import EXPORTERS, IMPORTERS, export_file, import_file
from core.formats import reader
from core.store import Store
from formats_samples import RECORDS, write_array, write_jsonl, write_pretty


@pytest.fixture
def store(tmp_path) -> Store:
    s = Store(tmp_path / "stepscope.db")
    yield s
    s.close()


def table_counts(store: Store) -> dict:
    counts = store.counts()
    counts.pop("annotations_by_annotator")
    return counts


def trajectories(store: Store, **filters) -> list[dict]:
    return [store.get_trajectory(t["id"]) for t in store.list_trajectories(**filters)]


def step_texts(store: Store, trajectory_id: int) -> list[str]:
    return [s["text"] for s in store.steps(trajectory_id)]


def ratings(store: Store, trajectory_id: int, annotator: str) -> dict[int, tuple]:
    return {a["idx"]: (a["rating"], a["first_error"])
            for a in store.annotations(trajectory_id, annotator=annotator)}


def test_registry_names():
    assert set(IMPORTERS) == {"gsm8k", "model-solutions", "prm800k", "processbench", "trl", "jsonl", "reasoning"}
    assert set(EXPORTERS) == {"trl", "trl-parquet", "math-shepherd", "processbench", "jsonl", "prm800k", "tree-trl"}


# --- importers --------------------------------------------------------------------------------


def test_gsm8k_problems_gold_and_reference_trajectory(store, tmp_path):
    path = write_jsonl(tmp_path / "gsm8k.jsonl", RECORDS["gsm8k"])
    report = import_file(store, path, "gsm8k")
    assert report.records == 2 and report.added["problems"] == 2 and report.added["trajectories"] == 2
    (first, second) = trajectories(store, dataset="gsm8k")
    assert first["gold"] == "43" and second["gold"] == "3600"
    assert first["source"] == "reference" and first["correct"] is True and first["rule"] == "line"
    assert step_texts(store, first["id"]) == [
        "The shop has 5 * 12 = <<5*12=60>>60 pens.",
        "After selling, 60 - 17 = <<60-17=43>>43 pens are left.",
        "#### 43",
    ]
    assert first["solution"] == RECORDS["gsm8k"][0]["answer"]


def test_model_solutions(store, tmp_path):
    path = write_jsonl(tmp_path / "solutions.jsonl", RECORDS["model-solutions"])
    import_file(store, path, "model-solutions")
    rows = {t["model"]: t for t in trajectories(store, dataset="gsm8k")}
    assert set(rows) == {None, "6b_finetuning", "175b_verification"}
    assert rows[None]["source"] == "reference" and rows[None]["gold"] == "43"
    assert rows["6b_finetuning"]["correct"] is False and rows["6b_finetuning"]["final_answer"] == "0"
    assert rows["175b_verification"]["correct"] is True and rows["175b_verification"]["final_answer"] == "43"
    assert step_texts(store, rows["6b_finetuning"]["id"]) == ["5 + 12 = <<5+12=17>>17 pens.", "17 - 17 = 0", "A: 0"]


def test_model_solutions_and_gsm8k_share_problems(store, tmp_path):
    import_file(store, write_jsonl(tmp_path / "g.jsonl", RECORDS["gsm8k"][:1]), "gsm8k")
    import_file(store, write_jsonl(tmp_path / "m.jsonl", RECORDS["model-solutions"]), "model-solutions")
    assert store.counts()["problems"] == 60 + 1


@pytest.mark.parametrize("layout", [write_jsonl, write_pretty])
def test_prm800k_rebuilds_the_chosen_trajectory(store, tmp_path, layout):
    path = layout(tmp_path / "prm800k.jsonl", RECORDS["prm800k"])
    report = import_file(store, path, "prm800k")
    assert report.records == 2
    (first, second) = trajectories(store, dataset="prm800k")

    # Phase 2 style: the labeler stopped at the first error; the -1 completion ends it.
    assert step_texts(store, first["id"]) == ["I multiply first.", "$3 \\cdot 4 = 12$.", "So $2 + 12 = 15$."]
    assert first["solution"] == "I multiply first.\n$3 \\cdot 4 = 12$.\nSo $2 + 12 = 15$."
    assert first["rule"] == "pre-split" and first["correct"] is False and first["gold"] == "14"
    assert ratings(store, first["id"], "labeler-a") == {0: (0, False), 1: (1, False), 2: (-1, True)}
    assert first["meta"]["alternatives"] == {"2": [{"text": "So $2 + 12 = 14$.", "rating": 1, "flagged": False}]}
    assert first["meta"]["pre_generated_answer"] == "15"

    # Phase 1 style: a human completion replaced a -1 step; the solution was reached.
    assert step_texts(store, second["id"]) == ["$10 - 4 = 6$.", "# Answer\n\n6"]
    assert second["correct"] is True and second["final_answer"] == "6"
    assert second["meta"]["human_steps"] == [0]
    assert second["meta"]["alternatives"] == {"0": [{"text": "$10 - 4 = 5$.", "rating": -1, "flagged": False}]}
    (annotation,) = store.annotations(second["id"], annotator="labeler-b")
    assert (annotation["idx"], annotation["rating"], annotation["flagged"]) == (1, 1, True)
    assert annotation["created_at"] == "2022-09-01T10:00:00"


def test_prm800k_step_without_any_choice_or_error_is_left_out(store, tmp_path):
    record = json.loads(json.dumps(RECORDS["prm800k"][0]))
    record["label"]["steps"][2]["completions"][0]["rating"] = 0  # give_up: nothing rated -1
    record["label"]["finish_reason"] = "give_up"
    import_file(store, write_jsonl(tmp_path / "p.jsonl", [record]), "prm800k")
    (t,) = trajectories(store, dataset="prm800k")
    assert len(step_texts(store, t["id"])) == 2 and t["correct"] is None
    assert len(t["meta"]["alternatives"]["2"]) == 2


def test_processbench_array_file(store, tmp_path):
    path = write_array(tmp_path / "gsm8k.json", RECORDS["processbench"])
    import_file(store, path, "processbench")
    (first, second) = trajectories(store, dataset="processbench")
    assert first["model"] == "Qwen2-7B-Instruct" and first["correct"] is False
    assert first["solution"] == "Tom starts with 3 apples.\n\nHe buys 4, so 3 + 4 = 8.\n\nThe answer is 8."
    assert ratings(store, first["id"], "processbench") == {0: (1, False), 1: (-1, True)}
    assert ratings(store, second["id"], "processbench") == {0: (1, False), 1: (1, False)}


def test_trl_import(store, tmp_path):
    import_file(store, write_jsonl(tmp_path / "trl.jsonl", RECORDS["trl"]), "trl", annotator="shepherd")
    (first, second) = trajectories(store, dataset="trl")
    assert first["gold"] is None and step_texts(store, first["id"]) == ["9 - 2 = 7.", "The answer is 7."]
    assert ratings(store, second["id"], "shepherd") == {0: (-1, True), 1: (-1, False), 2: (-1, False)}


def test_jsonl_short_form(store, tmp_path):
    import_file(store, write_jsonl(tmp_path / "mine.jsonl", RECORDS["jsonl"]), "jsonl", dataset="mine")
    assert store.datasets()[0] == {"dataset": "mine", "problems": 3}
    (first, second) = trajectories(store, dataset="mine")
    assert first["rule"] == "pre-split" and first["solution"] == "1 + 1 = 2.\nThe answer is 2."
    assert second["rule"] == "line" and second["model"] == "hand" and second["correct"] is True


@pytest.mark.parametrize("format_name", sorted(RECORDS))
def test_importing_twice_adds_nothing(store, tmp_path, format_name):
    path = write_jsonl(tmp_path / f"{format_name}.jsonl", RECORDS[format_name])
    first = import_file(store, path, format_name)
    assert sum(first.added.values()) > 0
    before = table_counts(store)
    second = import_file(store, path, format_name)
    assert sum(second.added.values()) == 0 and "nothing new" in second.summary()
    assert table_counts(store) == before


def test_imports_do_not_overwrite_labels_made_in_the_app(store, tmp_path):
    path = write_jsonl(tmp_path / "trl.jsonl", RECORDS["trl"][:1])
    import_file(store, path, "trl")
    (t,) = trajectories(store, dataset="trl")
    step_id = store.steps(t["id"])[0]["id"]
    store.save_annotation("trl", step_id, rating=-1, note="actually wrong")
    import_file(store, path, "trl")
    assert store.annotation("trl", step_id)["rating"] == -1


# --- bad input: one clear error naming file and line, nothing imported -------------------------


def assert_refused(store, path, format_name, *patterns):
    before = table_counts(store)
    with pytest.raises(StepScopeError) as caught:
        import_file(store, path, format_name)
    message = str(caught.value)
    for pattern in patterns:
        assert pattern in message, message
    assert "\n" not in message
    assert table_counts(store) == before
    return message


def test_malformed_line_names_file_and_line(store, tmp_path):
    path = tmp_path / "broken.jsonl"
    good = [json.dumps(r) for r in RECORDS["gsm8k"]]
    path.write_text(f"{good[0]}\n{good[1]}\n{{\"question\": \"x\", \n", encoding="utf-8")
    assert_refused(store, path, "gsm8k", "broken.jsonl", "line 3", "not valid JSON")


def test_wrong_field_types(store, tmp_path):
    cases = {
        "gsm8k": {"question": "q", "answer": 12},
        "model-solutions": {"question": "q", "ground_truth": "A: 1", "m": {"solution": "x", "is_correct": "yes"}},
        "prm800k": {"question": {"problem": "p"}, "label": {"steps": [{"completions": [{"text": "a", "rating": 5}],
                                                                         "chosen_completion": 0}]}},
        "processbench": {"problem": "p", "steps": ["a"], "label": 3, "final_answer_correct": True},
        "trl": {"prompt": "p", "completions": ["a", "b"], "labels": [True]},
        "jsonl": {"problem": {"question": "q"}, "trajectory": {"source": "s", "solution": "ab",
                  "segmentations": [{"rule": "line", "steps": [{"text": "b", "start": 0, "end": 1}]}]}},
    }
    for format_name, record in cases.items():
        path = write_jsonl(tmp_path / f"{format_name}.jsonl", [RECORDS[format_name][0], record])
        assert_refused(store, path, format_name, f"{format_name}.jsonl", "line 2")


def test_gsm8k_answer_without_gold(store, tmp_path):
    path = write_jsonl(tmp_path / "g.jsonl", [{"question": "q", "answer": "no final line"}])
    assert_refused(store, path, "gsm8k", "line 1", "####")


def test_unknown_format(store, tmp_path):
    path = write_jsonl(tmp_path / "g.jsonl", RECORDS["gsm8k"])
    assert_refused(store, path, "gsm9k", "unknown import format 'gsm9k'", "gsm8k")


def test_empty_and_blank_files(store, tmp_path):
    (tmp_path / "empty.jsonl").write_bytes(b"")
    (tmp_path / "blank.jsonl").write_text("\n  \n\n")
    assert_refused(store, tmp_path / "empty.jsonl", "gsm8k", "empty.jsonl", "empty")
    assert_refused(store, tmp_path / "blank.jsonl", "gsm8k", "blank.jsonl", "empty")


def test_non_utf8_file(store, tmp_path):
    path = tmp_path / "latin1.jsonl"
    good = json.dumps(RECORDS["gsm8k"][0]).encode()
    path.write_bytes(good + b"\n" + '{"question": "caf\u00e9", "answer": "#### 1"}'.encode("latin-1") + b"\n")
    assert_refused(store, path, "gsm8k", "latin1.jsonl", "line 2", "UTF-8")


def test_hundred_megabyte_line(store, tmp_path):
    path = tmp_path / "huge.jsonl"
    with open(path, "wb") as handle:
        handle.write(json.dumps(RECORDS["gsm8k"][0]).encode() + b"\n")
        handle.write(b'{"question": "' + b"x" * (100 * 2**20) + b'", "answer": "#### 1"}\n')
    assert_refused(store, path, "gsm8k", "huge.jsonl", "line 2", "longer than")


def test_oversized_pretty_printed_record(store, tmp_path, monkeypatch):
    monkeypatch.setattr(reader, "MAX_RECORD_BYTES", 200)
    path = write_pretty(tmp_path / "big.json", RECORDS["prm800k"])
    assert_refused(store, path, "prm800k", "big.json", "line 1", "larger than")


def test_missing_file(store, tmp_path):
    assert_refused(store, tmp_path / "nope.jsonl", "gsm8k", "cannot read", "nope.jsonl")


@pytest.mark.parametrize(
    "text, line",
    [
        ('{"question": "q", "answer": "#### 1"}\n{"question": NaN, "answer": "#### 1"}\n', "line 2"),
        ('[\n{"question": "q", "answer": "#### 1"},\n{"question": "r", "answer": "#### 2"}\n', "line 3"),
        ('{\n  "question": "q",\n  "answer": "#### 1"\n}\n{\n  "question": "r"\n', "line 5"),
        ('{\n  "question": "q",\n  "answer": "#### 1"\n} trailing\n', "line 4"),
        ('[{"question": "q", "answer": "#### 1"}] {"x": 1}\n', "line 1"),
        ('[1, 2]\n', "line 1"),
        ('"just a string"\n', "line 1"),
        ("[" * 5000 + "\n", "line 1"),
        ('{"question": "\\ud800", "answer": "#### 1"}\n', "line 1"),
        ('{"question": "q", "answer": "#### 1", "n": 1' + "0" * 5000 + "}\n", "line 1"),
        ('{\n  "question": "q",\n  "answer": "#### 1",,\n}\n', "line 3"),
    ],
    ids=["nan", "truncated-array", "truncated-pretty", "trailing-garbage", "after-array",
         "not-objects", "string", "deep-nesting", "lone-surrogate", "huge-int", "inside-pretty"],
)
def test_malformed_layouts(store, tmp_path, text, line):
    path = tmp_path / "bad.json"
    path.write_text(text, encoding="utf-8")
    assert_refused(store, path, "gsm8k", "bad.json", line)


def test_long_line_of_escaped_quotes_is_refused_quickly(store, tmp_path):
    # In the pretty-printed layout records are delimited by a scan that must stay linear.
    path = tmp_path / "quotes.json"
    path.write_text('{\n "question": "' + '\\"' * 500_000 + "\n}\n", encoding="utf-8")
    # The reference: the same layout and a line as long without escapes, refused the same way.
    # Measured on 2 cores the escapes cost no more than that; a quadratic scan of 500,000 escapes
    # would cost hours. Thread CPU time, not wall-clock time, so that a busy machine changes nothing.
    plain = tmp_path / "plain.json"
    plain.write_text('{\n "question": "' + "a" * 1_000_000 + "\n}\n", encoding="utf-8")
    started = time.thread_time()
    assert_refused(store, plain, "gsm8k", "plain.json", "line 2")
    reference = time.thread_time() - started
    started = time.thread_time()
    assert_refused(store, path, "gsm8k", "quotes.json", "line 2")
    escapes = time.thread_time() - started
    assert escapes < 50 * reference, (escapes, reference)


def test_error_late_in_a_big_file_leaves_nothing(store, tmp_path):
    records = [{"question": f"q{i}", "answer": f"#### {i}"} for i in range(500)]
    records.append({"question": "last", "answer": None})
    assert_refused(store, write_jsonl(tmp_path / "late.jsonl", records), "gsm8k", "line 501")


# --- round trip -------------------------------------------------------------------------------


def build_rich_database(store: Store, tmp_path) -> None:
    """Every kind of row: imports, a re-segmentation, labels, rollouts, verdicts, jobs."""
    for format_name, records in RECORDS.items():
        import_file(store, write_jsonl(tmp_path / f"in-{format_name}.jsonl", records), format_name)
    (t,) = [t for t in trajectories(store, dataset="jsonl") if t["model"] == "hand"]
    store.save_annotation("alice", store.steps(t["id"])[0]["id"], rating=1, note="ok \u2713")
    store.resegment(t["id"], "sentence")
    steps = store.steps(t["id"])
    store.save_annotation("alice", steps[1]["id"], rating=-1, first_error=True, flagged=True)
    job_id = store.create_job("mcpe", {"model": "m", "seed": 7, "temperature": 0.7}, planned=3)
    store.update_job(job_id, status="done", done=3, tokens=42, finished_at="2025-02-02T00:00:00")
    store.add_rollouts([
        {"step_id": steps[0]["id"], "text": "so 4", "answer": "4", "correct": True, "num_tokens": 3,
         "finish_reason": "stop", "seed": 1, "model": "m", "job_id": job_id},
        {"step_id": steps[0]["id"], "text": "so 5", "answer": "5", "correct": False, "num_tokens": 3,
         "finish_reason": "length", "seed": 2**40, "model": "m", "job_id": job_id},
        {"step_id": steps[1]["id"], "text": "hmm", "answer": None, "correct": False},
    ])
    store.add_verdicts([
        {"step_id": steps[0]["id"], "judge": "j", "kind": "step", "p_yes": 0.123456789, "mass": 0.98,
         "raw": "Yes", "template": "step-yn", "template_hash": "h1", "job_id": job_id},
        {"trajectory_id": t["id"], "judge": "j", "kind": "outcome", "p_yes": 0.5},
    ])


def test_full_dump_round_trip_is_identical(store, tmp_path):
    build_rich_database(store, tmp_path)
    dump = tmp_path / "dump.jsonl"
    written = export_file(store, "jsonl", dump)
    assert written == store.counts()["jobs"] + sum(
        max(1, store.count_trajectories(problem_id=p["id"])) for p in store.list_problems()
    )

    fresh = Store(tmp_path / "fresh.db")
    import_file(fresh, dump, "jsonl")
    again = tmp_path / "again.jsonl"
    export_file(fresh, "jsonl", again)
    assert again.read_bytes() == dump.read_bytes()
    assert table_counts(fresh) == table_counts(store)
    assert fresh.counts()["annotations_by_annotator"] == store.counts()["annotations_by_annotator"]
    # Values computed from the imported rollouts match the original ones.
    for t in store.list_trajectories(dataset="jsonl"):
        (twin,) = [u for u in fresh.list_trajectories(dataset="jsonl") if u["solution"] == t["solution"]]
        strip = lambda values: [{k: v for k, v in row.items() if k != "step_id"} for row in values]
        assert strip(fresh.step_values(twin["id"])) == strip(store.step_values(t["id"]))
    # And importing the dump again changes nothing.
    assert sum(import_file(fresh, dump, "jsonl").added.values()) == 0
    fresh.close()


def test_dump_reimport_into_same_database_adds_nothing(store, tmp_path):
    build_rich_database(store, tmp_path)
    dump = tmp_path / "dump.jsonl"
    export_file(store, "jsonl", dump)
    before = table_counts(store)
    import_file(store, dump, "jsonl")
    assert table_counts(store) == before


# --- exports with labels ----------------------------------------------------------------------


def hand_labelled(store: Store, solution: str, rule: str, ratings_: list) -> int:
    problem_id = store.add_problem("exp", "How much is (3 + 4) * 2?", "14")
    trajectory_id = store.add_trajectory(problem_id, solution, source="policy", rule=rule)
    for step, rating in zip(store.steps(trajectory_id), ratings_):
        if rating is not None:
            store.save_annotation("alice", step["id"], rating=rating)
    return trajectory_id


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_trl_export_matches_hand_written_expectation(store, tmp_path):
    # Steps separated by blank lines: the separator "\n\n" is several tokens and must appear
    # in no completion, and labels must stay aligned with steps.
    solution = "Step 1: 3 + 4 = 7.\n\nStep 2: 7 * 2 = 15.\n\nStep 3: The answer is 15."
    hand_labelled(store, solution, "blank-line", [1, -1, 0])
    out = tmp_path / "trl.jsonl"
    assert export_file(store, "trl", out, labels="human:alice") == 1
    assert read_jsonl(out) == [{
        "prompt": "How much is (3 + 4) * 2?",
        "completions": ["Step 1: 3 + 4 = 7.", "Step 2: 7 * 2 = 15.", "Step 3: The answer is 15."],
        "labels": [True, False, True],
    }]


def test_trl_export_of_pre_split_steps_with_a_tag_separator(store, tmp_path):
    record = {"question": "How much is 2 * 3?", "gold": "6", "dataset": "tags", "separator": " ки\n",
              "steps": ["2 * 3 = 5.", "So the answer is 5."]}
    import_file(store, write_jsonl(tmp_path / "tags.jsonl", [record]), "jsonl")
    (t,) = trajectories(store, dataset="tags")
    assert t["solution"] == "2 * 3 = 5. ки\nSo the answer is 5."
    for step, rating in zip(store.steps(t["id"]), [-1, -1]):
        store.save_annotation("bob", step["id"], rating=rating)
    out = tmp_path / "trl.jsonl"
    export_file(store, "trl", out, labels="human:bob", dataset="tags")
    assert read_jsonl(out) == [{"prompt": "How much is 2 * 3?",
                                "completions": ["2 * 3 = 5.", "So the answer is 5."],
                                "labels": [False, False]}]


def test_trl_export_keeps_the_labelled_prefix_and_parquet_matches(store, tmp_path):
    hand_labelled(store, "a = 1.\nb = 2.\nc = 3.", "line", [1, None, -1])
    hand_labelled(store, "x = 1.\ny = 2.", "line", [None, 1])  # first step unlabelled: left out
    jsonl_out, parquet_out = tmp_path / "trl.jsonl", tmp_path / "trl.parquet"
    assert export_file(store, "trl", jsonl_out, labels="human:alice") == 1
    assert read_jsonl(jsonl_out) == [{"prompt": "How much is (3 + 4) * 2?", "completions": ["a = 1."], "labels": [True]}]
    assert export_file(store, "trl-parquet", parquet_out, labels="human:alice") == 1
    assert pq.read_table(parquet_out).to_pylist() == read_jsonl(jsonl_out)


def test_monte_carlo_and_judge_label_sources(store, tmp_path):
    trajectory_id = hand_labelled(store, "3 + 4 = 7.\n7 * 2 = 15.\nThe answer is 15.", "line", [])
    steps = store.steps(trajectory_id)
    outcomes = {0: [True, True, False, False], 1: [False, False, False, True], 2: [False, False]}
    store.add_rollouts([{"step_id": steps[k]["id"], "text": "...", "correct": ok}
                        for k, oks in outcomes.items() for ok in oks])
    store.add_verdicts([{"step_id": steps[k]["id"], "judge": "j", "kind": "step", "p_yes": p}
                        for k, p in [(0, 0.9), (1, 0.2), (2, 0.1), (1, 0.7)]])  # the later 0.7 wins
    out = tmp_path / "out.jsonl"
    expectations = {
        "mc-hard": [True, True, False],
        "mc-soft:0.5": [True, False, False],
        "mc-soft:0.25": [True, True, False],
        "judge:j": [True, True, False],
    }
    for source, labels in expectations.items():
        export_file(store, "trl", out, labels=source)
        assert read_jsonl(out)[0]["labels"] == labels, source


def test_consensus_label_source(store, tmp_path):
    trajectory_id = hand_labelled(store, "a.\nb.\nc.", "line", [1, -1, 1])
    steps = store.steps(trajectory_id)
    store.save_annotation("bob", steps[0]["id"], rating=0)  # agrees: neutral counts as right
    store.save_annotation("bob", steps[1]["id"], rating=1)  # disagrees: no consensus from here on
    out = tmp_path / "out.jsonl"
    export_file(store, "trl", out, labels="consensus")
    assert read_jsonl(out)[0]["labels"] == [True]


def test_math_shepherd_export_exact_format(store, tmp_path):
    hand_labelled(store, "3 + 4 = 7.\n7 * 2 = 15.", "line", [1, -1])
    out = tmp_path / "shepherd.jsonl"
    assert export_file(store, "math-shepherd", out, labels="human:alice") == 1
    assert read_jsonl(out) == [{
        "input": "How much is (3 + 4) * 2? 3 + 4 = 7. ки\n7 * 2 = 15. ки",
        "label": "How much is (3 + 4) * 2? 3 + 4 = 7. +\n7 * 2 = 15. -",
        "task": "exp",
    }]


def test_processbench_export(store, tmp_path):
    hand_labelled(store, "a.\nb.\nc.", "line", [1, -1, None])  # error at 1
    hand_labelled(store, "d.\ne.", "line", [1, 0])  # all right: -1
    hand_labelled(store, "f.\ng.", "line", [1, None])  # unknown: skipped
    out = tmp_path / "pb.jsonl"
    assert export_file(store, "processbench", out, labels="human:alice") == 2
    rows = read_jsonl(out)
    assert [(r["steps"], r["label"]) for r in rows] == [(["a.", "b.", "c."], 1), (["d.", "e."], -1)]
    assert set(rows[0]) == {"id", "generator", "problem", "steps", "final_answer_correct", "label"}


def test_processbench_round_trip_keeps_labels(store, tmp_path):
    import_file(store, write_array(tmp_path / "pb.json", RECORDS["processbench"]), "processbench")
    out = tmp_path / "pb-out.jsonl"
    export_file(store, "processbench", out, labels="human:processbench")
    got = [(r["problem"], r["steps"], r["label"], r["final_answer_correct"], r["generator"]) for r in read_jsonl(out)]
    want = [(r["problem"], r["steps"], r["label"], r["final_answer_correct"], r["generator"])
            for r in RECORDS["processbench"]]
    assert got == want


def test_export_errors(store, tmp_path):
    with pytest.raises(StepScopeError, match="needs --labels"):
        export_file(store, "trl", tmp_path / "x.jsonl")
    with pytest.raises(StepScopeError, match="unknown export format"):
        export_file(store, "csv", tmp_path / "x.csv")
    with pytest.raises(StepScopeError, match="unknown label source"):
        export_file(store, "trl", tmp_path / "x.jsonl", labels="oracle")
    with pytest.raises(StepScopeError, match="no judge named"):
        export_file(store, "trl", tmp_path / "x.jsonl", labels="judge:nobody")
    with pytest.raises(StepScopeError, match="folder"):
        export_file(store, "jsonl", tmp_path)
    assert not (tmp_path / "x.jsonl").exists()


# --- CLI --------------------------------------------------------------------------------------


@pytest.fixture
def cli():
    import typer

    from core.cli.data import register

    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """test app"""

    register(app)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, [str(a) for a in args])


def test_cli_import_info_export(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STEPSCOPE_DB", raising=False)
    path = write_jsonl(tmp_path / "pb.jsonl", RECORDS["processbench"])
    result = cli("import", path, "--format", "processbench")
    assert result.exit_code == 0, result.output
    assert "added 2 problems" in result.output
    assert (tmp_path / "data" / "stepscope.db").exists()  # the default location
    info = cli("db", "info")
    assert info.exit_code == 0
    assert "processbench" in info.output and "trajectories" in info.output and "60" in info.output
    export = cli("export", "processbench", tmp_path / "out.jsonl", "--labels", "human:processbench")
    assert export.exit_code == 0 and "wrote 2 records" in export.output


def test_cli_errors_are_one_red_line(cli, tmp_path):
    db = tmp_path / "x.db"
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": 1, "answer": "#### 2"}\n')
    result = cli("import", path, "--format", "gsm8k", "--db", db)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and "bad.jsonl, line 1" in result.stderr
    assert "Traceback" not in result.output + result.stderr
    unknown = cli("import", path, "--format", "csv", "--db", tmp_path / "never.db")
    assert unknown.exit_code == 2 and "unknown import format" in unknown.stderr  # a usage error
    assert not (tmp_path / "never.db").exists()
    export = cli("export", "trl", tmp_path / "o.jsonl", "--db", db)
    assert export.exit_code == 1 and "--labels" in export.stderr


def test_cli_uses_stepscope_db_env(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("STEPSCOPE_DB", str(tmp_path / "env.db"))
    result = cli("db", "info")
    assert result.exit_code == 0 and (tmp_path / "env.db").exists()


def test_real_entry_point_exits_non_zero_on_a_bad_file(tmp_path):
    # Through core.cli.main, as the installed `stepscope` command runs, not a test runner.
    import subprocess
    import sys

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "no gold here"}\n')
    command = [sys.executable, "-c", "from core.cli import main; main()",
               "import", str(bad), "--format", "gsm8k", "--db", str(tmp_path / "x.db")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith("error: ") and "bad.jsonl, line 1" in done.stderr
    assert "Traceback" not in done.stderr
