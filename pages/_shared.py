"""Streamlit helpers every page uses: the open store, the sidebar's choices, safe text.

Not a page (st.navigation lists the pages explicitly). Everything a page needs from the
sidebar is read from session state with a default, so a page also runs on its own (AppTest).
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

from core.views.jobs import engine_options
from core.views.inputs import data_folder, default_policy, escape_markdown, truncate
from core.errors import StepScopeError
from core.views.worker import AppWorker
from core.models import DEFAULT_MODEL
from core.sample_solutions import ensure_trajectories
from core.store import Store, default_db_path

TEXT_PREVIEW = 600
FULL_TEXT_LIMIT = 100_000


@st.cache_resource(show_spinner=False)
def store_for(path: str) -> Store:
    """One Store per database file for the whole server; a fresh one gets sample trajectories."""
    store = Store.open(path)
    ensure_trajectories(store)
    return store


_WORKERS: dict[str, AppWorker] = {}


@st.cache_resource(show_spinner=False)
def worker_for(path: str) -> AppWorker:
    """The job worker of a database file: one per file per server process, never calls Streamlit.

    app.py starts it; a page run on its own (AppTest) has none, so its jobs stay queued.
    """
    worker = AppWorker(path)
    worker.start()
    _WORKERS[path] = worker
    return worker


def running_worker(path: str) -> AppWorker | None:
    return _WORKERS.get(path)


def require_app() -> None:
    """Make sure app.py (sidebar, worker, st.navigation) runs around this page.

    Streamlit decides per server process whether pages/ is an old-style (v1) page folder until
    the first st.navigation call. When the very first visit to a fresh server is a deep link
    (/explore?trajectory=3), it runs pages/explore.py alone, without app.py, and keeps doing so
    for everyone. A page that finds itself run that way switches the flag off and reruns:
    app.py then runs and st.navigation picks the same page by its URL path.

    The flag alone is not enough when several sessions make their first visit at once: a run
    that started in the old mode may find the flag already switched off by another session
    and would stay without app.py (no sidebar) until the next click. So the page also looks
    for Streamlit's old-mode page runner (`_mpa_v1`) below it on the stack.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory or _run_by_the_old_page_runner():
        PagesManager.uses_pages_directory = False
        st.rerun()


def _run_by_the_old_page_runner() -> bool:
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "_mpa_v1":
            return True
        frame = frame.f_back
    return False


def db_path() -> str:
    return st.session_state.get("db_path") or str(default_db_path().resolve())


def open_store() -> Store:
    """The session's store, or an error box and the end of this run."""
    require_app()
    try:
        return store_for(db_path())
    except StepScopeError as error:
        st.error(f"Cannot open the database: {md(error)}")
        st.stop()


def policy() -> str:
    return st.session_state.get("policy_model") or default_policy(DEFAULT_MODEL)


def judges() -> list[str]:
    """The sidebar's judge models (resolved by app.py); on its own a page lets the policy judge."""
    return list(st.session_state.get("judge_models") or [policy()])


def engine() -> str:
    return st.session_state.get("policy_engine") or "transformers"


def policy_engine_options() -> dict:
    """Options for the sidebar's engine (the server URLs when it is `openai`)."""
    return engine_options(engine(), st.session_state.get("policy_base_urls", ""))


def annotator() -> str | None:
    """The validated annotator name from the sidebar, or None."""
    return st.session_state.get("annotator") or None


def folder() -> Path:
    return data_folder()


def show_text(text: str, key: str, limit: int = TEXT_PREVIEW) -> None:
    """Untrusted text as plain text: the first `limit` characters, the rest in an expander."""
    shown, cut = truncate(text, limit)
    st.text(shown)
    if cut:
        with st.expander(f"show all {len(text):,} characters"):
            if len(text) <= FULL_TEXT_LIMIT:
                st.text(text)
            else:
                st.text(text[:FULL_TEXT_LIMIT] + " …")
                st.download_button(
                    "download the whole text", text.encode("utf-8"), file_name="step.txt",
                    mime="text/plain", key=f"download-{key}",
                )  # fmt: skip


def md(text) -> str:
    """Untrusted text made inert for a markdown place (captions, labels, message boxes)."""
    return escape_markdown(str(text))


def error_box(what: str, error: Exception) -> None:
    """An error box naming the cause; the cause may quote imported text, so it is escaped."""
    st.error(f"{what}: {md(error)}")
