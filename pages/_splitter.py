"""Explore's splitter switch: cut the trajectory another way (core.views.segmentations).

A form, not live widgets: a switch writes (a segmentation, made current, labels moved), so it
happens on Split only, through the access gate, and its callback runs before the page so the
same run shows the new steps.
"""

import streamlit as st

from core.errors import StepScopeError
from core.store import Store
from core.views.access import EDIT_PROJECT
from core.views.segmentations import split_trajectory, splitter_choices
from pages._access import refusal
from pages._shared import md

state = st.session_state


def splitter_controls(store: Store, trajectory: dict) -> None:
    """Cut the trajectory another way (core.views.segmentations); the organiser's, as it changes
    the steps everyone sees."""
    tid = trajectory["id"]
    choices = {choice.rule: choice for choice in splitter_choices(store, tid)}

    def split() -> None:  # a callback: it runs before the page, so this run shows the new steps
        if problem := refusal(EDIT_PROJECT):
            state["ex_split_message"] = ("error", problem)
            return
        rule = state["ex_split_rule_text"].strip() or state["ex_split_rule"]
        try:
            state["ex_split_message"] = ("success", split_trajectory(store, tid, rule, move_labels=state["ex_split_move"]))
            state["explore_step"] = 0
        except StepScopeError as error:
            state["ex_split_message"] = ("error", str(error))

    message = state.pop("ex_split_message", None)
    with st.expander(md(f"Split into steps by: {trajectory.get('rule') or '—'}"), expanded=message is not None):
        with st.form("ex_split_form", border=False):
            cols = st.columns([2, 2, 1, 1])
            cols[0].selectbox("Splitter", list(choices), key="ex_split_rule", format_func=lambda r: choices[r].text)
            cols[1].text_input("or a rule", key="ex_split_rule_text", max_chars=300,
                               placeholder="reflection:Wait|Hmm, sentence-merged:40-200",
                               help="a splitter with its parameters. A model's steps (model:…) come from "
                                    "`stepscope split`; once made they are listed under Splitter")
            cols[2].checkbox("Move labels", key="ex_split_move",
                             help="copy the human labels onto the new steps by character span")
            cols[3].form_submit_button("Split", on_click=split)
        if message:
            (st.success if message[0] == "success" else st.error)(md(message[1]))
