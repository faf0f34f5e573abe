"""A real `streamlit run app.py` on a free port (loopback, or this machine's network address for the
tests of serving beyond loopback), and a real headless Chromium.

Used by the end-to-end tests (tests/test_e2e_*.py). The server gets its own database through
$STEPSCOPE_DB (its folder is the app's data folder) and, optionally, the policy a new session
starts with through $STEPSCOPE_DEFAULT_POLICY; $STEPSCOPE_MODELS_DIR is left as it is.
Chromium is Debian's (/usr/bin/chromium, or $STEPSCOPE_CHROMIUM): Playwright's own browser
download is not used.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]  # fmt: skip


def chromium_path() -> str | None:
    configured = os.environ.get("STEPSCOPE_CHROMIUM")
    if configured:
        return configured
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def network_address() -> str | None:
    """An IPv4 address of this machine that is not loopback and that a server can listen on (the
    address a StepScope shared on a network binds), or None when the machine has none."""
    import psutil

    for addresses in psutil.net_if_addrs().values():
        for entry in addresses:
            if entry.family != socket.AF_INET:
                continue
            address = ipaddress.ip_address(entry.address)
            if address.is_loopback or address.is_link_local:
                continue
            try:
                with socket.socket() as sock:
                    sock.bind((entry.address, 0))
            except OSError:
                continue
            return entry.address
    return None


def served_beyond_loopback() -> tuple[str, dict[str, str]]:
    """Where a server "served on a network" listens, and the environment it needs: this machine's
    network address, so that the app decides it is remote from its own bind address as in real
    use; only on a machine without one, loopback told by $STEPSCOPE_SERVED_REMOTELY=1 (warned)."""
    address = network_address()
    if address is not None:
        return address, {}
    warnings.warn("no network address to bind: serving on loopback with STEPSCOPE_SERVED_REMOTELY=1", stacklevel=2)
    return "127.0.0.1", {"STEPSCOPE_SERVED_REMOTELY": "1"}


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def start_streamlit(db_path: Path, *, env: dict | None = None, log: Path | None = None,
                    port: int | None = None, address: str | None = "127.0.0.1",
                    start_timeout: float = 90.0) -> tuple[subprocess.Popen, str]:
    """Start `streamlit run app.py` and wait until it answers; returns (process, base URL).

    `address=None` leaves the listening address to .streamlit/config.toml, as a user's plain
    `streamlit run app.py` would. The process leads its own group: `kill_streamlit` ends it and
    anything it spawned.
    """
    port = port or free_port()
    # No warm start unless a test asks for it: each server would hold the default model (SmolLM2,
    # ~1 GB, and CPU while it loads) for tests that never run a job.
    environment = {**os.environ, "STEPSCOPE_DB": str(db_path), "HF_HUB_OFFLINE": "1", "STEPSCOPE_PRELOAD": "0",
                   "TRANSFORMERS_VERBOSITY": "error", **(env or {})}  # fmt: skip
    log_handle = open(log, "a") if log else subprocess.DEVNULL
    address_args = ["--server.address", address] if address else []
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), *address_args,
         "--server.headless", "true", "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
        cwd=REPO, env=environment, stdout=log_handle, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    if log_handle is not subprocess.DEVNULL:
        log_handle.close()  # the child holds its own copy
    url = f"http://{address if address and address != '0.0.0.0' else '127.0.0.1'}:{port}"
    deadline = time.monotonic() + start_timeout
    while not _healthy(url):
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited with {process.returncode}; see {log}")
        if time.monotonic() > deadline:
            kill_streamlit(process, signal.SIGKILL)
            raise RuntimeError(f"streamlit did not answer on {url} in {start_timeout:.0f} s")
        time.sleep(0.3)
    return process, url


def kill_streamlit(process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """Stop the server's process group: SIGTERM (then SIGKILL after 10 s), or SIGKILL at once."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, sig)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextmanager
def streamlit_server(db_path: Path, *, env: dict | None = None, log: Path | None = None,
                     start_timeout: float = 90.0, address: str = "127.0.0.1") -> Iterator[str]:
    """Run the app until the block ends; yields its base URL."""
    if log:
        Path(log).write_text("")
    process, url = start_streamlit(db_path, env=env, log=log, start_timeout=start_timeout, address=address)
    try:
        yield url
    finally:
        kill_streamlit(process)


def contents(db: Path) -> dict[str, str]:
    """Every table's rows, hashed: equal snapshots, nothing written anywhere. Rows are sorted, not
    read by rowid: a WITHOUT ROWID table (search_events) has none."""
    with sqlite3.connect(db) as conn:
        tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {table: hashlib.sha256(repr(sorted(conn.execute(f'SELECT * FROM "{table}"').fetchall(), key=repr))
                                      .encode()).hexdigest() for table in tables}  # fmt: skip


def worker_pids(db: Path) -> set[int]:
    """The job worker processes of `db` on this machine, by PID (from /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"core.jobs.worker_process" in argv and str(db.resolve()).encode() in argv:
                found.add(int(entry.name))
    return found


@contextmanager
def chromium() -> Iterator[object]:
    """A headless Chromium browser (Playwright)."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    if executable is None:
        raise RuntimeError("no chromium binary: apt-get install chromium, or set STEPSCOPE_CHROMIUM")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def settle(page, timeout: float = 60_000) -> None:
    """Wait until the script run triggered by the last action has finished. The short pause lets
    the click's rerun start first: before it, the app still says 'notRunning' from the last run."""
    page.wait_for_timeout(250)
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", timeout=timeout)


def choose(page, label: str, option: str, attempts: int = 3, scope=None) -> None:
    """Pick `option` in the selectbox labelled `label` (inside `scope`, a locator, where two boxes
    share the label), until the box shows it, and wait for the rerun it starts. A rerun of another
    part of the page (the sidebar's worker status) can close the open list before the click lands:
    then the box still shows the old value, and the pick is made again."""
    from playwright.sync_api import expect  # where used, as the browser itself is

    box = (scope or page).get_by_role("combobox", name=label)
    for attempt in range(attempts):
        try:
            box.click()
            page.get_by_role("option", name=option, exact=True).click(timeout=15_000)
            expect(box).to_have_value(option, timeout=15_000)
            break
        except Exception:  # noqa: BLE001 - playwright's TimeoutError or the assertion: pick again
            if attempt == attempts - 1:
                raise
            page.keyboard.press("Escape")
    settle(page)


def wait_for_app(page, timeout: float = 60_000) -> None:
    """Until the script run is over: the app shows its title and no 'running' indicator."""
    page.wait_for_selector("[data-testid='stApp']", timeout=timeout)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
        " || !document.querySelector('[data-testid=\"stStatusWidget\"]').innerText.includes('Running')",
        timeout=timeout,
    )


class RawSession:
    """A websocket client that speaks Streamlit's protocol by hand, as an attacker's script would:
    no browser, no XSRF cookie, no Origin header (which Streamlit accepts). It sends BackMsg
    protobufs (`streamlit.proto.BackMsg_pb2`, as the frontend encodes them) and reads the
    ForwardMsgs back; `text()` is what the last run sent, as bytes, for plain-text checks."""

    def __init__(self, base_url: str, timeout: float = 60.0, host: str | None = None) -> None:
        """Connect to the app at `base_url`; with `host`, the Host header names `host` (and the
        port), as a browser's does for a web page whose name points at this server."""
        import urllib.parse
        from contextlib import ExitStack

        from websockets.sync.client import connect

        self.timeout = timeout
        self.session_id: str | None = None
        self._stack = ExitStack()
        parts = urllib.parse.urlsplit(base_url)
        sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout) if host else None
        uri = f"ws://{host}:{parts.port}/_stcore/stream" if host else f"ws://{parts.netloc}/_stcore/stream"
        self._socket = self._stack.enter_context(connect(
            uri, sock=sock, subprotocols=["streamlit"], open_timeout=timeout, max_size=None))  # fmt: skip
        self._received: list[bytes] = []
        self._fragment_pending = False

    def __enter__(self) -> RawSession:
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def _send(self, message) -> None:
        self._socket.send(message.SerializeToString())

    def rerun(self, query_string: str = "", *, page_name: str = "", page_script_hash: str = "",
              widgets: Iterable = (), fragment_id: str = "") -> bytes:
        """A script run as the browser asks for one (page load, a widget change), with
        `query_string` as the address's query, optionally on a page (its URL path or script hash)
        and with widget states (WidgetState protobufs); returns what the run sent once it finished.

        With `fragment_id`, a fragment's run: not awaited (a session without that fragment runs
        nothing and says nothing), its messages are part of what the next awaited run returns."""
        from streamlit.proto.BackMsg_pb2 import BackMsg

        message = BackMsg()
        state = message.rerun_script
        state.query_string, state.page_name, state.page_script_hash = query_string, page_name, page_script_hash
        state.fragment_id = fragment_id
        state.widget_states.widgets.extend(widgets)
        if not self._fragment_pending:
            self._received = []
        self._send(message)
        self._fragment_pending = bool(fragment_id)
        return b"" if fragment_id else self.wait_finished()

    def send(self, message) -> None:
        """Any BackMsg, without waiting for an answer (a later `rerun` reads what it caused)."""
        self._send(message)

    def clear_cache(self) -> None:
        """The toolbar's "Clear cache": Streamlit clears st.cache_data and st.cache_resource for
        the whole server. Followed by a rerun here, so its handling is over when this returns
        (a session handles its messages in order)."""
        from streamlit.proto.BackMsg_pb2 import BackMsg

        message = BackMsg()
        message.clear_cache = True
        self._send(message)

    def wait_finished(self) -> bytes:
        """Read messages until a script run finishes; everything it sent, as bytes."""
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no script_finished from the server")
            data = self._socket.recv(timeout=left)
            if isinstance(data, str):
                continue
            self._received.append(data)
            message = ForwardMsg()
            message.ParseFromString(data)
            if message.WhichOneof("type") == "new_session":
                self.session_id = message.new_session.initialize.session_id
            if message.WhichOneof("type") == "script_finished" and message.script_finished in (
                    ForwardMsg.FINISHED_SUCCESSFULLY, ForwardMsg.FINISHED_WITH_COMPILE_ERROR):  # fmt: skip
                self._fragment_pending = False
                return self.text()

    def text(self) -> bytes:
        """Everything the last run sent, markdown's backslash escapes taken out (`a\\.db` is `a.db`)."""
        return re.sub(rb"\\(.)", rb"\1", b"".join(self._received))

    def messages(self) -> list:
        """The ForwardMsgs the last run sent, parsed."""
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        parsed = []
        for data in self._received:
            message = ForwardMsg()
            message.ParseFromString(data)
            parsed.append(message)
        return parsed

    def widgets(self) -> dict[str, str]:
        """The widgets the last run drew: id -> element type (button, selectbox, ...)."""
        found = {}
        for message in self.messages():
            if message.WhichOneof("type") == "delta" and message.delta.WhichOneof("type") == "new_element":
                element = message.delta.new_element
                kind = element.WhichOneof("type")
                widget_id = getattr(getattr(element, kind), "id", "") if kind else ""
                if widget_id:
                    found[widget_id] = kind
        return found

    def fragment_ids(self) -> set[str]:
        return {m.delta.fragment_id for m in self.messages() if m.WhichOneof("type") == "delta" and m.delta.fragment_id}

    def page_script_hashes(self) -> set[str]:
        return {page.page_script_hash for m in self.messages() if m.WhichOneof("type") == "navigation"
                for page in m.navigation.app_pages}  # fmt: skip

    def kinds(self) -> list[str]:
        """The types of the messages the last run sent (for a failing test's message)."""
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        kinds = []
        for data in self._received:
            message = ForwardMsg()
            message.ParseFromString(data)
            kinds.append(message.WhichOneof("type"))
        return kinds
