"""StepScope: the Streamlit entry point. Navigation over pages/ and the shared sidebar.

The sidebar chooses the database file (a file in the data folder), the policy model and
engine, the judge models, and the annotator name; pages read those choices from session state.
Who the session is comes first (pages/_access.gate): on loopback the local organiser; served
beyond it, only a person signed in by an invitation link, who sees only their role's pages and
sidebar choices (core/views/access.py).
Each database file gets one job worker process, started and restarted by the server (pages/_shared.worker_for);
the server's stores, supervisors and sign-in backoff are module-level objects that Streamlit's
`clear_cache` message cannot reach.
"""

import pages._preload  # noqa: F401 - first, before any other module of ours: see its docstring
import streamlit as st

from core.views.jobs import active_jobs
from core.views.inputs import (
    POLICY_AS_JUDGE, data_folder, database_files, default_database_name, default_policy, judge_models,
    resolve_database, validate_annotator,
)  # fmt: skip
from core.engines import ENGINE_NAMES
from core.views.access import CHOOSE_MODELS, RUN_JOBS, SWITCH_DATABASE, Identity, can, may, pages_for
from core.errors import StepScopeError
from core.model_status import describe_model
from core.models import DEFAULT_MODEL, load_presets
from pages._access import database_path, gate
from pages._shared import md, navigation, store_for, worker_for

st.set_page_config(page_title="StepScope", layout="wide")

CUSTOM = "other (hub id or local directory)…"
NEW_DB = "new database file…"


def database_picker() -> str:
    """The database file for this session: a file name in the data folder, never a path."""
    folder = data_folder()
    names = database_files(folder)
    default = default_database_name()
    if default not in names:
        names = [default, *names]
    linked = st.query_params.get("db")
    if linked is not None and "db_link_seen" not in st.session_state:
        st.session_state["db_link_seen"] = True
        try:
            st.session_state["db_choice"] = resolve_database(linked, folder).name
        except StepScopeError as error:
            st.session_state["db_link_problem"] = (linked, str(error))
    # Shown on every run while the URL still names that file: the first run of a page is often
    # followed at once by another (a fragment, a redirect), which would wipe a one-off message.
    problem = st.session_state.get("db_link_problem")
    if problem and problem[0] == linked:
        st.sidebar.error(f"The link's database: {md(problem[1])}")
    if st.session_state.get("db_choice") not in (*names, NEW_DB):
        st.session_state["db_choice"] = default
    choice = st.sidebar.selectbox("Database file", [*names, NEW_DB], key="db_choice")
    if choice == NEW_DB:
        typed = st.sidebar.text_input("New file name", placeholder="experiment.db", key="db_new")
        try:
            choice = resolve_database(typed, folder, must_exist=False).name
        except StepScopeError as error:
            if typed:
                st.sidebar.error(md(error))
            choice = st.session_state.get("db_last", default)
    path = str((folder / choice).resolve())
    st.session_state["db_last"] = choice
    st.session_state["db_path"] = path
    st.sidebar.caption(md(f"in {folder}"))
    return path


def model_picker() -> None:
    """Policy model and engine, kept in session state for every page to read."""
    presets = list(load_presets())
    choices = presets + [CUSTOM]
    current = st.session_state.get("policy_model", default_policy(DEFAULT_MODEL))
    index = choices.index(current) if current in presets else len(presets)
    picked = st.sidebar.selectbox("Policy model", choices, index=index, key="policy_model_choice")
    if picked == CUSTOM:
        typed = st.sidebar.text_input(
            "Model", value="" if current in presets else current,
            placeholder="Qwen/Qwen2.5-Math-1.5B-Instruct or /path/to/model",
        ).strip()
        st.session_state["policy_model"] = typed or DEFAULT_MODEL
    else:
        st.session_state["policy_model"] = picked
    engine = st.sidebar.selectbox("Engine", ENGINE_NAMES, key="policy_engine")
    if engine == "openai":
        st.sidebar.text_input("Server URLs (comma-separated, …/v1)", key="policy_base_urls")


def judge_picker() -> None:
    """Judge models for the judge jobs (Explore): by default the policy judges itself."""
    picked = st.sidebar.multiselect(
        "Judge models", [POLICY_AS_JUDGE, *load_presets()], default=[POLICY_AS_JUDGE], key="judge_choice",
        help="who gives P(yes) verdicts; none chosen: the policy",
    )  # fmt: skip
    typed = st.sidebar.text_input(
        "Other judge models", key="judge_other", max_chars=500,
        placeholder="comma-separated hub ids or local directories",
    )  # fmt: skip
    st.session_state["judge_models"] = judge_models(picked, typed, st.session_state["policy_model"])


def annotator_field(who: Identity) -> None:
    if who.invited:  # the name comes from the invitation, never from a text box
        st.sidebar.caption(md(f"Signed in as {who.name} ({who.role})"))
        st.session_state["annotator"] = who.name
        return
    typed = st.sidebar.text_input(
        "Annotator name", key="annotator_input", max_chars=40,
        help="1 to 40 letters, digits, dots, underscores or hyphens",
    )  # fmt: skip
    st.session_state["annotator"] = None
    if typed.strip():
        try:
            st.session_state["annotator"] = validate_annotator(typed)
        except StepScopeError as error:
            st.sidebar.error(md(error))


@st.cache_data(ttl=60, show_spinner=False)
def describe_policy(name: str):
    return describe_model(name)  # a .gguf file is hashed: once a minute, not on every rerun


def model_status(path: str) -> None:
    """What the worker has loaded, and whether the chosen policy is found."""
    worker = worker_for(path)
    loaded = worker.engines.loaded()
    if loaded:
        st.sidebar.caption(md(f"Loaded: {loaded['model']} on {loaded['engine']} ({loaded['device']})"))
    elif preloading := worker.engines.preloading():
        st.sidebar.caption(md(f"No model loaded yet: loading {preloading} before the first job…"))
    else:
        running = [j for j in active_jobs(store_for(path)) if j["status"] == "running"]
        st.sidebar.caption("Loading the model for a job…" if running else
                           "No model loaded yet: it loads on the first job.")
    status = describe_policy(st.session_state.get("policy_model", ""))
    if status.error:
        st.sidebar.caption(md(f"Policy: {status.error}"))


def page_menu(listed: list) -> None:
    """The pages, at the top of the sidebar (st.navigation's own menu is hidden: see navigation)."""
    for page in listed:
        st.sidebar.page_link(page)
    st.sidebar.divider()


who = gate()
pages, listed = navigation(pages_for(who.role))
page_menu(listed)
if may(who, SWITCH_DATABASE):  # the local organiser; no invitation, whatever its role
    path = database_picker()
else:  # the invitation's database file, and no other
    path = st.session_state["db_path"] = database_path(who.database)
try:
    store_for(path)
except StepScopeError as error:
    st.sidebar.error(f"Cannot open the database: {md(error)}")
if can(who.role, CHOOSE_MODELS):
    model_picker()
    judge_picker()
annotator_field(who)
if can(who.role, RUN_JOBS):
    try:
        model_status(path)
    except StepScopeError:
        pass  # the page shows why the database cannot be opened
pages.run()
