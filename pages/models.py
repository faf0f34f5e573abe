"""Models: the presets and whether their files are here."""

import pages._preload  # noqa: F401 - first, before any other module of ours: see its docstring
import streamlit as st

from core.model_status import preset_table
from pages._shared import require_app

require_app()
st.title("Models")
st.caption(
    "Presets from models/presets.toml. Any Hugging Face model id or local directory also works: "
    "pick “other” in the sidebar. Weights load lazily, on the first job that needs them."
)
st.dataframe(preset_table(), hide_index=True, width="stretch")
