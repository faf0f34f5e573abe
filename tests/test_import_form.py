"""The import form of Jobs and data (pages/jobs_data.py import_section) through Streamlit's
AppTest: an upload in the `reasoning` format with a splitter is cut by that splitter, and a
splitter the CLI's `stepscope import --splitter` would refuse ends in one error line with nothing
stored. The browser test of the same form on a long trace is tests/test_e2e_long_traces.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.steps import segment
from core.store import Store
from core.synth import long_trace
from core.views.data import import_formats, splitting_formats

from e2e_server import contents

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # pages import pages._shared, as under `streamlit run app.py`

TIMEOUT = 60
DATASET = "form-upload"


@pytest.fixture
def db(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "data" / "form.db"
    monkeypatch.setenv("STEPSCOPE_DB", str(path))
    return path


def jobs_data(db: Path) -> AppTest:
    at = AppTest.from_file(str(REPO / "pages" / "jobs_data.py"), default_timeout=TIMEOUT)
    at.session_state["db_path"] = str(db)
    at.session_state["policy_model"] = "tiny-policy"
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def submit(at: AppTest, content: bytes, format_name: str, splitter: str, file_name: str = "traces.jsonl") -> None:
    """Fill the import form (file, format, dataset, splitter) and press Import."""
    [uploader] = at.file_uploader
    uploader.set_value((file_name, content, "application/jsonl"))
    [s for s in at.selectbox if s.label == "Format"][0].set_value(format_name)
    [t for t in at.text_input if t.label == "Dataset (optional)"][0].set_value(DATASET)
    [t for t in at.text_input if t.label == "Splitter"][0].set_value(splitter)
    [b for b in at.button if b.label == "Import"][0].click().run()
    assert not at.exception, [e.message for e in at.exception]


def successes(at: AppTest) -> list[str]:
    return [s.value.replace("\\", "") for s in at.success]  # the line is markdown-escaped


def chat_record(steps: int, seed: int) -> tuple[bytes, str]:
    """One chat-shaped reasoning record (the thinking in `reasoning_content`), and its think part."""
    trace = long_trace(steps, seed, outcome="wrong")
    return (json.dumps(trace.chat_record()) + "\n").encode(), trace.think


def test_the_form_offers_the_formats_that_take_a_splitter():
    assert "reasoning" in import_formats()
    assert splitting_formats() == {"reasoning": "paragraph"}  # the others come split, or one fixed way


def test_a_reasoning_upload_is_cut_by_the_splitter_chosen_in_the_form(db):
    at = jobs_data(db)
    content, think = chat_record(120, 3)
    submit(at, content, "reasoning", " sentence-merged:150-400 ")  # spaces around are the form's, not the rule's
    assert not at.error, [e.value for e in at.error]
    [line] = successes(at)
    assert line.startswith("traces.jsonl: read 1 records from traces.jsonl (reasoning)")
    store = Store.open(db)
    [row] = store.list_trajectories(dataset=DATASET)
    trajectory = store.get_trajectory(row["id"])
    assert trajectory["rule"] == "sentence-merged:150-400"
    expected = segment(think, "sentence-merged:150-400")
    assert [s["text"] for s in store.steps(row["id"])] == [span.text for span in expected]
    assert line.endswith(f"1 segmentations, {len(expected)} steps")
    assert 10 < len(expected) < 120  # merged: fewer steps than the 120 paragraphs, more than a handful
    # Blank: the format's default (paragraph), one step per paragraph of the trace.
    content, _ = chat_record(40, 4)
    submit(at, content, "reasoning", "", file_name="default.jsonl")
    assert successes(at)[0].startswith("default.jsonl: ")
    newest = max(r["id"] for r in store.list_trajectories(dataset=DATASET))
    assert store.get_trajectory(newest)["rule"] == "paragraph" and len(store.steps(newest)) == 40


@pytest.mark.parametrize(("format_name", "splitter", "cause"), [
    ("reasoning", "sentence-merged:400-150", "step splitter 'sentence-merged:400-150': need 1 <= MIN <= MAX"),
    ("reasoning", "by-vibes", "unknown step splitter 'by-vibes'"),
    ("reasoning", "pre-split", "'pre-split' is for steps that came split"),
    ("gsm8k", "line", "format 'gsm8k' takes no splitter (only reasoning)"),
])  # fmt: skip
def test_a_splitter_the_cli_would_refuse_is_one_error_line_and_nothing_is_stored(db, format_name, splitter, cause):
    at = jobs_data(db)
    before = contents(db)
    content, _ = chat_record(40, 5)
    submit(at, content, format_name, splitter)
    assert not at.success
    [error] = at.error
    message = error.value.replace("\\", "")  # the cause is markdown-escaped
    assert message.startswith("Import failed, nothing was changed: ") and cause in message
    assert "\n" not in message
    assert contents(db) == before
    assert not (db.parent / "uploads").exists() or not any((db.parent / "uploads").iterdir())  # no file left behind
