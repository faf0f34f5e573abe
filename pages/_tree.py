"""Explore's rollout-tree panel: the tree of the trajectory's problem, a tree-search form, and the
clicked node's prefix, rollouts and labels with "Expand rollout".

Not a page: pages/explore.py calls `tree_panel` inside its live fragment, so the chart redraws
while a tree-search job grows the tree.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.errors import StepScopeError
from core.jobs.spec import MAX_N, MAX_NEW_TOKENS
from core.views.charts import TREE_SELECTION, picked_node, tree_chart
from core.views.tree import TreeSearchRequest, chart_rows, expand, node_detail, queue_tree_search, tree_view
from core.views.access import RUN_JOBS
from pages._access import act, allowed
from pages._shared import engine, error_box, policy, policy_engine_options, show_text

PREFIX_LIMIT = 20_000


def _search_form(store, tid: int, node_id: int) -> None:
    with st.form("tree_search_form", border=False):
        c = st.columns(6)
        mode = c[0].selectbox("Search", ["omegaprm", "expand"], key="tree_mode",
                              help="omegaprm: select a rollout by Q + U, binary-search its first error, repeat; "
                                   "expand: every rollout of the selected node becomes a branch, N levels deep")
        # The defaults are the job's, as the CLI's are (TreeSearchRequest reads them there).
        budget = c[1].number_input("Rollout budget", 1, 100_000, TreeSearchRequest.budget, key="tree_budget")
        k = c[2].number_input("Rollouts per node (k)", 1, MAX_N, TreeSearchRequest.k, key="tree_k")
        depth = c[3].number_input("Expand levels", 1, 64, TreeSearchRequest.depth, key="tree_depth")
        tokens = c[4].number_input("Max new tokens per rollout", 1, MAX_NEW_TOKENS, TreeSearchRequest.max_new_tokens,
                                   key="tree_tokens")  # fmt: skip
        seed = c[5].number_input("Search seed", 0, 2**31 - 1, TreeSearchRequest.seed, key="tree_seed")
        submitted = st.form_submit_button("Grow the tree")
    if submitted and act(RUN_JOBS):
        request = TreeSearchRequest(policy=policy(), engine=engine(), engine_options=policy_engine_options(),
                                    mode=mode, budget=int(budget), k=int(k), depth=int(depth), node_id=node_id,
                                    max_new_tokens=int(tokens), seed=int(seed))  # fmt: skip
        try:
            st.success(f"tree search job {queue_tree_search(store, request, tid)} queued")
        except StepScopeError as error:
            error_box("Cannot start the tree search", error)


def _node_detail(store, tid: int, node_id: int, model: str | None) -> None:
    detail = node_detail(store, tid, node_id, model)
    node = detail.node
    st.markdown(f"**Node {node['id']}** · depth {node['depth']} · {detail.value_text}")
    with st.expander(f"The prefix the policy continues from this node ({len(detail.prefix):,} characters)"):
        prefix = detail.prefix if len(detail.prefix) <= PREFIX_LIMIT else "…" + detail.prefix[-PREFIX_LIMIT:]
        st.code(prefix, language=None, wrap_lines=True, height=200)
    for label in detail.labels:
        st.text(label)
    if detail.steps:
        st.caption("Step of trajectories: " + ", ".join(f"#{s['trajectory_id']} step {s['idx']}" for s in detail.steps))
    if not detail.rollouts:
        st.caption("No rollouts from this node yet.")
        return
    st.dataframe(pd.DataFrame(detail.rollouts), hide_index=True, width="stretch",
                 height=min(360, 40 + 35 * len(detail.rollouts)), key=f"tree_rollouts_{node_id}")  # fmt: skip
    ids = [r["rollout"] for r in detail.rollouts]
    c = st.columns([2, 1])
    chosen = c[0].selectbox("Rollout", ids, key=f"tree_rollout_{node_id}")
    if allowed(RUN_JOBS) and c[1].button("Expand rollout", key=f"tree_expand_{node_id}",
                                         help="make this rollout a child branch: a trajectory whose steps become nodes") \
            and act(RUN_JOBS):
        try:
            st.success(f"rollout {chosen} is trajectory #{expand(store, int(chosen))}")
        except StepScopeError as error:
            error_box("Cannot expand the rollout", error)
    row = next(r for r in detail.rollouts if r["rollout"] == chosen)
    show_text(row["text"], key=f"tree-rollout-{chosen}", limit=2000)


def tree_panel(store, tid: int, model: str | None, step: int) -> None:
    state = st.session_state
    st.subheader("Rollout tree")
    view = tree_view(store, tid, model)
    step_node = view.path[min(step + 1, len(view.path) - 1)]
    if state.get("tree_tid") != tid:  # a new trajectory: start at its selected step's node
        state["tree_tid"], state["tree_node"] = tid, step_node
    selected = state.get("tree_node")
    if selected not in view.by_id:
        selected = step_node
    nodes, edges = chart_rows(view, selected)
    st.caption(f"{view.total:,} nodes · {view.rollouts:,} rollouts · {len(view.shown):,} shown (this trajectory's "
               "path, outlined, and the branches with the most rollouts) · colour: value, size: rollouts")

    def on_pick() -> None:
        node = picked_node(state.get("tree_chart"))
        if node is not None:
            state["tree_node"] = node

    st.vega_lite_chart(tree_chart(nodes, edges, view.leaves), key="tree_chart", on_select=on_pick,
                       selection_mode=TREE_SELECTION, width="stretch")  # fmt: skip
    if allowed(RUN_JOBS):
        _search_form(store, tid, selected)
    _node_detail(store, tid, selected, model)
