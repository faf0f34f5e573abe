"""Imports that commit in batches stay all or nothing (issue 22): a killed import, a failed one,
and a label saved by another connection between two batches of a running import."""

from __future__ import annotations

import json
import signal
import sqlite3
from pathlib import Path

import pytest

from cli_runner import run_cli
from core.errors import StepScopeError
from core.formats import import_file
from core.formats.ingest import BATCH_ROWS_ENV, KILL_AFTER_BATCH_ENV
from core.store import Store

TABLES = ("problems", "trajectories", "segmentations", "steps", "nodes", "annotators", "annotations",
          "rollouts", "verdicts", "verifiers", "jobs", "trajectory_labels", "imports", "import_ranges")  # fmt: skip
STAMP = "2026-01-01T00:00:00.000+00:00"


def write_dump(path: Path, n: int, *, tag: str = "t", bad_last: bool = False) -> Path:
    """n trajectories (4 steps: a label, 2 rollouts and a judge and a PRM verdict on each), one job."""
    lines = [{"job": {"key": f"job-{tag}", "kind": "judge", "status": "done", "manifest": {}, "planned": 0,
                      "done": 0, "tokens": 0, "error": None, "created_at": STAMP, "started_at": None,
                      "finished_at": None, "heartbeat_at": None}}]  # fmt: skip
    for t in range(n):
        texts = [f"{tag} {t}: step {k} = {t + k}." for k in range(4)]
        solution, steps, start = "\n".join(texts), [], 0
        for k, text in enumerate(texts):
            steps.append({
                "text": text, "start": start, "end": start + len(text),
                "annotations": [{"annotator": "ann", "rating": 1 if k < 3 else -1, "first_error": k == 3}],
                "rollouts": [{"key": f"{tag}-r{t}-{k}-{j}", "text": "so 7", "answer": "7", "correct": j == 0,
                              "job": f"job-{tag}"} for j in range(2)],
                "verdicts": [{"key": f"{tag}-v{t}-{k}-{name}", "judge": name, "verifier_kind": kind, "kind": "step",
                              "p_yes": 0.25 * k, "job": f"job-{tag}"}
                             for name, kind in (("judge-x", "judge"), ("prm-x", "prm"))],
            })  # fmt: skip
            start += len(text) + 1
        lines.append({"problem": {"dataset": "scale-test", "question": f"{tag} question {t // 3}", "gold": "7"},
                      "trajectory": {"source": "policy", "model": "m", "solution": solution, "correct": t % 2 == 0,
                                     "segmentations": [{"rule": "pre-split", "steps": steps}],
                                     "labels": [{"annotator": "ann", "flawed_process": t % 4 == 0}]}})  # fmt: skip
    if bad_last:
        lines[-1]["trajectory"]["segmentations"][0]["steps"][0]["annotations"][0]["rating"] = 5
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def table_counts(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(db)
    try:
        return {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in TABLES}  # noqa: S608
    finally:
        conn.close()


def assert_intact(db: Path) -> None:
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        conn.close()


@pytest.fixture
def db(tmp_path) -> Path:
    """A store holding an earlier import, so 'as it was' is more than empty."""
    path = tmp_path / "s.db"
    store = Store(path)
    import_file(store, write_dump(tmp_path / "earlier.jsonl", 5, tag="earlier"), "jsonl")
    store.close()
    return path


def test_a_killed_import_leaves_the_store_as_it_was_and_the_next_import_completes(db, tmp_path):
    dump = write_dump(tmp_path / "big.jsonl", 60)
    before = table_counts(db)
    # ~33 rows per trajectory: batches of 200 rows are ~6 trajectories; the importer kills itself
    # (SIGKILL, no cleanup of any kind) right after its 3rd batch commits.
    killed = run_cli("import", "--format", "jsonl", str(dump), "--db", str(db),
                     env={BATCH_ROWS_ENV: "200", KILL_AFTER_BATCH_ENV: "3"})  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed
    half = table_counts(db)  # read without opening a Store: three batches are in the file
    assert before["trajectories"] < half["trajectories"] < before["trajectories"] + 60
    assert half["imports"] == before["imports"] + 1

    store = Store(db)  # opening the file undoes the import whose process is gone
    assert table_counts(db) == before
    assert_intact(db)
    report = import_file(store, dump, "jsonl", batch_rows=200)
    assert report.added["trajectories"] == 60 and report.added["verdicts"] == 60 * 4 * 2
    assert table_counts(db)["trajectories"] == before["trajectories"] + 60
    assert [row["status"] for row in store.imports()] == ["done", "done"]
    assert_intact(db)


def test_a_label_saved_between_two_batches_does_not_wait_for_the_import(db, tmp_path):
    dump = write_dump(tmp_path / "big.jsonl", 60)
    store = Store(db)
    step_id = store.steps(store.list_trajectories(dataset="scale-test", limit=1)[0]["id"])[0]["id"]
    # Another connection with a busy timeout far below the import's length: it fails unless the
    # import lets go of the write lock between its batches.
    other = Store(db, timeout=0.5)
    seen = []

    def save_between_batches(batches: int, records: int) -> None:
        if batches == 2:
            label = other.save_annotation("app-user", step_id, rating=-1)
            imports = store.imports()
            seen.append((label["rating"], imports[0]["status"], table_counts(db)["trajectories"]))

    report = import_file(store, dump, "jsonl", batch_rows=200, after_batch=save_between_batches)
    rating, status, trajectories_then = seen[0]
    assert rating == -1 and status == "running"  # saved while the import was still going
    assert trajectories_then < table_counts(db)["trajectories"]
    assert report.added["trajectories"] == 60
    assert other.annotation("app-user", step_id)["rating"] == -1


def test_a_bad_record_after_several_batches_undoes_them_all(db, tmp_path):
    dump = write_dump(tmp_path / "bad.jsonl", 60, bad_last=True)
    before = table_counts(db)
    store = Store(db)
    batches = []
    with pytest.raises(StepScopeError, match=r"bad\.jsonl, line 61: .*rating"):
        import_file(store, dump, "jsonl", batch_rows=200, after_batch=lambda b, r: batches.append(b))
    assert len(batches) >= 5
    assert table_counts(db) == before
    assert_intact(db)


def test_a_file_imported_twice_in_batches_adds_nothing_the_second_time(db, tmp_path):
    dump = write_dump(tmp_path / "again.jsonl", 30)
    store = Store(db)
    first = import_file(store, dump, "jsonl", batch_rows=100)
    counts = table_counts(db)
    second = import_file(store, dump, "jsonl", batch_rows=100)
    assert first.added["steps"] == 30 * 4 and not any(second.added.values())
    assert {t: n for t, n in table_counts(db).items() if t != "imports"} == {
        t: n for t, n in counts.items() if t != "imports"}
