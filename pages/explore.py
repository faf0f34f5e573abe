"""Explore: one trajectory at a time, each step with its MC value, judge scores and human labels.

The URL names the trajectory and step (?trajectory=ID&step=INDEX). Values fill in live: while
a job on this trajectory is queued or running, the trajectory view is a fragment that re-reads
the store every second. Keys: J / K next / previous step, N / P next / previous trajectory.
Past 60 steps (core.views.review_window) the value chart is the whole trajectory's minimap, the
cards are a window of 20 steps that follows the selected one, with runs of steps that carry
nothing collapsed, and buttons jump to the first error, the lowest value, the largest
disagreement and the next reflection.
"""

import pages._preload  # noqa: F401 - first, before any other module of ours: see its docstring
import pandas as pd
import streamlit as st

from core.views.jobs import (
    JUDGE_KINDS, EstimateRequest, active_jobs, budget_text, queue_estimate,
    queue_judging, queue_top_up, trained_verifiers,
)  # fmt: skip
from core.views.inputs import parse_deep_link
from core.errors import StepScopeError
from core.views.charts import SELECTION, chart_spec, picked_step
from core.views.explore import (
    DISAGREEMENTS, TrajectoryFilter, chart_rows, count_trajectories, dataset_names, find_problems, find_trajectories,
    keeps_current, label_text, neighbour, opening_trajectory, outcome_text, outcome_verdicts, page_of, prm_chart_rows, rollout_rows, step_cards,
    RATING_MARK, step_prefix, trajectory_label, value_models, estimate_budget_text,
)  # fmt: skip
from core.jobs.spec import MAX_N, MAX_NEW_TOKENS
from core.mcpe import STRATEGY_NAMES, default_strategy_name
from core.views.math_text import show_bidi
from core.views.search import search_page_params
from core.views.review_window import (
    WINDOW_STEPS, Located, is_long, jump_target, minimap_rows, move_window, runs, window_cards, window_position,
    window_start,
)  # fmt: skip
from pages._shared import (
    engine, error_box, job_progress_lines, judges, md, policy, policy_engine_options, show_text, stale_notice,
)  # fmt: skip
from pages._splitter import splitter_controls
from pages._tree import tree_panel
from core.views.access import EDIT_PROJECT, RUN_JOBS
from pages._access import act, allowed, live, open_store

PAGE_SIZE = 20
WINDOW_SLOT = "ex_review_window"  # a long trajectory's window in session state (Annotate keeps its own)
PREFIX_LIMIT = 20_000
ANY = "any"
DISAGREEMENT_TEXT = {ANY: "no filter", "anything": "human vs anything", "mc-hard": "human vs MC hard",
                     "judge": "human vs a judge", "annotators": "between annotators"}  # fmt: skip

store = open_store()
state = st.session_state
st.title("Explore")
stale = stale_notice()  # a disagreement filter's set may be the one from before the latest change


def apply_deep_link() -> None:
    """A URL the app did not write itself (an opened link, an edited address) picks the view."""
    params = (st.query_params.get("trajectory"), st.query_params.get("step"))
    if params == (None, None) or params == state.get("explore_synced"):
        return
    link = parse_deep_link(st.query_params, store)
    if link.problem:
        state["explore_link_problem"] = link.problem
    if link.trajectory_id is not None:
        state["explore_tid"] = link.trajectory_id
        state["explore_step"] = link.step_idx or 0
        state["explore_linked"] = True  # opened as named, wherever it falls in the list
    state["explore_synced"] = params


def sync_url(tid: int, step: int) -> None:
    wanted = (str(tid), str(step))
    if (st.query_params.get("trajectory"), st.query_params.get("step")) != wanted:
        st.query_params["trajectory"], st.query_params["step"] = wanted
    state["explore_synced"] = wanted


def filter_widgets() -> TrajectoryFilter:
    cols = st.columns([2, 1, 1, 2, 2, 3])
    datasets = dataset_names(store)
    dataset = cols[0].selectbox("Dataset", [ANY, *datasets], key="ex_dataset")
    correct = cols[1].selectbox("Final answer", [ANY, "correct", "wrong"], key="ex_correct")
    labelled = cols[2].selectbox("Human labels", [ANY, "labelled", "unlabelled"], key="ex_labelled")
    disagree = cols[3].selectbox(
        "Where labels disagree", [ANY, *DISAGREEMENTS], key="ex_disagree",
        format_func=lambda k: DISAGREEMENT_TEXT.get(k, k),
        help="a human rating (0 or +1 = fine, −1 = wrong) against MC hard (the sidebar's policy), "
             "a judge's P(yes) ≥ 0.5, or another annotator",
    )  # fmt: skip
    search = cols[4].text_input("Question contains", key="ex_search", max_chars=200)
    dataset = None if dataset == ANY else dataset
    problems = find_problems(store, dataset, search)
    problem_ids = [None, *[p["id"] for p in problems]]
    questions = {p["id"]: " ".join(p["question"].split())[:90] for p in problems}
    problem = cols[5].selectbox(
        "Problem", problem_ids, key="ex_problem",
        format_func=lambda i: "all problems" if i is None else f"#{i} · {questions.get(i, '')}",
    )  # fmt: skip
    return TrajectoryFilter(
        dataset=dataset, problem_id=problem,
        correct={ANY: None, "correct": True, "wrong": False}[correct],
        labelled={ANY: None, "labelled": True, "unlabelled": False}[labelled], search=search,
        disagree=None if disagree == ANY else disagree, policy=policy(),
    )  # fmt: skip


def choose_trajectory(filters: TrajectoryFilter) -> int | None:
    found = find_trajectories(store, filters, on_stale=stale)
    ids = [row["id"] for row in found]
    labels = {row["id"]: trajectory_label(row) for row in found}
    current = state.get("explore_tid")
    keep = keeps_current(current, labels, state.pop("explore_linked", False),
                         "explore_filters" in state and state["explore_filters"] != filters)  # fmt: skip
    state["explore_filters"] = filters
    if not keep or store.get_trajectory(current) is None:
        current = opening_trajectory(store, ids) if current is None else (ids[0] if ids else None)
        state["explore_step"] = 0
    if current is None:
        return None
    if current not in labels:  # opened by a link or N/P: show it even outside this page of results
        ids.insert(0, current)
        labels[current] = trajectory_label({**store.get_trajectory(current), "id": current})
    state["explore_tid"] = current
    state["ex_pick"] = current

    def picked() -> None:
        state["explore_tid"], state["explore_step"] = state["ex_pick"], 0

    total = count_trajectories(store, filters, stale)
    cols = st.columns([6, 1, 1])
    cols[0].selectbox(
        f"Trajectory ({total:,} match; the first {len(found)} listed)", ids, key="ex_pick",
        format_func=lambda i: labels.get(i, f"#{i}"), on_change=picked,
    )  # fmt: skip

    def move(direction: int) -> None:
        target = neighbour(store, filters, state["explore_tid"], direction, stale)
        if target is not None:
            state["explore_tid"], state["explore_step"] = target, 0

    cols[1].button("Previous", key="ex_prev_traj", on_click=move, args=(-1,), shortcut="P",
                   help="previous trajectory (P)", width="stretch")
    cols[2].button("Next", key="ex_next_traj", on_click=move, args=(1,), shortcut="N",
                   help="next trajectory (N)", width="stretch")
    return current


def header(trajectory: dict) -> None:
    st.caption(md(
        f"trajectory #{trajectory['id']} · dataset {trajectory['dataset']} · source "
        f"{trajectory['source']} · model {trajectory.get('model') or '—'} · split by "
        f"{trajectory.get('rule') or '—'}"
    ))
    show_text(trajectory["question"], key=f"q-{trajectory['id']}", limit=1500, math=True)
    st.text(outcome_text(trajectory))
    for judge, p_yes in outcome_verdicts(store, trajectory["id"]).items():
        st.text(f"Outcome verdict, {judge}: P(yes) = {'—' if p_yes is None else f'{p_yes:.2f}'}")


def request_from(form: dict) -> EstimateRequest:
    return EstimateRequest(
        policy=policy(), engine=engine(),
        engine_options=policy_engine_options(), **form,
    )  # fmt: skip


def job_controls(tid: int, n_steps: int) -> None:
    with st.expander(f"Run jobs on this trajectory (policy: {md(policy())}, engine: {engine()})", expanded=True):
        left, right = st.columns([3, 2])
        with left.form("ex_estimate_form", border=False):
            c = st.columns(5)
            strategy = c[0].selectbox("Strategy", STRATEGY_NAMES, index=STRATEGY_NAMES.index(default_strategy_name(n_steps)))
            # The defaults are the job's, as the CLI's are (EstimateRequest reads them there).
            n = c[1].number_input("N (rollouts per step)", 1, MAX_N, EstimateRequest.n)
            tokens = c[2].number_input("Max new tokens", 1, MAX_NEW_TOKENS, EstimateRequest.max_new_tokens)
            temperature = c[3].number_input("Temperature", 0.0, 5.0, EstimateRequest.temperature, step=0.1)
            seed = c[4].number_input("Seed", 0, 2**31 - 1, EstimateRequest.seed)
            button, budget = st.columns([1, 3], vertical_alignment="center")
            estimate = button.form_submit_button("Estimate values")
            budget.caption(estimate_budget_text(store, tid, policy(), EstimateRequest.n))
            st.caption(budget_text(n_steps))
        with right.form("ex_topup_form", border=False):
            extra = st.number_input("Extra rollouts per step", 1, MAX_N, 8)
            top_up = st.form_submit_button("More rollouts")
        with st.form("ex_judge_form", border=False):
            c = st.columns([2, 2, 2, 1, 1])
            c[0].caption(md(f"Judges (sidebar): {', '.join(judges())}"))
            kinds = c[1].multiselect("Verdicts", JUDGE_KINDS, default=["step"])
            trained = trained_verifiers(store)
            chosen = c[2].multiselect("Trained verifiers", list(trained), format_func=lambda f: trained.get(f, f),
                                      placeholder="none trained" if not trained else "probes, ORMs")
            mode = c[3].selectbox("Mode", ["logprob", "generative"])
            judge = c[4].form_submit_button("Judge")
        form = {"strategy": strategy, "n": int(n), "max_new_tokens": int(tokens),
                "temperature": float(temperature), "seed": int(seed)}  # fmt: skip
        if (estimate or top_up or judge) and not act(RUN_JOBS):
            return
        try:
            if estimate:
                st.success(f"job {queue_estimate(store, request_from(form), [tid])} queued")
            if top_up:
                st.success(f"job {queue_top_up(store, request_from(form), tid, int(extra))} queued")
            if judge:
                ids = queue_judging(store, judges(), kinds, chosen, [tid], mode=mode, engine=engine(),
                                    engine_options=policy_engine_options())
                st.success(f"judge jobs {', '.join(map(str, ids))} queued")
        except StepScopeError as error:
            error_box("Cannot start the job", error)


def value_chart(cards, selected: int, minimap: tuple[int, list, list] | None = None) -> None:
    """The value chart; for a long trajectory (`minimap`: its step count, values and labels) the
    whole trajectory's, to jump from."""
    if minimap is None:
        values, verdicts, labels = chart_rows(cards)
        spec = chart_spec(len(cards), selected, values, verdicts, labels, prm_chart_rows(cards))
    else:
        n_steps, values, labels = minimap
        spec = chart_spec(n_steps, selected, values, [], labels)

    def on_pick() -> None:
        step = picked_step(state.get("ex_chart"))
        if step is not None:
            state["explore_step"] = step

    st.vega_lite_chart(spec, key="ex_chart", on_select=on_pick, selection_mode=SELECTION, width="stretch")


def step_navigation(n_steps: int) -> None:
    def go(step: int) -> None:
        state["explore_step"] = max(0, min(n_steps - 1, step))

    step = state["explore_step"]
    cols = st.columns([1, 1, 2, 4])
    cols[0].button("Previous step", key="ex_prev_step", on_click=go, args=(step - 1,), shortcut="K",
                   help="previous step (K)", disabled=step <= 0, width="stretch")
    cols[1].button("Next step", key="ex_next_step", on_click=go, args=(step + 1,), shortcut="J",
                   help="next step (J)", disabled=step >= n_steps - 1, width="stretch")
    state["ex_step_input"] = step
    cols[2].number_input("Step", 0, max(0, n_steps - 1), key="ex_step_input",
                         on_change=lambda: go(int(state["ex_step_input"])))
    cols[3].caption(f"{n_steps} steps · keys: J / K next / previous step, N / P next / previous trajectory")


def step_card(card, selected: bool) -> None:
    with st.container(border=True):
        left, right = st.columns([3, 2])
        with left:
            st.markdown(f"**Step {card.idx}**" + ("  ·  selected" if selected else ""))
            show_text(card.text, key=f"step-{card.step_id}", math=True)
        with right:
            st.text(card.value_text)
            for judge, p_yes in card.judge_verdicts.items():
                st.text(f"{judge}: P(yes) {'—' if p_yes is None else f'{p_yes:.2f}'}")
            for prm, score in card.prm_scores.items():
                st.text(f"{prm}: PRM score {'—' if score is None else f'{score:.2f}'}")
            for label in card.labels:
                st.text(label_text(label))
            if card.alternatives:
                with st.expander(f"{len(card.alternatives)} other candidates rated here"):
                    for other in card.alternatives:
                        st.text(f"{RATING_MARK.get(other.get('rating'), '·')}  {other.get('text', '')}")
            if not selected:
                st.button("Select", key=f"ex_select_{card.step_id}",
                          on_click=lambda i=card.idx: state.__setitem__("explore_step", i))


def long_trajectory(trajectory: dict, n_steps: int, model: str | None) -> tuple[int, object]:
    """A long trajectory (core.views.review_window): the value chart as a minimap, jumps, and a
    window of 20 steps that follows the selected one, quiet runs collapsed. Returns the selected
    step and its card."""
    step = max(0, min(state.get("explore_step", 0), n_steps - 1))
    segmentation = trajectory["current_segmentation_id"]

    def jump(name: str) -> None:
        target = jump_target(store, segmentation, name, state["explore_step"], annotator=None, model=model,
                             rule=trajectory.get("rule"), others_visible=True)  # fmt: skip
        if target is not None:
            state["explore_step"] = target.idx
            move_window(state, WINDOW_SLOT, window_start(target.idx, n_steps))

    start, step, opened = window_position(state, WINDOW_SLOT, (trajectory["id"], segmentation), step, n_steps,
                                          lambda: Located(step, "the step selected", False))  # fmt: skip
    step = state["explore_step"] = opened.idx if opened else step
    value_chart([], step, (n_steps, *minimap_rows(store, trajectory, model)))
    step_navigation(n_steps)
    cols = st.columns(5)
    for col, (name, label) in zip(cols, (("first-error", "First error"), ("lowest-value", "Lowest value"),
                                         ("largest-disagreement", "Largest disagreement"),
                                         ("next-reflection", "Next reflection"))):  # fmt: skip
        col.button(label, key=f"ex_jump_{name}", on_click=jump, args=(name,), width="stretch",
                   help=JUMP_HELP[name])
    stop = min(start + WINDOW_STEPS, n_steps)
    cols[4].caption(f"steps {start}–{stop - 1} of {n_steps:,}; click the chart to jump")
    cards = window_cards(store, trajectory, n_steps, model, start, stop)
    for run in runs(cards, step):
        if run.collapsed:
            with st.expander(run.title):
                st.text("\n\n".join(f"[{c.idx}] {show_bidi(c.text)}" for c in run.cards))
        else:
            step_card(run.cards[0], run.cards[0].idx == step)
    return step, next(c for c in cards if c.idx == step)


JUMP_HELP = {
    "first-error": "a person's first-error label, else the MC first error, else the lowest value",
    "lowest-value": "the step with the lowest MC value",
    "largest-disagreement": "the step whose MC value, verifier scores and human ratings differ most",
    "next-reflection": "the next step that opens with Wait, Alternatively, Let me check, ...",
}


def step_detail(tid: int, card, model: str | None) -> None:
    st.subheader(f"Step {card.idx}: prefix and rollouts")
    prefix = step_prefix(store, tid, card.idx)
    with st.expander(f"The exact prefix the policy continues ({len(prefix):,} characters)", expanded=True):
        if len(prefix) > PREFIX_LIMIT:
            st.caption(f"the last {PREFIX_LIMIT:,} characters")
            prefix = "…" + prefix[-PREFIX_LIMIT:]
        st.code(show_bidi(prefix), language=None, wrap_lines=True, height=220)  # bidi controls shown, not obeyed
    rollouts = rollout_rows(store, card.step_id, model)
    if not rollouts:
        st.caption("No rollouts from this step yet: start a job above.")
        return
    st.dataframe(pd.DataFrame(rollouts), hide_index=True, width="stretch", height=min(400, 40 + 35 * len(rollouts)))
    which = st.number_input("Read rollout (row)", 0, len(rollouts) - 1, 0, key=f"ex_rollout_{card.step_id}")
    show_text(rollouts[int(which)]["text"], key=f"rollout-{card.step_id}", limit=2000, math=True)


def trajectory_view(tid: int, watching: bool) -> None:
    jobs = active_jobs(store, tid)
    job_progress_lines(jobs)
    if watching and not jobs:
        st.rerun()  # the jobs finished: a full run shows it and stops polling
    models = value_models(store, tid)
    model = policy() if policy() in models or not models else models[0]
    if len(models) > 1:
        model = st.selectbox("Values from policy", models, index=models.index(model), key="ex_value_model")
    elif models and model != policy():
        st.caption(md(f"Values from {model} (the sidebar's policy has no rollouts here)."))
    trajectory = store.get_trajectory(tid)
    n_steps = store.segmentation_size(trajectory["current_segmentation_id"])
    if not n_steps:
        st.warning("This trajectory has no steps.")
        return
    if is_long(n_steps):
        step, card = long_trajectory(trajectory, n_steps, model)
    else:
        cards = step_cards(store, tid, model)
        state["explore_step"] = step = max(0, min(state.get("explore_step", 0), len(cards) - 1))
        value_chart(cards, step)
        step_navigation(len(cards))
        page = page_of(step, PAGE_SIZE)
        for card in cards[page * PAGE_SIZE : (page + 1) * PAGE_SIZE]:
            step_card(card, card.idx == step)
        card = cards[step]
    step_detail(tid, card, model)
    tree_panel(store, tid, model, step)
    sync_url(tid, step)


def watch_for_jobs(tid: int) -> None:
    """While idle, look every few seconds for a job (from another session or the CLI)."""
    if active_jobs(store, tid):
        st.rerun()


apply_deep_link()
if problem := state.pop("explore_link_problem", None):
    st.warning(f"Cannot open that link: {md(problem)}")
filters = filter_widgets()
tid = choose_trajectory(filters)
if tid is None:
    st.info("No trajectory matches. Import some on the Jobs and data page, or clear the filters.")
    st.stop()
trajectory = store.get_trajectory(tid)
header(trajectory)
if allowed(EDIT_PROJECT):
    splitter_controls(store, trajectory)
search_params = search_page_params(trajectory)
if st.button("Open its search" if "search" in search_params else "Search this problem step by step",
             key="ex_search_problem", help="step-level search with a verifier in the loop, on the Search page"):
    st.switch_page("pages/search.py", query_params=search_params)
if allowed(RUN_JOBS):
    job_controls(tid, store.segmentation_size(trajectory["current_segmentation_id"]))
watching = bool(active_jobs(store, tid))
st.fragment(live(trajectory_view), run_every=1.0 if watching else None)(tid, watching)
if not watching:
    st.fragment(live(watch_for_jobs), run_every=3.0)(tid)
