"""Load: concurrent annotators in real browsers while a Monte Carlo job writes to the same file.

A real `streamlit run app.py` on a fresh SQLite file; one headless Chromium with one context
(its own cookies and Streamlit session) per annotator. Each session enters its own annotator
name on Annotate and clicks a rating on every step in turn (−1, 0, +1 in rotation), moving to
the next trajectory when one is done. Meanwhile the app's job worker runs an estimate job on
the tiny test model, inserting rollouts into the same database.

A save counts as shown when the clicked button is drawn as the chosen rating: the page reads
that back from the database after the commit. At the end every shown save is looked up in the
file: lost = shown but missing or with another rating; duplicated = more than one row for one
(annotator, step), or a row the session never clicked. Any "database is locked" text on a page
or in the server log, any "Not saved" message and any exception box are counted too. Save
latency is click -> shown, on the page's clock (SHOWN_CLOCK); the harness's wall-clock figure is kept beside it.

Then one annotator alone for 30 s while the job still writes (the single-annotator latency).
The job worker is the app's own: a separate process at a lower CPU priority (issue 13).

Then the render check: a 1 MB step and a 10,000-step trajectory opened by deep link, timed
until the step's heading is drawn and the script run is over; the page must show a truncated
view (a "show all" expander, at most one page of step cards).

    python benchmarks/reliability_load.py                # 8 sessions x 60 s; writes benchmarks/results/reliability_load.json
    python benchmarks/reliability_load.py --sessions 3 --seconds 15 --no-save
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
for path in (REPO, REPO / "tests"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from e2e_server import CHROMIUM_ARGS, chromium_path, kill_streamlit, start_streamlit  # noqa: E402
from pages._step_controls import ROW_KEY  # noqa: E402 - a step row's controls element

RESULTS = REPO / "benchmarks" / "results"
LOAD_DATASET = "load"
def rating_button(step_id: int, rating: int) -> str:
    """The selector of a step row's rating button."""
    return f".st-key-{ROW_KEY}{step_id} button[data-field='rating'][data-value='{rating}']"


def rating_shown(step_id: int, rating: int) -> str:
    """The selector that matches once the row draws `rating` as the saved one."""
    return rating_button(step_id, rating) + "[aria-pressed='true']"


SAVE_TIMEOUT_MS = 60_000
PAGE_TIMEOUT_MS = int(os.environ.get("STEPSCOPE_PAGE_TIMEOUT_MS", 180_000))  # a first page load imports the scientific stack on a busy box
LOCKED = "database is locked"
JOB_START_TIMEOUT_S = 300
BIG_STEP_CHARS = 1_000_000
MANY_STEPS = 10_000


# --- the database ----------------------------------------------------------------------------


def seed_database(db: Path, trajectories: int = 40, steps: int = 6) -> list[int]:
    """The app's first-start content plus `trajectories` solutions of `steps` lines each."""
    from core.sample_solutions import ensure_trajectories
    from core.store import Store

    store = Store.open(db)
    ensure_trajectories(store)
    ids = []
    for t in range(trajectories):
        problem = store.add_problem(LOAD_DATASET, f"Load problem {t}: what is {t} + {steps}?", str(t + steps))
        lines = [f"Line {k}: add one to get {t + k + 1}." for k in range(steps - 1)] + [f"The answer is {t + steps}."]
        ids.append(store.add_trajectory(problem, "\n".join(lines), source="load", rule="line"))
    store.close()
    return ids


def queue_job(db: Path, policy: str, trajectory_ids: list[int], n: int, max_new_tokens: int = 8,
              rows_per_call: int = 8) -> int:
    """An estimate job as the app queues it, in small engine calls: on a busy 2-core box a call
    of 64 rows takes several seconds, and the point is many write transactions during the run."""
    from core.jobs.estimate import EstimateSpec, default_sampling
    from core.jobs.runner import queue
    from core.store import Store

    store = Store.open(db)
    try:
        return queue(store, EstimateSpec(
            policy=policy, trajectory_ids=tuple(trajectory_ids), n=n,
            sampling=default_sampling(max_new_tokens, 1.0), rows_per_call=rows_per_call,
        ))  # fmt: skip
    finally:
        store.close()


def add_big_trajectories(db: Path) -> tuple[int, int]:
    """A trajectory whose one step is 1 MB of text, and one with 10,000 steps."""
    from core.store import Store

    store = Store.open(db)
    try:
        words = ("lorem ipsum dolor sit amet " * (BIG_STEP_CHARS // 27 + 1))[:BIG_STEP_CHARS]
        big = store.add_problem("huge", "A problem whose solution has a 1 MB step.", "1")
        big_id = store.add_trajectory(big, f"{words}\nThe answer is 1.", source="huge", rule="line")
        many = store.add_problem("huge", "A problem whose solution has 10,000 steps.", "1")
        lines = [f"Step line {k}: carry on." for k in range(MANY_STEPS - 1)] + ["The answer is 1."]
        many_id = store.add_trajectory(many, "\n".join(lines), source="huge", rule="line")
        return big_id, many_id
    finally:
        store.close()


def rollout_count(db: Path) -> int:
    with sqlite3.connect(db, timeout=30) as conn:
        return conn.execute("SELECT COUNT(*) FROM rollouts").fetchone()[0]


def stored_labels(db: Path, annotator: str) -> list[tuple[int, int | None]]:
    with sqlite3.connect(db, timeout=30) as conn:
        return conn.execute(
            "SELECT a.step_id, a.rating FROM annotations a JOIN annotators n ON n.id = a.annotator_id"
            " WHERE n.name = ? ORDER BY a.step_id", [annotator],
        ).fetchall()  # fmt: skip


def integrity(db: Path) -> str:
    with sqlite3.connect(db, timeout=30) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


# --- one annotator in one browser context ----------------------------------------------------


@dataclass
class SessionLog:
    annotator: str
    shown: dict[int, int] = field(default_factory=dict)  # step id -> rating the page showed as saved
    clicked: set[int] = field(default_factory=set)  # every step clicked, shown or not
    latencies: list[float] = field(default_factory=list)  # seconds, click -> shown, on the page's clock
    harness_latencies: list[float] = field(default_factory=list)  # seconds, harness's click call -> harness sees it
    unconfirmed: int = 0  # clicks whose result was not shown within SAVE_TIMEOUT_MS
    locked_messages: int = 0
    not_saved_messages: int = 0
    exceptions: int = 0
    trajectories: int = 0
    outside_requests: list[str] = field(default_factory=list)


def is_loopback(url: str) -> bool:
    return url.startswith(("http://127.0.0.1", "ws://127.0.0.1", "http://localhost", "ws://localhost",
                           "data:", "blob:", "about:"))  # fmt: skip


# The harness waits by polling the page every POLL_MS, not on every animation frame (Playwright's
# default for a locator wait): 8 pages polling at 60 frames per second made the browser draw
# frames the whole time a save was queued, and the harness's own CPU use slowed the server
# and the pages it measured. Polling adds at most POLL_MS to each measured latency.
# (A/B at 8 sessions x 30 s: per-frame waits p50 1.30 s, 2.98 saves/s; polled 1.13 s, 3.28 saves/s.)
POLL_MS = 25


async def wait_for(page, selector: str, timeout: float) -> None:
    """Until `selector` matches an element (polled every POLL_MS)."""
    await page.wait_for_function("s => document.querySelector(s) !== null", arg=selector,
                                 polling=POLL_MS, timeout=timeout)  # fmt: skip


# Save-to-shown on the page's own clock: from the click event's dispatch (capture listener) to
# the first animation frame after the rating is drawn as chosen (a MutationObserver). The
# harness's wall clock also counts Playwright's work around a click (its actionability checks
# wait for animation frames before it dispatches, and the answer crosses the DevTools protocol
# back), which on a busy box is part of the harness, not of the app; both are reported.
SHOWN_CLOCK = """
window.__ssExpect = null; window.__ssClickAt = null; window.__ssShownAt = null;
document.addEventListener("click", () => {
    if (window.__ssExpect && window.__ssClickAt === null) window.__ssClickAt = performance.now();
}, true);
new MutationObserver(() => {
    if (!window.__ssExpect || window.__ssClickAt === null || window.__ssShownAt !== null) return;
    if (document.querySelector(window.__ssExpect)) {
        window.__ssShownAt = -1;  // seen: the frame that draws it sets the time
        requestAnimationFrame(() => { window.__ssShownAt = performance.now(); });
    }
}).observe(document, {subtree: true, childList: true, attributes: true});
"""


PAGE_CLOCK = "page clock: the click event's dispatch to the first animation frame that draws the rating as chosen (SHOWN_CLOCK)"
HARNESS_CLOCK = ("harness clock: wall clock in the test harness, from Playwright's click call to the harness seeing "
                 "the rating drawn (includes Playwright's actionability waits and DevTools round trips)")  # fmt: skip
CLOCKS = {"save_latency_p50_s": PAGE_CLOCK, "save_latency_p99_s": PAGE_CLOCK, "save_latency_max_s": PAGE_CLOCK,
          "harness_save_latency_p50_s": HARNESS_CLOCK, "harness_save_latency_p99_s": HARNESS_CLOCK}  # fmt: skip


async def settle(page, timeout: float = PAGE_TIMEOUT_MS) -> None:
    """Until the script run the last action started is over."""
    await page.wait_for_timeout(200)
    await wait_for(page, "[data-testid='stApp'][data-test-script-state='notRunning']", timeout)


class Annotator:
    """Drives Annotate in one browser context, as a person clicking through a queue would."""

    def __init__(self, context, url: str, name: str) -> None:
        self.context, self.url, self.log = context, url, SessionLog(name)
        self.page = None
        self.position = 0

    async def open(self) -> None:
        await self.context.add_init_script(SHOWN_CLOCK)
        page = self.page = await self.context.new_page()
        page.on("request", lambda r: None if is_loopback(r.url) else self.log.outside_requests.append(r.url))
        await page.goto(self.url + "/annotate")
        await page.get_by_role("heading", name="Annotate").wait_for(timeout=PAGE_TIMEOUT_MS)
        await settle(page)
        box = page.get_by_role("textbox", name="Annotator name")
        await box.wait_for(timeout=PAGE_TIMEOUT_MS)  # the sidebar may follow the page's first draw
        await box.fill(self.log.annotator)
        await box.press("Enter")
        await page.get_by_text("Trajectory 1 of").wait_for(timeout=PAGE_TIMEOUT_MS)
        await settle(page)
        self.position = 1

    async def step_ids(self) -> list[int]:
        """The step ids of the rows on the page; every trajectory has steps, so this waits until
        its rows are drawn ([] only when none appear in PAGE_TIMEOUT_MS)."""
        rows = self.page.locator(f"[class*='st-key-{ROW_KEY}']")
        try:
            await rows.first.wait_for(timeout=PAGE_TIMEOUT_MS)
        except Exception:  # noqa: BLE001 - playwright's TimeoutError: the caller decides
            return []
        classes = await rows.evaluate_all(
            "(els, prefix) => els.map(e => [...e.classList].find(c => c.startsWith(prefix)))", f"st-key-{ROW_KEY}"
        )
        return [int(c.rsplit("_", 1)[1]) for c in classes if c]

    async def check_page(self) -> None:
        text = await self.page.inner_text("body")
        self.log.locked_messages += text.count(LOCKED)
        self.log.not_saved_messages += text.count("Not saved")
        self.log.exceptions += await self.page.locator("[data-testid='stException']").count()

    async def rate(self, step_id: int, rating: int, wait: bool = True) -> bool:
        """Click the rating; with `wait`, until the page shows it saved. Returns whether shown."""
        self.log.clicked.add(step_id)
        shown = rating_shown(step_id, rating)
        await self.page.evaluate("s => { window.__ssExpect = s; window.__ssClickAt = window.__ssShownAt = null; }", shown)
        started = time.perf_counter()
        # .first: while a rerun redraws the page the old element can linger beside the new one.
        await self.page.locator(rating_button(step_id, rating)).first.click(timeout=SAVE_TIMEOUT_MS)
        if not wait:
            return False
        try:
            await wait_for(self.page, shown, SAVE_TIMEOUT_MS)
            harness_seconds = time.perf_counter() - started
            await self.page.wait_for_function("() => window.__ssShownAt > 0", polling=POLL_MS, timeout=SAVE_TIMEOUT_MS)
            clicked_at, shown_at = await self.page.evaluate("() => [window.__ssClickAt, window.__ssShownAt]")
        except Exception:  # noqa: BLE001 - playwright's TimeoutError: counted, the run goes on
            self.log.unconfirmed += 1
            return False
        self.log.harness_latencies.append(harness_seconds)
        self.log.latencies.append((shown_at - clicked_at) / 1000)
        self.log.shown[step_id] = rating
        await settle(self.page)
        await self.check_page()
        return True

    async def next_trajectory(self) -> bool:
        button = self.page.locator(".st-key-ann_next button").first
        if await button.is_disabled():
            return False
        await button.click()
        self.position += 1
        await self.page.get_by_text(f"Trajectory {self.position} of").wait_for(timeout=PAGE_TIMEOUT_MS)
        await settle(self.page)
        self.log.trajectories += 1
        return True

    async def run_until(self, window: "Window") -> SessionLog:
        rating_cycle = 0
        while time.monotonic() < window.end:
            todo = [s for s in await self.step_ids() if s not in self.log.clicked]
            for step_id in todo:
                if time.monotonic() >= window.end:
                    break
                await self.rate(step_id, (rating_cycle % 3) - 1)
                rating_cycle += 1
            if time.monotonic() < window.end and not await self.next_trajectory():
                break
        await self.check_page()
        return self.log


@dataclass
class Window:
    """When the sessions stop. It is extended (up to 4x) while the job has written nothing in
    it: on a busy 2-core box the job's worker thread can go a while without a turn, and the
    figures are about annotating *while* a job writes."""

    end: float
    limit: float


async def extend_until_the_job_writes(window: Window, db: Path, before: int) -> None:
    while time.monotonic() < window.end:
        await asyncio.sleep(1.0)
        if window.end - time.monotonic() < 2 and rollout_count(db) == before and window.end < window.limit:
            window.end += 2.0


async def wait_for_new_rollouts(db: Path, before: int) -> float:
    """Until the job worker writes past `before` rollouts (or JOB_START_TIMEOUT_S); seconds waited."""
    started = time.perf_counter()
    while rollout_count(db) <= before and time.perf_counter() - started < JOB_START_TIMEOUT_S:
        await asyncio.sleep(1.0)
    return time.perf_counter() - started


async def launch(playwright):
    executable = chromium_path()
    if executable is None:
        raise RuntimeError("no chromium binary: apt-get install chromium, or set STEPSCOPE_CHROMIUM")
    return await playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)


# --- the figures -----------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def check_sessions(db: Path, logs: list[SessionLog]) -> dict:
    """Every shown save against the rows in the file."""
    lost = duplicated = 0
    with sqlite3.connect(db, timeout=30) as conn:
        groups = conn.execute(
            "SELECT COUNT(*) FROM (SELECT annotator_id, step_id FROM annotations GROUP BY 1, 2 HAVING COUNT(*) > 1)"
        ).fetchone()[0]
    duplicated += groups
    for log in logs:
        rows = stored_labels(db, log.annotator)
        stored = dict(rows)
        lost += sum(1 for step, rating in log.shown.items() if stored.get(step, "missing") != rating)
        duplicated += sum(1 for step in stored if step not in log.clicked)
    return {"lost": lost, "duplicated": duplicated, "rows": sum(len(stored_labels(db, log.annotator)) for log in logs)}


async def measure_render(browser, url: str, big_id: int, many_id: int) -> dict:
    """Time a deep link to the 1 MB step and into the 10,000-step trajectory; check truncation."""
    context = await browser.new_context(viewport={"width": 1400, "height": 1600})
    page = await context.new_page()
    figures = {}
    try:
        for label, tid, step, expect in (
            ("big_step_1mb", big_id, 0, f"show all {BIG_STEP_CHARS:,} characters"),
            ("steps_10k", many_id, MANY_STEPS // 2, None),
        ):
            started = time.perf_counter()
            await page.goto(f"{url}/?trajectory={tid}&step={step}")  # Explore is the root page
            await page.get_by_role("heading", name=f"Step {step}: prefix and rollouts").wait_for(timeout=PAGE_TIMEOUT_MS)
            await settle(page)
            seconds = time.perf_counter() - started
            main = await page.inner_text("main")
            cards = await page.locator("[class*='st-key-ex_select_']").count()
            figures[label] = {
                "seconds": round(seconds, 2), "page_text_chars": len(main), "step_cards_drawn": cards + 1,
                "truncated_view": (expect in main) if expect else cards + 1 <= 20,
            }  # fmt: skip
    finally:
        await context.close()
    return figures


async def single_session(browser, url: str, db: Path, seconds: float) -> tuple[SessionLog, int]:
    """One annotator alone (the job still writing): their log and the rollouts written meanwhile."""
    context = await browser.new_context(viewport={"width": 1400, "height": 1400})
    alone = Annotator(context, url, "single-00")
    await alone.open()
    before = rollout_count(db)
    started = time.monotonic()
    log = await alone.run_until(Window(started + seconds, started + seconds))
    written = rollout_count(db) - before
    await context.close()
    return log, written


async def run_load(sessions: int = 8, seconds: float = 60.0, *, job_n: int = 8, render: bool = True,
                   folder: Path | None = None, policy: str | None = None, single_seconds: float = 0.0) -> dict:
    """The whole benchmark; returns the figures."""
    from playwright.async_api import async_playwright

    folder = Path(folder or tempfile.mkdtemp(prefix="stepscope-load-"))
    load_before = os.getloadavg()  # the box is shared: latency figures mean little without it
    db = folder / "load.db"
    if policy is None:
        from tiny_model import build_tiny_model

        policy = str(build_tiny_model(folder / "tiny-model"))
    trajectory_ids = seed_database(db)
    job_ids = [queue_job(db, policy, trajectory_ids, n=job_n)]
    log_path = folder / "server.log"
    process, url = start_streamlit(db, env={"STEPSCOPE_DEFAULT_POLICY": policy}, log=log_path)
    try:
        async with async_playwright() as playwright:
            browser = await launch(playwright)
            contexts = [await browser.new_context(viewport={"width": 1400, "height": 1400}) for _ in range(sessions)]
            annotators = [Annotator(c, url, f"load-{i:02d}") for i, c in enumerate(contexts)]
            opened = time.perf_counter()
            # All at once, on a fresh server: concurrent first visits once left a session without
            # app.py around its page (pages/_shared.require_app).
            await asyncio.gather(*(a.open() for a in annotators))
            open_seconds = time.perf_counter() - opened
            # The window starts once the job writes: the worker first imports torch and loads the model.
            job_wait = await wait_for_new_rollouts(db, 0)
            rollouts_before = rollout_count(db)
            started = time.monotonic()
            window = Window(started + seconds, started + 4 * seconds)
            logs, _ = await asyncio.gather(
                asyncio.gather(*(a.run_until(window) for a in annotators)),
                extend_until_the_job_writes(window, db, rollouts_before),
            )  # fmt: skip
            elapsed = time.monotonic() - started
            rollouts_after = rollout_count(db)
            for c in contexts:
                await c.close()
            single_log, single_rollouts = None, 0
            if single_seconds:
                # The first job is done or nearly so by now: one more, so the annotator alone is
                # measured while a job writes, as the 8 were (its first rollouts before the start).
                # Twice the N: a job tops up to N, so the same N would find nothing left to sample.
                job_ids.append(queue_job(db, policy, trajectory_ids, n=2 * job_n))
                await wait_for_new_rollouts(db, rollout_count(db))
                single_log, single_rollouts = await single_session(browser, url, db, single_seconds)
            render_figures = {}
            if render:
                render_figures = await measure_render(browser, url, *add_big_trajectories(db))
            await browser.close()
        with sqlite3.connect(db, timeout=30) as conn:
            job_status = conn.execute("SELECT status, done, planned, error FROM jobs WHERE id = ?", [job_ids[0]]).fetchone()
    finally:
        from core.jobs.runner import cancel_job
        from core.store import Store

        store = Store.open(db)
        for job_id in job_ids:
            cancel_job(store, job_id)
        store.close()
        kill_streamlit(process)
    server_log = log_path.read_text(errors="replace")
    checked = check_sessions(db, logs + ([single_log] if single_log else []))
    latencies = [x for log in logs for x in log.latencies]
    harness = [x for log in logs for x in log.harness_latencies]
    single = single_log.latencies if single_log else []
    figures = {
        "shown_saved": sum(len(log.shown) for log in logs + ([single_log] if single_log else [])),
        "rows_in_db": checked["rows"],
        "lost": checked["lost"],
        "duplicated": checked["duplicated"],
        "unconfirmed_clicks": sum(log.unconfirmed for log in logs),
        "locked_on_page": sum(log.locked_messages for log in logs),
        "locked_in_server_log": server_log.count(LOCKED),
        "not_saved_messages": sum(log.not_saved_messages for log in logs),
        "exceptions_on_page": sum(log.exceptions for log in logs),
        "tracebacks_in_server_log": server_log.count("Traceback"),
        "outside_requests": sorted({u for log in logs for u in log.outside_requests}),
        "save_latency_p50_s": round(percentile(latencies, 50), 3) if latencies else None,
        "save_latency_p99_s": round(percentile(latencies, 99), 3) if latencies else None,
        "save_latency_max_s": round(max(latencies), 3) if latencies else None,
        "harness_save_latency_p50_s": round(percentile(harness, 50), 3) if harness else None,
        "harness_save_latency_p99_s": round(percentile(harness, 99), 3) if harness else None,
        "saves_per_second": round(len(latencies) / elapsed, 2),
        "rollouts_written_during_window": rollouts_after - rollouts_before,
        "rollouts_total": rollout_count(db),
        "job_status_at_end": {"status": job_status[0], "done": job_status[1], "planned": job_status[2],
                              "error": job_status[3]},
        "integrity_check": integrity(db),
        "sessions_open_s": round(open_seconds, 1),
        "waited_for_first_rollouts_s": round(job_wait, 1),
        "window_s": round(elapsed, 1),
        "per_session_saves": [len(log.shown) for log in logs],
        **({"render": render_figures} if render else {}),
    }  # fmt: skip
    if single_log:
        figures["single"] = {
            "saves": len(single), "unconfirmed_clicks": single_log.unconfirmed,
            "save_latency_p50_s": round(percentile(single, 50), 3) if single else None,
            "save_latency_p99_s": round(percentile(single, 99), 3) if single else None,
            "harness_save_latency_p50_s": round(percentile(single_log.harness_latencies, 50), 3) if single else None,
            "harness_save_latency_p99_s": round(percentile(single_log.harness_latencies, 99), 3) if single else None,
            "rollouts_written": single_rollouts,
        }  # fmt: skip
    # Every latency key says its clock: the page's (save_*) or the harness's (harness_save_*).
    figures["clock"] = CLOCKS
    if single_log:
        figures["single"]["clock"] = {k: v for k, v in CLOCKS.items() if k in figures["single"]}
    load_after = os.getloadavg()
    return {
        # The figures the targets name, at the top; all on the page's clock.
        "clock": {"save_p50_s": PAGE_CLOCK, "save_p99_s": PAGE_CLOCK, "single_save_p50_s": PAGE_CLOCK,
                  "single_save_p99_s": PAGE_CLOCK},
        "save_p50_s": figures["save_latency_p50_s"], "save_p99_s": figures["save_latency_p99_s"],
        "single_save_p50_s": figures["single"]["save_latency_p50_s"] if single_log else None,
        "single_save_p99_s": figures["single"]["save_latency_p99_s"] if single_log else None,
        "rollouts_written_during_window": figures["rollouts_written_during_window"],
        "load_average": {"before_1m_5m_15m": [round(x, 2) for x in load_before],
                         "after_1m_5m_15m": [round(x, 2) for x in load_after]},
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "load_average_1m_before": round(load_before[0], 2),
                    "load_average_1m_after": round(os.getloadavg()[0], 2)},
        "parameters": {"sessions": sessions, "seconds": seconds, "job": f"estimate, fixed N={job_n}, "
                       "8 new tokens, 8 rows per engine call, tiny random Llama, transformers engine", "browser": "Debian chromium, "
                       "headless, one context per session", "trajectories": "40 x 6 steps + the sample set"},
        "figures": figures,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--job-n", type=int, default=8, help="rollouts per step of the background job (one engine call samples N for one prefix)")
    parser.add_argument("--single-seconds", type=float, default=30.0,
                        help="then one annotator alone for this long, the job still writing (0: skip)")
    parser.add_argument("--no-render", action="store_true", help="skip the 1 MB step / 10,000 steps check")
    parser.add_argument("--no-save", action="store_true", help="print only; do not write results/")
    parser.add_argument("--out", type=Path, default=RESULTS / "reliability_load.json",
                        help="where the figures go (an A/B run beside the headline file)")
    args = parser.parse_args()
    result = asyncio.run(run_load(args.sessions, args.seconds, job_n=args.job_n, render=not args.no_render,
                                  single_seconds=args.single_seconds))
    print(json.dumps(result, indent=2))
    if not args.no_save:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
