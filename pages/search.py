"""Search: step-level search with a verifier in the loop (issue 25) on one problem, watched live.

Opened from Explore with the problem in the URL (?problem=ID). The form queues a `search` job
(core.views.search); while a job on the problem runs, the searches view is a fragment that
re-reads the store every 1.5 s, each depth's candidates with their guiding score, rank and mark.
A finished search's candidates are nodes of the rollout tree: a chosen one shows what other
verifiers and Monte Carlo rollouts say about its node (pages/_search_node.py).
"""

import pages._preload  # noqa: F401 - first, before any other module of ours: see its docstring
import pandas as pd
import streamlit as st

from core.errors import StepScopeError
from core.jobs.spec import MAX_K
from core.views.access import RUN_JOBS
from core.views.explore import find_problems
from core.views.search import (
    HELP, STRATEGY_NAMES, SearchRequest, linked_search, parse_problem, problem_jobs, problem_searches, queue_search,
    scorer_choices, search_label,
)  # fmt: skip
from core.views.search_tree import (
    CANDIDATE_SELECTION, MAX_TABLE_ROWS, compute_text, depth_rows, outcome_text, picked_candidate, search_tree_chart,
    search_view,
)  # fmt: skip
from pages._access import act, allowed, live, open_store
from pages._search_node import candidate_panel, picked_key
from pages._shared import engine, error_box, job_progress_lines, md, policy, policy_engine_options, show_text

store = open_store()
state = st.session_state
st.title("Search")

# Pruned candidates greyed, the path to the answer highlighted, undecided ones in italics.
MARK_STYLES = (("pruned", "color: #9aa0a6"), ("answer path", "background-color: rgba(33, 195, 84, 0.18)"),
               ("pending", "font-style: italic"))  # fmt: skip


def chosen_problem() -> int | None:
    linked = st.query_params.get("problem")
    if linked is not None and linked != state.get("search_link_seen"):
        state["search_link_seen"] = linked
        try:
            state["search_problem"] = parse_problem(linked, store)
        except StepScopeError as error:
            st.warning(f"Cannot open that link: {md(error)}")
    problems = {p["id"]: " ".join(p["question"].split())[:90] for p in find_problems(store, None)}
    current = state.get("search_problem")
    if current is not None and current not in problems and (problem := store.get_problem(current)):
        problems = {current: " ".join(problem["question"].split())[:90], **problems}
    if not problems:
        return None
    picked = st.selectbox("Problem", list(problems), key="search_problem",
                          format_func=lambda i: f"#{i} · {problems[i]}")  # fmt: skip
    if st.query_params.get("problem") != str(picked):
        st.query_params["problem"] = str(picked)
    state["search_link_seen"] = str(picked)
    return picked


def search_form(problem_id: int) -> None:
    with st.expander(f"Start a search (policy: {md(policy())}, engine: {engine()})", expanded=True):
        with st.form("search_form", border=False):
            scorers = scorer_choices(store)
            c = st.columns(4)
            strategy = c[0].selectbox("Strategy", STRATEGY_NAMES, index=STRATEGY_NAMES.index(SearchRequest.strategy),
                                      help=HELP["strategy"])  # fmt: skip
            scorer = c[1].selectbox("Scorer", list(scorers), format_func=scorers.get, help="the verifier in the loop")
            n = c[2].number_input("N (beams)", 1, MAX_K, SearchRequest.n, help=HELP["n"])
            width = c[3].number_input("Width M", 1, MAX_K, SearchRequest.beam_width, help=HELP["beam_width"])
            c = st.columns(4)
            budget = c[0].number_input("Token budget (0: none)", 0, 10_000_000, SearchRequest.token_budget,
                                       help=HELP["token_budget"])  # fmt: skip
            steps = c[1].number_input("Max steps", 1, 256, SearchRequest.max_steps, help=HELP["max_steps"])
            tokens = c[2].number_input("Max tokens per step", 1, 4096, SearchRequest.max_step_tokens,
                                       help=HELP["max_step_tokens"])  # fmt: skip
            seed = c[3].number_input("Seed", 0, 2**31 - 1, SearchRequest.seed, help=HELP["seed"])
            submitted = st.form_submit_button("Start the search")
    if not submitted or not act(RUN_JOBS):
        return
    try:
        request = SearchRequest(policy=policy(), engine=engine(), engine_options=policy_engine_options(),
                                strategy=strategy, scorer=scorer, n=int(n), beam_width=int(width),
                                token_budget=int(budget) or None, max_steps=int(steps), max_step_tokens=int(tokens),
                                seed=int(seed))  # fmt: skip
        job_id = queue_search(store, request, problem_id)
    except StepScopeError as error:
        error_box("Cannot start the search", error)
        return
    state["search_follow_job"] = job_id  # show its search as soon as it starts
    queued(f"search job {job_id} queued", [job_id])


def inert(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """st.table renders each cell as markdown: model text in `column` is made inert (md)."""
    return frame.assign(**{column: frame[column].map(lambda text: None if text is None else md(text))})


def styled(rows: list[dict]):
    def style(row) -> list[str]:
        css = next((css for mark, css in MARK_STYLES if mark in row["mark"]), "")
        return [css] * len(row)

    frame = inert(pd.DataFrame(rows), "step")
    return frame.style.apply(style, axis=1).format({"score": "{:.3f}", "rank": "{:.0f}"}, na_rep="—")


def show_search(search_id: int, slot: str):
    view = search_view(store, search_id)
    search, counts = view.search, view.counts()
    st.caption(md(f"{search['strategy']} · scorer {search['scorer']} ({search['scorer_kind']}) · policy "
                  f"{search['policy']} · {counts['chosen']} chosen, {counts['pruned']} pruned, "
                  f"{counts['pending']} pending" + (f" · stopped: {search['stopped']}" if search["stopped"] else "")))
    if view.live:
        state_text = outcome_text(search) if search["interrupted"] else "running"
        st.caption(f"{state_text}: {view.calls} engine and scorer calls so far (the tree grows as they are stored)")
    else:
        st.text(f"Final answer: {outcome_text(search)}")  # the answer is model text: shown as text
        if spent := compute_text(search):
            st.caption(spent)
    if view.candidates:
        tree_chart(view, slot)
    for depth, candidates in view.depths.items():
        st.markdown(f"**Depth {depth}** · {len(candidates)} candidates"
                    + (f" (the {MAX_TABLE_ROWS} best ranked listed)" if len(candidates) > MAX_TABLE_ROWS else ""))
        st.table(styled(depth_rows(candidates)))
    if view.beams:
        beams = pd.DataFrame(view.beams).rename(columns={"final_answer": "answer", "trajectory_id": "trajectory"})
        beams = inert(beams, "answer")
        st.markdown("**Final beams**")
        st.table(beams.style.format({"score": "{:.3f}"}, na_rep="—"))
    return view


def tree_chart(view, slot: str) -> None:
    """The search as a tree; a click on a candidate picks it for the node panel (left slot)."""
    key, picked = f"search_chart_{slot}", picked_key(view)

    def on_pick() -> None:
        candidate = picked_candidate(state.get(key))
        if candidate is not None:
            state[picked] = candidate

    selected = state.get(picked) if slot == "left" and not view.live else None
    st.vega_lite_chart(search_tree_chart(view, selected), key=key, width="stretch", selection_mode=CANDIDATE_SELECTION,
                       on_select=on_pick if slot == "left" and not view.live else "ignore")  # fmt: skip


def choose_search(ids: list[int], labels: dict[int, str], key: str, label: str, beside: int | None = None) -> int:
    if state.get(key) not in ids:
        state[key] = next((i for i in ids if i != beside), ids[0])
    return st.selectbox(label, ids, key=key, format_func=labels.get)


def queued(notice: str, job_ids: list[int]) -> None:
    """Watch the jobs this session queued until a full run has seen them end: a quick job can
    start and finish between two looks for active jobs."""
    state["search_notice"] = notice
    state["search_queued"] = state.get("search_queued", set()) | set(job_ids)
    st.success(notice)


def searches_view(problem_id: int, watching: bool) -> None:
    jobs = problem_jobs(store, problem_id)
    job_progress_lines(jobs)
    if watching and not jobs:
        state.pop("search_queued", None)
        st.rerun()  # the jobs finished: a full run shows it and stops polling
    if notice := state.get("search_notice"):
        st.caption(f"Last action: {notice}")
    wrong_only = st.checkbox("Only searches that ended wrong", key="search_wrong_only")
    searches = problem_searches(store, problem_id, wrong_only=wrong_only)
    if not searches:
        st.info("No search ended wrong on this problem." if wrong_only else "No search of this problem yet.")
        return
    labels = {s["id"]: search_label(s) for s in searches}
    linked = st.query_params.get("search")
    if linked is not None and linked != state.get("search_link_search"):  # a link opens its search, once
        state["search_link_search"] = linked
        if (named := linked_search(linked, list(labels))) is not None:
            state["search_pick"] = named
    follow = state.get("search_follow_job")
    if started := next((s["id"] for s in searches if s["job_id"] == follow), None):
        state["search_pick"] = started
        del state["search_follow_job"]
    ids = list(labels)
    if len(ids) > 1 and st.checkbox("Two searches side by side", key="search_side_by_side"):
        left, right = st.columns(2)
        with left:
            view = show_search(choose_search(ids, labels, "search_pick", "Search"), "left")
        with right:
            show_search(choose_search(ids, labels, "search_pick_other", "Beside it", beside=view.search["id"]), "right")
    else:
        view = show_search(choose_search(ids, labels, "search_pick", "Search"), "left")
    candidate_panel(store, view, queued)


def watch_for_jobs(problem_id: int) -> None:
    """While idle, look every few seconds for a job (from another session or the CLI)."""
    if problem_jobs(store, problem_id) or state.get("search_queued"):
        st.rerun()


problem_id = chosen_problem()
if problem_id is None:
    st.info("No problem to search yet: import some on the Jobs and data page.")
    st.stop()
problem = store.get_problem(problem_id)
show_text(problem["question"], key=f"search-q-{problem_id}", limit=1500, math=True)
st.text(f"Gold answer: {problem['gold'] or '—'}")
if allowed(RUN_JOBS):
    search_form(problem_id)
watching = bool(problem_jobs(store, problem_id) or state.get("search_queued"))
st.fragment(live(searches_view), run_every=1.5 if watching else None)(problem_id, watching)
if not watching:
    st.fragment(live(watch_for_jobs), run_every=3.0)(problem_id)
