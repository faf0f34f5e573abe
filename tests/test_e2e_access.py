"""End to end (issue 16): a real server bound to this machine's network address, so served beyond
loopback (tests/e2e_server.served_beyond_loopback), a real headless Chromium, invitation links made as the CLI makes
them. Without a link nothing opens; an annotator sees only Annotate and saves labels under the
invitation's name; a viewer writes nothing; revoked and expired links are refused (an open
session too, once revoked); an organiser's link opens everything, invitations included; no
token reaches the database file, the server log or an export in clear text.

The organiser on loopback (no login, everything as before) is tests/test_e2e_app.py, which runs
unchanged against a loopback server.
"""

from __future__ import annotations

import re
import sqlite3
import time
from datetime import timedelta
from pathlib import Path

import pytest

from core.formats import export_file
from core.sample_solutions import ensure_trajectories
from core.store import Store
from core.store.access import invitation_link
from e2e_server import chromium, served_beyond_loopback, settle, streamlit_server

pytestmark = [pytest.mark.slow, pytest.mark.browser]

ARTIFACTS = Path(__file__).parent / "artifacts"
LOAD_TIMEOUT = 120_000
REFUSED = "opens data only through a personal link"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    ARTIFACTS.mkdir(exist_ok=True)
    folder = tmp_path_factory.mktemp("e2e-access")
    db = folder / "shared.db"
    store = Store.open(db)
    ensure_trajectories(store)
    tokens = {}
    for name, role in (("alice", "annotator"), ("vic", "viewer"), ("olga", "organiser"), ("rob", "annotator")):
        tokens[name] = store.create_invitation(name, role, timedelta(days=1))[1]
    tokens["eve"] = store.create_invitation("eve", "annotator", timedelta(seconds=1))[1]
    store.revoke_invitations("rob")
    time.sleep(1.2)  # eve's invitation has expired
    log = ARTIFACTS / "e2e-access-server.log"
    address, env = served_beyond_loopback()
    with streamlit_server(db, env=env, log=log, address=address) as url:
        with chromium() as browser:
            yield url, browser, db, tokens, log


@pytest.fixture
def page(app):
    context = app[1].new_context(viewport={"width": 1400, "height": 1400})
    page = context.new_page()
    yield page
    context.close()


def link(app, name: str, path: str = "") -> str:
    url, _, db, tokens, _ = app
    return invitation_link(url, db.name, tokens[name]).replace("/?", f"/{path}?")


def rows(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


def writes(db: Path) -> tuple:
    """What a session could have written: labels, their history, jobs, trajectories, settings."""
    return tuple(rows(db, f"SELECT COUNT(*) FROM {table}")[0][0] for table in
                 ("annotations", "label_history", "trajectory_labels", "jobs", "trajectories", "settings"))  # fmt: skip


def menu(page) -> list[str]:
    """The sidebar's page links, icons left out, once the sidebar has drawn them (the page's
    heading can appear before the sidebar's links do)."""
    links = page.locator("[data-testid='stSidebar'] [data-testid='stPageLink-NavLink']")
    links.first.wait_for(timeout=60_000)
    settle(page)
    return [re.sub(r"^[^A-Za-z]+", "", text).strip() for text in links.all_inner_texts()]


def dismiss_page_not_found(page) -> None:
    """A page the role may not see gets Streamlit's "page not found" dialog over the home page."""
    dialog = page.get_by_role("dialog")
    if dialog.count():
        assert "Page not found" in dialog.inner_text()
        page.keyboard.press("Escape")
        dialog.wait_for(state="hidden", timeout=10_000)


def test_no_link_no_data_and_bad_links_are_refused(app, page):
    url, _, db, tokens, _ = app
    before = writes(db)
    for path in ("/", "/annotate", "/jobs_data"):
        page.goto(url + path)
        page.get_by_text(REFUSED).wait_for(timeout=LOAD_TIMEOUT)
        settle(page)
        text = page.inner_text("body")
        assert "stepscope access invite" in text and "A baker makes" not in text and "Database file" not in text
    page.screenshot(path=str(ARTIFACTS / "access-no-link.png"), full_page=True)
    for who, message in (("rob", "revoked"), ("eve", "expired")):
        page.goto(link(app, who))
        page.get_by_text(message).first.wait_for(timeout=LOAD_TIMEOUT)
        assert "token=" not in page.url and "A baker makes" not in page.inner_text("body")
    wrong = tokens["alice"][:-3] + ("abc" if not tokens["alice"].endswith("abc") else "xyz")
    page.goto(f"{url}/?db={db.name}&token={wrong}")
    page.get_by_text("not a valid invitation").wait_for(timeout=LOAD_TIMEOUT)
    assert "token=" not in page.url
    assert writes(db) == before


def test_an_annotator_sees_only_annotate_and_labels_under_their_own_name(app, page):
    url, _, db, tokens, log = app
    page.goto(link(app, "alice", "jobs_data"))  # asks for an organiser's page: gets their own
    page.get_by_role("heading", name="Annotate").wait_for(timeout=LOAD_TIMEOUT)
    page.get_by_text("Trajectory 1 of").wait_for(timeout=60_000)
    settle(page)
    dismiss_page_not_found(page)
    assert "token=" not in page.url  # out of the address bar once read
    assert menu(page) == ["Annotate"]
    sidebar = page.inner_text("[data-testid='stSidebar']")
    assert "Signed in as alice (annotator)" in sidebar
    for absent in ("Annotator name", "Database file", "Policy model", "Judge models"):
        assert absent not in sidebar
    assert page.get_by_role("heading", name="Jobs and data").count() == 0
    page.get_by_role("button", name="+1").first.click()
    page.get_by_text("saved: step 0 +1").first.wait_for(timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "access-annotator.png"), full_page=True)
    labelled = rows(db, """SELECT n.name, a.rating FROM annotations a JOIN annotators n ON n.id = a.annotator_id""")
    assert labelled == [("alice", 1)]
    assert rows(db, """SELECT n.name, h.field, h.new_value FROM label_history h
                       JOIN annotators n ON n.id = h.annotator_id""") == [("alice", "rating", "1")]  # fmt: skip
    # Revoked while the tab is open: the next click is refused and saves nothing.
    Store.open(db).revoke_invitations("alice")
    settle(page)
    page.get_by_role("button", name="−1").first.click()
    page.get_by_text("revoked").first.wait_for(timeout=30_000)
    assert rows(db, "SELECT rating FROM annotations") == [(1,)]
    # The token in clear: not in the database file, the server log or an export.
    export = db.parent / "export.jsonl"
    export_file(Store.open(db), "jsonl", export, labels="human:alice")
    secret = tokens["alice"].split(".")[1]
    haystacks = {p.name: p.read_bytes() for p in db.parent.glob(db.name + "*")}
    haystacks |= {"server log": log.read_bytes(), "export": export.read_bytes()}
    assert "alice" in export.read_text()
    for where, content in haystacks.items():
        assert secret.encode() not in content, where


def test_a_viewer_reads_and_writes_nothing(app, page):
    url, _, db, _, _ = app
    before = writes(db)
    page.goto(link(app, "vic", "annotate"))
    page.get_by_role("heading", name="Explore").wait_for(timeout=LOAD_TIMEOUT)
    page.get_by_text("Maria has 12 stickers").first.wait_for(timeout=60_000)  # shown in the list and the card
    settle(page)
    dismiss_page_not_found(page)
    assert menu(page) == ["Explore", "Search", "Compare", "Best-of-N", "About", "Models"]
    main = page.inner_text("main")
    for absent in ("Estimate values", "More rollouts", "Grow the tree", "Run jobs on this trajectory"):
        assert absent not in main
    assert page.get_by_role("heading", name="Annotate").count() == 0
    page.screenshot(path=str(ARTIFACTS / "access-viewer.png"), full_page=True)
    page.locator("[data-testid='stSidebar'] [data-testid='stPageLink-NavLink']").filter(has_text="Compare").click()
    page.get_by_role("heading", name="Compare").wait_for(timeout=60_000)
    settle(page)
    assert "Mark as gold" not in page.inner_text("main")
    assert writes(db) == before


def test_an_organisers_link_opens_everything_and_invites(app, page):
    url, _, db, _, log = app
    page.goto(link(app, "olga", "jobs_data"))
    page.get_by_role("heading", name="Jobs and data").wait_for(timeout=LOAD_TIMEOUT)
    page.get_by_role("heading", name="Access").wait_for(timeout=60_000)
    settle(page)
    assert menu(page) == ["Explore", "Search", "Annotate", "Compare", "Best-of-N", "Jobs and data", "About", "Models"]
    form = page.locator("[data-testid='stForm']").filter(has_text="App address in the link")
    form.get_by_role("textbox", name="Name").fill("dan")
    form.get_by_role("button", name="Invite").click()
    page.get_by_text("Send this link privately").wait_for(timeout=30_000)
    shown = page.locator("[data-testid='stCode']").last.inner_text().strip()
    assert shown.startswith(url + f"/?db={db.name}&token=")
    assert Store.open(db).check_token(shown.split("token=")[1]).name == "dan"
    assert shown.split("token=")[1].split(".")[1].encode() not in log.read_bytes()
    page.screenshot(path=str(ARTIFACTS / "access-organiser.png"), full_page=True)
