"""StepScope: the Streamlit entry point. Navigation over pages/ and the shared sidebar."""

import streamlit as st

from core.models import DEFAULT_MODEL, load_presets
from core.engines import ENGINE_NAMES

st.set_page_config(page_title="StepScope", layout="wide")

CUSTOM = "other (hub id or local directory)…"


def model_picker() -> None:
    """Policy model and engine, kept in session state for every page to read."""
    presets = list(load_presets())
    choices = presets + [CUSTOM]
    current = st.session_state.get("policy_model", DEFAULT_MODEL)
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


model_picker()
pages = st.navigation(
    [
        st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
        st.Page("pages/models.py", title="Models", icon=":material/memory:"),
    ]
)
pages.run()
