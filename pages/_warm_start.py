"""Warm start: the default database's job worker, and the default policy it preloads, started as
early as a Streamlit app can start anything.

Streamlit has no server-start hook: nothing of the app runs until the first browser session's
first script run. That run's first act is to import pages/_preload.py (seconds of imports on a
small machine), which calls `start_default_worker` before its heavy imports, so the worker
process (which needs ten seconds or more of imports and loading of its own) starts with them in
parallel instead of after them. Later runs reach the same supervisor through
pages/_shared.worker_for, whose preload choice is `warm_start_model`.

Only where nothing is opened that the session would not open anyway (pages/_access.py: nothing
is written before a session is signed in): a browser on loopback whose Host names this machine
(the local organiser the gate will let in), with no invitation link and no link naming another
database file. Served beyond loopback, nothing starts before a sign-in.

Cheap to import (no job kinds, no models): it runs before the rest of the app is imported.
"""

from __future__ import annotations

import os

import streamlit as st

from core.models import DEFAULT_MODEL
from core.store import default_db_path
from core.views.access import local_host_header, served_remotely
from core.views.inputs import default_database_name, default_policy
from core.views.worker import supervise

PRELOAD_ENV = "STEPSCOPE_PRELOAD"  # "0": the worker loads a model only when a job asks for it


def browser_headers() -> dict:
    """The HTTP headers of this session's connection; none for AppTest or outside a script run."""
    try:
        return dict(st.context.headers)
    except Exception:  # noqa: BLE001 - no script run context (a plain import): no browser either
        return {}


def warm_start_model(path: str) -> str | None:
    """The model a new worker of `path` loads before the first job asks: the default policy, for
    the default database, when a browser is on the other end. AppTest's sessions have no HTTP
    headers: a test's worker loads nothing it was not asked for (each would hold a model for the
    rest of the test run)."""
    if os.environ.get(PRELOAD_ENV, "").strip().lower() in ("0", "false", "no"):
        return None  # the operator's choice: a memory-tight machine, or a server that never runs a job
    if not browser_headers() or os.path.realpath(path) != str(default_db_path().resolve()):
        return None
    return default_policy(DEFAULT_MODEL)


def start_default_worker() -> bool:
    """Start the default database's worker (preloading the default policy) if this run is the
    local organiser's on the default database; whether it was asked to start."""
    headers = browser_headers()
    if not headers or served_remotely(st.get_option("server.address"), os.environ):
        return False
    if not local_host_header(headers.get("Host")) or "token" in st.query_params:
        return False  # the gate refuses this session, or it signs in by invitation (its own file)
    if st.query_params.get("db") not in (None, default_database_name()):
        return False
    path = str(default_db_path().resolve())
    supervise(path, preload=warm_start_model(path))
    return True
