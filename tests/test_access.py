"""Roles and invitations (issue 16): the policy table, tokens kept only as salted hashes, expiry
and revocation, the sign-in backoff, and the `stepscope access` commands. Real SQLite files,
the real CLI in a subprocess."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from cli_runner import assert_one_line_error, run_cli
from core.errors import StepScopeError
from core.formats import export_file
from core.store import Store
from core.store.access import invitation_link, parse_lifetime
from core.views import access
from core.views.access import (
    ANNOTATOR, LABEL, LOCAL_ORGANISER, ORGANISER, RUN_JOBS, VIEWER, Identity, can, label_author, pages_for,
    require, served_remotely,
)  # fmt: skip
from core.views.sessions import GLOBAL_FREE_FAILURES, SESSION_FREE_TRIES, FailureBackoff, sign_in, still_valid
from core.sample_solutions import ensure_trajectories


def dump(store: Store) -> list[str]:
    """Everything the file holds, as SQL text: equal dumps, nothing written."""
    with sqlite3.connect(store.path) as conn:
        return list(conn.iterdump())


@pytest.fixture
def store(tmp_path) -> Store:
    store = Store.open(tmp_path / "access.db")
    ensure_trajectories(store)
    return store


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- the policy -----------------------------------------------------------------------------


def test_roles_pages_and_actions():
    assert all(can(ORGANISER, action) for action in access.ACTIONS)
    assert [a for a in access.ACTIONS if can(ANNOTATOR, a)] == [LABEL]
    assert not can(VIEWER, LABEL) and not can(VIEWER, RUN_JOBS) and not can(VIEWER, access.EXPORT)
    assert pages_for(ANNOTATOR) == ("annotate",)
    assert pages_for(ORGANISER) == access.ALL_PAGES
    assert "jobs_data" not in pages_for(VIEWER) and "annotate" not in pages_for(VIEWER)
    assert pages_for("root") == () and not can("root", LABEL) and not can(None, LABEL)
    with pytest.raises(StepScopeError, match="a viewer may not run jobs"):
        require(VIEWER, RUN_JOBS)
    with pytest.raises(StepScopeError, match="this session may not"):
        require(None, LABEL)
    require(ANNOTATOR, LABEL)


def test_an_invited_persons_labels_carry_their_own_name_whatever_the_page_sends():
    alice = Identity(ANNOTATOR, "alice", 1, "x.db")
    assert label_author(alice, "bob") == "alice" and label_author(alice, None) == "alice"
    assert label_author(Identity(VIEWER, "vic", 2, "x.db"), "vic") is None
    assert label_author(LOCAL_ORGANISER, "carol") == "carol"  # on loopback, the sidebar's name


@pytest.mark.parametrize("address, remote", [
    ("localhost", False), ("127.0.0.1", False), ("127.0.1.1", False), ("::1", False), ("[::1]", False),
    ("LOCALHOST", False), ("0.0.0.0", True), ("", True), (None, True), ("::", True), ("192.168.1.5", True),
    ("stepscope.lan", True), ("unix://tmp/s.sock", True), ("localhost.evil.example", True),
])  # fmt: skip
def test_served_remotely_follows_the_bind_address(address, remote):
    assert served_remotely(address, {}) is remote
    assert served_remotely(address, {"STEPSCOPE_SERVED_REMOTELY": "1"}) is True  # it can only add protection
    assert served_remotely(address, {"STEPSCOPE_SERVED_REMOTELY": "0"}) is remote


@pytest.fixture
def bind_address(monkeypatch):
    """Set Streamlit's server.address as `--server.address` would, with nothing forcing remote
    mode: what the app decides then comes from the bind address alone."""
    from streamlit import config

    monkeypatch.delenv("STEPSCOPE_SERVED_REMOTELY", raising=False)
    before = config.get_option("server.address")
    yield lambda address: config.set_option("server.address", address)
    config.set_option("server.address", before)


@pytest.mark.parametrize("address, remote", [
    ("0.0.0.0", True), ("192.168.1.5", True), ("::", True),
    ("127.0.0.1", False), ("localhost", False), ("::1", False),
])  # fmt: skip
def test_the_app_tells_remote_serving_from_the_bind_address_alone(address, remote, bind_address, store, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("STEPSCOPE_DB", str(store.path))
    bind_address(address)
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    shown = " ".join(e.value for e in at.error) + " ".join(m.value for m in at.markdown)
    if remote:  # no link: refused, told how to get one, no data and no sidebar
        assert "Not signed in" in shown and "This StepScope is shared beyond this machine" in shown
        assert "Maria has 12 stickers" not in shown and not at.sidebar.selectbox
    else:  # the local organiser, straight into Explore
        assert "Not signed in" not in shown and at.title[0].value == "Explore"
        assert "Maria has 12 stickers" in shown and at.sidebar.selectbox


# --- invitations in the store ---------------------------------------------------------------


def test_a_token_is_stored_only_as_a_salted_hash(store, tmp_path):
    invitations = [store.create_invitation("alice", ANNOTATOR, timedelta(days=7)) for _ in range(2)]
    (first, token), (_, other_token) = invitations
    assert token != other_token and len(token) == 56
    lookup, secret = token.split(".")
    with sqlite3.connect(store.path) as conn:
        rows = conn.execute("SELECT lookup, salt, secret_hash FROM invitations").fetchall()
    assert len({row[1] for row in rows}) == 2  # a salt per token
    # Nothing of the secret, in any form a grep would find, in the file or its WAL.
    store.close()  # the WAL checkpointed or not: both files are read below
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("access.db*"))
    for needle in (token, secret, other_token.split(".")[1]):
        assert needle.encode() not in raw
    assert lookup.encode() in raw  # the lookup is not secret: it only finds the row
    # ... nor in an export of everything with the human labels.
    store.save_annotation("alice", store.steps(1)[0]["id"], rating=1)
    out = tmp_path / "export.jsonl"
    export_file(store, "jsonl", out, labels="human:alice")
    assert out.stat().st_size > 0 and secret not in out.read_text()
    assert store.check_token(token).id == first.id


def test_wrong_revoked_and_expired_tokens_are_refused_and_nothing_is_written(store):
    invitation, token = store.create_invitation("alice", ANNOTATOR, timedelta(hours=1))
    lookup, secret = token.split(".")
    before = dump(store)
    wrong_secret = lookup + "." + ("A" if secret[0] != "A" else "B") + secret[1:]
    for bad in ("", token + "x", token[:-1], wrong_secret, "x" * 12 + "." + secret, token.upper(), None, 42,
                f" {token}", token.replace(".", "_")):  # fmt: skip
        with pytest.raises(StepScopeError, match="not a valid invitation"):
            store.check_token(bad)
    later = datetime.now(timezone.utc) + timedelta(hours=2)
    with pytest.raises(StepScopeError, match="expired"):
        store.check_token(token, at=later)
    assert dump(store) == before
    assert store.revoke_invitations("alice")[0].state() == "revoked"
    with pytest.raises(StepScopeError, match="revoked"):
        store.check_token(token)
    with pytest.raises(StepScopeError, match="no unrevoked invitation"):
        store.revoke_invitations("alice")
    with pytest.raises(StepScopeError, match="no invitation 99"):
        store.revoke_invitations("99")


def test_invitation_inputs_are_checked(store):
    for name in ("", "a b", "a" * 41, "../x", None):
        with pytest.raises(StepScopeError, match="name"):
            store.create_invitation(name, ANNOTATOR, timedelta(days=1))
    with pytest.raises(StepScopeError, match="role"):
        store.create_invitation("alice", "admin", timedelta(days=1))
    for lifetime in ("0d", "7", "d", "-1d", "400d", "1y", "", "7 days"):
        with pytest.raises(StepScopeError, match="expiry|lasts"):
            parse_lifetime(lifetime)
    assert parse_lifetime("7d") == timedelta(days=7) and parse_lifetime("30m") == timedelta(minutes=30)
    for address in ("localhost:8501", "ftp://h", "http://h/?a=1", "", "javascript:alert(1)"):
        with pytest.raises(StepScopeError, match="address"):
            invitation_link(address, "x.db", "t")
    assert invitation_link("http://10.0.0.5:8501/", "my.db", "ab.cd") == "http://10.0.0.5:8501/?db=my.db&token=ab.cd"
    assert store.invitations() == []


# --- signing in -----------------------------------------------------------------------------


def test_failed_sign_ins_wait_longer_per_session_and_for_everyone():
    clock = Clock()
    backoff = FailureBackoff(clock)
    delays = []
    for _ in range(SESSION_FREE_TRIES + 4):
        delays.append(backoff.delay("s1"))
        backoff.failed("s1")
    assert delays == [0.0] * SESSION_FREE_TRIES + [1.0, 2.0, 4.0, 8.0]
    assert backoff.delay("s2") == 0.0  # another session: not yet slowed globally
    for i in range(GLOBAL_FREE_FAILURES):
        backoff.failed(f"fresh-{i}")  # a new session per guess does not escape the global count
    assert backoff.delay("s3") > 0.0
    clock.now += 601  # the windows pass
    assert backoff.delay("s1") == 0.0 and backoff.delay("s3") == 0.0


def test_sign_in_grants_the_invitations_identity_and_a_revocation_ends_it(store):
    invitation, token = store.create_invitation("alice", ANNOTATOR, timedelta(days=1))
    backoff, slept = FailureBackoff(Clock()), []
    for _ in range(SESSION_FREE_TRIES + 1):
        with pytest.raises(StepScopeError):
            sign_in(store, "access.db", token[:-2] + "zz", backoff, "s", sleep=slept.append)
    assert slept == [1.0]  # the fourth try waited
    who = sign_in(store, "access.db", token, backoff, "other", sleep=slept.append)
    assert who == Identity(ANNOTATOR, "alice", invitation.id, "access.db")
    assert store.invitation(invitation.id).last_used_at is not None
    assert still_valid(store, who) == who and still_valid(store, LOCAL_ORGANISER) == LOCAL_ORGANISER
    store.revoke_invitations(str(invitation.id))
    with pytest.raises(StepScopeError, match="revoked"):
        still_valid(store, who)


def sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("token", ["junk", "A" * 12 + "." + "B" * 43, None, ""])
def test_checking_a_link_writes_no_file_that_is_not_a_stepscope_store(tmp_path, token):
    """The format first, then only an existing StepScope store, read-only: a foreign SQLite file,
    an empty file and a file that does not exist stay as they were, and nothing is created."""
    foreign, empty, missing = tmp_path / "foreign.db", tmp_path / "empty.db", tmp_path / "missing.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
    empty.write_bytes(b"")
    before = {p.name: sha256(p) for p in tmp_path.iterdir()}
    backoff = FailureBackoff(Clock())
    for path in (foreign, empty, missing):
        with pytest.raises(StepScopeError) as refused:
            sign_in(path, path.name, token, backoff, "s", sleep=lambda _: None)
        assert "\n" not in str(refused.value)
    assert {p.name: sha256(p) for p in tmp_path.iterdir()} == before
    assert backoff.recent_failures("s") == (3, 3)  # each one counted as a wrong link


def test_a_well_formed_link_to_a_foreign_file_names_the_cause(tmp_path):
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
    with pytest.raises(StepScopeError, match="foreign.db is not a StepScope database"):
        sign_in(foreign, "foreign.db", "A" * 12 + "." + "B" * 43, FailureBackoff(Clock()), "s", sleep=lambda _: None)


def test_the_server_backoff_is_a_module_object_not_a_streamlit_cache():
    """Streamlit's clear_cache message (any client may send it) empties st.cache_resource: the
    backoff, the stores and the worker supervisors are kept elsewhere (tests/test_access_attack.py
    sends the message to a real server)."""
    import inspect

    import pages._access
    import pages._shared

    assert pages._access.backoff() is pages._access.backoff()
    for module in (pages._access, pages._shared):
        assert "@st.cache_resource" not in inspect.getsource(module)


def test_no_invitation_switches_databases_and_hosts_are_local_names():
    organiser = Identity(ORGANISER, "olga", 1, "a.db")
    assert access.may(LOCAL_ORGANISER, access.SWITCH_DATABASE) and access.may(organiser, RUN_JOBS)
    assert not access.may(organiser, access.SWITCH_DATABASE) and not access.may(None, LABEL)
    with pytest.raises(StepScopeError, match="its own database file only"):
        access.require_for(organiser, access.SWITCH_DATABASE)
    for host in (None, "", "localhost:8501", "127.0.0.1:8501", "[::1]:8501", "LOCALHOST"):
        assert access.local_host_header(host), host
    for host in ("rebound.example:8501", "localhost.evil.example", "10.0.0.5:8501", "0.0.0.0:8501", 5):
        assert not access.local_host_header(host), host


# --- the command ----------------------------------------------------------------------------


def test_access_commands(tmp_path):
    db = tmp_path / "cli.db"
    env = {"STEPSCOPE_DB": str(db)}
    made = run_cli("access", "invite", "alice", "--role", "annotator", "--expires", "2h",
                   "--url", "http://10.1.2.3:8501", env=env)  # fmt: skip
    assert made.returncode == 0, made.stderr
    link = made.stdout.strip().splitlines()[-1]
    assert link.startswith("http://10.1.2.3:8501/?db=cli.db&token=")
    token = link.split("token=")[1]
    assert Store.open(db).check_token(token).name == "alice"
    listed = run_cli("access", "list", env=env)
    assert "alice" in listed.stdout and "annotator" in listed.stdout and "active" in listed.stdout
    assert token.split(".")[1] not in listed.stdout
    assert_one_line_error(run_cli("access", "invite", "bob", "--role", "admin", env=env), "role")
    assert_one_line_error(run_cli("access", "invite", "bob", "--expires", "forever", env=env), "expiry")
    revoked = run_cli("access", "revoke", "alice", env=env)
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    assert "revoked" in run_cli("access", "list", env=env).stdout
    assert_one_line_error(run_cli("access", "revoke", "alice", env=env), "no unrevoked invitation")
    assert [i.name for i in Store.open(db).invitations()] == ["alice"]  # the refused invites wrote nothing
    # A mistyped --db is refused (exit 2), not made into an empty database to invite into.
    typo = tmp_path / "cli-typo.db"
    for command in (("invite", "bob"), ("list",), ("revoke", "alice")):
        refused = run_cli("access", *command, "--db", str(typo), env=env)
        assert_one_line_error(refused, "no database file at")
        assert refused.returncode == 2 and not typo.exists()


def test_streamlits_xsrf_and_cors_protections_stay_on():
    """The repository's config leaves Streamlit's XSRF and CORS protection at their defaults (on)."""
    import tomllib

    from streamlit import config

    server = tomllib.loads((Path(__file__).resolve().parent.parent / ".streamlit" / "config.toml").read_text())["server"]
    assert server.get("enableXsrfProtection", True) is True and server.get("enableCORS", True) is True
    assert config.get_option("server.enableXsrfProtection") is True and config.get_option("server.enableCORS") is True
    assert server["address"] == "localhost"  # shared only when the organiser says so
