"""Import and export carry the human latents: PRM800K's labeler, total_time and quality-control /
screening flags round-trip; the TRL and full-dump exports include confidence and category."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from core.formats import export_file, import_file
from core.store import Store
from formats_samples import PRM800K


@pytest.fixture
def store(tmp_path) -> Store:
    store = Store.open(tmp_path / "a.db")
    yield store
    store.close()


def write(path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def read(path) -> list[dict]:
    return [json.loads(line) for line in open(path)]


def test_prm800k_labeler_total_time_and_flags_round_trip(store, tmp_path):
    first = {**PRM800K[0], "is_quality_control_question": True, "is_initial_screening_question": True}
    import_file(store, write(tmp_path / "in.jsonl", [first, PRM800K[1]]), "prm800k")
    tid = store.list_trajectories(dataset="prm800k", limit=None)[0]["id"]
    assert store.trajectory_label("labeler-a", tid)["dwell_ms"] == 1234
    export_file(store, "prm800k", tmp_path / "out.jsonl", dataset="prm800k")
    out = read(tmp_path / "out.jsonl")
    assert [(r["labeler"], r["label"]["total_time"], r["is_quality_control_question"],
             r["is_initial_screening_question"]) for r in out] == [
        ("labeler-a", 1234, True, True), ("labeler-b", 99, False, False)]  # fmt: skip
    assert out[0]["timestamp"] == PRM800K[0]["timestamp"] and out[0]["label"]["finish_reason"] == "found_error"
    # ... and the exported file imports to the same trajectories and labels.
    again = Store.open(tmp_path / "b.db")
    import_file(again, tmp_path / "out.jsonl", "prm800k")
    export_file(again, "prm800k", tmp_path / "again.jsonl", dataset="prm800k")
    assert read(tmp_path / "again.jsonl") == out
    ratings = lambda s: [(a["annotator"], a["idx"], a["rating"], a["first_error"])  # noqa: E731
                         for t in s.list_trajectories(dataset="prm800k", limit=None) for a in s.annotations(t["id"])]
    assert ratings(again) == ratings(store)
    again.close()


def test_a_gold_item_exports_as_a_quality_control_question(store, tmp_path):
    import_file(store, write(tmp_path / "in.jsonl", [PRM800K[1]]), "prm800k")
    tid = store.list_trajectories(dataset="prm800k", limit=None)[0]["id"]
    store.set_gold(tid, {store.steps(tid)[0]["id"]: 1})
    export_file(store, "prm800k", tmp_path / "out.jsonl")
    assert read(tmp_path / "out.jsonl")[0]["is_quality_control_question"] is True


def labelled(store: Store) -> int:
    problem = store.add_problem("d", "What is 2 + 3?", "5")
    tid = store.add_trajectory(problem, "2 + 3 = 6.\nThe answer is 6.", source="t", rule="line")
    first, second = (s["id"] for s in store.steps(tid))
    store.save_annotation("ann", first, rating=-1, confidence=5, category="calculation", rationale="2 + 3 is 5",
                          dwell_ms=2100, trajectory_dwell_ms=3000)  # fmt: skip
    store.save_annotation("ann", second, rating=0, confidence=2, dwell_ms=900)
    store.save_trajectory_label("ann", tid, flawed_process=True)
    return tid


def test_trl_exports_confidence_and_category_of_human_labels(store, tmp_path):
    labelled(store)
    export_file(store, "trl", tmp_path / "trl.jsonl", labels="human:ann", dataset="d")
    (row,) = read(tmp_path / "trl.jsonl")
    assert row["labels"] == [False, True]
    assert row["confidences"] == [5, 2] and row["categories"] == ["calculation", None]
    export_file(store, "trl-parquet", tmp_path / "trl.parquet", labels="human:ann", dataset="d")
    table = pq.read_table(tmp_path / "trl.parquet").to_pylist()
    assert table[0]["confidences"] == [5, 2] and table[0]["categories"] == ["calculation", None]
    export_file(store, "trl", tmp_path / "mc.jsonl", labels="consensus", dataset="d")
    assert "confidences" not in read(tmp_path / "mc.jsonl")[0]


def test_full_dump_round_trips_latents_and_trajectory_labels(store, tmp_path):
    labelled(store)
    export_file(store, "jsonl", tmp_path / "dump.jsonl", dataset="d")
    dump = read(tmp_path / "dump.jsonl")
    trajectory = next(r["trajectory"] for r in dump if "trajectory" in r)
    first = trajectory["segmentations"][0]["steps"][0]["annotations"][0]
    assert (first["confidence"], first["category"], first["rationale"], first["dwell_ms"], first["rating_order"]) == (
        5, "calculation", "2 + 3 is 5", 2100, 1)
    assert trajectory["labels"][0]["flawed_process"] is True and trajectory["labels"][0]["dwell_ms"] == 3000
    again = Store.open(tmp_path / "b.db")
    import_file(again, tmp_path / "dump.jsonl", "jsonl")
    export_file(again, "jsonl", tmp_path / "again.jsonl", dataset="d")
    assert (tmp_path / "again.jsonl").read_text() == (tmp_path / "dump.jsonl").read_text()
    again.close()
