"""Home: what StepScope is for, and the model the sidebar has chosen."""

import pages._preload  # noqa: F401 - first, before any other module of ours: see its docstring
import streamlit as st

from core.model_status import describe_model
from pages._shared import require_app

require_app()
st.title("StepScope")
st.markdown(
    "Step through a model's reasoning, one step at a time: each step's **Monte Carlo value** "
    "(the fraction of sampled continuations that still reach the right answer), "
    "**self-reward verdicts** (a judge's P(Yes)), and **human labels** — side by side."
)

status = describe_model(st.session_state.get("policy_model", ""))
st.subheader("Policy model")
st.text(f"{status.name}  ·  engine: {st.session_state.get('policy_engine', 'transformers')}")
if status.error:
    st.error(status.error)
else:
    st.caption(status.summary)
