"""`stepscope import --splitter` for reasoning traces, and `stepscope resegment` (issue 26): the
rule chosen is the rule stored, a bad rule is a usage error, and labels moved by span are counted."""

from __future__ import annotations

import json

import pytest

from cli_runner import run_in_process
from core.store import Store
from core.synth import long_trace_records

TRACE = (
    "<think>First, 3 + 4 = 7. Then 7 * 2 = 14.\n\nWait, let me check: 7 * 2 = 14. Yes.\n\n"
    "So the answer is 14.</think>The answer is \\boxed{14}."
)


def run(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    result = run_in_process(monkeypatch, capsys, *args)
    return result.returncode, result.stdout, result.stderr


@pytest.fixture
def trace_file(tmp_path):
    path = tmp_path / "traces.jsonl"
    path.write_text(json.dumps({"problem": "What is (3 + 4) * 2?", "answer": "14", "text": TRACE}) + "\n")
    return path


def _rules(db) -> list[str]:
    store = Store.open(db)
    return [store.get_trajectory(row["id"])["rule"] for row in store.list_trajectories(source="reasoning")]


def test_import_cuts_the_thinking_by_the_chosen_splitter_and_stores_the_rule(tmp_path, trace_file, monkeypatch, capsys):
    default_db, chosen_db = tmp_path / "default.db", tmp_path / "chosen.db"
    code, _, err = run(monkeypatch, capsys, "import", str(trace_file), "--format", "reasoning", "--db", str(default_db))
    assert code == 0, err
    code, _, err = run(monkeypatch, capsys, "import", str(trace_file), "--format", "reasoning",
                       "--splitter", "reflection:Wait|So", "--db", str(chosen_db))  # fmt: skip
    assert code == 0, err
    assert _rules(default_db) == ["paragraph"] and _rules(chosen_db) == ["reflection:Wait|So"]
    store = Store.open(chosen_db)
    [row] = store.list_trajectories(source="reasoning")
    assert [s["text"][:8] for s in store.steps(row["id"])] == ["First, 3", "Wait, le", "So the a"]
    # Default parameters are stored as the bare name, as every other place writes them.
    code, _, err = run(monkeypatch, capsys, "import", str(trace_file), "--format", "reasoning", "--dataset", "merged",
                       "--splitter", "sentence-merged:80-400", "--db", str(chosen_db))  # fmt: skip
    assert code == 0, err
    [merged] = store.list_trajectories(dataset="merged")
    assert store.get_trajectory(merged["id"])["rule"] == "sentence-merged"


@pytest.mark.parametrize(("args", "needle"), [
    (("--format", "reasoning", "--splitter", "paragraphs"), "unknown step splitter 'paragraphs'"),
    (("--format", "reasoning", "--splitter", "sentence-merged:400-80"), "need 1 <= MIN <= MAX"),
    (("--format", "reasoning", "--splitter", "pre-split"), "not a way to cut text"),
    (("--format", "reasoning", "--splitter", "model:0123456789abcdef"), "no rule can cut them again"),
    (("--format", "gsm8k", "--splitter", "sentence"), "format 'gsm8k' takes no splitter (only reasoning)"),
])  # fmt: skip
def test_a_bad_splitter_is_a_one_line_usage_error_before_any_database(tmp_path, trace_file, monkeypatch, capsys,
                                                                       args, needle):  # fmt: skip
    db = tmp_path / "never.db"
    code, out, err = run(monkeypatch, capsys, "import", str(trace_file), *args, "--db", str(db))
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "--splitter" in lines[0], err
    assert needle in lines[0], lines[0]
    assert not db.exists()


@pytest.mark.parametrize(("args", "needle"), [
    (("--rule", "sentence-merged:x", "--trajectory", "1"), "--rule"),
    (("--rule", "sentence"), "name one trajectory or one dataset"),
    (("--rule", "sentence", "--trajectory", "1", "--dataset", "d"), "name one trajectory or one dataset"),
])  # fmt: skip
def test_resegment_usage_errors_are_one_line_and_exit_2(tmp_path, monkeypatch, capsys, args, needle):
    db = tmp_path / "never.db"
    code, _, err = run(monkeypatch, capsys, "resegment", *args, "--db", str(db))
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and needle in lines[0], err
    assert not db.exists()


def _contains(outer: dict, inner: dict) -> bool:
    return outer["start_char"] <= inner["start_char"] and inner["end_char"] <= outer["end_char"]


def test_resegment_a_dataset_moves_labels_by_span_and_says_how_many_did_not_map(tmp_path, monkeypatch, capsys):
    records = tmp_path / "long.jsonl"
    records.write_text("".join(json.dumps(r) + "\n" for r in long_trace_records(16, 2, seed=1)))
    db = tmp_path / "db.sqlite"
    assert run(monkeypatch, capsys, "import", str(records), "--format", "reasoning", "--dataset", "long",
               "--db", str(db))[0] == 0  # fmt: skip
    store = Store.open(db)
    first, second = (row["id"] for row in store.list_trajectories(dataset="long"))
    paragraphs = store.steps(first)
    store.add_annotation("ann", paragraphs[0]["id"], rating=1)
    store.add_annotation("ann", paragraphs[5]["id"], rating=-1, first_error=True)
    store.add_annotation("ann", store.steps(second)[2]["id"], rating=0)

    # Paragraphs (one sentence each here) onto sentences merged to 100-400 characters: each
    # paragraph lies inside one merged step, so every label maps.
    rule = "sentence-merged:100-400"
    code, out, err = run(monkeypatch, capsys, "resegment", "--dataset", "long", "--rule", rule, "--move-labels",
                         "--db", str(db))  # fmt: skip
    assert code == 0, err
    assert f"2 trajectories cut by '{rule}'" in out and "2 new segmentations, now current" in out
    assert out.splitlines()[-1] == "labels moved: 3; did not map: 0"
    store = Store.open(db)
    merged = store.steps(first)
    assert store.get_trajectory(first)["rule"] == rule and len(merged) < len(paragraphs)
    [holder] = [step for step in merged if _contains(step, paragraphs[5])]
    moved = store.annotations(first, segmentation_id=holder["segmentation_id"])
    assert {(row["step_id"], row["rating"], row["first_error"]) for row in moved} >= {(holder["id"], -1, True)}

    # Merged steps back onto paragraphs: a step of several paragraphs lies in no one paragraph.
    labelled = {row["step_id"] for row in moved}
    expected_moved = sum(any(_contains(p, step) for p in paragraphs) for step in merged if step["id"] in labelled)
    code, out, err = run(monkeypatch, capsys, "resegment", "--trajectory", str(first), "--rule", "paragraph",
                         "--move-labels", "--db", str(db))  # fmt: skip
    assert code == 0, err
    assert f"trajectory {first} cut by 'paragraph'" in out and "0 new segmentations" in out  # the old one, current again
    assert len(labelled) in (1, 2) and expected_moved < len(labelled)  # some did not map
    assert out.splitlines()[-1] == f"labels moved: {expected_moved}; did not map: {len(labelled) - expected_moved}"
    assert [step["id"] for step in Store.open(db).steps(first)] == [step["id"] for step in paragraphs]


def test_resegment_of_a_missing_trajectory_is_one_line_and_changes_nothing(tmp_path, monkeypatch, capsys):
    db = tmp_path / "db.sqlite"
    Store.open(db)
    code, _, err = run(monkeypatch, capsys, "resegment", "--trajectory", "999999", "--rule", "line", "--db", str(db))
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and lines == ["error: trajectory 999999 does not exist"], err
