"""End to end on a long reasoning trace (issue 26): a real `streamlit run app.py` and headless
Chromium. A 1,000-step trace (four synthetic 250-step traces, the last one wrong) is imported
through the reasoning importer before the server starts, with rollouts that locate its first
error; in the browser Explore switches its splitter and back, jumps from the minimap and to the
first error, and Annotate opens the review window there and saves a label by key, about as fast
as on a short trajectory.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import pytest

from core.store import Store
from e2e_server import chromium, settle, streamlit_server

pytestmark = [pytest.mark.slow, pytest.mark.browser]

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import long_traces  # noqa: E402

LOAD_TIMEOUT = 120_000  # ms: a busy 2-core box


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    folder = tmp_path_factory.mktemp("e2e-long")
    db = folder / "long.db"
    short = long_traces.short_reference(db)  # the Annotate queue's first (ids in order)
    built = long_traces.build(db, 1000)
    with streamlit_server(db, log=folder / "server.log", start_timeout=180) as url:
        with chromium() as browser:
            yield url, browser, db, short, built


def test_explore_switches_the_splitter_and_jumps_to_the_first_error(app):
    url, browser, db, _, built = app
    page = browser.new_context(viewport={"width": 1400, "height": 1600}).new_page()
    page.goto(f"{url}/?trajectory={built['trajectory_id']}&step=0")
    page.get_by_text("of 1,000; click the chart to jump").wait_for(timeout=LOAD_TIMEOUT)
    page.locator(".vega-embed").first.wait_for(timeout=LOAD_TIMEOUT)  # the minimap
    settle(page, timeout=LOAD_TIMEOUT)
    # Split into sentences merged to 200-600 characters, then back to paragraphs.
    page.get_by_text(re.compile("Split into steps by: paragraph")).click()
    page.get_by_role("textbox", name="or a rule").fill("sentence-merged:200-600")
    page.get_by_role("button", name="Split").click()
    page.get_by_text(re.compile(r"cut by 'sentence-merged:200-600': \d+ steps \(were 1000\)")).wait_for(timeout=LOAD_TIMEOUT)
    settle(page, timeout=LOAD_TIMEOUT)
    store = Store.open(db)
    assert store.get_trajectory(built["trajectory_id"])["rule"] == "sentence-merged:200-600"
    page.get_by_role("textbox", name="or a rule").fill("paragraph")
    page.get_by_role("button", name="Split").click()
    page.get_by_text("an existing segmentation, current again").wait_for(timeout=LOAD_TIMEOUT)
    settle(page, timeout=LOAD_TIMEOUT)
    # The minimap: a click on step 605's column selects it, and the window opens there.
    column = page.locator('.vega-embed [aria-label="step: 604.5; right: 605.5"]')
    box = column.bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + 3)
    page.get_by_text("Step 605: prefix and rollouts").wait_for(timeout=LOAD_TIMEOUT)
    page.get_by_text("steps 597–616 of 1,000").wait_for(timeout=LOAD_TIMEOUT)
    settle(page, timeout=LOAD_TIMEOUT)
    page.get_by_role("button", name="First error").click()
    first = built["first_error"]
    page.get_by_text(f"Step {first}: prefix and rollouts").wait_for(timeout=LOAD_TIMEOUT)
    page.get_by_text(f"steps {first - 8}–{first + 11} of 1,000").wait_for(timeout=LOAD_TIMEOUT)
    page.context.close()


def _save_seconds(page, key: str = "3") -> float:
    page.wait_for_timeout(2500)  # Streamlit binds a button's shortcut a moment after it shows
    started = time.monotonic()
    page.keyboard.press(key)
    page.get_by_text("saved: step").first.wait_for(timeout=LOAD_TIMEOUT)
    seconds = time.monotonic() - started
    settle(page, timeout=LOAD_TIMEOUT)
    return seconds


def test_annotate_opens_the_review_window_at_the_first_error_and_saves_as_fast(app):
    url, browser, db, short, built = app
    page = browser.new_context(viewport={"width": 1400, "height": 1600}).new_page()
    page.goto(f"{url}/annotate")
    page.get_by_role("heading", name="Annotate").wait_for(timeout=LOAD_TIMEOUT)
    settle(page, timeout=LOAD_TIMEOUT)
    page.get_by_role("textbox", name="Annotator name").focus()
    page.keyboard.type("long-annotator")
    page.keyboard.press("Tab")
    page.get_by_text("Trajectory 1 of").wait_for(timeout=LOAD_TIMEOUT)
    settle(page, timeout=LOAD_TIMEOUT)
    short_save = _save_seconds(page)
    page.keyboard.press("n")
    first = built["first_error"]
    # Blind mode (the default): the window opens around the first error, the highlight at its top.
    page.get_by_text(f"Review window: steps {first - 8}–{first + 11} of 1,000").wait_for(timeout=LOAD_TIMEOUT)
    settle(page, timeout=LOAD_TIMEOUT)
    long_save = _save_seconds(page)
    store = Store.open(db)
    steps = store.steps(built["trajectory_id"])
    assert store.annotation("long-annotator", steps[first - 8]["id"])["rating"] == 1
    assert store.annotation("long-annotator", store.steps(short["trajectory_id"])[0]["id"])["rating"] == 1
    print(f"save by key: {short_save:.2f} s on 20 steps, {long_save:.2f} s on 1,000")
    assert long_save <= 3 * short_save + 2.0  # a busy machine: the same order, not the same second
    page.context.close()
