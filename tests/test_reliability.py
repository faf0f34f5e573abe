"""Reliability and security end to end: a real `streamlit run app.py`, real headless Chromium,
a real SQLite file, real jobs on the tiny test model.

- load: concurrent annotators while a job writes rollouts (benchmarks/reliability_load.py,
  shortened): nothing lost, nothing duplicated, no "database is locked" shown;
- faults: kill -9 of the job worker process mid-job (the app starts another, which resumes the
  job), then of the server during annotation and the job, then a restart; a model
  server killed mid-job (the job fails with the reason, the app stays up, Retry finishes it);
- big input: a 1 MB step and a 10,000-step trajectory render as a truncated view that expands;
- untrusted text: HTML, scripts, markdown images and outside links in imported and model text
  stay inert text on every page, and no request leaves the machine (request interception);
  the server listens on loopback unless told otherwise.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

from e2e_server import free_port, kill_streamlit, start_streamlit  # noqa: E402
from model_server import ModelServer  # noqa: E402
from core.jobs.worker_process import NICENESS  # noqa: E402
from reliability_load import (  # noqa: E402
    BIG_STEP_CHARS, PAGE_TIMEOUT_MS, Annotator, add_big_trajectories, integrity, is_loopback, launch,
    ROW_KEY, measure_render, queue_job, rating_button, rating_shown, rollout_count, run_load, seed_database, settle,
    stored_labels,
)  # fmt: skip

# Skipped without a browser, failed instead where the run requires one (tests/required.py).
pytestmark = [pytest.mark.slow, pytest.mark.browser]

ARTIFACTS = Path(__file__).parent / "artifacts"
VIEWPORT = {"width": 1400, "height": 1400}


def job_row(db: Path, job_id: int) -> tuple:
    with sqlite3.connect(db, timeout=30) as conn:
        return conn.execute("SELECT status, done, planned, error FROM jobs WHERE id = ?", [job_id]).fetchone()


def wait_for_status(db: Path, job_id: int, wanted: set[str], timeout: float) -> tuple:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = job_row(db, job_id)
        if row[0] in wanted:
            return row
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still {job_row(db, job_id)} after {timeout:.0f} s")


def rollouts_per_step(db: Path, job_id: int) -> dict[int, int]:
    with sqlite3.connect(db, timeout=30) as conn:
        return dict(conn.execute("SELECT step_id, COUNT(*) FROM rollouts WHERE job_id = ? GROUP BY step_id", [job_id]))


def rollout_ids(db: Path) -> set[int]:
    with sqlite3.connect(db, timeout=30) as conn:
        return {row[0] for row in conn.execute("SELECT id FROM rollouts")}


def load_steps(db: Path, trajectory_ids: list[int]) -> int:
    with sqlite3.connect(db, timeout=30) as conn:
        marks = ",".join("?" * len(trajectory_ids))
        return conn.execute(f"SELECT COUNT(*) FROM steps WHERE trajectory_id IN ({marks})", trajectory_ids).fetchone()[0]


def worker_pid(db: Path, other_than: int | None, timeout: float = 120) -> int:
    """The pid of the database's job worker process (it writes it into its lock file), once it is
    a live process other than `other_than`."""
    from core.jobs.worker_process import lock_path

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid = int(lock_path(db).read_text().strip() or 0)
        except (OSError, ValueError):
            pid = 0
        if pid and pid != other_than and psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
            return pid
        time.sleep(0.3)
    raise AssertionError(f"no job worker process other than {other_than} for {db} after {timeout:.0f} s")


def listening_addresses(pid: int) -> set[str]:
    return {c.laddr.ip for c in psutil.Process(pid).net_connections("inet") if c.status == psutil.CONN_LISTEN}


# --- load ----------------------------------------------------------------------------------


def test_concurrent_annotators_while_a_job_writes_lose_nothing(tmp_path, tiny_model_dir):
    """The load benchmark, shortened: 3 sessions x 15 s (the full run is 8 x 60 s)."""
    result = asyncio.run(run_load(3, 15.0, render=False, folder=tmp_path, policy=str(tiny_model_dir)))
    figures = result["figures"]
    print(json.dumps(figures, indent=1))
    assert all(saves >= 1 for saves in figures["per_session_saves"]), figures
    assert figures["lost"] == 0 and figures["duplicated"] == 0
    assert figures["rows_in_db"] == figures["shown_saved"] and figures["unconfirmed_clicks"] == 0
    assert figures["locked_on_page"] == 0 and figures["locked_in_server_log"] == 0
    assert figures["not_saved_messages"] == 0 and figures["exceptions_on_page"] == 0
    assert figures["tracebacks_in_server_log"] == 0 and figures["outside_requests"] == []
    assert figures["rollouts_written_during_window"] > 0, "the job must write while people annotate"
    assert figures["integrity_check"] == "ok"


# --- kill -9 -------------------------------------------------------------------------------


async def _annotate_until(annotator: Annotator, done) -> None:
    """Label at a person's pace until `done()`: a save takes well under a second, and the job
    writes rollouts meanwhile."""
    rating = 0
    deadline = time.monotonic() + 300
    while not done() and time.monotonic() < deadline:
        todo = [s for s in await annotator.step_ids() if s not in annotator.log.clicked]
        if not todo:
            assert await annotator.next_trajectory(), "ran out of trajectories"
            continue
        await annotator.rate(todo[0], rating % 3 - 1)
        rating += 1
        await asyncio.sleep(0.5)


async def _kill_and_restart(tmp_path: Path, policy: str) -> None:
    db, log, n = tmp_path / "kill.db", tmp_path / "server.log", 8
    # 40 x 6 steps: enough to label while the job runs, and a job (1,920 rollouts) that is still
    # running when the server is killed, though the tiny model writes the rest fast once resumed.
    trajectory_ids = seed_database(db, trajectories=40)
    total = n * load_steps(db, trajectory_ids)
    job_id = queue_job(db, policy, trajectory_ids, n=n)
    env, port = {"STEPSCOPE_DEFAULT_POLICY": policy}, free_port()
    process, url = start_streamlit(db, env=env, log=log, port=port)
    try:
        from playwright.async_api import async_playwright

        async with async_playwright() as playwright:
            browser = await launch(playwright)
            first = Annotator(await browser.new_context(viewport=VIEWPORT), url, "crash-test")
            await first.open()
            await _annotate_until(first, lambda: len(first.log.shown) >= 2 and rollout_count(db) >= 8)
            # kill -9 of the job worker process mid-job: the app starts a new one, which resumes the
            # job at once (its predecessor's process is gone); annotating goes on meanwhile.
            worker = await asyncio.to_thread(worker_pid, db, None)
            os.kill(worker, signal.SIGKILL)
            restarted = await asyncio.to_thread(worker_pid, db, worker)
            # NICENESS below the server, which runs at ours: capped at 19 when the suite runs under `nice`.
            assert restarted != worker and psutil.Process(restarted).nice() == min(psutil.Process().nice() + NICENESS, 19)
            written = rollout_count(db)
            await _annotate_until(first, lambda: len(first.log.shown) >= 4 and rollout_count(db) > written)
            # One more click, and the server dies while it saves (kill -9: no clean-up at all).
            todo = [s for s in await first.step_ids() if s not in first.log.clicked]
            if todo:
                await first.rate(todo[0], 1, wait=False)
            kill_streamlit(process, signal.SIGKILL)

            shown = dict(first.log.shown)
            stored = dict(stored_labels(db, "crash-test"))
            assert len(shown) >= 4
            assert {s: stored.get(s) for s in shown} == shown, "a label the page showed as saved is gone"
            assert set(stored) <= first.log.clicked
            assert integrity(db) == "ok"
            status, done, _, _ = job_row(db, job_id)
            before = rollout_ids(db)
            assert status == "running" and 0 < len(before) < total, (status, len(before), total)

            # Restart as a user would: `streamlit run app.py`, the address from .streamlit/config.toml.
            process, url = start_streamlit(db, env=env, log=log, port=port, address=None)
            addresses = listening_addresses(process.pid)
            assert addresses and addresses <= {"127.0.0.1", "::1"}, addresses
            second = Annotator(await browser.new_context(viewport=VIEWPORT), url, "crash-test")
            await second.open()
            rows = await second.step_ids()
            todo = [s for s in rows if s not in stored]
            # The first session may have labelled the whole first trajectory (the worker, at the
            # lowest priority, can take a while to write on a busy machine): go on to the next.
            while rows and not todo and await second.next_trajectory():
                rows = await second.step_ids()
                todo = [s for s in rows if s not in stored]
            if not todo:
                ARTIFACTS.mkdir(exist_ok=True)
                await second.page.screenshot(path=str(ARTIFACTS / "reliability-restart-fail.png"), full_page=True)
                page_text = (await second.page.inner_text("body"))[-3000:]
                raise AssertionError(f"no unlabelled step left in the queue; stored {sorted(stored)}; "
                                     f"position {second.position}; the page ends with:\n{page_text}")
            assert await second.rate(todo[0], 0), "a save after the restart was not shown"
            assert second.log.locked_messages == 0 and second.log.exceptions == 0
            await browser.close()

        # The restarted app's worker sees the killed worker's process gone, claims the job at once
        # and finishes it from the stored rollouts.
        assert wait_for_status(db, job_id, {"done", "failed"}, timeout=300)[:3] == ("done", total, total)
        per_step = rollouts_per_step(db, job_id)
        assert set(per_step.values()) == {n} and sum(per_step.values()) == total  # nothing redone
        assert before <= rollout_ids(db)
        stored = dict(stored_labels(db, "crash-test"))
        assert {s: stored.get(s) for s in shown} == shown and stored[todo[0]] == 0
        assert integrity(db) == "ok"
        assert "database is locked" not in log.read_text(errors="replace")
    finally:
        kill_streamlit(process)


def test_kill_minus_nine_during_annotation_and_a_job_then_restart(tmp_path, tiny_model_dir):
    asyncio.run(_kill_and_restart(tmp_path, str(tiny_model_dir)))


def test_config_listens_on_localhost():
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] in ("localhost", "127.0.0.1")


def test_config_runs_no_full_garbage_collection_after_each_script_run():
    """Streamlit's default gc.collect(2) after every run held the interpreter lock ~70 ms per
    Annotate click (docs/ARCHITECTURE.md, "Annotate's save path")."""
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert config["runner"]["postScriptGC"] is False


# --- one shared server for the rest ---------------------------------------------------------


@pytest.fixture(scope="module")
def shared_app(tmp_path_factory, tiny_model_dir):
    ARTIFACTS.mkdir(exist_ok=True)
    folder = tmp_path_factory.mktemp("reliability-app")
    db = folder / "app.db"
    trajectory_ids = seed_database(db, trajectories=3)
    process, url = start_streamlit(db, env={"STEPSCOPE_DEFAULT_POLICY": str(tiny_model_dir)},
                                   log=ARTIFACTS / "reliability-server.log")  # fmt: skip
    try:
        yield url, db, trajectory_ids
    finally:
        kill_streamlit(process)


async def _ordinary_render_seconds(browser, url: str, trajectory: int) -> float:
    """A deep link to an ordinary trajectory, timed as measure_render times the big ones: the
    reference the big inputs are compared with, measured on the same machine in the same load."""
    context = await browser.new_context(viewport=VIEWPORT)
    page = await context.new_page()
    try:
        seconds = []
        # The first visit to a fresh server also imports the page's modules: untimed.
        for _ in range(2):
            started = time.monotonic()
            await page.goto(f"{url}/?trajectory={trajectory}&step=0")
            await page.get_by_role("heading", name="Step 0: prefix and rollouts").wait_for(timeout=PAGE_TIMEOUT_MS)
            await settle(page)
            seconds.append(time.monotonic() - started)
        return round(seconds[-1], 2)
    finally:
        await context.close()


async def _big_inputs(url: str, ordinary: int, big: int, many: int) -> dict:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await launch(playwright)
        figures = {"ordinary_seconds": await _ordinary_render_seconds(browser, url, ordinary)}
        figures.update(await measure_render(browser, url, big, many))
        # The truncated view expands: the first 100,000 characters, and the whole text as a download.
        page = await (await browser.new_context(viewport=VIEWPORT)).new_page()
        await page.goto(f"{url}/?trajectory={big}&step=0")  # Explore is the root page
        expander = page.locator("[data-testid='stExpander'] summary").filter(
            has_text=f"show all {BIG_STEP_CHARS:,} characters").first
        await expander.wait_for(timeout=PAGE_TIMEOUT_MS)
        await settle(page)
        try:
            await expander.click(timeout=20_000)
        except Exception:
            await page.screenshot(path=str(ARTIFACTS / "reliability-big-step-fail.png"), full_page=True)
            print(await page.evaluate("""[...document.querySelectorAll('[inert]')].map(e => e.tagName + ' ' + (e.getAttribute('data-testid')||'') + ' ' + e.innerText.slice(0, 80))"""))
            raise
        await page.get_by_role("button", name="download the whole text").first.wait_for(timeout=60_000)
        figures["expanded_text_chars"] = max(len(t) for t in await page.locator("[data-testid='stText']").all_inner_texts())
        await page.screenshot(path=str(ARTIFACTS / "reliability-big-step.png"))
        await browser.close()
    return figures


def test_a_1mb_step_and_10000_steps_render_truncated(shared_app):
    url, db, trajectory_ids = shared_app
    figures = asyncio.run(_big_inputs(url, trajectory_ids[0], *add_big_trajectories(db)))
    print(json.dumps(figures, indent=1))
    big, many = figures["big_step_1mb"], figures["steps_10k"]
    assert big["truncated_view"] and big["page_text_chars"] < 100_000
    assert 100_000 <= figures["expanded_text_chars"] < 110_000
    assert many["truncated_view"] and many["step_cards_drawn"] <= 20
    # "Without freezing": within a generous multiple of an ordinary page's render, measured just
    # before on the same server, so that a busy machine slows both (the pair was 2-3 s against
    # about 1 s on 2 quiet cores). The benchmark (benchmarks/reliability_load.py) reports the figures.
    bound = 20 * figures["ordinary_seconds"]
    assert big["seconds"] < bound and many["seconds"] < bound, figures


# --- a model that dies mid-job --------------------------------------------------------------


async def _model_dies(url: str, db: Path, trajectory_ids: list[int], model_dir: Path) -> None:
    from playwright.async_api import async_playwright

    from core.jobs.estimate import EstimateSpec, default_sampling
    from core.jobs.runner import queue
    from core.store import Store

    server = ModelServer(model_dir, "tiny-served", free_port(), log=ARTIFACTS / "reliability-model-server.log")
    server.start()
    try:
        async with async_playwright() as playwright:
            browser = await launch(playwright)
            page = await (await browser.new_context(viewport=VIEWPORT)).new_page()
            await page.goto(url + "/jobs_data")  # a page view starts the app's job worker
            await page.get_by_role("heading", name="Jobs and data").wait_for(timeout=PAGE_TIMEOUT_MS)
            n, total = 8, 8 * load_steps(db, trajectory_ids)
            store = Store.open(db)
            job_id = queue(store, EstimateSpec(
                policy="tiny-served", engine="openai", engine_options={"base_urls": [server.base_url]},
                trajectory_ids=tuple(trajectory_ids), n=n, sampling=default_sampling(8, 1.0), rows_per_call=8,
            ))  # fmt: skip
            deadline = time.monotonic() + 180
            while sum(rollouts_per_step(db, job_id).values()) < 8 and time.monotonic() < deadline:
                await asyncio.sleep(0.3)
            server.kill()  # mid-job: the node is gone, connections refused
            status, done, _, error = await asyncio.to_thread(wait_for_status, db, job_id, {"failed", "done"}, 120)
            assert status == "failed" and 0 < done < total, (status, done, error)
            assert f"127.0.0.1:{server.port}" in error and ("lost the server" in error or "cannot reach" in error), error

            # The app is up and says so.
            with urllib.request.urlopen(url + "/_stcore/health", timeout=10) as response:
                assert response.status == 200
            await page.goto(url + "/jobs_data")
            await page.get_by_role("heading", name="Jobs and data").wait_for(timeout=PAGE_TIMEOUT_MS)
            await settle(page)
            assert await page.locator("[data-testid='stException']").count() == 0

            # The server comes back; Retry on the page finishes the job from its stored rollouts.
            server.start()
            await page.get_by_role("button", name="Retry").click()
            await page.get_by_text(f"job {job_id} queued again").wait_for(timeout=60_000)
            await page.screenshot(path=str(ARTIFACTS / "reliability-retry.png"))
            await browser.close()
        row = await asyncio.to_thread(wait_for_status, db, job_id, {"done", "failed"}, 300)
        assert row[:3] == ("done", total, total), row
        per_step = rollouts_per_step(db, job_id)
        assert set(per_step.values()) == {n} and sum(per_step.values()) == total
    finally:
        server.kill()


def test_a_model_server_killed_mid_job_fails_the_job_and_retry_finishes_it(shared_app, tiny_model_dir):
    url, db, trajectory_ids = shared_app
    asyncio.run(_model_dies(url, db, trajectory_ids, tiny_model_dir))


# --- untrusted text ------------------------------------------------------------------------

OUTSIDE_HOST = "198.51.100.7"  # TEST-NET-2: never routed; a request to it is a leak, not a fetch
EVIL = (
    f'<img src="http://{OUTSIDE_HOST}/x.png" onerror="window.__pwned=1"> <script>window.__pwned=2</script> '
    f'<iframe src="http://{OUTSIDE_HOST}/frame"></iframe> <a href="javascript:window.__pwned=3">click</a> '
    f"![tracker](http://{OUTSIDE_HOST}/t.png) [link](http://evil.example/) http://evil.example/bare "
    f"<style>@import url(http://{OUTSIDE_HOST}/s.css)</style> **bold** $x^2$ :red[red]"
    # LaTeX that reaches outside the formula, and a right-to-left override (issue 13).
    f" $\\href{{http://{OUTSIDE_HOST}/h}}{{h}}$ $\\url{{http://evil.example/u}}$"
    f" $\\includegraphics{{http://{OUTSIDE_HOST}/i.png}}$ $\\htmlClass{{x}}{{y}}$ \u202eabc\u202c"
)
LEAKS = (f"[src*='{OUTSIDE_HOST}'], [href*='{OUTSIDE_HOST}'], [src*='evil.example'], [href*='evil.example'],"
         " [href^='javascript:'], iframe[src^='http'], [onerror]")  # fmt: skip


def plant_untrusted_text(db: Path, policy: str) -> int:
    """Hostile text everywhere a page shows stored text: question, steps, model rollouts, another
    annotator's note, a job's error, dataset / source / model names."""
    from core.store import Store

    store = Store.open(db)
    problem = store.add_problem(f"evil <b>set</b> {OUTSIDE_HOST}", f"Question {EVIL}", "1")
    trajectory = store.add_trajectory(problem, f"Step {EVIL}\nThe answer is 1.", source="<i>src</i>",
                                      model=f"![m](http://{OUTSIDE_HOST}/m.png)", rule="line")  # fmt: skip
    steps = store.steps(trajectory)
    store.add_rollouts([{"step_id": steps[0]["id"], "text": f" {EVIL} The answer is 1.", "correct": True,
                         "model": policy, "num_tokens": 9, "finish_reason": "stop"} for _ in range(2)])  # fmt: skip
    store.save_annotation("other-annotator", steps[0]["id"], rating=1, note=EVIL)
    job = store.create_job("estimate", {"policy": EVIL, "engine": "transformers", "trajectory_ids": [trajectory]})
    store.update_job(job, status="failed", error=f"engine said {EVIL}")
    # The security annotator's queue ("unlabelled first") starts at the hostile trajectory.
    for other in store.list_trajectories(limit=None):
        if other["id"] != trajectory:
            store.save_annotation("sec-check", store.steps(other["id"])[0]["id"], rating=0)
    return trajectory


async def _untrusted(url: str, trajectory: int) -> dict:
    from playwright.async_api import async_playwright

    outside, dialogs, report = [], [], {}

    async def only_loopback(route):
        if is_loopback(route.request.url):
            await route.continue_()
        else:
            outside.append(route.request.url)
            await route.abort()

    async with async_playwright() as playwright:
        browser = await launch(playwright)
        context = await browser.new_context(viewport=VIEWPORT)
        await context.route("**/*", only_loopback)
        context.on("request", lambda r: None if is_loopback(r.url) else outside.append(r.url))
        page = await context.new_page()
        page.on("dialog", lambda d: (dialogs.append(d.message), asyncio.ensure_future(d.dismiss())))

        async def check(name: str) -> str:
            await settle(page)
            await page.wait_for_timeout(1000)  # an onerror or a lazy image would have fired by now
            await page.screenshot(path=str(ARTIFACTS / f"reliability-untrusted-{name}.png"), full_page=True)
            assert await page.evaluate("window.__pwned") is None, name
            leaks = await page.locator(LEAKS).count()
            scripts = await page.evaluate(
                "[...document.scripts].filter(s => s.textContent.includes('__pwned')).length")
            assert leaks == 0 and scripts == 0, (name, leaks, scripts)
            assert await page.locator("[data-testid='stException']").count() == 0, name
            text = await page.inner_text("body")
            report[name] = {"shown_verbatim": "<script>window.__pwned=2</script>" in text}
            return text

        async def visit(path: str, ready: str, name: str) -> str:
            await page.goto(url + path)
            await page.get_by_text(ready).first.wait_for(timeout=PAGE_TIMEOUT_MS)
            return await check(name)

        text = await visit(f"/?trajectory={trajectory}&step=0", "Step 0: prefix and rollouts", "explore")
        assert "<script>window.__pwned=2</script>" in text  # shown, as text
        assert await page.locator(".katex").count() > 0  # $x^2$ renders as math
        assert "\u202e" not in text and "⟨U+202E⟩" in text  # the override is shown, not obeyed
        # Annotate: its queue ("unlabelled first") opens on the hostile trajectory for this name.
        await page.get_by_role("link", name="Annotate").click()
        await page.get_by_text("Enter your annotator name").wait_for(timeout=PAGE_TIMEOUT_MS)
        await settle(page)
        box = page.get_by_role("textbox", name="Annotator name")
        await box.fill("sec-check")
        await box.press("Enter")
        try:
            await page.get_by_text(f"(#{trajectory})").first.wait_for(timeout=90_000)
        except Exception:
            await page.screenshot(path=str(ARTIFACTS / "reliability-untrusted-annotate-fail.png"), full_page=True)
            raise
        text = await check("annotate")
        assert "<script>window.__pwned=2</script>" in text
        assert await page.locator(".katex").count() > 0 and "\u202e" not in text
        # The row controls' text (pages/_step_controls.py): a note typed here comes back in step
        # 0's summary line once step 1 is highlighted; it must stay text there too.
        note = page.locator("[class*='st-key-ann_note_'] input").first
        await note.fill(EVIL)
        await note.press("Enter")
        await page.get_by_text("saved: step 0 note saved").first.wait_for(timeout=PAGE_TIMEOUT_MS)
        await settle(page)
        await page.locator(f"[class*='st-key-{ROW_KEY}'] button[data-field='highlight']:visible").first.click()
        await page.get_by_text("Step 1 ◀ keyboard").first.wait_for(timeout=PAGE_TIMEOUT_MS)
        text = await check("annotate-note")
        assert f'note: <img src="http://{OUTSIDE_HOST}/x.png" onerror=' in text
        for path, ready, name in (("/compare", "Compare", "compare"), ("/jobs_data", "Jobs and data", "jobs"),
                                  ("/best_of_n", "Best-of-N", "best-of-n"),
                                  ("/?db=<script>window.__pwned=4</script>../../etc/passwd", "Explore", "bad-db-link")):
            text = await visit(path, ready, name)
        assert "The link's database: a database is a file name in the data folder" in text
        report["dialogs"], report["outside_requests"] = dialogs, sorted(set(outside))
        await browser.close()
    return report


def test_untrusted_text_is_inert_and_nothing_leaves_the_machine(shared_app, tiny_model_dir):
    url, db, _ = shared_app
    trajectory = plant_untrusted_text(db, str(tiny_model_dir))
    report = asyncio.run(_untrusted(url, trajectory))
    print(json.dumps(report, indent=1))
    assert report["dialogs"] == [] and report["outside_requests"] == []


# --- a labelling session with human latents ------------------------------------------------


def annotation_rows(db: Path, annotator: str) -> dict[int, dict]:
    with sqlite3.connect(db, timeout=30) as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute(
            """SELECT s.idx, a.* FROM annotations a JOIN annotators n ON n.id = a.annotator_id
               JOIN steps s ON s.id = a.step_id WHERE n.name = ? AND s.trajectory_id = 1""", [annotator])
        return {row["idx"]: dict(row) for row in rows}


async def _latent_session(url: str, db: Path, name: str, steps: list[int], timing: dict) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await launch(playwright)
        page = await (await browser.new_context(viewport=VIEWPORT)).new_page()
        await page.goto(url + "/annotate")
        box = page.get_by_role("textbox", name="Annotator name")
        await box.wait_for(timeout=PAGE_TIMEOUT_MS)
        await box.fill(name)
        await box.press("Enter")
        await page.get_by_role("heading", name="Annotate").click()  # out of the text box: keys are commands
        # Keys pressed the moment the trajectory appears are not lost (a client script queues them
        # until the keyboard bar is drawn) and apply in order: "3" rates step 0 and moves on,
        # Shift+4 then sets step 1's confidence.
        await page.get_by_text("Trajectory 1 of").wait_for(timeout=PAGE_TIMEOUT_MS)
        # Step 1's dwell starts after this moment (at step 0's rating) and ends before its own
        # rating is shown: the window timed here contains it, however slow the machine.
        timing["before_keys"] = time.monotonic()
        await page.keyboard.press("3")
        await page.keyboard.press("Shift+4")
        await page.locator(rating_shown(steps[0], 1)).first.wait_for(timeout=60_000)
        await page.get_by_text("saved: step 1 confidence 4").first.wait_for(timeout=60_000)
        await settle(page)
        queue = page.locator("[data-testid='stExpander'] details").filter(has_text="Order").first
        if await queue.get_attribute("open") is None:  # open on the first run, closed once the queue is built
            await queue.locator("summary").click()
        await page.get_by_text("Stop at the first error").first.click()
        await settle(page)
        # The tab is hidden for 8 s (as when the annotator switches tabs): not counted as dwell.
        await page.evaluate("""() => { Object.defineProperty(document, 'visibilityState', {value: 'hidden', configurable: true});
                                       document.dispatchEvent(new Event('visibilitychange')); }""")
        await page.wait_for_timeout(8000)
        await page.evaluate("""() => { Object.defineProperty(document, 'visibilityState', {value: 'visible', configurable: true});
                                       document.dispatchEvent(new Event('visibilitychange')); }""")
        await settle(page)
        await page.locator(rating_button(steps[1], -1)).first.click()  # step 1: −1 (mouse)
        await page.locator(rating_shown(steps[1], -1)).first.wait_for(timeout=60_000)
        timing["step_1_s"] = time.monotonic() - timing["before_keys"]
        await settle(page)
        assert await page.locator(rating_button(steps[2], 1)).first.is_disabled()  # greyed out after the error
        await page.locator(f".st-key-ann_cat_{steps[1]}").first.click()
        await page.get_by_role("option", name="calculation").first.click()
        await page.get_by_text("saved: step 1 category calculation").first.wait_for(timeout=60_000)
        await settle(page)
        why = page.locator(f".st-key-ann_why_{steps[1]} input").first
        await why.fill("3 x 4 is not 11")
        await why.press("Enter")
        await page.get_by_text("saved: step 1 rationale saved").first.wait_for(timeout=60_000)
        await settle(page)
        await page.locator(rating_button(steps[0], 0)).first.click()  # an edit: +1 -> 0
        await page.locator(rating_shown(steps[0], 0)).first.wait_for(timeout=60_000)
        await settle(page)
        await page.get_by_text("Right answer, flawed process").first.click()
        await settle(page)
        await page.wait_for_timeout(500)
        await page.screenshot(path=str(ARTIFACTS / "reliability-latents.png"), full_page=True)
        assert await page.locator("[data-testid='stException']").count() == 0
        assert "accuracy" not in (await page.inner_text("main")).lower()  # gold results are for the organiser
        await browser.close()


def test_a_session_with_latents_stop_mode_and_a_gold_item_is_in_the_file(shared_app):
    url, db, _ = shared_app
    from core.store import Store

    store = Store.open(db)
    steps = [s["id"] for s in store.steps(1)]
    store.set_gold(1, {steps[0]: 1, steps[1]: -1})  # the organiser's gold item
    store.close()
    timing = {}
    asyncio.run(_latent_session(url, db, "latents", steps, timing))

    rows = annotation_rows(db, "latents")
    assert rows[0]["rating"] == 0 and rows[0]["rating_order"] == 1 and rows[0]["dwell_ms"] > 0
    second = rows[1]
    assert (second["rating"], second["confidence"], second["category"], second["rationale"], second["first_error"]) == (
        -1, 4, "calculation", "3 x 4 is not 11", 1)
    assert second["rating_order"] == 2 and second["dwell_ms"] > 0 and set(rows) == {0, 1}
    # Step 1's dwell runs from step 0's rating to its own, less the 8 s the tab was hidden: at
    # most the window that contains it less 8 s (3 s here, leaving room for how the page
    # measures the hidden span). Counting the hidden 8 s would exceed this unless the page took
    # over 3 s to act on the keys and to show the rating.
    assert second["dwell_ms"] < (timing["step_1_s"] - 3) * 1000, (second["dwell_ms"], timing)
    store = Store.open(db)
    history = [(h["idx"], h["field"], h["old_value"], h["new_value"]) for h in store.label_history(annotator="latents")]
    assert (0, "rating", 1, 0) in history and (1, "category", None, "calculation") in history
    mark = store.trajectory_label("latents", 1)
    assert mark["flawed_process"] is True and mark["dwell_ms"] >= rows[1]["dwell_ms"]
    gold = [(g["idx"], g["expected"], g["given"]) for g in store.gold_answers() if g["annotator"] == "latents"]
    assert gold == [(0, 1, 0), (1, -1, -1)]
    store.close()
