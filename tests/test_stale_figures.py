"""A page after a data change: slow figures are shown as they were, marked stale, while the
current ones are computed in the background (core.store.disk_cache.remembered's `on_stale`); the
next run after they are ready shows the current ones. AppTest on the real Compare page."""

from __future__ import annotations

import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.sample_solutions import ensure_trajectories
from core.store import Store, disk_cache

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # pages import pages._shared, as under `streamlit run app.py`

STALE = "before the latest change"


class GatedPool(ThreadPoolExecutor):
    """The background computation waits for the test to open the gate."""

    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self.gate = threading.Event()

    def submit(self, fn, /, *args, **kwargs):
        def gated():
            assert self.gate.wait(60)
            return fn(*args, **kwargs)

        return super().submit(gated)


@pytest.fixture
def slow(monkeypatch):
    """Every result counts as slow, and background work waits for the gate."""
    pool = GatedPool()
    monkeypatch.setattr(disk_cache, "REVALIDATE_AFTER_S", 0.0)
    monkeypatch.setattr(disk_cache, "_POOL", pool)
    yield pool
    pool.gate.set()
    pool.shutdown(wait=True)


def wait_for_background(timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while disk_cache.revalidating():
        assert time.monotonic() < deadline, "the background computation never finished"
        time.sleep(0.02)


def compare_page(db: Path) -> AppTest:
    at = AppTest.from_file(str(REPO / "pages" / "compare.py"), default_timeout=60)
    at.session_state["db_path"] = str(db)
    at.session_state["policy_model"] = "tiny-policy"
    at.session_state["cmp_source"] = "mc-hard"
    at.session_state["cmp_human"] = "alice"
    return at


def label(store: Store, trajectory: int, ratings) -> None:
    for step, rating in zip(store.steps(trajectory), ratings):
        store.add_rollouts([{"step_id": step["id"], "text": " x", "correct": rating == 1, "model": "tiny-policy"}])
        store.save_annotation("alice", step["id"], rating=rating)


def shown(at: AppTest) -> tuple[str, bool]:
    assert not at.exception, [e.message for e in at.exception]
    steps = {m.label: m.value for m in at.metric}["Steps compared"]
    return steps, any(STALE in info.value for info in at.info)


def test_compare_shows_its_figures_as_they_were_until_the_current_ones_are_ready(tmp_path, monkeypatch, slow):
    db = tmp_path / "stale.db"
    monkeypatch.setenv("STEPSCOPE_DB", str(db))
    store = Store.open(db)
    ensure_trajectories(store)
    label(store, 1, (1, 1, -1))
    at = compare_page(db)
    at.run()
    assert shown(at) == ("3", False)  # nothing earlier to show: computed in the open

    label(store, 2, (1, -1))  # a person labels two more steps
    at.run()
    assert shown(at) == ("3", True)  # as it was, and the page says so
    assert disk_cache.revalidating() >= 1

    slow.gate.set()
    wait_for_background()
    at.run()
    assert shown(at) == ("5", False)


def test_without_a_change_nothing_is_computed_again_or_called_stale(tmp_path, monkeypatch, slow):
    db = tmp_path / "same.db"
    monkeypatch.setenv("STEPSCOPE_DB", str(db))
    store = Store.open(db)
    ensure_trajectories(store)
    label(store, 1, (1, -1))
    at = compare_page(db)
    at.run()
    at.run()
    assert shown(at) == ("2", False) and disk_cache.revalidating() == 0


def test_best_of_n_shows_its_curves_as_they_were_until_the_current_ones_are_ready(tmp_path, monkeypatch, slow):
    db = tmp_path / "bon.db"
    monkeypatch.setenv("STEPSCOPE_DB", str(db))
    store = Store.open(db)
    ensure_trajectories(store)
    problem = store.add_problem("bon", "2 + 2?", "4")
    for i, answer in enumerate(["4", "5"]):
        store.add_trajectory(problem, f"Attempt {i}: the answer is {answer}.", source="policy", model="pol",
                             final_answer=answer, correct=answer == "4")  # fmt: skip
    at = AppTest.from_file(str(REPO / "pages" / "best_of_n.py"), default_timeout=60)
    at.session_state["db_path"] = str(db)
    at.run()
    assert not at.exception, [e.message for e in at.exception]

    def largest_k() -> int:
        return int(at.dataframe[0].value["k"].max())

    assert largest_k() == 2 and not any(STALE in info.value for info in at.info)
    store.add_trajectory(problem, "Attempt 2: the answer is 4.", source="policy", model="pol", final_answer="4",
                         correct=True)  # fmt: skip
    at.run()
    assert largest_k() == 2 and any(STALE in info.value for info in at.info)
    slow.gate.set()
    wait_for_background()
    at.run()
    assert largest_k() == 3 and not any(STALE in info.value for info in at.info)


def test_explores_disagreement_filter_lists_the_set_as_it_was_until_the_current_one_is_ready(tmp_path, monkeypatch,
                                                                                              slow):  # fmt: skip
    db = tmp_path / "explore.db"
    monkeypatch.setenv("STEPSCOPE_DB", str(db))
    store = Store.open(db)
    ensure_trajectories(store)
    steps = {}
    for trajectory in (2, 3):
        steps[trajectory] = store.steps(trajectory)[0]["id"]
        store.add_rollouts([{"step_id": steps[trajectory], "text": " x", "correct": True, "model": "tiny-policy"}])
    store.save_annotation("alice", steps[3], rating=-1)  # a person says wrong where a rollout reached the answer
    at = AppTest.from_file(str(REPO / "pages" / "explore.py"), default_timeout=60)
    at.session_state["db_path"] = str(db)
    at.session_state["policy_model"] = "tiny-policy"
    at.session_state["ex_disagree"] = "mc-hard"
    at.run()

    def matching() -> tuple[str, bool]:
        assert not at.exception, [e.message for e in at.exception]
        (box,) = [s for s in at.selectbox if s.key == "ex_pick"]
        return box.label.split(" match")[0], any(STALE in info.value for info in at.info)

    assert matching() == ("Trajectory (1", False)
    store.save_annotation("alice", steps[2], rating=-1)  # and here
    at.run()
    assert matching() == ("Trajectory (1", True)
    slow.gate.set()
    wait_for_background()
    at.run()
    assert matching() == ("Trajectory (2", False)
