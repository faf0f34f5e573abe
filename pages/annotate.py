"""Annotate: an annotation session under the sidebar's annotator name.

Every click is saved the moment it is made (committed before the page says "saved"). Keys act
on the highlighted step: 1 / 2 / 3 rate it −1 / 0 / +1 (and move on), E marks the first error,
F flags it, J / K move down / up, S submits the trajectory (shows the automatic labels in blind
mode), N / P go to the next / previous trajectory in the queue.
"""

import streamlit as st

from core.views.annotate import (
    QUEUE_MODES, QueueSpec, build_queue, my_labels, queue_progress, save_label, saved_message,
)  # fmt: skip
from core.errors import StepScopeError
from core.views.explore import dataset_names, label_text, page_of, step_cards
from pages._shared import annotator, error_box, md, open_store, policy, show_text

PAGE_SIZE = 20
RATINGS = ((-1, "−1", "1"), (0, "0", "2"), (1, "+1", "3"))

store = open_store()
state = st.session_state
st.title("Annotate")

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


def save(step_id: int, idx: int, field: str, value, advance_to: int | None = None) -> None:
    try:
        row = save_label(store, name, step_id, **{field: value})
        state["ann_saved"] = saved_message(idx, row, field)
        state.pop("ann_error", None)
        if advance_to is not None:
            state["ann_step"] = advance_to
    except StepScopeError as error:
        state["ann_error"] = str(error)


def move_trajectory(queue: list[int], delta: int) -> None:
    state["ann_pos"] = max(0, min(len(queue) - 1, state.get("ann_pos", 0) + delta))
    state["ann_step"] = 0


def navigation(queue: list[int], tid: int) -> None:
    pos = state["ann_pos"]
    progress = queue_progress(store, name, queue)
    st.progress(progress.complete / progress.total if progress.total else 0.0)
    cols = st.columns([3, 1, 1, 1, 2])
    cols[0].text(f"Trajectory {pos + 1} of {len(queue)} (#{tid}) · {progress.text}")
    cols[1].button("Previous", key="ann_prev", on_click=move_trajectory, args=(queue, -1), shortcut="P",
                   disabled=pos <= 0, width="stretch", help="previous trajectory (P)")
    cols[2].button("Next", key="ann_next", on_click=move_trajectory, args=(queue, 1), shortcut="N",
                   disabled=pos >= len(queue) - 1, width="stretch", help="next trajectory (N)")
    submitted = state.setdefault("ann_submitted", set())
    cols[3].button("Submit", key="ann_submit", on_click=submitted.add, args=((name, tid),), shortcut="S",
                   width="stretch", help="done with this trajectory: shows the automatic labels (S)")
    state["ann_blind_box"] = state.get("ann_blind", True)
    cols[4].toggle("Blind mode", key="ann_blind_box", help="hide automatic labels until submitted",
                   on_change=lambda: state.__setitem__("ann_blind", state["ann_blind_box"]))


def step_row(card, mine: dict | None, cursor: bool, n_steps: int, reveal: bool) -> None:
    keyed = cursor  # only the highlighted step's buttons take the keyboard shortcuts
    rating = mine["rating"] if mine else None
    with st.container(border=True):
        text_col, buttons_col = st.columns([3, 2])
        with text_col:
            st.markdown(f"**Step {card.idx}**" + ("  ◀ keyboard" if cursor else ""))
            show_text(card.text, key=f"ann-{card.step_id}")
            if reveal:
                st.caption(md(card.value_text + "".join(
                    f" · {judge} P(yes) {p:.2f}" for judge, p in card.verdicts.items() if p is not None)))
                others = [label_text(label) for label in card.labels if label["annotator"] != name]
                if others:
                    st.caption(md(" · ".join(others)))
        with buttons_col:
            cols = st.columns(5)
            for col, (value, label, key) in zip(cols, RATINGS):
                col.button(label, key=f"ann_r{value}_{card.step_id}", type="primary" if rating == value else "secondary",
                           on_click=save, args=(card.step_id, card.idx, "rating", value, min(card.idx + 1, n_steps - 1)),
                           shortcut=key if keyed else None, width="stretch")
            first_error = bool(mine and mine["first_error"])
            cols[3].button("1st err", key=f"ann_fe_{card.step_id}", type="primary" if first_error else "secondary",
                           on_click=save, args=(card.step_id, card.idx, "first_error", not first_error),
                           shortcut="E" if keyed else None, help="first error here (E)", width="stretch")
            flagged = bool(mine and mine["flagged"])
            cols[4].button("Flag", key=f"ann_fl_{card.step_id}", type="primary" if flagged else "secondary",
                           on_click=save, args=(card.step_id, card.idx, "flagged", not flagged),
                           shortcut="F" if keyed else None, help="flag this step (F)", width="stretch")
            note_key = f"ann_note_{card.step_id}"
            state[note_key] = (mine or {}).get("note") or ""
            st.text_input("Note", key=note_key, max_chars=5000, label_visibility="collapsed", placeholder="note",
                          on_change=lambda: save(card.step_id, card.idx, "note", state[note_key] or None))
            if mine:
                st.caption("saved")
            if not cursor:
                st.button("Highlight", key=f"ann_cur_{card.step_id}",
                          on_click=lambda: state.__setitem__("ann_step", card.idx))


def cursor_keys(n_steps: int) -> None:
    step = state["ann_step"]
    cols = st.columns([1, 1, 6])
    cols[0].button("Up", key="ann_up", shortcut="K", help="previous step (K)", disabled=step <= 0, width="stretch",
                   on_click=lambda: state.__setitem__("ann_step", step - 1))
    cols[1].button("Down", key="ann_down", shortcut="J", help="next step (J)", disabled=step >= n_steps - 1,
                   width="stretch", on_click=lambda: state.__setitem__("ann_step", step + 1))
    cols[2].caption("Keys on the highlighted step: 1 / 2 / 3 rate −1 / 0 / +1, E first error, F flag, "
                    "J / K down / up; S submit, N / P next / previous trajectory.")


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
if message := state.get("ann_saved"):
    st.success(message)
if problem := state.pop("ann_error", None):
    st.error(f"Not saved: {md(problem)}")
show_text(trajectory["question"], key=f"ann-q-{tid}", limit=1500)
st.text(f"Gold answer: {trajectory.get('gold') or '—'}")
blind = state.get("ann_blind", True)
reveal = not blind or (name, tid) in state.get("ann_submitted", set())
if blind and not reveal:
    st.caption("Blind mode: automatic labels and other annotators' labels are hidden until you submit.")
cards = step_cards(store, tid, policy())
if not cards:
    st.warning("This trajectory has no steps.")
    st.stop()
state["ann_step"] = step = max(0, min(state.get("ann_step", 0), len(cards) - 1))
cursor_keys(len(cards))
labels = my_labels(store, name, tid)
page = page_of(step, PAGE_SIZE)
for card in cards[page * PAGE_SIZE : (page + 1) * PAGE_SIZE]:
    step_row(card, labels.get(card.step_id), card.idx == step, len(cards), reveal)
