"""Access that holds under attack (issue 23): a real server bound to this machine's network
address (not loopback: the app decides it is served remotely from its own bind address, as in
real use; tests/e2e_server.served_beyond_loopback), a real headless Chromium, and a raw websocket
client that sends Streamlit's BackMsg protobufs by hand (tests/e2e_server.RawSession), as an
attacker's script would.

- A revoked organiser's Retry, Cancel, Grow the tree, Expand rollout, Estimate values, Judge,
  Import and Export change nothing in any table, and the session gets the sign-in refusal; a
  revoked viewer's page turns into the refusal at its next fragment refresh, with no click.
- A viewer's websocket traffic on Compare carries no gold accuracy (the organiser's does).
- `clear_cache` from a session that never signed in resets neither the sign-in slow-down nor
  the worker: the same worker process (by PID) before and after.
- A junk link naming a foreign SQLite file, an empty file or a file that does not exist leaves
  every file in the data folder byte-identical (sha256) and creates none.
- An invited organiser has no database switch; an upload from a session that never signed in
  is refused above REMOTE_MAX_UPLOAD_MB; on loopback, a page whose Host is not a local name
  (DNS rebinding) is not the organiser.

The order matters: the browser tests sign in first, then the raw tests fail sign-ins on purpose
(which slows every later sign-in on this server).
"""

from __future__ import annotations

import hashlib
import http.client
import http.cookiejar
import re
import sqlite3
import time
import urllib.parse
import urllib.request
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from e2e_server import (
    RawSession,
    chromium,
    contents,
    kill_streamlit,
    served_beyond_loopback,
    settle,
    start_streamlit,
    streamlit_server,
    worker_pids,
)

from core.models import DEFAULT_MODEL
from core.sample_solutions import ensure_trajectories
from core.store import Store
from core.store.access import invitation_link
from core.views.inputs import default_policy
from core.views.worker import LOCK_RETRY_SECONDS
from pages._access import REMOTE_MAX_UPLOAD_MB

pytestmark = [pytest.mark.slow, pytest.mark.browser]

ARTIFACTS = Path(__file__).parent / "artifacts"
LOAD_TIMEOUT = 120_000
REVOKED = "this invitation was revoked"
WELL_FORMED_WRONG = "A" * 12 + "." + "B" * 43  # passes the format check, matches no invitation
FUTURE = "2999-01-01T00:00:00.000+00:00"  # a running job's heartbeat the worker never finds stale


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    ARTIFACTS.mkdir(exist_ok=True)
    folder = tmp_path_factory.mktemp("e2e-attack")
    db = folder / "shared.db"
    store = Store.open(db)
    ensure_trajectories(store)
    jobs = {
        "failed": store.insert_job(key="attack-failed", kind="estimate", status="failed", error="stopped",
                                   manifest={"policy": "nobody", "trajectory_ids": []})[0],
        "running": store.insert_job(key="attack-running", kind="estimate", status="running", heartbeat_at=FUTURE,
                                    started_at=FUTURE, manifest={"policy": "nobody", "trajectory_ids": []})[0],
    }  # fmt: skip
    with sqlite3.connect(folder / "foreign.db") as conn:  # somebody else's SQLite file, rollback journal
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
        conn.execute("INSERT INTO notes (text) VALUES ('not StepScope')")
    (folder / "empty.db").write_bytes(b"")
    # Rollouts from the first step, so that the rollout tree offers "Expand rollout".
    first_step = store.steps(1)[0]["id"]
    store.add_rollouts([{"step_id": first_step, "text": f" so the answer is {n}.", "answer": str(n), "correct": n == 4,
                         "model": default_policy(DEFAULT_MODEL)} for n in (4, 5)])  # fmt: skip
    # A gold item that alice rated: Compare's organiser view shows her gold accuracy.
    ratings = {step["id"]: 1 for step in store.steps(1)}
    for step_id in ratings:
        store.save_annotation("alice", step_id, rating=1)
    store.set_gold(1, ratings)
    (folder / "upload.jsonl").write_text('{"problem": "What is 1 + 1?", "answer": "2", "solution": "1 + 1 = 2."}\n')
    log = ARTIFACTS / "e2e-attack-server.log"
    address, env = served_beyond_loopback()
    with streamlit_server(db, env=env, log=log, address=address) as url:
        with chromium() as browser:
            yield {"url": url, "browser": browser, "db": db, "folder": folder, "jobs": jobs, "log": log}


@pytest.fixture
def page(app):
    context = app["browser"].new_context(viewport={"width": 1400, "height": 1400})
    page = context.new_page()
    yield page
    context.close()


def invite(app, name: str, role: str) -> str:
    """A new invitation's link (as `stepscope access invite` prints it)."""
    _, token = Store.open(app["db"]).create_invitation(name, role, timedelta(days=1))
    return invitation_link(app["url"], app["db"].name, token)


def choose(page, label: str, option: str) -> None:
    """Pick `option` in the selectbox labelled `label`."""
    box = page.get_by_test_id("stSelectbox").filter(has_text=label).first
    box.click()
    page.get_by_role("option", name=option, exact=True).click()
    settle(page)


# --- 1. a revoked organiser: no job power left, wherever the click lands -----------------------


ACTIONS = {  # the button, the page (and query) it is on, and what is chosen before the revocation
    "Retry": ("jobs_data", "failed"),  # inside the jobs fragment
    "Cancel": ("jobs_data", "running"),  # inside the jobs fragment, which refreshes every 2 s
    "Grow the tree": ("", None),  # inside Explore's trajectory fragment
    "Expand rollout": ("", "rollout"),  # the rollout tree's node detail
    "Estimate values": ("", None),  # a form in a full run
    "Judge": ("", None),
    "Import": ("jobs_data", "upload"),  # a form with a file already uploaded
    "Prepare the file": ("jobs_data", None),  # the export form
}


@pytest.mark.parametrize("action", list(ACTIONS))
def test_a_revoked_organiser_changes_nothing(app, page, action):
    path, before_revoking = ACTIONS[action]
    name = "org-" + re.sub(r"\W", "", action.lower())
    query = "&trajectory=1&step=0" if before_revoking == "rollout" else ""
    page.goto(invite(app, name, "organiser").replace("/?", f"/{path}?") + query)
    button = page.get_by_role("button", name=action, exact=True)
    button.first.wait_for(timeout=LOAD_TIMEOUT)
    settle(page)
    if before_revoking in app["jobs"]:
        choose(page, "Job", str(app["jobs"][before_revoking]))
    elif before_revoking == "upload":
        page.locator("[data-testid='stFileUploader'] input[type='file']").set_input_files(str(app["folder"] / "upload.jsonl"))
        page.get_by_text("upload.jsonl").first.wait_for(timeout=30_000)
    Store.open(app["db"]).revoke_invitations(name)
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    before = contents(app["db"])
    try:
        button.first.click(timeout=15_000)
    except PlaywrightTimeout:
        # A live fragment (Jobs' table, Explore's trajectory view) re-checks on its own refresh: if
        # that came between the revocation and the click, the page is already the refusal and the
        # button is gone. Either way the refusal must show (next line) and nothing may be written.
        pass
    try:  # as long as a page load may take: on a busy machine a run can take tens of seconds
        page.get_by_text(REVOKED).first.wait_for(timeout=LOAD_TIMEOUT)
    finally:
        page.screenshot(path=str(ARTIFACTS / f"attack-revoked-{name}.png"), full_page=True)
    settle(page)
    assert contents(app["db"]) == before, f"{action} by a revoked organiser wrote to the database"
    statuses = {j["id"]: j["status"] for j in Store.open(app["db"]).list_jobs()}
    assert statuses[app["jobs"]["failed"]] == "failed" and statuses[app["jobs"]["running"]] == "running"
    assert page.get_by_role("button", name=action, exact=True).count() == 0
    assert page.get_by_role("button", name=re.compile("^Download")).count() == 0, "an export was served"


def test_a_revoked_viewer_sees_the_refusal_at_the_next_refresh(app, page):
    page.goto(invite(app, "vic", "viewer"))
    page.get_by_text("Maria has 12 stickers").first.wait_for(timeout=LOAD_TIMEOUT)
    settle(page)
    Store.open(app["db"]).revoke_invitations("vic")
    # No click, no reload: Explore's live fragment (every 3 s) finds the invitation revoked.
    page.get_by_text(REVOKED).first.wait_for(timeout=30_000)
    settle(page)
    assert "Maria has 12 stickers" not in page.inner_text("body")


def test_an_invited_organiser_cannot_switch_databases(app, page):
    other = app["folder"] / "other.db"
    Store.open(other)
    page.goto(invite(app, "olga", "organiser").replace("/?", "/jobs_data?"))
    page.get_by_role("heading", name="Access").wait_for(timeout=LOAD_TIMEOUT)
    settle(page)
    sidebar = page.inner_text("[data-testid='stSidebar']")
    assert "Signed in as olga (organiser)" in sidebar and "Database file" not in sidebar
    assert f"File: {app['db'].resolve()}" in page.inner_text("main")


def test_a_viewers_websocket_traffic_carries_no_gold_results(app):
    """What is not drawn is not sent: a viewer's Compare, recorded as the bytes on its websocket,
    holds no gold accuracy; the organiser's, recorded the same way, does (so the check can see it)."""
    traffic = {}
    for role in ("viewer", "organiser"):
        _, token = Store.open(app["db"]).create_invitation(f"gold-{role}", role, timedelta(days=1))
        with RawSession(app["url"]) as session:
            assert b"Signed in as" in session.rerun(f"db={app['db'].name}&token={token}")
            traffic[role] = session.rerun(page_name="compare")
    assert b"gold accuracy" in traffic["organiser"] and b"accuracy on gold items" in traffic["organiser"]
    assert b"Compare" in traffic["viewer"] and b"gold accuracy" not in traffic["viewer"]
    assert b"accuracy on gold items" not in traffic["viewer"] and b"gold steps" not in traffic["viewer"]


# --- 2. clear_cache from a session that never signed in ---------------------------------------


def wait_shown(raw: bytes) -> float:
    """The wait the refusal reports (0 when it reports none)."""
    match = re.search(rb"the next try waits ([0-9.]+) s", raw)
    return float(match.group(1)) if match else 0.0


def failed_sign_in(app) -> bytes:
    with RawSession(app["url"]) as attacker:
        shown = attacker.rerun(f"db={app['db'].name}&token=junk")
    assert b"Not signed in" in shown and b"not a valid invitation" in shown
    return shown


def test_clear_cache_from_an_unsigned_session_resets_nothing(app):
    db, url = app["db"], app["url"]
    with RawSession(url) as organiser:
        _, token = Store.open(db).create_invitation("owen", "organiser", timedelta(days=1))
        shown = organiser.rerun(f"db={db.name}&token={token}")
        assert b"Signed in as owen (organiser)" in shown, organiser.kinds()
        deadline = time.monotonic() + 60
        while len(worker_pids(db)) != 1:  # the organiser's run has the server start its worker
            assert time.monotonic() < deadline, f"workers: {worker_pids(db)}"
            time.sleep(0.2)
        workers = worker_pids(db)
        # Wrong links until the server slows everyone down.
        for _ in range(30):
            wait = wait_shown(failed_sign_in(app))
            if wait > 0:
                break
        assert wait > 0, "thirty wrong links and no slow-down"
        with RawSession(url) as attacker:
            refused = attacker.rerun("")
            assert b"Not signed in" in refused
            attacker.clear_cache()
            assert b"Not signed in" in attacker.rerun("")  # handled in order: the cache was cleared
        assert b"Signed in as owen" in organiser.rerun("")  # the organiser's next run asks for its worker
        assert wait_shown(failed_sign_in(app)) > wait, "clear_cache reset the sign-in slow-down"
        # A second supervisor would start a process at once, which lives seconds before it finds
        # the file's worker lock taken, and again every LOCK_RETRY_SECONDS: look for that long.
        seen, deadline = set(), time.monotonic() + LOCK_RETRY_SECONDS + 2
        while time.monotonic() < deadline:
            seen |= worker_pids(db)
            time.sleep(0.1)
        assert seen == workers, f"worker processes before clear_cache {workers}, after {seen}"


# --- 3. a junk link writes nothing, anywhere ----------------------------------------------------


def folder_state(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()
            if p.is_file() and not p.name.startswith("shared.db")}  # fmt: skip


@pytest.mark.parametrize("database, token, refusal", [
    ("foreign.db", "junk", "not a valid invitation"),
    ("empty.db", "junk", "not a valid invitation"),
    ("foreign.db", WELL_FORMED_WRONG, "foreign.db is not a StepScope database"),
    ("empty.db", WELL_FORMED_WRONG, "empty.db is not a StepScope database"),
    ("new.db", WELL_FORMED_WRONG, "there is no database new.db"),
    ("new.sqlite", "junk", "there is no database new.sqlite"),
])  # fmt: skip
def test_a_junk_link_leaves_every_file_as_it_was(app, database, token, refusal):
    before = folder_state(app["folder"])
    with RawSession(app["url"]) as attacker:
        shown = attacker.rerun(f"db={database}&token={token}")
    assert b"Not signed in" in shown and refusal.encode() in shown
    assert folder_state(app["folder"]) == before
    assert not (app["folder"] / database).with_name(database + "-wal").exists()


# --- 4. uploads, and a rebound Host on loopback ---------------------------------------------------


def put_upload(url: str, session_id: str, size: int) -> int:
    """PUT a file to Streamlit's upload endpoint as the browser does (the XSRF cookie that the
    health check sets, its value as the X-Xsrftoken header); the HTTP status. A server that refuses
    early closes the connection while the body is still being sent: the status is read anyway."""
    jar = http.cookiejar.CookieJar()
    urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar)).open(url + "/_stcore/health", timeout=30).read()
    xsrf = next((c.value for c in jar if c.name == "_streamlit_xsrf"), "")
    boundary = uuid.uuid4().hex
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jsonl\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    conn.putrequest("PUT", f"/_stcore/upload_file/{session_id}/{uuid.uuid4().hex}")
    for name, value in (("Content-Type", f"multipart/form-data; boundary={boundary}"), ("X-Xsrftoken", xsrf),
                        ("Cookie", f"_streamlit_xsrf={xsrf}"), ("Content-Length", str(len(head) + size + len(tail)))):
        conn.putheader(name, value)
    conn.endheaders()
    try:
        conn.send(head)
        chunk = b"x" * (1 << 20)
        for start in range(0, size, len(chunk)):
            conn.send(chunk[: min(len(chunk), size - start)])
        conn.send(tail)
    except (BrokenPipeError, ConnectionResetError):
        pass  # refused before the end: the answer is already there
    try:
        return conn.getresponse().status
    finally:
        conn.close()


def test_an_unsigned_sessions_upload_is_refused_above_the_remote_limit(app):
    with RawSession(app["url"]) as attacker:
        assert b"Not signed in" in attacker.rerun("")
        assert attacker.session_id
        assert put_upload(app["url"], attacker.session_id, (REMOTE_MAX_UPLOAD_MB + 1) * 1024 * 1024) == 413
        # Below the limit Streamlit keeps it (it cannot ask the app first; README: the proxy's
        # limit); no page but an organiser's Import form reads an upload.
        assert put_upload(app["url"], attacker.session_id, 1024) in (200, 204)


def test_on_loopback_a_rebound_host_is_not_the_organiser(tmp_path):
    db = tmp_path / "local.db"
    ensure_trajectories(Store.open(db))
    process, url = start_streamlit(db, log=ARTIFACTS / "e2e-attack-local.log")  # loopback, not remote
    try:
        with RawSession(url, host="rebound.example") as page:
            shown = page.rerun("")
        assert b"Not opened: this StepScope listens on this machine only" in shown, page.kinds()
        assert b"Database file" not in shown and b"Maria has 12 stickers" not in shown
        with RawSession(url, host="localhost") as page:
            assert b"Database file" in page.rerun("")  # the organiser, as before
    finally:
        kill_streamlit(process)
