"""Annotate: an annotation session under the sidebar's annotator name.

Every click is saved the moment it is made (committed before the page says "saved"). Keys act
on the highlighted step, or on the trajectory (Submit, Next, Previous): core.views.annotate.KEYS.

Speed: each step row is a fragment (a click reruns that row only), and the keyboard bar with
the rows is another (a key reruns the rows, not the page). A row's buttons and status lines are
one element, and so is the keyboard bar (pages/_step_controls.py): each Streamlit widget in a
rerun adds to the save's redraw in the browser. For the same reason the optional fields
(confidence, rationale, category, note) open on the highlighted step only and the other rows
show what they hold in one line. Keys are taken by a small client script
(pages/_annotate_hints.py) that queues them until the keyboard bar is drawn, so a key pressed
as the page appears is not lost.

Long trajectories (core.views.review_window): past 60 steps the page shows a review window of 20
steps opened around the located first error, not every step; keys move it (Shift+K/J by 20, and
it follows K/J) and jump (G the located first error, L the lowest value, D the largest
disagreement, R the next reflection).
Only the window's steps are read.
"""

import pages._preload  # noqa: F401 - first, before any other module of ours: see its docstring
import streamlit as st

from core.views.annotate import (
    GREYED_FIELDS, KEYBOARD_ACTIONS, QUEUE_MODES, RATIONALE_LIMIT, DwellClock, QueueSpec, build_queue,
    error_taxonomy, key_for, keyboard_caption, latents_summary, queue_progress, row_action, save_label,
    saved_message,
)  # fmt: skip
from core.errors import StepScopeError
from core.views.explore import dataset_names, label_text, page_of, step_cards, value_models
from core.views.review_window import (
    WINDOW_STEPS, cursor_for, is_long, jump_target, move_window, opened_by, window_cards, window_caption,
    window_position, window_start,
)  # fmt: skip
from core.views.math_text import show_bidi
from core.views.access import BLIND_SETTING, LABEL, SEE_OTHERS_LABELS, blind_enforced
from pages._access import allowed, annotator, identity, live, open_store, refusal, require_action
from pages._shared import error_box, md, policy, show_text
from pages._annotate_hints import client_hints
from pages._step_controls import keyboard_controls, step_controls

PAGE_SIZE = 20
WINDOW_SLOT = "ann_review_window"  # the long-trajectory window's place in session state
CONFIDENCE_LEVELS = (1, 2, 3, 4, 5)

store = open_store()
require_action(LABEL)
state = st.session_state
st.title("Annotate")
# An invited annotator: blind mode as the organiser set it, and nobody else's labels.
blind_locked = blind_enforced(identity(), store.setting(BLIND_SETTING, False))
see_others = allowed(SEE_OTHERS_LABELS)

clock: DwellClock = state.setdefault("ann_clock", DwellClock())
client_hints(clock)  # before anything else, so keys are taken from the first render on

name = annotator()
if name is None:
    st.info("Enter your annotator name in the sidebar to start a session.")
    st.stop()


def queue_settings() -> QueueSpec:
    with st.expander("Queue", expanded="ann_queue" not in state):
        cols = st.columns([2, 2, 1, 1, 1])
        mode = cols[0].selectbox("Order", QUEUE_MODES, key="ann_mode")
        dataset = cols[1].selectbox("Dataset", ["any", *dataset_names(store)], key="ann_dataset")
        size = cols[2].number_input("Size", 1, 5000, 100, key="ann_size")
        seed = cols[3].number_input("Seed", 0, 2**31 - 1, 0, key="ann_seed", disabled=mode != "random sample")
        overlap = cols[4].number_input("Overlap %", 0, 100, 100, key="ann_overlap", disabled=mode != "random sample",
                                       help="share of a random sample every annotator with this seed gets")
        assigned = ""
        if mode == "assigned list":
            assigned = st.text_input("Trajectory ids", placeholder="3, 7, 10-14", key="ann_assigned", max_chars=2000)
        st.toggle("Stop at the first error", key="ann_stop_mode",
                  help="PRM800K's mode: once a step is rated −1, the later steps are greyed out")
    return QueueSpec(mode, None if dataset == "any" else dataset, int(size), int(seed), int(overlap), assigned)


def current_queue(spec: QueueSpec) -> list[int]:
    """Built once per setting, so labelling does not reorder the queue mid-session."""
    if state.get("ann_queue_key") != (name, spec):
        try:
            state["ann_queue"] = build_queue(store, name, spec)
        except StepScopeError as error:
            error_box("Cannot build the queue", error)
            st.stop()
        state["ann_queue_key"], state["ann_pos"], state["ann_step"] = (name, spec), 0, 0
    return state["ann_queue"]


def save(tid: int, step_id: int, idx: int, field: str, value, advance_to: int | None = None) -> None:
    if problem := refusal(LABEL):  # a click reruns a fragment only: app.py's check is not run
        state[f"ann_error_{step_id}"] = problem
        return
    extra = {}
    if field == "rating" and value is not None:
        extra["dwell_ms"], extra["trajectory_dwell_ms"] = clock.rated(tid, step_id)
        if value == -1 and state.get("ann_stop_mode"):
            extra["first_error"] = True  # PRM800K: the first −1 is where the solution goes wrong
            state["ann_rerun_page"] = True  # later rows grey out: the whole list redraws
    try:
        row = save_label(store, name, step_id, **{field: value}, **extra)
        state[f"ann_saved_{step_id}"] = saved_message(idx, row, field)
        state.pop(f"ann_error_{step_id}", None)
        if advance_to is not None:
            state["ann_step"] = advance_to
    except StepScopeError as error:
        state[f"ann_error_{step_id}"] = str(error)


def save_trajectory_mark(tid: int) -> None:
    if problem := refusal(LABEL):
        state["ann_traj_error"] = problem
        return
    try:
        store.save_trajectory_label(name, tid, flawed_process=bool(state[f"ann_flawed_{tid}"]))
    except StepScopeError as error:
        state["ann_traj_error"] = str(error)


def move_trajectory(queue: list[int], delta: int) -> None:
    state["ann_pos"] = max(0, min(len(queue) - 1, state.get("ann_pos", 0) + delta))
    state["ann_step"] = 0


def navigation(queue: list[int], tid: int) -> None:
    pos = state["ann_pos"]
    progress = queue_progress(store, name, queue)
    st.progress(progress.complete / progress.total if progress.total else 0.0)
    cols = st.columns([3, 1, 1, 1, 2])
    cols[0].text(f"Trajectory {pos + 1} of {len(queue)} (#{tid}) · {progress.text}")
    previous, following, submit = key_for("ann_prev"), key_for("ann_next"), key_for("ann_submit")
    cols[1].button(previous.label, key=previous.button, on_click=move_trajectory, args=(queue, -1),
                   shortcut=previous.name, disabled=pos <= 0, width="stretch", help=previous.tooltip)
    cols[2].button(following.label, key=following.button, on_click=move_trajectory, args=(queue, 1),
                   shortcut=following.name, disabled=pos >= len(queue) - 1, width="stretch", help=following.tooltip)
    submitted = state.setdefault("ann_submitted", set())
    cols[3].button(submit.label, key=submit.button, on_click=submitted.add, args=((name, tid),),
                   shortcut=submit.name, width="stretch", help=submit.tooltip)
    state["ann_blind_box"] = state.get("ann_blind", True) or blind_locked
    cols[4].toggle("Blind mode", key="ann_blind_box", help="hide automatic labels until submitted",
                   disabled=blind_locked,
                   on_change=lambda: state.__setitem__("ann_blind", state["ann_blind_box"]))


def trajectory_mark(tid: int) -> None:
    mark = store.trajectory_label(name, tid)
    key = f"ann_flawed_{tid}"
    state[key] = bool(mark and mark["flawed_process"])
    st.checkbox("Right answer, flawed process", key=key, on_change=save_trajectory_mark, args=(tid,),
                help="the final answer is right but the reasoning that reaches it is not")
    if problem := state.pop("ann_traj_error", None):
        st.error(f"Not saved: {md(problem)}")


def highlight(idx: int) -> None:
    state["ann_step"] = idx
    state["ann_rerun_page"] = True  # the keyboard bar and the open fields move with it: redraw all rows


@st.fragment
@live
def step_row(tid: int, card, n_steps: int, reveal: bool, greyed: bool) -> None:
    """One step: its own fragment, so a click here reruns only this row."""
    if state.pop("ann_rerun_page", False):
        st.rerun()  # a −1 in stop-at-first-error mode greys out the later rows; Highlight moves the keys
    clock.seen(tid, card.step_id)
    mine = store.annotation(name, card.step_id)
    cursor = state.get("ann_step") == card.idx
    with st.container(border=True):
        text_col, controls_col = st.columns([3, 2])
        with text_col:
            st.markdown(f"**Step {card.idx}**" + ("  ◀ keyboard" if cursor else "") + ("  · after the first error" if greyed else ""))
            show_text(card.text, key=f"ann-{card.step_id}", math=True)
            if reveal:
                st.caption(md(card.value_text + "".join(
                    f" · {judge} P(yes) {p:.2f}" for judge, p in card.verdicts.items() if p is not None)))
                others = [label_text(label) for label in card.labels if label["annotator"] != name and see_others]
                if others:
                    st.caption(md(" · ".join(others)))
        with controls_col:
            # One element for the buttons and status lines (pages/_step_controls.py): each widget
            # in the row adds to every save's redraw in the browser. Its text is set as text.
            step_controls(card.step_id, {
                "rating": mine["rating"] if mine else None, "first_error": bool(mine and mine["first_error"]),
                "flagged": bool(mine and mine["flagged"]), "greyed": greyed, "cursor": cursor,
                "summary": "" if cursor else show_bidi(latents_summary(mine)),
                "status": state.get(f"ann_saved_{card.step_id}") or ("saved" if mine else ""),
                "error": show_bidi(state.get(f"ann_error_{card.step_id}") or ""),
            }, on_action=lambda action: row_clicked(tid, card, greyed, action))  # fmt: skip
            if cursor:  # the optional fields open on the highlighted step only: fewer widgets per save
                latents(tid, card, mine, greyed)


def row_clicked(tid: int, card, greyed: bool, action: object) -> None:
    match row_action(action):
        case ("highlight", _):
            highlight(card.idx)
        case (field, _) if greyed and field in GREYED_FIELDS:
            pass  # after the first error: the row's button was drawn disabled
        case (field, value):
            save(tid, card.step_id, card.idx, field, value)
        case None:
            state[f"ann_error_{card.step_id}"] = "the page sent an action this row does not have"


def latents(tid: int, card, mine: dict | None, greyed: bool) -> None:
    """Confidence, rationale, error category (for a −1) and note: optional, saved on change."""
    mine = mine or {}
    conf_key, why_key, cat_key, note_key = (f"ann_{k}_{card.step_id}" for k in ("conf", "why", "cat", "note"))
    state[conf_key] = mine.get("confidence")
    st.segmented_control("Confidence", CONFIDENCE_LEVELS, key=conf_key, disabled=greyed,
                         on_change=lambda: save(tid, card.step_id, card.idx, "confidence", state[conf_key]),
                         help="how sure you are, 1 (guess) to 5 (certain); the keyboard bar's c1…c5 set it too")
    if mine.get("rating") == -1:
        taxonomy = error_taxonomy(store)
        state[cat_key] = mine.get("category") if mine.get("category") in taxonomy else None
        st.selectbox("Error category", taxonomy, key=cat_key, index=None, placeholder="error category",
                     on_change=lambda: save(tid, card.step_id, card.idx, "category", state[cat_key]))
    state[why_key] = mine.get("rationale") or ""
    st.text_input("Rationale", key=why_key, max_chars=RATIONALE_LIMIT, label_visibility="collapsed",
                  placeholder="why (optional)", disabled=greyed,
                  on_change=lambda: save(tid, card.step_id, card.idx, "rationale", state[why_key] or None))
    state[note_key] = mine.get("note") or ""
    st.text_input("Note", key=note_key, max_chars=5000, label_visibility="collapsed", placeholder="note",
                  on_change=lambda: save(tid, card.step_id, card.idx, "note", state[note_key] or None))


def keyboard_bar(tid: int, card, mine: dict, n_steps: int, stop_at: int | None, review: "Review") -> None:
    """The keys, bound once here (not per row): they act on the highlighted step."""
    step = card.idx
    greyed = stop_at is not None and step > stop_at
    nowhere = review.nowhere(step)
    disabled = [key for key, (field, value) in KEYBOARD_ACTIONS.items()
                if (greyed and field in GREYED_FIELDS) or (field == "move" and clamp(step + value, n_steps) == step)
                or (field == "jump" and value in nowhere)]  # fmt: skip
    keyboard_controls(disabled, keyboard_caption(step), on_key=lambda key: key_pressed(
        tid, card, mine, n_steps, greyed, review, key))


def clamp(step: int, n_steps: int) -> int:
    return max(0, min(n_steps - 1, step))


def key_pressed(tid: int, card, mine: dict, n_steps: int, greyed: bool, review: "Review", key: object) -> None:
    match KEYBOARD_ACTIONS.get(key) if isinstance(key, str) else None:
        case ("move", delta):
            state["ann_step"] = clamp(card.idx + delta, n_steps)
        case ("jump", jump):
            review.jump(jump, card)
        case (field, _) if greyed and field in GREYED_FIELDS:
            pass  # after the first error: the bar's button was drawn disabled
        case ("rating", value):
            save(tid, card.step_id, card.idx, "rating", value, advance_to=min(card.idx + 1, n_steps - 1))
        case (field, None):
            save(tid, card.step_id, card.idx, field, not mine.get(field))
        case (field, value):
            save(tid, card.step_id, card.idx, field, value)
        case None:
            state[f"ann_error_{card.step_id}"] = "the page sent a key the keyboard bar does not have"


class Review:
    """The jumps of one trajectory's panel run (core.views.review_window): where each goes, and
    moving the highlight (and a long trajectory's window) there."""

    def __init__(self, trajectory: dict, n_steps: int, reveal: bool) -> None:
        self.trajectory, self.n_steps, self.hidden = trajectory, n_steps, not reveal
        self.segmentation = trajectory["current_segmentation_id"]
        self.others_visible = see_others and reveal
        # Values from the sidebar's policy, else from the policy that has some here (as on Explore).
        models = value_models(store, trajectory["id"]) if is_long(n_steps) else []
        self.model = policy() if policy() in models or not models else models[0]

    def target(self, jump: str, step: int):
        return jump_target(store, self.segmentation, jump, step, annotator=name, model=self.model,
                           rule=self.trajectory.get("rule"), others_visible=self.others_visible)  # fmt: skip

    def locate(self):
        return self.target("first-error", 0)

    def nowhere(self, step: int) -> set[str]:
        """The jumps with no target from `step` (their keys are drawn disabled)."""
        return {jump for jump in ("lowest-value", "largest-disagreement", "next-reflection")
                if self.target(jump, step) is None}

    def jump(self, jump: str, card) -> None:
        target = self.target(jump, card.idx)
        if target is None:
            state[f"ann_error_{card.step_id}"] = f"no {jump.replace('-', ' ')} to go to from step {card.idx}"
            return
        start = window_start(target.idx, self.n_steps)
        if is_long(self.n_steps):
            move_window(state, WINDOW_SLOT, start)
        state["ann_step"] = cursor_for(target, start, self.hidden)


def visible_cards(tid: int, trajectory: dict, n_steps: int, review: Review) -> list:
    """The cards drawn: a long trajectory's review window, else the page of PAGE_SIZE steps that
    holds the highlighted one. Sets the highlighted step (state["ann_step"])."""
    step = clamp(state.get("ann_step", 0), n_steps)
    if not is_long(n_steps):
        state["ann_step"] = step
        page = page_of(step, PAGE_SIZE)
        return step_cards(store, tid, policy())[page * PAGE_SIZE : (page + 1) * PAGE_SIZE]
    key = (tid, review.segmentation)
    start, step, opened = window_position(state, WINDOW_SLOT, key, step, n_steps, review.locate)
    if opened is not None:  # a trajectory just opened: highlight its located first error
        step = cursor_for(opened, start, review.hidden)
    state["ann_step"] = step
    stop = min(start + WINDOW_STEPS, n_steps)
    st.caption(md(window_caption(start, stop, n_steps, opened_by(state, WINDOW_SLOT), review.hidden)))
    return window_cards(store, trajectory, n_steps, review.model, start, stop)


@st.fragment
@live
def steps_panel(tid: int, trajectory: dict, reveal: bool) -> None:
    state.pop("ann_rerun_page", None)  # this run redraws every row anyway
    n_steps = store.segmentation_size(trajectory["current_segmentation_id"])
    if not n_steps:
        st.warning("This trajectory has no steps.")
        return
    review = Review(trajectory, n_steps, reveal)
    cards = visible_cards(tid, trajectory, n_steps, review)
    [card] = [c for c in cards if c.idx == state["ann_step"]]
    stop_at = (store.first_rated_wrong(trajectory["current_segmentation_id"], name)
               if state.get("ann_stop_mode") else None)  # fmt: skip
    keyboard_bar(tid, card, store.annotation(name, card.step_id) or {}, n_steps, stop_at, review)
    for shown in cards:
        step_row(tid, shown, n_steps, reveal, stop_at is not None and shown.idx > stop_at)


spec = queue_settings()
queue = current_queue(spec)
if not queue:
    st.info("The queue is empty: no trajectories match these settings.")
    st.stop()
state["ann_pos"] = min(state.get("ann_pos", 0), len(queue) - 1)
tid = queue[state["ann_pos"]]
trajectory = store.get_trajectory(tid)
if trajectory is None:
    st.warning(f"Trajectory {tid} is no longer in the database; skip it with Next.")
    st.stop()
navigation(queue, tid)
show_text(trajectory["question"], key=f"ann-q-{tid}", limit=1500, math=True)
st.text(f"Gold answer: {trajectory.get('gold') or '—'}")
trajectory_mark(tid)
blind = state.get("ann_blind", True) or blind_locked
reveal = not blind or (name, tid) in state.get("ann_submitted", set())
if blind and not reveal:
    st.caption("Blind mode: automatic labels and other annotators' labels are hidden until you submit.")
steps_panel(tid, trajectory, reveal)
