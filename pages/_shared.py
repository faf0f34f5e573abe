"""Streamlit helpers every page uses: the store and worker caches, the sidebar's choices, safe text.

Not a page (st.navigation lists the pages explicitly). Everything a page needs from the
sidebar is read from session state with a default, so a page also runs on its own (AppTest).
Who the session is, and the store it may open, are pages/_access.py's, which builds on this
module (so this one never imports it).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import streamlit as st

from core.views.access import PAGES
from core.views.jobs import engine_options, job_progress
from core.views.inputs import data_folder, default_policy, escape_markdown, truncate
from core.views.math_text import math_markdown, show_bidi
from core.views.worker import WorkerSupervisor, supervise, supervisor
from pages._warm_start import warm_start_model
from core.models import DEFAULT_MODEL
from core.sample_solutions import ensure_trajectories
from core.store import Store, default_db_path
from core.store.disk_cache import Stale, StaleView, revalidating

TEXT_PREVIEW = 600
FULL_TEXT_LIMIT = 100_000


# The server's state is kept in module-level objects under a lock, never in st.cache_resource:
# any client, signed in or not, can send Streamlit's `clear_cache` message, which empties that
# cache (and with it would go the connections, the worker supervisors and the sign-in backoff).
_STORES: dict[str, Store] = {}
_STORES_LOCK = threading.Lock()


def store_for(path: str) -> Store:
    """One Store per database file for the whole server; a fresh one gets sample trajectories.
    It opens (and may create) the file for writing: a remote session reaches it only after its
    invitation was checked read-only (pages/_access.py)."""
    with _STORES_LOCK:
        store = _STORES.get(path)
        if store is None:
            store = Store.open(path)
            ensure_trajectories(store)
            _STORES[path] = store
        return store


def worker_for(path: str) -> WorkerSupervisor:
    """The job worker of a database file: a process of its own, started and restarted by a
    supervisor thread, one per file (core.views.worker.supervise; a lock in the worker makes it
    one per file even across servers). app.py starts it; a page run on its own (AppTest) has
    none, so its jobs stay queued."""
    return supervise(path, preload=warm_start_model(path))


def running_worker(path: str) -> WorkerSupervisor | None:
    return supervisor(path)


def navigation(allowed: tuple[str, ...] | None = None) -> tuple[st.Page, list[st.Page]]:
    """st.navigation over core.views.access.PAGES (those whose URL path is in `allowed`, all by
    default; the first is the home page): the page this run shows, and the pages a menu should
    list. Another page's URL gets Streamlit's "page not found" and the home page.

    Its own menu is hidden: `client.showSidebarNavigation = false` in .streamlit/config.toml hides
    Streamlit's automatic pages/ list on a first visit, and with it any sidebar-positioned
    st.navigation menu, so app.py draws the menu itself (st.page_link).
    """
    home, *rest = [page for page in PAGES if allowed is None or page.url in allowed]
    listed = [st.Page(home.script, title=home.title, icon=home.icon, default=True, url_path="")]
    listed += [st.Page(page.script, title=page.title, icon=page.icon, url_path=page.url) for page in rest]
    alias = st.Page(home.script, title=home.title, icon=home.icon, url_path=home.url, visibility="hidden")
    return st.navigation([*listed, alias], position="hidden"), listed


def require_app() -> None:
    """Make sure app.py (sidebar, worker, navigation) runs around this page.

    Until some session calls st.navigation, Streamlit runs an app with a pages/ folder the old
    way ("As soon as any session of your app executes the st.navigation command, your app will
    ignore the pages/ directory", st.navigation's documentation), so a deep link that is the
    first visit to a fresh server, or one of several first visits at once, runs this page alone.
    app.py leaves the sidebar's choices in session state on every run (a test that runs a page
    on its own puts them there), so a page that finds none was run without it: it calls
    st.navigation itself, which ends the old way for every session, and reruns. The rerun runs
    app.py, whose st.navigation picks this page by its URL path, query string kept.
    """
    if "db_path" not in st.session_state:
        navigation()
        st.rerun()


def db_path() -> str:
    return st.session_state.get("db_path") or str(default_db_path().resolve())


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


def folder() -> Path:
    return data_folder()


def show_text(text: str, key: str, limit: int = TEXT_PREVIEW, math: bool = False) -> None:
    """Untrusted text: the first `limit` characters, the rest in an expander (as plain text).

    With `math`, the preview renders its LaTeX spans with Streamlit's bundled KaTeX and keeps
    everything else inert (core.views.math_text); otherwise it is plain text.
    """
    shown, cut = truncate(text, limit)
    if math:
        st.markdown(math_markdown(shown))
    else:
        st.text(show_bidi(shown))
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
    """Untrusted text made inert for a markdown place (captions, labels, message boxes);
    bidirectional controls shown as ⟨U+XXXX⟩, not obeyed."""
    return escape_markdown(show_bidi(str(text)))


def error_box(what: str, error: Exception) -> None:
    """An error box naming the cause; the cause may quote imported text, so it is escaped."""
    st.error(f"{what}: {md(error)}")


def job_progress_lines(jobs: list[dict]) -> None:
    """A progress bar and a line per running job (the live views of Explore and Search)."""
    for job in jobs:
        progress = job_progress(job)
        st.progress(progress.fraction or 0.0)
        st.text(f"job {job['id']} ({job['kind']}) · {progress.text}")


def stale_notice() -> StaleView:
    """A slot here for saying that the figures below are from before the latest change to the
    data (core.store.disk_cache.remembered's `on_stale`): the current ones are computed in the
    background, and the page reruns itself when they are ready."""
    slot = st.empty()

    def tell(stale: Stale) -> None:
        with slot.container():
            st.info(f"Figures as computed {max(0, round(time.time() - stale.computed_at))} s ago, before the latest "
                    f"change to the data: the current ones are being computed (about {stale.seconds:.0f} s), and "
                    "this page updates when they are ready.")  # fmt: skip
            _rerun_when_computed()

    return StaleView(tell)


@st.fragment(run_every=1.0)
def _rerun_when_computed() -> None:
    if not revalidating():
        st.rerun()
