"""End to end: a real `streamlit run app.py` driven by a real headless Chromium (Playwright).

One server for the module, on its own database file (a fresh start: the sample set and the
reference trajectories). The policy for new sessions is the tiny test model, given through
$STEPSCOPE_DEFAULT_POLICY (the sidebar shows it as a custom model directory). Screenshots go to
tests/artifacts/.

The tests run in file order and build on each other, as a user session would: (a) samples MC
values for trajectory 1 and judges its steps, (b) labels it from the keyboard, (c) compares the
two on Compare; (e) generates policy solutions and judges them, imports an upload and downloads an export,
and (g) opens Best-of-N (drawing (e)'s solutions), About and Models. Every page gets a screenshot.
"""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path

import pytest

from core.views.access import PAGES
from e2e_server import chromium, settle, streamlit_server

# Skipped without a browser, failed instead where the run requires one (tests/required.py).
pytestmark = [pytest.mark.slow, pytest.mark.browser]

ARTIFACTS = Path(__file__).parent / "artifacts"
LOAD_TIMEOUT = 120_000  # ms: the first run imports the scientific stack on a busy 2-core box


@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_model_dir):
    ARTIFACTS.mkdir(exist_ok=True)
    folder = tmp_path_factory.mktemp("e2e-data")
    db = folder / "e2e.db"
    env = {"STEPSCOPE_DEFAULT_POLICY": str(tiny_model_dir)}
    with streamlit_server(db, env=env, log=ARTIFACTS / "e2e-server.log") as url:
        with chromium() as browser:
            yield url, browser, db


@pytest.fixture
def page(app):
    url, browser, _ = app
    context = browser.new_context(viewport={"width": 1400, "height": 1600})
    page = context.new_page()
    yield page
    context.close()


def open_page(page, url: str, heading: str) -> None:
    page.goto(url)
    page.get_by_role("heading", name=heading).wait_for(timeout=LOAD_TIMEOUT)
    settle(page)


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_a_explore_job_values_appear_without_reloading(app, page):
    url, _, db = app
    open_page(page, url + "/", "Explore")
    assert "Maria has 12 stickers" in page.inner_text("main")  # the featured first screen
    # The rest of this module works on trajectory 1 (the first of the Annotate queue in test_b).
    open_page(page, url + "/?trajectory=1&step=0", "Explore")
    assert "A baker makes 4 trays of 12 cookies" in page.inner_text("main")
    page.evaluate("window.__stepscope_marker = 'same page'")
    page.get_by_role("spinbutton", name="N (rollouts per step)").fill("2")
    page.get_by_role("spinbutton", name="Max new tokens", exact=True).fill("8")
    page.get_by_role("button", name="Estimate values").click()
    page.get_by_text("job 1 queued").wait_for(timeout=30_000)
    shot(page, "explore-job-queued")
    started = time.monotonic()
    # Values fill in through the live fragment: no navigation, no reload.
    page.get_by_text("(2/2 reach the answer)").or_(page.get_by_text("(1/2 reach the answer)")).or_(
        page.get_by_text("(0/2 reach the answer)")).first.wait_for(timeout=240_000)
    waited = time.monotonic() - started
    assert page.evaluate("window.__stepscope_marker") == "same page"
    shot(page, "explore-values")
    with sqlite3.connect(db) as conn:
        status, done = conn.execute("SELECT status, done FROM jobs WHERE id = 1").fetchone()
        rollouts = conn.execute("SELECT COUNT(*) FROM rollouts").fetchone()[0]
    assert rollouts >= 2 and done >= 2, (status, done, rollouts)
    print(f"values appeared {waited:.1f} s after the job was queued")
    # The Judge button: the sidebar's judge (by default the policy) gives step verdicts, which
    # fill in on the cards the same way.
    page.get_by_role("button", name="Judge", exact=True).click()
    page.get_by_text("judge jobs 2 queued").wait_for(timeout=30_000)
    page.get_by_text(re.compile(r"P\(yes\) \d\.\d\d")).first.wait_for(timeout=120_000)
    assert page.evaluate("window.__stepscope_marker") == "same page"
    shot(page, "explore-verdicts")
    with sqlite3.connect(db) as conn:
        verdicts = conn.execute("SELECT COUNT(*) FROM verdicts WHERE kind = 'step' AND job_id = 2").fetchone()[0]
    assert verdicts == 3  # trajectory 1 has three steps


def test_b_annotate_with_the_keyboard_only(app, page):
    url, _, db = app
    open_page(page, url + "/annotate", "Annotate")
    name = page.get_by_role("textbox", name="Annotator name")
    name.focus()  # the one programmatic step: putting the caret in the name box
    page.keyboard.type("kb-annotator")
    # Tab commits the name and leaves the box (keys typed into a text box are text, not commands).
    page.keyboard.press("Tab")
    page.get_by_text("Trajectory 1 of").wait_for(timeout=30_000)
    settle(page)
    # Streamlit binds a button's shortcut in an effect that runs a moment after the button shows;
    # on this busy 2-core box a key pressed within about a second of the first render is dropped.
    page.wait_for_timeout(2500)

    def key(k: str, expect: str | re.Pattern) -> None:
        page.keyboard.press(k)
        page.get_by_text(expect).first.wait_for(timeout=30_000)
        settle(page)
        page.wait_for_timeout(300)

    key("3", "saved: step 0 +1")
    key("1", "saved: step 1 −1")
    key("k", "Step 1 ◀ keyboard")
    key("e", "saved: step 1 first error")
    key("f", "saved: step 1 flagged")
    key("j", "Step 2 ◀ keyboard")
    key("2", "saved: step 2 0")
    shot(page, "annotate-labelled")
    key("s", re.compile("no rollouts yet|reach the answer"))  # submitted: blind mode shows the MC values
    key("n", "Trajectory 2 of")
    page.wait_for_timeout(1500)  # new buttons again: let their shortcuts bind
    key("3", "saved: step 0 +1 at")
    shot(page, "annotate-next")
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            """SELECT s.trajectory_id, s.idx, a.rating, a.first_error, a.flagged FROM annotations a
               JOIN annotators n ON n.id = a.annotator_id JOIN steps s ON s.id = a.step_id
               WHERE n.name = 'kb-annotator' ORDER BY s.trajectory_id, s.idx"""
        ).fetchall()
    assert rows == [(1, 0, 1, 0, 0), (1, 1, -1, 1, 1), (1, 2, 0, 0, 0), (2, 0, 1, 0, 0)]


def test_c_compare_shows_kappa_from_those_rows(app, page):
    """After (a) sampled MC values for trajectory 1 and (b) labelled it: the kappa on the page is
    the one computed here from the rows in the SQLite file."""
    from core.metrics import cohen_kappa

    url, _, db = app
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            """SELECT s.id, a.rating, SUM(r.correct), COUNT(r.id) FROM annotations a
               JOIN annotators n ON n.id = a.annotator_id JOIN steps s ON s.id = a.step_id
               JOIN rollouts r ON r.step_id = s.id
               WHERE n.name = 'kb-annotator' GROUP BY s.id ORDER BY s.id"""
        ).fetchall()
    assert len(rows) == 3  # trajectory 1's steps: labelled in (b), with rollouts from (a)
    human = [rating >= 0 for _, rating, _, _ in rows]
    automatic = [correct / n >= 0.5 for _, _, correct, n in rows]
    kappa = cohen_kappa(human, automatic).value
    expected = "—" if kappa is None else f"{kappa:.2f}"
    open_page(page, url + "/compare", "Compare")
    page.get_by_text("Steps compared").wait_for(timeout=30_000)
    # Consensus of one annotator = that annotator; MC soft at the default threshold 0.5.
    metric = page.locator("[data-testid='stMetric']").filter(has_text="Cohen's kappa")
    assert metric.locator("[data-testid='stMetricValue']").inner_text().strip() == expected
    steps = page.locator("[data-testid='stMetric']").filter(has_text="Steps compared")
    assert steps.locator("[data-testid='stMetricValue']").inner_text().strip() == "3"
    shot(page, "compare")


def test_d_deep_link_opens_the_named_step_and_a_click_on_the_chart_selects(app, page):
    url, _, _ = app
    open_page(page, url + "/?trajectory=3&step=2", "Explore")
    page.get_by_role("heading", name="Step 2: prefix and rollouts").wait_for(timeout=30_000)
    main = page.inner_text("main")
    assert "Jack has 50 dollars" in main and "Jack has 50 - 30 = 20 dollars left." in main
    assert page.url.endswith("trajectory=3&step=2")
    shot(page, "explore-deep-link")
    # The keyboard moves between steps and the URL follows (after the shortcut-binding pause
    # explained in test_b).
    page.wait_for_timeout(2500)
    page.keyboard.press("k")
    page.get_by_role("heading", name="Step 1: prefix and rollouts").wait_for(timeout=30_000)
    settle(page)
    assert page.url.endswith("trajectory=3&step=1")
    # A click on the chart's first column selects step 0. The chart is redrawn after every
    # step change and listens for clicks only once Vega has finished; a click that lands
    # before is ignored, so the click is repeated (selecting the same column is idempotent).
    chart = page.locator("[data-testid='stVegaLiteChart']").first
    chart.scroll_into_view_if_needed()
    selected = page.get_by_role("heading", name="Step 0: prefix and rollouts")
    for attempt in range(5):
        settle(page)
        page.wait_for_timeout(1000)
        box = chart.bounding_box()
        x, y = box["x"] + box["width"] * 0.12, box["y"] + box["height"] * 0.4
        page.mouse.move(x, y)
        page.wait_for_timeout(300)
        page.mouse.click(x, y)
        try:
            selected.wait_for(timeout=8_000)
            break
        except Exception:  # noqa: BLE001 - playwright's TimeoutError: click again
            continue
    assert selected.is_visible()
    page.wait_for_url(re.compile(r"trajectory=3&step=0$"), timeout=10_000)
    shot(page, "explore-chart-click")
    # A bad link: a message that names the cause, and the app keeps running.
    open_page(page, url + "/?trajectory=../../etc/passwd", "Explore")
    page.get_by_text("Cannot open that link").wait_for(timeout=30_000)
    assert "must be a whole number" in page.inner_text("main")


def count_metric(page, name: str) -> int:
    metric = page.locator("[data-testid='stMetric']").filter(has=page.get_by_text(name, exact=True))
    return int(metric.locator("[data-testid='stMetricValue']").inner_text().replace(",", ""))


def form(page, submit: str):
    return page.locator("[data-testid='stForm']").filter(has=page.get_by_role("button", name=submit, exact=True))


def test_e_jobs_and_data_generate_import_and_export(app, page, tmp_path):
    url, _, db = app
    open_page(page, url + "/jobs_data", "Jobs and data")
    page.get_by_role("heading", name="Database").wait_for(timeout=30_000)
    main = page.inner_text("main")
    assert "Loaded model" in main and "e2e.db" in main
    page.locator("[data-testid='stDataFrame']").first.wait_for(timeout=30_000)  # the grid loads lazily

    # Generate: one problem, two short solutions from the tiny policy, run by the app's worker.
    generate = form(page, "Generate")
    generate.get_by_role("spinbutton", name="How many problems (first by id)").fill("1")
    generate.get_by_role("spinbutton", name="k (solutions per problem)").fill("2")
    generate.get_by_role("spinbutton", name="Max new tokens").fill("8")
    generate.get_by_role("button", name="Generate", exact=True).click()
    page.get_by_text(re.compile(r"job \d+ queued: 2 solutions")).wait_for(timeout=30_000)
    assert wait_for_job(db, "generate") == ("done", None)
    with sqlite3.connect(db) as conn:
        generated = conn.execute("SELECT COUNT(*) FROM trajectories WHERE source = 'policy'").fetchone()[0]
    assert 0 < generated <= 2  # an empty sample (an immediate stop) is not kept
    page_noticed_the_end(page)

    # Judge them (outcome verdicts from the sidebar's judge, the policy): what Best-of-N reranks by.
    form(page, "Judge solutions").get_by_role("button", name="Judge solutions", exact=True).click()
    page.get_by_text(re.compile(r"judge jobs \d+ queued")).wait_for(timeout=30_000)
    assert wait_for_job(db, "judge") == ("done", None)
    with sqlite3.connect(db) as conn:
        judged = conn.execute(
            """SELECT COUNT(*) FROM verdicts v JOIN trajectories t ON t.id = v.trajectory_id
               WHERE v.kind = 'outcome' AND t.source = 'policy'""").fetchone()[0]
    assert judged == generated
    page_noticed_the_end(page)
    shot(page, "jobs-and-data")

    # Import by upload: a GSM8K-style file written here; the counts on the page go up by its size.
    problems, trajectories = count_metric(page, "problems"), count_metric(page, "trajectories")
    upload = tmp_path / "two-problems.jsonl"
    upload.write_text(
        '{"question": "Ann has 3 pens and buys 4 more. How many pens?", "answer": "3 + 4 = 7\\n#### 7"}\n'
        '{"question": "Tom reads 5 pages a day for 6 days. How many pages?", "answer": "5 * 6 = 30\\n#### 30"}\n'
    )
    importer = form(page, "Import")
    importer.locator("input[type='file']").set_input_files(str(upload))
    importer.get_by_text("two-problems.jsonl").wait_for(timeout=30_000)
    importer.get_by_role("button", name="Import", exact=True).click()
    page.get_by_text("two-problems.jsonl:").wait_for(timeout=60_000)
    settle(page)
    with sqlite3.connect(db) as conn:
        imported = conn.execute("SELECT COUNT(*) FROM problems WHERE dataset = 'gsm8k'").fetchone()[0]
    assert imported == 2 and count_metric(page, "problems") == problems + 2
    assert count_metric(page, "trajectories") == trajectories + 2  # each worked answer is a reference trajectory
    shot(page, "jobs-and-data-imported")

    # A file that is not what it claims: a message naming the cause, nothing changes, the app runs on.
    bad = tmp_path / "not-gsm8k.jsonl"
    bad.write_text('{"prompt": "no question field"}\n')
    importer.locator("input[type='file']").set_input_files(str(bad))
    importer.get_by_text("not-gsm8k.jsonl").wait_for(timeout=30_000)
    importer.get_by_role("button", name="Import", exact=True).click()
    page.get_by_text("Import failed, nothing was changed").wait_for(timeout=60_000)
    assert "line 1" in page.inner_text("main") and "missing field" in page.inner_text("main")
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM problems WHERE dataset = 'gsm8k'").fetchone()[0] == 2
    settle(page)

    # Export: the full JSONL dump, downloaded through the browser, holds what was imported.
    exporter = form(page, "Prepare the file")
    exporter.locator("[data-testid='stSelectbox']").first.click()
    page.get_by_role("option", name="jsonl", exact=True).click()
    exporter.get_by_role("button", name="Prepare the file").click()
    download_button = page.get_by_role("button", name="Download stepscope-jsonl.jsonl")
    download_button.wait_for(timeout=60_000)
    with page.expect_download(timeout=60_000) as caught:
        download_button.click()
    exported = Path(caught.value.path()).read_text(encoding="utf-8")
    assert "Ann has 3 pens and buys 4 more" in exported and "Tom reads 5 pages" in exported
    assert all(line.startswith("{") for line in exported.splitlines() if line.strip())


def page_noticed_the_end(page) -> None:
    """After a job ends, the jobs table (a fragment polling every 2 s) reruns the whole page once;
    a widget opened during that rerun would close under the test's hands, so wait it out."""
    page.wait_for_timeout(2500)
    settle(page)


def wait_for_job(db: Path, kind: str, timeout: float = 120) -> tuple[str, str | None]:
    """The newest job of that kind once it has ended (or as it is at the timeout): (status, error)."""
    deadline = time.monotonic() + timeout
    while True:
        with sqlite3.connect(db) as conn:
            status, error = conn.execute(
                "SELECT status, error FROM jobs WHERE kind = ? ORDER BY id DESC LIMIT 1", [kind]).fetchone()
        if status in ("done", "failed", "cancelled") or time.monotonic() > deadline:
            return status, error
        time.sleep(1)


def test_f_untrusted_text_stays_text_in_the_browser(app, page):
    """Model or imported text with HTML, a script, a markdown image and links: shown as text,
    no script runs, no request leaves the machine."""
    from core.store import Store

    url, _, db = app
    evil = ('<img src="http://198.51.100.7/x.png" onerror="window.__pwned=1"> <script>window.__pwned=2</script> '
            '![tracker](http://198.51.100.7/t.png) [link](http://198.51.100.7/) **bold** $x^2$ :red[red]')
    store = Store.open(db)
    problem = store.add_problem("evil <b>set</b>", f"Question {evil}", "1")
    trajectory = store.add_trajectory(problem, f"Step {evil}\nThe answer is 1.", source="<i>src</i>",
                                      model="![m](http://198.51.100.7/m.png)")
    outside = []
    page.on("request", lambda request: outside.append(request.url)
            if not request.url.startswith(("http://127.0.0.1", "ws://127.0.0.1", "data:", "blob:")) else None)
    open_page(page, f"{url}/?trajectory={trajectory}&step=0", "Explore")
    page.get_by_text("Step 0: prefix and rollouts").wait_for(timeout=30_000)
    page.wait_for_timeout(1500)
    shot(page, "untrusted-text")
    assert page.evaluate("window.__pwned") is None
    assert page.locator("main img[src*='198.51.100.7']").count() == 0
    assert page.locator("main a[href*='198.51.100.7']").count() == 0
    assert page.get_by_text("<script>window.__pwned=2</script>").count() >= 1  # shown, verbatim
    assert outside == []


@pytest.mark.parametrize("path, heading, name", [
    ("/best_of_n", "Best-of-N", "best-of-n"), ("/home", "StepScope", "about"), ("/models", "Models", "models"),
])  # fmt: skip
def test_g_every_other_page_opens(app, page, path, heading, name):
    url, _, _ = app
    open_page(page, url + path, heading)
    assert page.locator("[data-testid='stException']").count() == 0
    if name == "best-of-n":  # test_e left judged policy solutions to draw
        page.get_by_text("Solutions", exact=True).wait_for(timeout=30_000)  # the sample-set picker
        page.get_by_text(re.compile(r"1 problems with at least \d solutions")).wait_for(timeout=30_000)
    shot(page, name)


# A deep link to every page, each the first visit to a fresh server, all at once. Until a session
# calls st.navigation, Streamlit runs pages/ the old way: each page alone, without app.py (no
# sidebar), under an automatic page list ("app", "shared", ...). Each must show its page inside
# app.py (the sidebar and its menu), on the URL it was given, and the automatic list never.
FIRST_VISITS = [
    ("/explore?trajectory=3&step=2", "Step 2: prefix and rollouts"), ("/?trajectory=2&step=1", "Step 1: prefix and rollouts"),
    ("/search?problem=1", "Search"), ("/annotate", "Annotate"), ("/compare", "Compare"), ("/best_of_n", "Best-of-N"), ("/jobs_data", "Jobs and data"),
    ("/home", "StepScope"), ("/models", "Models"),
]  # fmt: skip


def test_h_deep_links_as_concurrent_first_visits_to_a_fresh_server(app, tmp_path, tiny_model_dir):
    _, browser, _ = app  # the module's browser (one Playwright per process), a server of its own
    env = {"STEPSCOPE_DEFAULT_POLICY": str(tiny_model_dir)}
    with streamlit_server(tmp_path / "first.db", env=env, log=ARTIFACTS / "e2e-first-visit-server.log") as url:
        pages = [browser.new_context(viewport={"width": 1400, "height": 1000}).new_page() for _ in FIRST_VISITS]
        for page, (path, _) in zip(pages, FIRST_VISITS):
            page.goto(url + path, wait_until="commit")  # all sessions start before any run ends
        automatic_lists, waiting = 0, dict(zip(range(len(pages)), FIRST_VISITS))
        deadline = time.monotonic() + LOAD_TIMEOUT / 1000
        while waiting and time.monotonic() < deadline:
            for index, (path, ready) in list(waiting.items()):
                page = pages[index]
                automatic_lists += page.locator("[data-testid='stSidebarNav']").count()
                sidebar = page.locator("[data-testid='stSidebar']")
                if page.get_by_text(ready).count() and sidebar.get_by_text("Database file").count():
                    del waiting[index]
            pages[0].wait_for_timeout(200)
        assert not waiting, f"not shown inside app.py: {sorted(p for p, _ in waiting.values())}"
        assert automatic_lists == 0, "Streamlit's automatic pages/ list was shown"
        for page, (path, _) in zip(pages, FIRST_VISITS):
            settle(page)
            assert page.url == url + path
            menu = page.locator("[data-testid='stSidebar'] [data-testid='stPageLink-NavLink']")
            assert menu.count() == len(PAGES), path  # every page, for the local organiser
            assert page.get_by_text("Page not found").count() == 0, path
            assert page.locator("[data-testid='stException']").count() == 0, path
        shot(pages[3], "first-visit-annotate")
        for page in pages:
            page.context.close()
