"""Switching how a trajectory is cut into steps, from Explore: its segmentations and the splitters
offered, and resegmenting with the labels moved by span (core.store.segmentations).

Each switch adds a segmentation (or makes an existing one current again); labels, values and
verdicts stay on the steps they were made on, so switching back shows them again.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.store import Store

# The splitters offered by name; any other rule (with parameters) can be typed.
SPLITTER_PRESETS = ("paragraph", "line", "sentence", "sentence-merged", "reflection")


@dataclass(frozen=True)
class SplitterChoice:
    rule: str
    steps: int | None  # None: not cut this way yet
    current: bool

    @property
    def text(self) -> str:
        if self.steps is None:
            return f"{self.rule} (new)"
        return f"{self.rule} · {self.steps} steps" + (" · current" if self.current else "")


def splitter_choices(store: Store, trajectory_id: int) -> list[SplitterChoice]:
    """The trajectory's segmentations (current first), then the presets it has not been cut by."""
    cut = [SplitterChoice(row["rule"], row["n_steps"], bool(row["current"])) for row in store.segmentations(trajectory_id)]
    cut.sort(key=lambda choice: not choice.current)
    seen = {choice.rule for choice in cut}
    return [*cut, *(SplitterChoice(rule, None, False) for rule in SPLITTER_PRESETS if rule not in seen)]


def split_trajectory(store: Store, trajectory_id: int, rule: str, *, move_labels: bool) -> str:
    """Cut the trajectory by `rule` and make that current; one line saying what happened.
    StepScopeError (one line) for a rule that does not parse or cannot cut text."""
    tally = store.resegment_many([trajectory_id], rule.strip(), move_labels=move_labels)
    rule = store.get_trajectory(trajectory_id)["rule"]
    what = "a new segmentation" if tally.new_segmentations else "an existing segmentation, current again"
    message = f"cut by {rule!r}: {tally.steps_after} steps (were {tally.steps_before}), {what}"
    if move_labels:
        message += f"; labels moved: {tally.labels_moved}, did not map: {tally.labels_unmapped}"
    return message
