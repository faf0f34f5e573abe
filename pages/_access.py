"""Who this browser session is, what it may do and the store it opens, for app.py and every page
(the rules: core/views/access.py).

Not a page. On loopback the session is the local organiser, as before. Served beyond loopback
(or with $STEPSCOPE_SERVED_REMOTELY=1), a session is signed in only by an invitation link:
`gate` reads `?token=` once, takes it out of the address bar, checks it (slowed down after
failures), and keeps the identity in session state, checked again on every run.
"""

from __future__ import annotations

import os
import secrets

import streamlit as st

from core.errors import StepScopeError
from core.store import Store
from core.views.access import LOCAL_ORGANISER, Identity, can, label_author, require, served_remotely
from core.views.inputs import data_folder, resolve_database
from core.views.sessions import FailureBackoff, sign_in, still_valid
from pages._shared import db_path, md, require_app, store_for

IDENTITY_KEY = "access_identity"
_BACKOFF_KEY = "access_backoff_key"
_REFUSAL_KEY = "access_refusal"
HOW_TO_INVITE = (
    "This StepScope is shared beyond this machine, so it opens data only through a personal link. "
    "Ask the organiser for yours.\n\n"
    "Organiser: on the server, `stepscope access invite NAME --role annotator --url http://HOST:PORT --db FILE` "
    "prints a link (roles: organiser, annotator, viewer; `--role organiser` for yourself). "
    "On this machine alone, run the app on localhost and no link is needed."
)


@st.cache_resource(show_spinner=False)
def backoff() -> FailureBackoff:
    """One per server: failed sign-ins of every session count towards the global wait."""
    return FailureBackoff()


def remote() -> bool:
    return served_remotely(st.get_option("server.address"), os.environ)


def identity() -> Identity | None:
    """The session's identity; None when served remotely and nobody is signed in."""
    signed_in = st.session_state.get(IDENTITY_KEY)
    if isinstance(signed_in, Identity):
        return signed_in
    return None if remote() else LOCAL_ORGANISER


def open_store() -> Store:
    """The session's store, or an error box and the end of this run."""
    require_app()
    if identity() is None:  # app.py's gate already refused; a page never opens data without it
        st.stop()
    try:
        return store_for(db_path())
    except StepScopeError as error:
        st.error(f"Cannot open the database: {md(error)}")
        st.stop()


def annotator() -> str | None:
    """Whose labels this session saves: an invited person's own name (whatever the page sent),
    else the validated name from the sidebar; None when the session may not label."""
    who = identity()
    return label_author(who, st.session_state.get("annotator") or None) if who else None


def allowed(action: str) -> bool:
    who = identity()
    return who is not None and can(who.role, action)


def refusal(action: str) -> str | None:
    """Why this session may not take `action` now, or None. An invited session's invitation is
    checked again: a fragment's rerun (a click on Annotate) does not pass through app.py's gate,
    and a revoked or expired link must not save another label."""
    who = identity()
    try:
        require(who.role if who else None, action)
        if who is not None and who.invited:
            still_valid(store_for(database_path(who.database)), who)
    except StepScopeError as error:
        return str(error)
    return None


def require_action(action: str) -> None:
    """An error box and the end of this run unless the session may take `action`."""
    if problem := refusal(action):
        st.error(md(problem))
        st.stop()


def database_path(database: str) -> str:
    return str(resolve_database(database, data_folder()).resolve())


def _refuse(message: str) -> None:
    st.title("StepScope")
    st.error(md(message))
    st.markdown(HOW_TO_INVITE)
    st.stop()


def _exchange(token: str, database: str | None) -> None:
    """Sign the session in with `token`; a refusal is kept for this run's message."""
    state = st.session_state
    state.pop(IDENTITY_KEY, None)  # a new link replaces whoever was signed in
    key = state.setdefault(_BACKOFF_KEY, secrets.token_hex(8))
    try:
        path = database_path(database or "")
    except StepScopeError as error:
        backoff().failed(key)  # a link naming no database here counts as a wrong link too
        state[_REFUSAL_KEY] = f"the link's database: {error}"
        return
    try:
        state[IDENTITY_KEY] = sign_in(store_for(path), os.path.basename(path), token, backoff(), key)
    except StepScopeError as error:
        state[_REFUSAL_KEY] = str(error)


def gate() -> Identity:
    """The session's identity, or a refusal that ends this run (and shows how to invite)."""
    state = st.session_state
    if "token" in st.query_params:
        token = st.query_params.get("token")
        # Out of the address bar at once: not kept in the URL, screenshots or later links.
        del st.query_params["token"]
        _exchange(token, st.query_params.get("db"))
    if refusal := state.pop(_REFUSAL_KEY, None):
        _refuse(f"Not signed in: {refusal}")
    who = state.get(IDENTITY_KEY)
    if isinstance(who, Identity):
        try:
            state[IDENTITY_KEY] = who = still_valid(store_for(database_path(who.database)), who)
        except StepScopeError as error:
            state.pop(IDENTITY_KEY, None)
            _refuse(f"Signed out: {error}")
        return who
    if remote():
        _refuse("Not signed in: open your personal invitation link.")
    return LOCAL_ORGANISER
