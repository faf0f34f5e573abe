"""A real server after a data change: Compare shows its figures as they were, says so, and
updates itself (no click) when the current ones are computed in the background. Every result
counts as slow here (STEPSCOPE_REVALIDATE_AFTER_S=0), so a small store shows the path a 100,000
trajectory one takes."""

from __future__ import annotations

import pytest

from core.models import DEFAULT_MODEL
from core.sample_solutions import ensure_trajectories
from core.store import Store
from core.views.inputs import default_policy
from e2e_server import chromium, settle, streamlit_server

pytestmark = [pytest.mark.slow, pytest.mark.browser]

STALE = "before the latest change"


def label(store: Store, trajectory: int, ratings) -> None:
    for step, rating in zip(store.steps(trajectory), ratings):
        store.add_rollouts([{"step_id": step["id"], "text": " x", "correct": rating == 1, "model": default_policy(DEFAULT_MODEL)}])
        store.save_annotation("alice", step["id"], rating=rating)


def test_compare_updates_itself_after_a_label_is_saved(tmp_path):
    from playwright.sync_api import expect

    db = tmp_path / "stale.db"
    store = Store.open(db)
    ensure_trajectories(store)
    label(store, 1, (1, 1, -1))
    with streamlit_server(db, env={"STEPSCOPE_REVALIDATE_AFTER_S": "0"}) as url, chromium() as browser:
        page = browser.new_page()
        page.goto(url + "/compare")
        compared = page.locator("[data-testid='stMetric']").filter(has_text="Steps compared")
        expect(compared).to_contain_text("3", timeout=90_000)
        settle(page)
        label(store, 2, (1, -1))  # a person labels two more steps
        page.reload()
        # The figures as they were, said to be so (tests/test_stale_figures.py checks which figures:
        # here the background is done within a second, when the page reruns itself)...
        expect(page.get_by_text(STALE)).to_be_visible(timeout=60_000)
        expect(compared).to_contain_text("5", timeout=60_000)  # ...then, with no click, the current ones
        expect(page.get_by_text(STALE)).to_have_count(0)
