"""Annotate on a long reasoning trace (issue 26): a review window of 20 steps opened around the
located first error, moved and jumped by keys, and read from the store by the window only."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app_components import click_step, keyboard_bar, press_key, step_controls
from core.formats import import_file
from pages._step_controls import ROW_KEY
from core.store import Store
from core.synth import long_trace, long_trace_records
from core.views import review_window
from core.views.review_window import WINDOW_STEPS, locate_first_error, window_cards

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

STEPS, SEED = 200, 3
TRACE = long_trace(STEPS, SEED, outcome="wrong")
REFLECTIONS = [idx for idx, _ in TRACE.reflections]


def _import(tmp_path, db: Path, steps: int = STEPS, seed: int = SEED) -> int:
    records = tmp_path / f"trace-{steps}-{seed}.jsonl"
    [record] = [r for r in long_trace_records(steps, 3, seed=seed - 2) if r["ground_truth"]["outcome"] == "wrong"]
    records.write_text(json.dumps(record) + "\n")
    store = Store.open(db)
    import_file(store, records, "reasoning", dataset="long")
    [row] = store.list_trajectories(dataset="long")
    return row["id"]


def _values(store: Store, tid: int, first_wrong: int, sampled=range(0, STEPS, 7)) -> None:
    """Rollouts of the policy at every 7th step: some reach the answer before `first_wrong`, none after."""
    steps = store.steps(tid)
    store.add_rollouts([
        {"step_id": steps[i]["id"], "text": "x", "correct": i < first_wrong and k == 0, "model": "tiny-policy"}
        for i in [*sampled, first_wrong] for k in range(4)
    ])  # fmt: skip


@pytest.fixture
def db(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "data" / "long.db"
    monkeypatch.setenv("STEPSCOPE_DB", str(path))
    return path


def annotate(db: Path, tid: int, **state) -> AppTest:
    at = AppTest.from_file(str(REPO / "pages" / "annotate.py"), default_timeout=60)
    for key, value in {"db_path": str(db), "policy_model": "tiny-policy", "annotator": "alice",
                       "ann_mode": "assigned list", "ann_assigned": str(tid), **state}.items():  # fmt: skip
        at.session_state[key] = value
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def captions(at: AppTest) -> str:
    """The captions' text, markdown escapes dropped."""
    return " ".join(c.value.replace("\\", "") for c in at.caption)


def rows(at: AppTest) -> list[int]:
    """The step ids of the rows drawn, in order."""
    return [int(node.key.removeprefix(ROW_KEY)) for node in at._tree
            if getattr(node, "type", None) == "bidi_component" and (node.key or "").startswith(ROW_KEY)]


def test_the_fixture_trace_is_the_one_imported(tmp_path, db):
    tid = _import(tmp_path, db)
    store = Store.open(db)
    assert [s["text"] for s in store.steps(tid)] == list(TRACE.steps) and TRACE.first_error is not None


def test_opens_a_window_of_20_around_the_mc_first_error_and_moves_with_the_keys(tmp_path, db):
    tid = _import(tmp_path, db)
    store = Store.open(db)
    steps = store.steps(tid)
    wrong = TRACE.first_error
    _values(store, tid, wrong)
    at = annotate(db, tid, ann_blind=False)
    start = wrong - review_window.CONTEXT_BEFORE
    assert rows(at) == [s["id"] for s in steps[start : start + WINDOW_STEPS]]
    assert at.session_state["ann_step"] == wrong and step_controls(at, steps[wrong]["id"])["cursor"]
    assert f"steps {start}–{start + 19} of 200, opened at step {wrong} (MC first error)" in captions(at)
    # A rating by key saves on the highlighted step and moves on, in the window.
    press_key(at, "ann_key_r-1")
    assert store.annotation("alice", steps[wrong]["id"])["rating"] == -1 and at.session_state["ann_step"] == wrong + 1
    # Shift+J: 20 steps down; the window follows the highlight.
    press_key(at, "ann_page_down")
    assert at.session_state["ann_step"] == wrong + 21
    assert steps[wrong + 21]["id"] in rows(at) and len(rows(at)) == WINDOW_STEPS
    # J at the window's last row slides it by one.
    last = rows(at)[-1]
    while at.session_state["ann_step"] != [s["idx"] for s in steps if s["id"] == last][0]:
        press_key(at, "ann_down")
    before = rows(at)
    press_key(at, "ann_down")
    assert rows(at) == [*before[1:], steps[[s["id"] for s in steps].index(last) + 1]["id"]]
    # G: back to the located first error (the annotator's own −1 label now locates it).
    press_key(at, "ann_jump_error")
    assert at.session_state["ann_step"] == wrong and rows(at)[review_window.CONTEXT_BEFORE] == steps[wrong]["id"]
    # R: the next reflection step after the highlighted one; L: the lowest value (the first of the zeros).
    press_key(at, "ann_jump_reflection")
    after = [r for r in REFLECTIONS if r > wrong]
    assert at.session_state["ann_step"] == (after[0] if after else wrong)
    press_key(at, "ann_jump_lowest")
    assert at.session_state["ann_step"] == wrong
    assert not at.exception


def test_blind_mode_opens_the_window_without_pointing_at_the_automatic_first_error(tmp_path, db):
    tid = _import(tmp_path, db)
    store = Store.open(db)
    _values(store, tid, TRACE.first_error)
    at = annotate(db, tid)  # blind by default
    start = TRACE.first_error - review_window.CONTEXT_BEFORE
    assert at.session_state["ann_step"] == start  # the highlight starts at the window's top
    shown = captions(at)
    assert "what located it is hidden in blind mode" in shown and "MC first error" not in shown


def test_an_annotators_own_first_error_label_opens_the_window(tmp_path, db):
    tid = _import(tmp_path, db)
    store = Store.open(db)
    steps = store.steps(tid)
    _values(store, tid, TRACE.first_error)
    store.save_annotation("alice", steps[40]["id"], rating=-1, first_error=True)
    store.save_annotation("bob", steps[30]["id"], rating=-1, first_error=True)  # blind: not alice's to see
    at = annotate(db, tid)
    assert at.session_state["ann_step"] == 40 and rows(at)[0] == steps[32]["id"]
    assert "opened at step 40 (your label)" in captions(at)


def test_stop_mode_greys_out_after_a_minus_one_before_the_window(tmp_path, db):
    tid = _import(tmp_path, db)
    store = Store.open(db)
    steps = store.steps(tid)
    _values(store, tid, TRACE.first_error)
    store.save_annotation("alice", steps[100]["id"], rating=-1)
    at = annotate(db, tid, ann_blind=False, ann_stop_mode=True)
    # alice's −1 at step 100 locates the window (her own label) and greys out what follows it.
    assert at.session_state["ann_step"] == 100
    assert step_controls(at, steps[101]["id"])["greyed"] and not step_controls(at, steps[100]["id"])["greyed"]
    click_step(at, steps[101]["id"], "rating", 1)
    assert store.annotation("alice", steps[101]["id"]) is None


def test_a_short_trajectory_keeps_every_step_in_pages_of_20(tmp_path, db):
    tid = _import(tmp_path, db, steps=48, seed=5)
    at = annotate(db, tid, ann_blind=False)
    assert len(rows(at)) == 20 and at.session_state["ann_step"] == 0
    assert "Review window" not in captions(at)
    press_key(at, "ann_page_down")
    assert at.session_state["ann_step"] == 20 and len(rows(at)) == 20
    assert "ann_page_down" not in keyboard_bar(at)["disabled"]


def _statements(store: Store, action) -> list[str]:
    seen: list[str] = []
    store.conn.set_trace_callback(seen.append)
    try:
        action()
    finally:
        store.conn.set_trace_callback(None)
    return seen


def test_the_window_reads_the_same_queries_for_200_steps_as_for_2000(tmp_path, db):
    """No query per step: locating, the jumps and the window's cards issue the same statements
    for a trajectory ten times as long, and build cards for the window's steps only."""
    store = Store.open(db)
    problem = store.add_problem("long", "q", "1")
    counts, built = {}, {}
    for n in (200, 2000):
        solution = "\n\n".join(f"Step text {i}." if i % 9 else f"Wait, step {i} again." for i in range(n))
        tid = store.add_trajectory(problem, solution, source="synth", rule="paragraph")
        trajectory = store.get_trajectory(tid)
        ids = [s["id"] for s in store.steps(tid)]
        store.add_rollouts([{"step_id": ids[i], "text": "x", "correct": i < n // 2, "model": "p"}
                            for i in range(0, n, 5)])  # fmt: skip
        seg = trajectory["current_segmentation_id"]

        def read(trajectory=trajectory, seg=seg, n=n):
            located = locate_first_error(store, seg, "alice", "p", others_visible=True)
            nexts = store.next_step_opening_with(seg, located.idx, ("Wait",))
            built[n] = (located.idx, nexts, len(window_cards(store, trajectory, n, "p", 100, 120)))

        counts[n] = len(_statements(store, read))
    assert built[200] == (100, 108, 20) and built[2000] == (1000, 1008, 20)
    assert counts[200] == counts[2000] <= 12


def test_the_largest_disagreement_is_the_step_whose_scores_differ_most(tmp_path, db):
    tid = _import(tmp_path, db)
    store = Store.open(db)
    steps = store.steps(tid)
    _values(store, tid, TRACE.first_error)  # 0.25 before the first error, 0 from it on
    seg = store.get_trajectory(tid)["current_segmentation_id"]
    assert store.largest_disagreement_step(seg, "tiny-policy") is None  # one score per step: nothing to disagree
    store.add_verdicts([{"judge": "j", "kind": "step", "step_id": steps[70]["id"], "p_yes": 0.9},
                        {"judge": "j", "kind": "step", "step_id": steps[140]["id"], "p_yes": 0.5}])  # fmt: skip
    assert store.largest_disagreement_step(seg, "tiny-policy") == 70  # |0.25 - 0.9| beats |0.25 - 0.5|
    store.save_annotation("bob", steps[140]["id"], rating=-1)  # 0 against the judge's 0.5 and MC 0.25
    store.save_annotation("alice", steps[21]["id"], rating=1)  # 1 against MC 0.25: 0.75, the largest
    assert store.largest_disagreement_step(seg, "tiny-policy") == 21
    assert store.largest_disagreement_step(seg, "tiny-policy", annotator="bob") == 70  # alice's not counted
    # On the page, D jumps there.
    at = annotate(db, tid, ann_blind=False)
    press_key(at, "ann_jump_disagree")
    assert at.session_state["ann_step"] == 21


def test_values_of_another_policy_locate_the_first_error_when_the_sidebars_has_none(tmp_path, db):
    tid = _import(tmp_path, db)
    _values(Store.open(db), tid, TRACE.first_error)  # by tiny-policy
    at = annotate(db, tid, ann_blind=False, policy_model="another-policy")
    assert at.session_state["ann_step"] == TRACE.first_error
    assert f"opened at step {TRACE.first_error} (MC first error)" in captions(at)
