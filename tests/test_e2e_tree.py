"""End to end: a real tree search with the embedded SmolLM2 on a sample problem, watched in a real
headless Chromium on Explore: the tree appears, grows while the job runs (no reload), and a
click on a node shows its rollouts. Screenshots go to tests/artifacts/."""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path

import pytest

from e2e_server import choose, chromium, settle, streamlit_server

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.smollm2]

ARTIFACTS = Path(__file__).parent / "artifacts"
LOAD_TIMEOUT = 120_000
ROLLOUTS = re.compile(r"([\d,]+) nodes · ([\d,]+) rollouts")


def tree_counts(page) -> tuple[int, int]:
    found = ROLLOUTS.search(page.inner_text("main"))
    assert found, "the tree's caption is missing"
    return int(found.group(1).replace(",", "")), int(found.group(2).replace(",", ""))


def click_node(page, node_id: int) -> None:
    """A real click on the node's mark in the chart (SVG: each mark carries its tooltip fields)."""
    mark = page.locator(f"[data-testid='stVegaLiteChart'] [aria-label^='node {node_id}:']").first
    mark.wait_for(timeout=30_000)
    mark.click()
    page.get_by_text(re.compile(rf"Node {node_id} · depth")).first.wait_for(timeout=60_000)


def test_a_tree_search_grows_in_explore_and_a_node_shows_its_rollouts(tmp_path, smollm2_dense_dir):
    ARTIFACTS.mkdir(exist_ok=True)
    db = tmp_path / "tree.db"
    env = {"STEPSCOPE_DEFAULT_POLICY": "smollm2-135m"}
    with streamlit_server(db, env=env, log=ARTIFACTS / "e2e-tree-server.log") as url, chromium() as browser:
        page = browser.new_context(viewport={"width": 1400, "height": 2400}).new_page()
        page.goto(url + "/?trajectory=1&step=0")
        page.get_by_role("heading", name="Rollout tree").wait_for(timeout=LOAD_TIMEOUT)
        settle(page)
        nodes_before, rollouts_before = tree_counts(page)
        assert rollouts_before == 0 and nodes_before >= 4  # the question and trajectory 1's three steps
        with sqlite3.connect(db) as conn:
            (root,) = conn.execute("SELECT n.id FROM nodes n JOIN trajectories t ON t.problem_id = n.problem_id"
                                   " WHERE t.id = 1 AND n.depth = 0").fetchone()  # fmt: skip
        click_node(page, root)
        page.evaluate("window.__stepscope_marker = 'same page'")
        choose(page, "Search", "expand")  # picked again if a rerun closes the open list first
        page.get_by_role("spinbutton", name="Rollout budget").fill("12")
        page.get_by_role("spinbutton", name="Rollouts per node (k)").fill("3")
        page.get_by_role("spinbutton", name="Max new tokens").last.fill("48")
        page.get_by_role("button", name="Grow the tree").click()
        page.get_by_text(re.compile(r"tree search job \d+ queued")).wait_for(timeout=30_000)
        shot = lambda name: page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)  # noqa: E731

        # The tree grows through the live fragment: several rollout counts seen, each larger.
        seen = [0]
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            rollouts = tree_counts(page)[1]
            if rollouts > seen[-1]:
                seen.append(rollouts)
                if len(seen) == 2:
                    shot("e2e-tree-growing")
            with sqlite3.connect(db) as conn:
                status = conn.execute("SELECT status FROM jobs ORDER BY id DESC LIMIT 1").fetchone()[0]
            if status in ("done", "failed", "cancelled") and tree_counts(page)[1] == seen[-1]:
                page.wait_for_timeout(3000)  # the last refresh after the job ends
                if tree_counts(page)[1] == seen[-1]:
                    break
            page.wait_for_timeout(500)
        assert status == "done", status
        with sqlite3.connect(db) as conn:
            stored = conn.execute("SELECT COUNT(*) FROM rollouts").fetchone()[0]
        assert seen[-1] == stored > 0
        assert len(seen) >= 3, f"the tree did not visibly grow while the job ran: {seen}"
        assert page.evaluate("window.__stepscope_marker") == "same page"
        assert tree_counts(page)[0] > nodes_before  # the expanded rollouts' steps are new nodes
        shot("e2e-tree-grown")

        # A click on the root shows its rollouts: 3 sampled from the question.
        click_node(page, root)
        page.get_by_text(re.compile(r"\(\d/3 reach the answer\)")).first.wait_for(timeout=60_000)
        assert page.locator("[data-testid='stDataFrame']").count() >= 1
        shot("e2e-tree-node")
