"""Human latents on labels, the audit trail, gold items, the error taxonomy, dwell times, and the
job worker process (issue 13)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from core.errors import StepScopeError
from core.store import Store
from core.views.annotate import (
    DEFAULT_TAXONOMY, DwellClock, error_taxonomy, save_label, set_error_taxonomy, stopped_after,
)  # fmt: skip


@pytest.fixture
def store(tmp_path) -> Store:
    store = Store.open(tmp_path / "labels.db")
    yield store
    store.close()


def three_steps(store: Store) -> tuple[int, list[int]]:
    problem = store.add_problem("d", "What is 2 + 3 + 4?", "9")
    trajectory = store.add_trajectory(problem, "2 + 3 = 5.\n5 + 4 = 10.\nThe answer is 10.", source="t", rule="line")
    return trajectory, [s["id"] for s in store.steps(trajectory)]


def test_latents_are_saved_with_the_label_and_the_order_of_rating(store):
    tid, (a, b, c) = three_steps(store)
    store.save_annotation("ann", b, rating=-1, confidence=4, category="calculation", rationale="5 + 4 is 9",
                          dwell_ms=1500, trajectory_dwell_ms=4000)  # fmt: skip
    store.save_annotation("ann", a, rating=1, dwell_ms=700, trajectory_dwell_ms=6000)
    store.save_annotation("ann", a, rating=0, dwell_ms=99)  # an edit keeps the first dwell and order
    rows = {r["step_id"]: r for r in store.annotations(tid, annotator="ann")}
    assert (rows[b]["confidence"], rows[b]["category"], rows[b]["rationale"]) == (4, "calculation", "5 + 4 is 9")
    assert (rows[b]["rating_order"], rows[a]["rating_order"]) == (1, 2)
    assert (rows[b]["dwell_ms"], rows[a]["dwell_ms"]) == (1500, 700)
    assert store.trajectory_label("ann", tid)["dwell_ms"] == 6000
    assert c not in rows


@pytest.mark.parametrize("fields", [{"confidence": 6}, {"confidence": True}, {"dwell_ms": -1},
                                    {"rationale": 3}, {"category": "x" * 81}])
def test_bad_latents_are_refused(store, fields):
    _, (a, *_rest) = three_steps(store)
    with pytest.raises(StepScopeError):
        store.save_annotation("ann", a, rating=1, **fields)
    assert store.annotation("ann", a) is None


def test_every_change_is_in_the_history_and_first_labels_are_kept(store):
    tid, (a, b, _) = three_steps(store)
    store.save_annotation("ann", a, rating=-1, category="logic")
    store.save_annotation("ann", a, rating=1)  # clears the category: it only describes a wrong step
    store.save_annotation("ann", a, first_error=True)
    store.save_annotation("ann", b, first_error=True)  # moves the mark: the clearing is recorded too
    store.save_annotation("ann", b, first_error=True)  # no change, no row
    store.save_trajectory_label("ann", tid, flawed_process=True)
    changes = [(h["annotator"], h["idx"], h["field"], h["old_value"], h["new_value"])
               for h in store.label_history(trajectory_id=tid)]
    assert changes == [
        ("ann", 0, "rating", None, -1), ("ann", 0, "category", None, "logic"), ("ann", 0, "rating", -1, 1),
        ("ann", 0, "category", "logic", None), ("ann", 0, "first_error", False, True),
        ("ann", 1, "first_error", False, True), ("ann", 0, "first_error", True, False),
        ("ann", None, "flawed_process", False, True),
    ]  # fmt: skip
    assert all(h["changed_at"] for h in store.label_history(trajectory_id=tid))
    assert store.first_ratings([a, b]) == {("ann", a): -1}
    assert store.annotation("ann", a)["rating"] == 1


def test_gold_items_and_answers(store):
    tid, (a, b, c) = three_steps(store)
    store.set_gold(tid, {a: 1, b: -1})
    store.save_annotation("ann", a, rating=1)
    store.save_annotation("ann", b, rating=1)
    store.save_annotation("ann", c, rating=-1)  # not a gold step
    answers = [(r["annotator"], r["idx"], r["expected"], r["given"]) for r in store.gold_answers()]
    assert answers == [("ann", 0, 1, 1), ("ann", 1, -1, 1)]
    assert store.gold_trajectory_ids() == [tid]
    problem = store.add_problem("d", "Another?", "1")
    elsewhere = store.steps(store.add_trajectory(problem, "1.\nThe answer is 1.", source="t", rule="line"))[0]["id"]
    with pytest.raises(StepScopeError, match="steps of trajectory"):
        store.set_gold(tid, {a: 1, elsewhere: 1})
    with pytest.raises(StepScopeError):
        store.set_gold(tid, {a: 2})
    assert store.gold_labels(tid) == {a: 1, b: -1}  # the refused calls changed nothing


def test_error_taxonomy_is_configurable_and_checked(store):
    _, (a, *_rest) = three_steps(store)
    assert error_taxonomy(store) == list(DEFAULT_TAXONOMY)
    assert set_error_taxonomy(store, "arithmetic, units, arithmetic, ") == ["arithmetic", "units"]
    save_label(store, "ann", a, rating=-1)
    save_label(store, "ann", a, category="units")
    with pytest.raises(StepScopeError, match="taxonomy"):
        save_label(store, "ann", a, category="calculation")
    assert store.annotation("ann", a)["category"] == "units"
    assert set_error_taxonomy(store, "") == list(DEFAULT_TAXONOMY)


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_dwell_clock_measures_focus_to_rating_without_hidden_time():
    now = FakeClock()
    clock = DwellClock(now)
    clock.seen(1, 10)
    clock.seen(1, 11)
    now.t += 3.0
    assert clock.rated(1, 10) == (3000, 3000)
    now.t += 2.0
    clock.hidden_span(0.5)  # the tab was hidden for the last half second
    assert clock.rated(1, 11) == (1500, 4500)  # from the previous rating, not from the first render
    now.t += 1.0
    assert clock.rated(1, 10) == (1000, 5500)


def test_stop_at_first_error_finds_the_first_wrong_step():
    class Card:
        def __init__(self, idx):
            self.idx, self.step_id = idx, 100 + idx

    cards = [Card(i) for i in range(4)]
    assert stopped_after({101: {"rating": 0}}, cards) is None
    assert stopped_after({101: {"rating": 0}, 102: {"rating": -1}, 103: {"rating": -1}}, cards) == 2


# --- the worker process ----------------------------------------------------------------------


def test_one_worker_process_per_database_file_at_a_lower_priority(tmp_path):
    from core.jobs.worker_process import LOCK_HELD_EXIT, lock_path

    db = tmp_path / "w.db"
    Store.open(db).close()
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    first = subprocess.Popen([sys.executable, "-c", "import sys; from core.jobs.worker_process import serve;"
                              f" sys.exit(serve({str(db)!r}, warm=False))"], env=env)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and str(first.pid) not in (lock_path(db).read_text() if lock_path(db).exists() else ""):
            time.sleep(0.2)
        assert lock_path(db).read_text().strip() == str(first.pid)
        # No wait needed: serve() lowers its priority before it takes the lock and writes its pid.
        # 10 lower than ours, or the lowest there is (19) when the suite itself runs under `nice`.
        assert os.getpriority(os.PRIO_PROCESS, first.pid) >= min(os.getpriority(os.PRIO_PROCESS, 0) + 10, 19)
        second = subprocess.run([sys.executable, "-m", "core.jobs.worker_process", str(db)], env=env, timeout=120)
        assert second.returncode == LOCK_HELD_EXIT
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # kill -9 frees the lock: the next worker takes over.
    from core.jobs.worker_process import take_lock

    assert take_lock(db) is not None
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# --- Compare's view of the latents -----------------------------------------------------------


def test_latent_views_against_mc(store):
    from core.views.latents import (
        by_confidence, by_dwell, categories_by_position, gold_from_annotator, latent_rows, per_annotator,
    )  # fmt: skip

    tid, (a, b, c) = three_steps(store)
    # MC: step a always reaches the answer, b never, c half the time (policy "p").
    store.add_rollouts([{"step_id": sid, "text": "x", "correct": ok, "model": "p"}
                        for sid, oks in ((a, [1] * 4), (b, [0] * 4), (c, [1, 0, 1, 0])) for ok in oks])  # fmt: skip
    store.save_annotation("sure", a, rating=1, confidence=5, dwell_ms=1000)  # agrees with MC
    store.save_annotation("sure", b, rating=-1, confidence=5, category="calculation", dwell_ms=2000)  # agrees
    store.save_annotation("sure", c, rating=-1, confidence=1, category="logic", dwell_ms=9000)  # disagrees (0.5 >= 0.5)
    store.save_annotation("guess", a, rating=-1, confidence=2, dwell_ms=500)  # disagrees
    gold_from_annotator(store, tid, "sure")
    rows = latent_rows(store, "mc-soft", "p", 0.5)
    assert {(r.annotator, r.idx): r.agrees for r in rows} == {
        ("sure", 0): True, ("sure", 1): True, ("sure", 2): False, ("guess", 0): False}
    levels = {row["confidence"]: row for row in by_confidence(rows)}
    assert levels[5]["agreement"] == 1.0 and levels[1]["agreement"] == 0.0 and levels[2]["labels"] == 1
    assert levels[1]["mean MC interval width"] > levels[5]["mean MC interval width"]  # 2/4 is the widest
    dwell = by_dwell(rows, bins=2)
    assert [d["disagreement"] for d in dwell] == [0.5, 0.5] and dwell[0]["median dwell s"] < dwell[1]["median dwell s"]
    people = {row["annotator"]: row for row in per_annotator(rows, store.gold_answers())}
    assert people["sure"]["gold accuracy"] == 1.0 and people["sure"]["gold steps"] == 3
    assert people["guess"]["gold accuracy"] == 0.0 and people["sure"]["calibration gap"] == 1.0
    positions = {(r["position"], r["category"]): r["steps"] for r in categories_by_position(rows)}
    assert positions == {("first quarter", "uncategorised"): 1, ("second quarter", "calculation"): 1,
                         ("third quarter", "logic"): 1}
    with pytest.raises(StepScopeError):
        gold_from_annotator(store, tid, "nobody")


def test_compare_can_use_first_or_final_labels(store):
    from core.views.compare import labelled_steps

    _, (a, *_rest) = three_steps(store)
    store.save_annotation("ann", a, rating=-1)
    store.save_annotation("ann", a, rating=1)
    assert labelled_steps(store)[0].ratings == {"ann": 1}
    assert labelled_steps(store, first=True)[0].ratings == {"ann": -1}


def test_the_cli_spells_the_label_sources_as_the_grammar_does():
    """The CLI's --labels help is written out (reading it must not import the store): it names
    every source kind of core.formats.labels."""
    from core.cli.data import LABELS_HELP
    from core.formats.labels import SOURCES_HELP

    assert LABELS_HELP.endswith(SOURCES_HELP)
