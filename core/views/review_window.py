"""The review window: the twenty steps of a long trajectory that a person reviews, not all of them.

A reasoning trace has hundreds to thousands of steps, and the step that matters is usually the
first error. Past REVIEW_FROM_STEPS steps, a page shows a window of WINDOW_STEPS steps, opened
around the located first error: the annotator's own first-error label, else another person's
(where the viewer may see them), else the Monte Carlo first error (the first sampled step none
of whose rollouts reached the answer), else the step with the lowest value, else the start. The
window moves by keys and buttons and follows the highlighted step, and jumps go to the located
first error, the lowest value, the largest disagreement (the step whose MC value, verifier
scores and human ratings differ most), or the next reflection step (a step that opens with a
marker the text turns on itself with: "Wait", "Alternatively", ...).

Only the window's steps are read and built into cards; the landmarks are single-index
aggregates (core.store.review), so a 2,000-step trajectory costs what a 20-step one does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import MutableMapping

from core.errors import StepScopeError
from core.mcpe import Counts, step_value
from core.steps import DEFAULT_REFLECTION_MARKERS, parse_rule
from core.store import Store
from core.views.explore import StepCard, cards_for

REVIEW_FROM_STEPS = 60  # more steps than this: a review window instead of every step
WINDOW_STEPS = 20
CONTEXT_BEFORE = 8  # steps shown before a jump's target: the reasoning that leads into it
JUMPS = ("first-error", "lowest-value", "largest-disagreement", "next-reflection")


@dataclass(frozen=True)
class Located:
    """Where a window opens: a step index and what located it."""

    idx: int
    source: str  # "your label", "a person's label", "MC first error", "lowest MC value", "start"
    automatic: bool  # from values, which blind mode hides until the trajectory is submitted


def is_long(n_steps: int) -> bool:
    return n_steps > REVIEW_FROM_STEPS


def reflection_openings(rule: str | None) -> tuple[str, ...]:
    """The markers a reflection step opens with: the segmentation's own (a reflection rule's),
    else the defaults."""
    try:
        parsed = parse_rule(rule or "line")
    except StepScopeError:  # a rule stored by a newer version: the defaults still find reflections
        return DEFAULT_REFLECTION_MARKERS
    return parsed.markers if parsed.name == "reflection" else DEFAULT_REFLECTION_MARKERS


def locate_first_error(store: Store, segmentation_id: int, annotator: str | None, model: str | None, *,
                       others_visible: bool) -> Located:  # fmt: skip
    """The located first error, by the order in the module's docstring."""
    if annotator is not None and (idx := store.labelled_first_error(segmentation_id, annotator)) is not None:
        return Located(idx, "your label", False)
    if others_visible and (idx := store.labelled_first_error(segmentation_id)) is not None:
        return Located(idx, "a person's label", False)
    if (idx := store.mc_first_error(segmentation_id, model)) is not None:
        return Located(idx, "MC first error", True)
    if (idx := store.lowest_value_step(segmentation_id, model)) is not None:
        return Located(idx, "lowest MC value", True)
    return Located(0, "start", False)


def jump_target(store: Store, segmentation_id: int, jump: str, step: int, *, annotator: str | None,
                model: str | None, rule: str | None, others_visible: bool) -> Located | None:  # fmt: skip
    """Where a jump from `step` goes, or None where there is nowhere to go."""
    if jump == "first-error":
        return locate_first_error(store, segmentation_id, annotator, model, others_visible=others_visible)
    if jump == "lowest-value":
        idx = store.lowest_value_step(segmentation_id, model)
        return None if idx is None else Located(idx, "lowest MC value", True)
    if jump == "largest-disagreement":
        # Blind: only the annotator's own ratings count beside the automatic scores.
        idx = store.largest_disagreement_step(segmentation_id, model, None if others_visible else annotator)
        return None if idx is None else Located(idx, "largest disagreement", True)
    if jump == "next-reflection":
        idx = store.next_step_opening_with(segmentation_id, step, reflection_openings(rule))
        return None if idx is None else Located(idx, "next reflection", False)
    raise ValueError(f"unknown jump {jump!r}")


def window_start(target: int, n_steps: int, size: int = WINDOW_STEPS) -> int:
    """The first step of a window that shows `target` with CONTEXT_BEFORE steps before it."""
    return max(0, min(target - CONTEXT_BEFORE, n_steps - size))


def following(start: int, step: int, n_steps: int, size: int = WINDOW_STEPS) -> int:
    """The window's first step once it follows `step`: unmoved while the step is in view, moved
    just far enough that it is when the step is near (a key that walks off the edge slides the
    window by one), and opened on it as for a jump when it is far (a click on the chart)."""
    if step < start - size or step >= start + 2 * size:
        return window_start(step, n_steps, size)
    if step < start:
        start = step
    elif step >= start + size:
        start = step - size + 1
    return max(0, min(start, max(0, n_steps - size)))


def cursor_for(target: Located, start: int, hidden: bool) -> int:
    """The step highlighted after opening or jumping: the target, unless it comes from values a
    blind annotator may not see yet, where the highlight starts at the window's top instead."""
    return start if hidden and target.automatic else target.idx


def window_position(memo: MutableMapping, slot: str, key: tuple, step: int, n_steps: int,
                    locate) -> tuple[int, int, Located | None]:  # fmt: skip
    """(window start, highlighted step, what opened it on this call or None) for the trajectory
    and segmentation `key`: opened by `locate()` the first time, else following the step.
    `memo` is the page's session state (any mapping), `slot` the page's own entry in it."""
    kept = memo.get(slot)
    if kept is None or kept[0] != key:
        located = locate()
        start = window_start(located.idx, n_steps)
        memo[slot] = (key, start, located)
        return start, -1, located  # -1: the caller places the highlight (cursor_for)
    start = following(kept[1], step, n_steps)
    memo[slot] = (key, start, kept[2])
    return start, step, None


def move_window(memo: MutableMapping, slot: str, start: int) -> None:
    """Place the window at `start` (a jump), keeping what opened it."""
    key, _, located = memo[slot]
    memo[slot] = (key, start, located)


def opened_by(memo: MutableMapping, slot: str) -> Located | None:
    kept = memo.get(slot)
    return kept[2] if kept else None


def window_cards(store: Store, trajectory: dict, n_steps: int, model: str | None, start: int,
                 stop: int) -> list[StepCard]:  # fmt: skip
    """core.views.explore.step_cards for the steps start <= idx < stop only."""
    steps = store.steps_between(trajectory["current_segmentation_id"], start, stop)
    ids = [s["id"] for s in steps]
    return cards_for(steps, store.step_value_counts(ids, model=model), store.step_verdict_rows(ids),
                     store.step_label_rows(ids), trajectory, n_steps)  # fmt: skip


def window_caption(start: int, stop: int, n_steps: int, located: Located | None, hidden: bool) -> str:
    """The line above the window: where it is, and what opened it (its source withheld while
    blind mode hides values)."""
    where = f"Review window: steps {start}–{stop - 1} of {n_steps:,}"
    if located is None:
        return where
    if located.automatic and hidden:
        return f"{where}, opened around a located first error (what located it is hidden in blind mode)"
    return f"{where}, opened at step {located.idx} ({located.source})"


def minimap_rows(store: Store, trajectory: dict, model: str | None) -> tuple[list[dict], list[dict]]:
    """The value chart's rows for a long trajectory, read by aggregate: MC values with interval
    (sampled steps only) and human ratings (labelled steps only), as core.views.explore.chart_rows
    gives them; judges' verdicts are left to the window's cards."""
    segmentation = trajectory["current_segmentation_id"]
    values = []
    for idx, n, correct in store.sampled_step_values(segmentation, model):
        value = step_value(Counts(n, correct))
        values.append({"step": idx, "value": value.soft, "low": value.low, "high": value.high, "n": n})
    labels = [
        {"step": row["idx"], "annotator": row["annotator"], "rating": row["rating"], "y": (row["rating"] + 1) / 2,
         "first_error": bool(row["first_error"])}
        for row in store.annotations(trajectory["id"], segmentation_id=segmentation) if row["rating"] is not None
    ]  # fmt: skip
    return values, labels


@dataclass(frozen=True)
class Run:
    """Consecutive cards of a window: shown one by one, or (`collapsed`) as one block of text."""

    cards: tuple[StepCard, ...]
    collapsed: bool

    @property
    def title(self) -> str:
        first, last = self.cards[0].idx, self.cards[-1].idx
        return f"Steps {first}–{last}: {len(self.cards)} steps with no label, value or verdict"


MIN_COLLAPSED_RUN = 4  # fewer quiet steps than this read faster as cards than behind a click


def runs(cards: list[StepCard], selected: int) -> list[Run]:
    """The window's cards in runs: steps that carry nothing (no human label, no MC value, no
    verdict) and are not selected collapse into one block when MIN_COLLAPSED_RUN or more follow
    each other; every other step is its own run."""
    found: list[Run] = []
    quiet: list[StepCard] = []

    def flush() -> None:
        if len(quiet) >= MIN_COLLAPSED_RUN:
            found.append(Run(tuple(quiet), True))
        else:
            found.extend(Run((card,), False) for card in quiet)
        quiet.clear()

    for card in cards:
        if card.idx != selected and not card.labels and not card.value.n and not card.verdicts:
            quiet.append(card)
            continue
        flush()
        found.append(Run((card,), False))
    flush()
    return found
