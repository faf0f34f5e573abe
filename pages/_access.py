"""Who this browser session is, what it may do and the store it opens, for app.py and every page
(the rules: core/views/access.py).

Not a page. On loopback the session is the local organiser, as before. Served beyond loopback
(or with $STEPSCOPE_SERVED_REMOTELY=1), a session is signed in only by an invitation link:
`gate` reads `?token=` once, takes it out of the address bar, checks it (slowed down after
failures; the format first, then the file read-only, so a junk link writes nothing), and keeps
the identity in session state.

The one authorisation gate is `authorise(action)`: every write and job action calls it at the
moment it happens (`act` in a page, `refusal` where a page words the refusal itself), however
the action arrives: a full run, a fragment's rerun (st.fragment, run_every or a click inside
one), a widget callback or a component event. It reads the invitation again (not revoked, not
expired, its role now) and checks that the session's database is the invitation's. A live
fragment is wrapped by `live`: each of its runs checks the session first, and a signed-out
session's fragment turns into a full run, which shows app.py's sign-in refusal.
"""

from __future__ import annotations

import functools
import os
import secrets
from typing import Callable

import streamlit as st
from streamlit import config
from streamlit.runtime.scriptrunner_utils.script_run_context import get_script_run_ctx

from core.errors import StepScopeError
from core.store import Store
from core.views.access import LOCAL_ORGANISER, Identity, label_author, local_host_header, require_for, served_remotely
from core.views.inputs import data_folder, resolve_database
from core.views.sessions import SERVER_BACKOFF, FailureBackoff, sign_in, still_valid
from pages._shared import db_path, md, require_app, store_for

# Served beyond loopback, an upload (Streamlit's PUT /_stcore/upload_file, which any open
# session can reach, signed in or not) is held in memory up to this size; only an organiser's
# Import form reads one. Streamlit's default is 200 MB.
REMOTE_MAX_UPLOAD_MB = 16
IDENTITY_KEY = "access_identity"
_BACKOFF_KEY = "access_backoff_key"
_REFUSAL_KEY = "access_refusal"
_WAIT_KEY = "access_wait"
# Why a signed-in session was signed out (revoked, expired, gone): kept until a new link signs it
# in, so every later run says why, not only the first (a live fragment's timer and a click can
# each cause a full run).
_SIGNED_OUT_KEY = "access_signed_out"
HOW_TO_INVITE = (
    "This StepScope is shared beyond this machine, so it opens data only through a personal link. "
    "Ask the organiser for yours.\n\n"
    "Organiser: on the server, `stepscope access invite NAME --role annotator --url http://HOST:PORT --db FILE` "
    "prints a link (roles: organiser, annotator, viewer; `--role organiser` for yourself). "
    "On this machine alone, run the app on localhost and no link is needed."
)


def backoff() -> FailureBackoff:
    """One per server (core.views.sessions.SERVER_BACKOFF): failed sign-ins of every session
    count towards the global wait, and no client message resets them."""
    return SERVER_BACKOFF


def remote() -> bool:
    return served_remotely(st.get_option("server.address"), os.environ)


def identity() -> Identity | None:
    """The session's identity as last checked (for what a page shows); None when served
    remotely and nobody is signed in. What a session may *do* is `authorise`'s."""
    signed_in = st.session_state.get(IDENTITY_KEY)
    if isinstance(signed_in, Identity):
        return signed_in
    return None if remote() else LOCAL_ORGANISER


def checked_identity() -> Identity | None:
    """The session's identity checked now: an invited session's invitation is read again from
    its database file (read-only; revoked, expired or gone signs the session out, and app.py's
    gate says why on the next full run). None for a session that is not signed in."""
    state = st.session_state
    who = state.get(IDENTITY_KEY)
    if not isinstance(who, Identity):
        return None if remote() else LOCAL_ORGANISER
    try:
        state[IDENTITY_KEY] = who = still_valid(database_path(who.database), who)
    except StepScopeError as error:
        state.pop(IDENTITY_KEY, None)
        state[_SIGNED_OUT_KEY] = f"Signed out: {error}"
        return None
    return who


def authorise(action: str) -> str | None:
    """The gate every write and job action passes at the moment it happens: why this session may
    not take `action` now, or None. Checks the invitation (still active), the role it grants now,
    and that the session's database file is the invitation's: an invitation's powers stop at its
    file."""
    who = checked_identity()
    if who is None:  # why: just signed out (revoked, expired), or never signed in
        state = st.session_state
        return (state.get(_REFUSAL_KEY) or state.get(_SIGNED_OUT_KEY)
                or "this session is not signed in: open your personal invitation link")
    try:
        require_for(who, action)
        if who.invited and os.path.realpath(db_path()) != database_path(who.database):
            raise StepScopeError(f"this invitation opens {who.database} only")
    except StepScopeError as error:
        return str(error)
    return None


def signed_out() -> bool:
    """Whether the session was signed in and no longer is, or is not signed in where a link is
    needed: what `live` fragments check before they draw anything."""
    return checked_identity() is None


def _fragment_run() -> bool:
    """Whether this script run reruns fragments only (a timer's or a click's): app.py's gate
    did not run before it."""
    ctx = get_script_run_ctx()
    return bool(ctx and ctx.fragment_ids_this_run)


def live(body: Callable[..., None]) -> Callable[..., None]:
    """`body` for st.fragment: each fragment-only run (a timer's, a click's) checks the session
    first (in a full run app.py's gate has just done so); a signed-out session's fragment becomes
    a full run, where the gate shows the refusal. Same name and module as `body`, so the
    fragment's identity is unchanged."""

    @functools.wraps(body)
    def checked(*args, **kwargs) -> None:
        if _fragment_run() and signed_out():
            st.rerun()  # scope "app": the whole script, through app.py's gate
        body(*args, **kwargs)

    return checked


def open_store() -> Store:
    """The session's store, or an error box and the end of this run."""
    require_app()
    if identity() is None:  # app.py's gate already refused; a page never opens data without it
        state = st.session_state
        if refused := state.pop(_REFUSAL_KEY, None) or state.get(_SIGNED_OUT_KEY):  # e.g. by a callback's check
            _refuse(refused)
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
    """Whether to offer `action`'s controls: the gate's answer now (the action is checked again
    when it is taken)."""
    return authorise(action) is None


def refusal(action: str) -> str | None:
    """Why this session may not take `action` now, or None (`authorise`): for a page that words
    the refusal itself (Annotate's saves, from component events and callbacks)."""
    return authorise(action)


def act(action: str) -> bool:
    """At the moment an action is taken: True if the gate lets it through; otherwise a one-line
    error naming the cause, and False (the caller writes nothing)."""
    problem = authorise(action)
    if problem:
        st.error(f"Not done: {md(problem)}")
    return problem is None


def require_action(action: str) -> None:
    """An error box and the end of this run unless the session may take `action`."""
    if problem := authorise(action):
        st.error(md(problem))
        st.stop()


def database_path(database: str) -> str:
    return str(resolve_database(database, data_folder()).resolve())


def _refuse(message: str, wait: float = 0.0, how_to_invite: bool = True) -> None:
    st.title("StepScope")
    st.error(md(message))
    if wait > 0:  # what the server's backoff holds now (per session and for everyone)
        st.caption(f"Wrong links are slowed down: the next try waits {wait:.2f} s.")
    if how_to_invite:
        st.markdown(HOW_TO_INVITE)
    st.stop()


def _exchange(token: str, database: str | None) -> None:
    """Sign the session in with `token`; a refusal is kept for this run's message. Nothing is
    opened for writing until the token is found good (core.views.sessions.sign_in)."""
    state = st.session_state
    state.pop(IDENTITY_KEY, None)  # a new link replaces whoever was signed in
    state.pop(_SIGNED_OUT_KEY, None)
    key = state.setdefault(_BACKOFF_KEY, secrets.token_hex(8))
    try:
        path = database_path(database or "")
    except StepScopeError as error:
        backoff().failed(key)  # a link naming no database here counts as a wrong link too
        state[_REFUSAL_KEY] = f"Not signed in: the link's database: {error}"
        state[_WAIT_KEY] = backoff().delay(key)
        return
    try:
        who = sign_in(path, os.path.basename(path), token, backoff(), key)
    except StepScopeError as error:
        state[_REFUSAL_KEY] = f"Not signed in: {error}"
        state[_WAIT_KEY] = backoff().delay(key)
        return
    store_for(path).mark_invitation_used(who.invitation_id)  # signed in: its store may be opened
    state[IDENTITY_KEY] = who


def limit_uploads() -> None:
    """Served beyond loopback: at most REMOTE_MAX_UPLOAD_MB per upload, from the first run on
    (Streamlit reads server.maxUploadSize at each upload; a smaller value set at start stays)."""
    if config.get_option("server.maxUploadSize") > REMOTE_MAX_UPLOAD_MB:
        config.set_option("server.maxUploadSize", REMOTE_MAX_UPLOAD_MB, "StepScope, served beyond loopback")


def gate() -> Identity:
    """The session's identity, or a refusal that ends this run (and shows how to invite)."""
    state = st.session_state
    if remote():
        limit_uploads()
    elif not local_host_header(st.context.headers.get("Host")):
        # Listening on loopback, every session is the organiser without a link: only a page
        # opened by a local name may be that (a website rebinding its name to 127.0.0.1 may not).
        _refuse(f"Not opened: this StepScope listens on this machine only, and the browser asked for "
                f"{st.context.headers.get('Host')!r}; open it as http://localhost:{st.get_option('server.port')}",
                how_to_invite=False)
    if "token" in st.query_params:
        token = st.query_params.get("token")
        # Out of the address bar at once: not kept in the URL, screenshots or later links.
        del st.query_params["token"]
        _exchange(token, st.query_params.get("db"))
    who = checked_identity()
    wait = state.pop(_WAIT_KEY, 0.0)
    if refusal := state.pop(_REFUSAL_KEY, None):
        _refuse(refusal, wait)
    if who is None:
        _refuse(state.get(_SIGNED_OUT_KEY) or "Not signed in: open your personal invitation link.")
    return who
