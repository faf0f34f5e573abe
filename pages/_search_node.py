"""The Search page's candidate panel: one candidate of a finished search, its node of the rollout
tree, what other verifiers (judges, PRMs, probes, other searches' scorers) and Monte Carlo
rollouts say about it, and the jobs that add to that (k rollouts at the node, the judges).

Not a page: pages/search.py calls `candidate_panel` inside its live fragment, so the node's
scores fill in while those jobs run.
"""

from __future__ import annotations

from typing import Callable

import streamlit as st

from core.errors import StepScopeError
from core.jobs.spec import MAX_N
from core.views.access import RUN_JOBS
from core.views.search import queue_node_estimate, queue_node_judging
from core.views.search_tree import candidate_label, node_detail
from pages._access import act, allowed
from pages._shared import engine, error_box, judges, md, policy, policy_engine_options, show_text


def picked_key(view) -> str:
    """The session-state key of the candidate picked in a finished search (the selectbox's, which a
    click in the tree sets too); the final beam that gave the answer until one is picked."""
    key = f"search_candidate_{view.search['id']}"
    # Not while it runs: the answer's path is known only when it ends.
    if not view.live and view.candidates and st.session_state.get(key) not in {c.order for c in view.candidates}:
        st.session_state[key] = max((c.order for c in view.candidates if c.on_path), default=view.candidates[0].order)
    return key


def candidate_panel(store, view, queued: Callable[[str, list[int]], None]) -> None:
    """One candidate of the search `view` and its node; `queued(notice, job_ids)` is told of each job queued."""
    st.subheader("A candidate's node")
    if view.live or not view.candidates:
        st.caption("A search's candidates become nodes of the rollout tree when it ends: then pick one here.")
        return
    by_order = {c.order: c for c in view.candidates}
    key = picked_key(view)
    order = st.selectbox("Candidate (or click one in the tree)", list(by_order), key=key,
                         format_func=lambda o: candidate_label(by_order[o]))  # fmt: skip
    candidate = by_order[order]
    detail = node_detail(store, view, candidate)
    st.caption(f"node {detail.node_id} of the rollout tree · its step path:")
    show_text("\n".join(detail.steps) or "(the question)", key=f"search-node-{detail.node_id}", math=True)
    st.text(detail.value_text)
    for verdict in detail.verdicts:
        p_yes = "—" if verdict["p_yes"] is None else f"{verdict['p_yes']:.2f}"
        st.text(f"{verdict['judge']} ({verdict['verifier_kind'] or 'judge'}): P(yes) {p_yes} "
                f"on trajectory #{verdict['trajectory_id']} step {verdict['idx']}")
    for other in detail.search_scores:
        score = "—" if other["score"] is None else f"{other['score']:.3f}"
        st.text(f"search #{other['search_id']} ({other['strategy']}, scorer {other['scorer']}): score {score}, "
                f"rank {other['rank']}, {other['mark']}")
    if not detail.verdicts:
        st.caption("No judge, PRM or probe has scored a step ending at this node yet.")
    if allowed(RUN_JOBS):
        node_actions(store, detail, queued)


def node_actions(store, detail, queued: Callable[[str, list[int]], None]) -> None:
    c = st.columns([1, 2, 3])
    k = c[0].number_input("Rollouts (k)", 1, MAX_N, 8, key=f"search_node_k_{detail.node_id}")
    estimate = c[1].button("Estimate the MC value here", key=f"search_node_estimate_{detail.node_id}")
    judge = c[2].button(f"Judge with {md(', '.join(judges()))}", key=f"search_node_judge_{detail.node_id}",
                        disabled=not detail.trajectories,
                        help="step verdicts on the final beams through this node" if detail.trajectories
                        else "judges score trajectories' steps: no trajectory reads this node")  # fmt: skip
    if not (estimate or judge) or not act(RUN_JOBS):
        return
    try:
        options = {"engine": engine(), "engine_options": policy_engine_options()}
        if estimate:
            job_id = queue_node_estimate(store, detail, policy=policy(), k=int(k), **options)
            queued(f"job {job_id} queued", [job_id])
        if judge:
            ids = queue_node_judging(store, detail, judges(), **options)
            queued(f"judge jobs {', '.join(map(str, ids))} queued", ids)
    except StepScopeError as error:
        error_box("Cannot start the job", error)
