"""The first visit's demo study (core/views/demo.py): a button on Compare and Best-of-N when they
have nothing to show, for those who may run jobs."""

import streamlit as st

from core.errors import StepScopeError
from core.views.access import RUN_JOBS
from core.views.jobs import EstimateRequest
from pages._access import act, allowed
from pages._shared import engine, error_box, md, policy, policy_engine_options


def demo_study(store, queue_demo, explanation: str, key: str) -> None:
    if not allowed(RUN_JOBS):
        return
    st.caption(explanation)
    if st.button(f"Fill a demo study with {md(policy())}", key=key) and act(RUN_JOBS):
        request = EstimateRequest(policy=policy(), engine=engine(), engine_options=policy_engine_options())
        try:
            ids = queue_demo(store, request)
        except StepScopeError as error:
            error_box("Cannot start the demo study", error)
        else:
            st.success(f"jobs {', '.join(map(str, ids))} queued: this page fills as they finish "
                       "(their progress is on Jobs and data)")  # fmt: skip
