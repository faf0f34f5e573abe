"""End to end (issue 25): a beam search started from Explore on a sample problem, in a real
`streamlit run app.py` driven by a real headless Chromium, with the tiny random transformer as
the policy (tests/tiny_model.py, through $STEPSCOPE_DEFAULT_POLICY): the app's worker runs the
search, its candidates appear on the Search page without a reload, pruned ones marked, the final
answer graded; a judge scores the answer's final beam and its node shows that verifier's score
beside the search's own; a pruned candidate picked in the tree gets its MC value; model text
stays text. And a search the app's worker resumes grows on the open page: the tree its journal
held, then the finished search, no reload. Screenshots go to tests/artifacts/."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from e2e_server import chromium, settle, streamlit_server
from simulated_steps import KilledAt, SteppedPolicy

from core.jobs.runner import EngineCache, claim_job, retry_job, run_job
from core.sample_solutions import ensure_trajectories
from core.store import Store
from core.views.search import SearchRequest, queue_search

# Skipped without a browser, failed instead where the run requires one (tests/required.py).
pytestmark = [pytest.mark.slow, pytest.mark.browser]

ARTIFACTS = Path(__file__).parent / "artifacts"
LOAD_TIMEOUT = 120_000  # ms: the first run imports the scientific stack on a busy 2-core box
JOB_TIMEOUT = 300_000  # ms: the worker starts, loads the policy, runs the job


def test_a_beam_search_from_explore_grows_live_and_its_nodes_take_other_verifiers(tmp_path, tiny_model_dir):
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    db = tmp_path / "search.db"
    env = {"STEPSCOPE_DEFAULT_POLICY": str(tiny_model_dir)}
    with streamlit_server(db, env=env, log=ARTIFACTS / "e2e-search-server.log") as url, chromium() as browser:
        page = browser.new_context(viewport={"width": 1400, "height": 2400}).new_page()
        shot = lambda name: page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)  # noqa: E731
        page.goto(url + "/?trajectory=1&step=0")
        page.get_by_role("heading", name="Explore").wait_for(timeout=LOAD_TIMEOUT)
        settle(page)
        with sqlite3.connect(db) as conn:
            (problem_id,) = conn.execute("SELECT problem_id FROM trajectories WHERE id = 1").fetchone()

        # From Explore to the Search page of the trajectory's problem.
        page.get_by_role("button", name="Search this problem step by step").click()
        page.get_by_role("heading", name="Search").wait_for(timeout=LOAD_TIMEOUT)
        settle(page)
        assert f"problem={problem_id}" in page.url
        assert "A baker makes 4 trays of 12 cookies" in page.inner_text("main")
        page.evaluate("window.__stepscope_marker = 'same page'")

        # The form's defaults: beam search, random scorer, 4 beams of width 2, seed 42.
        page.get_by_role("button", name="Start the search").click()
        page.get_by_text("search job 1 queued").first.wait_for(timeout=30_000)
        shot("e2e-search-queued")

        # The worker runs it; the page shows its candidates and its graded answer, no reload.
        page.get_by_text(re.compile(r"^Final answer: ")).wait_for(timeout=JOB_TIMEOUT)
        page.get_by_text("Depth 1 · 4 candidates").first.wait_for(timeout=30_000)
        assert page.evaluate("window.__stepscope_marker") == "same page"
        shot("e2e-search-done")
        with sqlite3.connect(db) as conn:
            search_id, answer, correct = conn.execute("SELECT id, answer, correct FROM searches").fetchone()
            marks = dict(conn.execute("SELECT mark, COUNT(*) FROM search_candidates GROUP BY mark").fetchall())
            (status,) = conn.execute("SELECT status FROM jobs WHERE id = 1").fetchone()
        assert status == "done" and marks.get("pruned", 0) >= 1, (status, marks)
        main = page.inner_text("main")
        grade = "no answer" if answer is None else f"{'correct' if correct else 'wrong'}"
        assert re.search(r"Final answer: .*" + re.escape(grade), main), main
        # Every candidate is a row of its depth's table; the pruned ones say so (and are greyed).
        cells = page.locator("[data-testid='stTable'] td")
        # (expect: a count reached once the last refresh's elements replaced the ones before)
        expect(cells.filter(has_text=re.compile(r"^pruned$"))).to_have_count(marks["pruned"])
        expect(cells.filter(has_text=re.compile(r"^chosen"))).to_have_count(marks.get("chosen", 0))
        pruned_colour = cells.filter(has_text=re.compile(r"^pruned$")).first.evaluate("e => getComputedStyle(e).color")
        assert pruned_colour == "rgb(154, 160, 166)"  # greyed

        # The answer's final beam is the candidate shown; a judge (the policy) scores its steps,
        # and its node then shows that verifier's score beside the search's own.
        page.get_by_text(re.compile(rf"^search #{search_id} \(beam, scorer random:42\): score ")).first.wait_for(
            timeout=30_000)  # fmt: skip
        page.get_by_role("button", name=re.compile(r"^Judge with ")).click()
        page.get_by_text(re.compile(r"judge jobs \d+ queued")).first.wait_for(timeout=30_000)
        page.get_by_text(re.compile(r"\(judge\): P\(yes\) \d\.\d\d on trajectory #\d+ step \d+")).first.wait_for(
            timeout=JOB_TIMEOUT)  # fmt: skip
        assert page.evaluate("window.__stepscope_marker") == "same page"
        shot("e2e-search-node")
        with sqlite3.connect(db) as conn:
            verdicts = conn.execute("SELECT COUNT(*) FROM verdicts WHERE kind = 'step' AND p_yes IS NOT NULL").fetchone()
            (pruned,) = conn.execute("SELECT candidate FROM search_candidates WHERE mark = 'pruned' LIMIT 1").fetchone()
        assert verdicts[0] >= 1

        # A click on a pruned candidate in the tree picks its node: the search's own word on it,
        # and no judge to ask (no trajectory reads a pruned step).
        page.locator(f"[data-testid='stVegaLiteChart'] [aria-label^='candidate {pruned}: pruned']").first.click()
        page.get_by_text(re.compile(rf"^search #{search_id} \(beam, scorer random:42\): score .*, pruned$")).first.wait_for(
            timeout=60_000)  # fmt: skip
        assert page.get_by_role("button", name=re.compile(r"^Judge with ")).is_disabled()
        # ...but its Monte Carlo value can be estimated: k rollouts from its node.
        page.get_by_role("spinbutton", name="Rollouts (k)").fill("2")
        page.get_by_role("button", name="Estimate the MC value here").click()
        page.get_by_text(re.compile(r"^MC value \d\.\d\d .*\(\d/2 reach the answer\)$")).first.wait_for(timeout=JOB_TIMEOUT)
        assert page.evaluate("window.__stepscope_marker") == "same page"
        shot("e2e-search-pruned-node")
        with sqlite3.connect(db) as conn:
            (node_rollouts,) = conn.execute(
                "SELECT COUNT(*) FROM rollouts r JOIN search_candidates c ON c.node_id = r.node_id WHERE c.candidate = ?",
                [pruned]).fetchone()  # fmt: skip
        assert node_rollouts == 2

        # Model text is text: a step and the beams' answers written as HTML and markdown stay inert
        # (st.table renders a cell as markdown).
        payload = '<b id="injected">bold</b> **strong** [link](http://example.com) ![img](http://example.com/i.png)'
        with sqlite3.connect(db) as conn:
            conn.execute("UPDATE search_candidates SET text = ? WHERE candidate = ?", [payload, pruned])
            beams = conn.execute("UPDATE trajectories SET final_answer = ? WHERE source = 'search'", [payload]).rowcount
        page.reload()
        inert = page.locator("[data-testid='stTable'] td").filter(has_text='<b id="injected">bold</b> **strong** [link](')
        expect(inert).to_have_count(1 + beams, timeout=LOAD_TIMEOUT)  # the pruned step, each beam's answer
        assert page.locator("#injected").count() == 0
        assert page.locator("[data-testid='stTable']").locator("strong, a, img").count() == 0


def test_a_resumed_search_grows_on_the_open_page(tmp_path, tiny_model_dir):
    """A search killed after its first two depths (its journal stored), queued again as `stepscope
    jobs resume` leaves it: the page shows the tree the journal holds while the app's worker
    starts, then the finished search, without a reload."""
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    db = tmp_path / "resumed.db"
    store = Store.open(db)
    ensure_trajectories(store)
    problem_id = store.get_trajectory(1)["problem_id"]
    request = SearchRequest(policy=str(tiny_model_dir), n=4, beam_width=2, max_steps=4, token_budget=None)
    job_id = queue_search(store, request, problem_id)
    killed = EngineCache(loader=lambda *args, **kwargs: KilledAt(SteppedPolicy([0.7] * 4), 2))
    with pytest.raises(KeyboardInterrupt):  # two policy calls stored: depths 1 and 2, scored
        run_job(store, claim_job(store, job_id, stale_after=0), killed)
    retry_job(store, job_id)
    store.close()
    env = {"STEPSCOPE_DEFAULT_POLICY": str(tiny_model_dir)}
    with streamlit_server(db, env=env, log=ARTIFACTS / "e2e-search-resumed-server.log") as url, chromium() as browser:
        page = browser.new_context(viewport={"width": 1400, "height": 2400}).new_page()
        page.goto(url + f"/search?problem={problem_id}")
        page.get_by_role("heading", name="Search").wait_for(timeout=LOAD_TIMEOUT)
        page.evaluate("window.__stepscope_marker = 'same page'")
        # The worker starts with the app (a process that imports torch and loads the policy): in
        # the meantime the page replays the stored journal.
        page.get_by_text(re.compile(r"^running: 4 engine and scorer calls so far")).first.wait_for(timeout=LOAD_TIMEOUT)
        expect(page.get_by_text(re.compile(r"^Depth \d · 4 candidates$"))).to_have_count(2)
        page.screenshot(path=str(ARTIFACTS / "e2e-search-resumed-running.png"), full_page=True)
        page.get_by_text(re.compile(r"^Final answer: ")).first.wait_for(timeout=JOB_TIMEOUT)
        page.get_by_text(re.compile(r"^Depth 3 · ")).first.wait_for(timeout=30_000)
        assert page.evaluate("window.__stepscope_marker") == "same page"
        page.screenshot(path=str(ARTIFACTS / "e2e-search-resumed-done.png"), full_page=True)
        with sqlite3.connect(db) as conn:
            (status,) = conn.execute("SELECT status FROM jobs WHERE id = ?", [job_id]).fetchone()
            (candidates,) = conn.execute("SELECT COUNT(*) FROM search_candidates").fetchone()
        assert status == "done" and candidates > 8
