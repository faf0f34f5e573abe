"""benchmarks/long_traces.py measures what it says (issue 26): its long trajectories have the step
count and first error they are built with, through the real import, and its budget rows count
the simulated replay as benchmarks/mcpe_bench.py does."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import long_traces  # noqa: E402

from core.store import Store  # noqa: E402
from core.views.review_window import locate_first_error  # noqa: E402


def test_a_1000_step_trace_imports_as_1000_steps_with_values_that_locate_its_first_error(tmp_path):
    db = tmp_path / "long.db"
    built = long_traces.build(db, 1000)
    assert built["steps"] == 1000 and 750 <= built["first_error"] < 1000  # the last of 4 traces goes wrong
    store = Store.open(db)
    trajectory = store.get_trajectory(built["trajectory_id"])
    assert trajectory["rule"] == "paragraph" and trajectory["correct"] is False
    located = locate_first_error(store, trajectory["current_segmentation_id"], None, long_traces.POLICY,
                                 others_visible=True)  # fmt: skip
    assert (located.idx, located.source) == (built["first_error"], "MC first error")


def test_budget_rows_grow_by_about_the_same_rollouts_per_doubling():
    budget = long_traces.budget_by_steps((16, 64), trajectories=40)
    rows = budget["rows"]
    assert set(rows) == {"16", "64"} and all(row["agreement"] >= 0.95 for row in rows.values())
    assert rows["64"]["budget_ratio"] < rows["16"]["budget_ratio"]
    assert rows["16"]["fixed_rollouts_per_trajectory"] == 16 * 15  # fixed N; the outcome settles the last step
    assert len(budget["search_rollouts_per_doubling_of_m"]) == 1
