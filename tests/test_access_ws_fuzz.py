"""The server fuzzed as an attacker's script would reach it (issue 23): random sequences of
Streamlit websocket messages, from sessions that never signed in and from sessions whose
invitation was revoked, against a real server bound to this machine's network address.

A message is a script run asked for with random link parameters (database names, junk, revoked
and well-formed wrong tokens, trajectory and step numbers), a random page (by URL path or script
hash), random widget states (the widgets an organiser's pages draw, by their real ids, with
values of any type, and made-up ids) and a random fragment id; or any other message the
frontend can send (clear_cache, stop, run-on-save, git info, heartbeat, the debug messages).
After every sequence: no table changed, no reply carried the store's data, the server answers,
and the database file has one job worker.

Each sequence is one hypothesis example: 1,000 with STEPSCOPE_FUZZ=full (tests/fuzz_profile.py),
a CI-sized number otherwise. Sign-in failures slow everyone down for a minute (the backoff), so
few sequences carry a token at all.
"""

from __future__ import annotations

import time
import urllib.parse
from datetime import timedelta
from pathlib import Path

import pytest
from e2e_server import (
    RawSession,
    contents,
    served_beyond_loopback,
    streamlit_server,
    worker_pids,
)
from fuzz_profile import fuzz_settings, record
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from test_access_attack import WELL_FORMED_WRONG

from core.sample_solutions import ensure_trajectories
from core.store import Store
from core.store.access import ROLES
from core.views.access import ALL_PAGES, pages_for

pytestmark = [pytest.mark.slow, pytest.mark.browser]

ARTIFACTS = Path(__file__).parent / "artifacts"
CI_SEQUENCES = 10
DATA = b"Maria has 12 stickers"  # a sample problem: what a refused session must never be sent
OTHER_MESSAGES = ("clear_cache", "stop_script", "set_run_on_save", "load_git_info", "app_heartbeat",
                  "debug_disconnect_websocket", "debug_shutdown_runtime")  # fmt: skip


class Fuzzed:
    """The server under fuzz, what an organiser's pages drew there, and the revoked sessions."""

    def __init__(self, url: str, db: Path) -> None:
        self.url, self.db = url, db
        self.widgets: dict[str, str] = {}
        self.fragments: set[str] = set()
        self.page_hashes: set[str] = set()
        self.revoked: dict[str, RawSession] = {}
        self.revoked_tokens: list[str] = []


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory):
    ARTIFACTS.mkdir(exist_ok=True)
    folder = tmp_path_factory.mktemp("ws-fuzz")
    db = folder / "shared.db"
    store = Store.open(db)
    ensure_trajectories(store)
    store.insert_job(key="fuzz-failed", kind="estimate", status="failed", error="stopped",
                     manifest={"policy": "nobody", "trajectory_ids": []})  # fmt: skip
    address, env = served_beyond_loopback()
    with streamlit_server(db, env=env, log=ARTIFACTS / "ws-fuzz-server.log", address=address) as url:
        state = Fuzzed(url, db)
        # One session per role signs in and visits its pages: their widgets, fragments and page
        # hashes are what the fuzz sends. Then every invitation is revoked, sessions kept open.
        for role in ROLES:
            name = f"fuzz-{role}"
            _, token = store.create_invitation(name, role, timedelta(days=1))
            session = RawSession(url)
            session.__enter__()
            assert b"Signed in as" in session.rerun(f"db={db.name}&token={token}"), session.kinds()
            for page in pages_for(role):
                session.rerun(page_name=page)
                state.widgets.update(session.widgets())
                state.fragments |= session.fragment_ids()
                state.page_hashes |= session.page_script_hashes()
            store.revoke_invitations(name)
            state.revoked[role], state.revoked_tokens = session, [*state.revoked_tokens, token]
        kinds = set(state.widgets.values())
        assert {"button", "selectbox"} <= kinds and state.fragments and state.page_hashes, (kinds, state.fragments)
        deadline = time.monotonic() + 60
        while len(worker_pids(db)) != 1:  # the organiser's runs started the file's worker
            assert time.monotonic() < deadline, f"workers: {worker_pids(db)}"
            time.sleep(0.2)
        try:
            yield state
        finally:
            for session in state.revoked.values():
                session.__exit__(None, None, None)


def link_parameters(state: Fuzzed):
    """A query string: mostly no token (a sign-in failure slows the server for everyone), else
    junk, a revoked token or a well-formed wrong one; database names near and far."""
    database = st.sampled_from([state.db.name, "../shared.db", "other.db", "", "shared.db\x00", "%2e%2e/x.db"]) | st.text(max_size=20)
    token = st.none() | st.none() | st.none() | st.none() | st.none() | st.none() | st.none() | st.sampled_from(
        ["junk", WELL_FORMED_WRONG, *state.revoked_tokens])  # fmt: skip
    number = st.integers(-2, 10**6).map(str) | st.text(max_size=6)
    return st.fixed_dictionaries({}, optional={"db": database, "token": token, "trajectory": number, "step": number,
                                               "page": st.sampled_from(ALL_PAGES)}).map(
        lambda params: urllib.parse.urlencode({k: v for k, v in params.items() if v is not None}))  # fmt: skip


def widget_states(state: Fuzzed):
    from streamlit.proto.WidgetStates_pb2 import WidgetState

    def build(widget_id: str, kind: str, value) -> WidgetState:
        widget = WidgetState(id=widget_id)
        if kind == "trigger":
            widget.trigger_value = True
        elif kind == "bool":
            widget.bool_value = bool(value)
        elif kind == "int":
            widget.int_value = int(value) if isinstance(value, int) else len(str(value))
        elif kind == "double":
            widget.double_value = float(value) if isinstance(value, (int, float)) else 0.5
        else:
            widget.string_value = str(value)
        return widget

    # Buttons are triggered as a click sends them; any widget may get a value of any type.
    ids = st.sampled_from(sorted(state.widgets)) if state.widgets else st.nothing()
    return st.lists(st.builds(build, ids | st.text(max_size=30), st.sampled_from(["trigger", "bool", "int", "double", "string"]),
                              st.integers(-(2**40), 2**40) | st.text(max_size=40) | st.booleans()), max_size=4)  # fmt: skip


def messages(state: Fuzzed):
    rerun = st.fixed_dictionaries({
        "query_string": link_parameters(state),
        "page_name": st.sampled_from(["", *ALL_PAGES]) | st.text(max_size=12),
        "page_script_hash": st.sampled_from(["", *sorted(state.page_hashes)]) | st.text(max_size=12),
        "widgets": widget_states(state),
        "fragment_id": st.sampled_from(["", "", *sorted(state.fragments)]) | st.text(max_size=12),
    })  # fmt: skip
    return st.lists(rerun | st.sampled_from(OTHER_MESSAGES), min_size=1, max_size=4)


def other_message(kind: str):
    from streamlit.proto.BackMsg_pb2 import BackMsg

    message = BackMsg()
    setattr(message, kind, True)
    return message


def play(session: RawSession, sequence: list) -> list[bytes]:
    """Send the sequence, then one plain run to read its outcome; every reply a run sent.
    Returns early when the server closed this connection (a debug message may)."""
    from websockets.exceptions import ConnectionClosed

    replies = []
    try:
        for message in sequence:
            if isinstance(message, str):
                session.send(other_message(message))
            else:
                replies.append(session.rerun(**message))
        replies.append(session.rerun())
    except ConnectionClosed:
        pass
    return replies


def test_random_message_sequences_from_unsigned_and_revoked_sessions_change_nothing(fuzzed):
    before, workers, cases = contents(fuzzed.db), worker_pids(fuzzed.db), []
    who = st.sampled_from(["unsigned", "unsigned", *ROLES])

    # No shrinking: each step of it is a whole sequence against the server (minutes); the failing
    # sequence is printed as drawn.
    @settings(fuzz_settings(CI_SEQUENCES), phases=[Phase.explicit, Phase.generate])
    @given(sender=who, sequence=messages(fuzzed))
    def run(sender, sequence):
        cases.append((sender, len(sequence)))
        if sender == "unsigned":
            with RawSession(fuzzed.url) as session:
                replies = play(session, sequence)
        else:
            replies = play(fuzzed.revoked[sender], sequence)
        for reply in replies:
            assert DATA not in reply, f"a {sender} session was sent the store's data"
        with RawSession(fuzzed.url) as probe:  # the server still answers, and still refuses
            assert b"Not signed in" in probe.rerun(), probe.kinds()
        assert contents(fuzzed.db) == before, f"a {sender} session's messages changed the database"

    run()
    record("access.websocket_sequences", len(cases))
    assert worker_pids(fuzzed.db) == workers, "the messages started or killed job workers"
    assert {sender for sender, _ in cases} >= {"unsigned"}
