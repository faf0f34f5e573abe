"""Roles on the pages themselves (Streamlit's AppTest, a real SQLite file): what an invited
annotator's or viewer's session can and cannot do, whatever the page's state says. The browser
tests (tests/test_e2e_access.py) cover the same through a real server; these are the quick ones."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.sample_solutions import ensure_trajectories
from core.store import Store
from core.views.access import BLIND_SETTING, Identity

from app_components import click_step, press_key
from pages._step_controls import KEYBOARD_KEY, ROW_KEY

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TIMEOUT = 60


@pytest.fixture
def store(tmp_path, monkeypatch) -> Store:
    path = tmp_path / "data" / "roles.db"
    monkeypatch.setenv("STEPSCOPE_DB", str(path))
    monkeypatch.setenv("STEPSCOPE_SERVED_REMOTELY", "1")
    store = Store.open(path)
    ensure_trajectories(store)
    return store


def signed_in(store: Store, name: str, role: str, page: str, **state) -> AppTest:
    """A page run by a session that an invitation signed in (as app.py's gate leaves it)."""
    invitation, _ = store.create_invitation(name, role, timedelta(days=1))
    at = AppTest.from_file(str(REPO / "pages" / f"{page}.py"), default_timeout=TIMEOUT)
    at.session_state["db_path"] = str(store.path)
    at.session_state["access_identity"] = Identity(role, name, invitation.id, store.path.name)
    for key, value in state.items():
        at.session_state[key] = value
    return at


def rating_controls(at: AppTest) -> int:
    """Annotate's rating elements drawn in this run: one per step row, and the keyboard bar."""
    return sum(1 for node in at._tree if getattr(node, "type", None) == "bidi_component"
               and (node.key or "").startswith((ROW_KEY, KEYBOARD_KEY)))  # fmt: skip


def test_an_annotator_is_shown_rating_controls(store):
    """The count a viewer's page must bring to zero is not zero for a session that may label."""
    at = signed_in(store, "alice", "annotator", "annotate")
    at.run()
    assert not at.exception
    assert rating_controls(at) >= 1 + len(store.steps(1)), "no rows of rating controls and keyboard bar"


def test_an_annotators_labels_go_under_their_invitation_whatever_the_state_says(store):
    step = store.steps(1)[0]
    store.save_annotation("bob", step["id"], rating=-1)
    at = signed_in(store, "alice", "annotator", "annotate", annotator="mallory", ann_blind=False)
    at.run()
    assert not at.exception
    press_key(at, "ann_key_r1")
    assert store.annotation("alice", step["id"])["rating"] == 1
    assert store.annotation("mallory", step["id"]) is None
    assert [(h["annotator"], h["field"]) for h in store.label_history(annotator="alice")] == [("alice", "rating")]
    shown = " ".join(c.value for c in at.caption)
    assert "bob" not in shown  # blind mode off, and still nobody else's labels


def test_enforced_blind_mode_cannot_be_turned_off_by_an_annotator(store):
    store.set_setting(BLIND_SETTING, True)
    at = signed_in(store, "alice", "annotator", "annotate", ann_blind=False)
    at.run()
    box = at.toggle(key="ann_blind_box")
    assert box.value is True and box.disabled
    assert "Blind mode" in " ".join(c.value for c in at.caption)


def test_a_revoked_annotator_saves_nothing_more(store):
    at = signed_in(store, "alice", "annotator", "annotate")
    at.run()
    store.revoke_invitations("alice")
    step = store.steps(1)[0]
    click_step(at, step["id"], "rating", 1)
    assert store.annotation("alice", step["id"]) is None
    assert "revoked" in " ".join(e.value for e in at.error)


@pytest.mark.parametrize("page", ["jobs_data", "annotate"])
def test_a_viewer_gets_a_refusal_not_the_page(store, page):
    at = signed_in(store, "vic", "viewer", page)
    at.run()
    assert not at.exception
    assert "a viewer may not" in " ".join(e.value for e in at.error)
    assert not at.button and not at.text_input
    assert rating_controls(at) == 0


def test_a_viewer_sees_explore_without_job_controls(store):
    at = signed_in(store, "vic", "viewer", "explore")
    at.run()
    assert not at.exception
    labels = {b.label for b in at.button}
    assert "Estimate values" not in labels and "Judge" not in labels and "More rollouts" not in labels
    assert "Maria has 12 stickers" in " ".join(m.value for m in at.markdown) + " ".join(t.value for t in at.text)


def test_an_invitations_powers_stop_at_its_database_file(store, tmp_path):
    """A session whose state names another file (a stale sidebar, a hand-made message) is refused
    there: the invitation was for roles.db."""
    other = store.path.parent / "other.db"
    Store.open(other)
    at = signed_in(store, "olga", "organiser", "jobs_data")
    at.session_state["db_path"] = str(other)
    at.run()
    assert not at.exception
    assert "this invitation opens roles.db only" in " ".join(e.value for e in at.error).replace("\\", "")
    assert not at.button


def test_a_revoked_organiser_is_refused_by_the_gate_at_the_moment_of_the_action(store):
    """The gate reads the invitation when the action is taken, not when the page was drawn."""
    at = signed_in(store, "olga", "organiser", "jobs_data")
    at.run()
    assert not at.exception and any(b.label == "Invite" for b in at.button)
    store.revoke_invitations("olga")
    form = next(b for b in at.button if b.label == "Invite")
    form.click().run()
    assert [i.name for i in store.invitations()] == ["olga"]  # no new invitation
    assert "revoked" in " ".join(e.value for e in at.error)


def test_gold_results_on_compare_are_the_organisers_only(store):
    """Per-annotator gold accuracy is neither drawn nor computed for a viewer (what is not drawn is
    not sent over the websocket); the organiser's Compare shows it."""
    for step in store.steps(1):
        store.save_annotation("alice", step["id"], rating=1)
        store.add_rollouts([{"step_id": step["id"], "text": "x", "correct": True, "model": "smollm2-135m"}])

    def gold_table_shown(role: str) -> bool:
        at = signed_in(store, f"someone-{role}", role, "compare")
        at.run()
        assert not at.exception
        return any("accuracy on gold items" in c.value for c in at.caption)

    assert gold_table_shown("organiser")
    assert not gold_table_shown("viewer")


def test_a_revoked_session_is_told_why_on_every_later_run(store):
    """Two full runs can follow a revocation (a live fragment's timer finds it, then a click
    arrives): the second must still say the invitation was revoked, not only "not signed in"."""
    _, token = store.create_invitation("rita", "annotator", timedelta(days=1))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    at.query_params["token"], at.query_params["db"] = token, store.path.name
    at.run()
    assert not at.exception and "Signed in as rita" in " ".join(c.value for c in at.sidebar.caption)
    store.revoke_invitations("rita")
    for _ in range(3):
        at.run()
        refusal = " ".join(e.value for e in at.error)
        assert "revoked" in refusal and "Maria has 12 stickers" not in " ".join(m.value for m in at.markdown)
