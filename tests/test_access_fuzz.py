"""The token and role surfaces, fuzzed (hypothesis): every refusal is one StepScopeError with a
message, and a refusal writes nothing to the database file.

Each test draws 1,000 cases with STEPSCOPE_FUZZ=full (see tests/fuzz_profile.py) and a CI
number otherwise. The app itself (app.py through Streamlit's AppTest, told it is served
remotely) takes random `token` and `db` query parameters: each run ends in the refusal, without
an exception, with nothing written (a full Streamlit run per case: about 10 minutes for 1,000
on a busy 2-core machine, so CI draws a few).
"""

from __future__ import annotations

import ipaddress
import sqlite3
import string
import time
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from streamlit.testing.v1 import AppTest

from core.errors import StepScopeError
from core.sample_solutions import ensure_trajectories
from core.store import Store
from core.store.access import NAME_PATTERN, ROLES, check_name, check_role, parse_lifetime
from core.views import access
from core.views.access import ALL_PAGES, Identity, can, label_author, pages_for, require, served_remotely
from core.views.sessions import GLOBAL_MAX_DELAY_S, SESSION_MAX_DELAY_S, FailureBackoff, sign_in
from fuzz_profile import fuzz_settings, record

REPO = Path(__file__).resolve().parent.parent
CORE_CI, APP_CI = 150, 6
URLSAFE = string.ascii_letters + string.digits + "-_"


def dump(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return list(conn.iterdump())


@pytest.fixture(scope="module")
def invited(tmp_path_factory):
    """A database with an active, a revoked and an expired invitation; their tokens."""
    path = tmp_path_factory.mktemp("access-fuzz") / "fuzz.db"
    store = Store.open(path)
    ensure_trajectories(store)
    _, active = store.create_invitation("alice", "annotator", timedelta(days=1))
    _, revoked = store.create_invitation("rob", "viewer", timedelta(days=1))
    store.revoke_invitations("rob")
    _, expired = store.create_invitation("eve", "organiser", timedelta(seconds=1))
    time.sleep(1.2)  # expired before the first case, however fast the machine reaches it
    return store, {"active": active, "revoked": revoked, "expired": expired}


def mutations(token: str):
    """Near misses of a real token: one character changed, cut, lengthened, case-swapped, parts swapped."""
    lookup, secret = token.split(".")
    return st.one_of(
        st.builds(lambda i, c: token[:i] + c + token[i + 1:], st.integers(0, len(token) - 1), st.sampled_from(URLSAFE + ".=%~ ")),
        st.builds(lambda n: token[:n], st.integers(0, len(token) - 1)),
        st.builds(lambda tail: token + tail, st.text(min_size=1, max_size=5)),
        st.just(token.swapcase()), st.just(f"{secret}.{lookup}"), st.just(token.replace(".", "")),
        st.builds(lambda s: f"{lookup}.{s}", st.text(URLSAFE, min_size=43, max_size=43)),
        st.builds(lambda s: f"{s}.{secret}", st.text(URLSAFE, min_size=12, max_size=12)),
    )  # fmt: skip


def test_tokens_are_refused_cleanly_and_nothing_is_written(invited):
    store, tokens = invited
    before, cases = dump(store.path), []
    backoff, slept = FailureBackoff(clock=lambda: 0.0), []

    @fuzz_settings(CORE_CI)
    @given(token=st.one_of(
        st.text(max_size=80), st.text(URLSAFE + ".", max_size=70), mutations(tokens["active"]),
        st.sampled_from([tokens["revoked"], tokens["expired"]]), st.none(), st.integers(), st.binary(max_size=60),
    ))  # fmt: skip
    def run(token):
        assume(token != tokens["active"])
        cases.append(token)
        with pytest.raises(StepScopeError) as refused:
            sign_in(store, "fuzz.db", token, backoff, "fuzzer", sleep=slept.append)
        assert str(refused.value) and tokens["active"] not in str(refused.value)

    run()
    record("access.tokens", len(cases))
    assert dump(store.path) == before
    assert slept and all(0 < s <= max(SESSION_MAX_DELAY_S, GLOBAL_MAX_DELAY_S) for s in slept)
    assert store.check_token(tokens["active"]).name == "alice"  # the real one still works


def test_roles_and_actions_refuse_everything_unknown():
    cases = []
    words = st.one_of(st.sampled_from([*ROLES, *access.ACTIONS]), st.text(max_size=30), st.none(), st.integers())

    @fuzz_settings(CORE_CI)
    @given(role=words, action=words, typed=st.one_of(st.none(), st.text(max_size=40)),
           name=st.text(max_size=40), invitation=st.one_of(st.none(), st.integers(1, 10**6)))  # fmt: skip
    def run(role, action, typed, name, invitation):
        cases.append((role, action))
        allowed = can(role, action)
        assert allowed is (role in ROLES and action in access.ACTIONS and action in access._ALLOWED[role])
        if allowed:
            require(role, action)
        else:
            with pytest.raises(StepScopeError, match="may not"):
                require(role, action)
        assert set(pages_for(role)) <= set(ALL_PAGES)
        who = Identity(role, name, invitation, "x.db") if isinstance(role, str) else Identity("nobody", name)
        author = label_author(who, typed)
        if invitation is not None:
            assert author in (name, None) and (author is None or can(role, access.LABEL))
        else:
            assert author in (typed, None)

    run()
    record("access.roles_and_actions", len(cases))


def test_invitation_inputs_are_checked_and_a_refusal_writes_nothing(invited):
    store = invited[0]
    cases = []

    @fuzz_settings(CORE_CI)
    @given(name=st.one_of(st.text(max_size=45), st.sampled_from(["alice", "a" * 40, "a" * 41, "../x", "b.o_b-1"])),
           role=st.one_of(st.sampled_from(ROLES), st.text(max_size=12)),
           expires=st.one_of(st.text(max_size=8), st.builds(lambda n, u: f"{n}{u}", st.integers(-5, 10**6),
                                                            st.sampled_from("smhdwy"))))  # fmt: skip
    def run(name, role, expires):
        cases.append((name, role, expires))
        count = len(store.invitations())
        try:
            checked = check_name(name), check_role(role), parse_lifetime(expires)
        except StepScopeError as error:
            assert str(error)
            with pytest.raises(StepScopeError):  # the store refuses the same, before writing
                store.create_invitation(name, role, parse_lifetime(expires) if _ok(expires) else timedelta(0))
            assert len(store.invitations()) == count
            return
        assert NAME_PATTERN.fullmatch(checked[0]) and timedelta(0) < checked[2] <= timedelta(days=366)

    run()
    record("access.invitation_inputs", len(cases))


def _ok(expires: str) -> bool:
    try:
        parse_lifetime(expires)
    except StepScopeError:
        return False
    return True


def test_only_loopback_addresses_count_as_local():
    cases = []

    @fuzz_settings(CORE_CI)
    @given(address=st.one_of(st.text(max_size=40), st.ip_addresses().map(str), st.none(),
                             st.sampled_from(["localhost", "127.0.0.1", "::1", "0.0.0.0", "", "::"])),
           forced=st.sampled_from(["", "0", "1", "true", "no"]))  # fmt: skip
    def run(address, forced):
        cases.append(address)
        remote = served_remotely(address, {"STEPSCOPE_SERVED_REMOTELY": forced})
        if forced in ("1", "true"):
            assert remote
        if not remote:  # local only for the name localhost or a loopback IP address
            host = address.strip().lower().strip("[]")
            assert host == "localhost" or ipaddress.ip_address(host).is_loopback

    run()
    record("access.served_remotely", len(cases))


def test_the_app_served_remotely_refuses_any_link_parameter(invited, monkeypatch):
    from pages._access import backoff

    store, tokens = invited
    monkeypatch.setenv("STEPSCOPE_DB", str(store.path))
    monkeypatch.setenv("STEPSCOPE_SERVED_REMOTELY", "1")
    before, cases = dump(store.path), []
    parameter = st.one_of(st.text(max_size=60), mutations(tokens["active"]),
                          st.sampled_from([tokens["revoked"], tokens["expired"]]))  # fmt: skip
    databases = st.one_of(st.just("fuzz.db"), st.text(max_size=20), st.sampled_from(["../fuzz.db", "none.db", ""]))

    @fuzz_settings(APP_CI)
    @given(token=st.one_of(st.none(), parameter), database=st.one_of(st.none(), databases))
    def run(token, database):
        assume(token != tokens["active"])
        cases.append((token, database))
        backoff().reset()  # the real wait is tested above; here it would only slow the run
        at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
        for key, value in (("token", token), ("db", database)):
            if value is not None:
                at.query_params[key] = value
        at.run()
        assert not at.exception, at.exception
        shown = " ".join(e.value for e in at.error) + " ".join(m.value for m in at.markdown)
        assert "stepscope access invite" in shown and "Not signed in" in shown
        assert "token" not in at.query_params
        assert not at.sidebar.selectbox and "A baker makes" not in shown

    run()
    record("access.app_link_parameters", len(cases))
    assert dump(store.path) == before
