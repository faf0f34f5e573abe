"""Annotation sessions: the queue an annotator works through, their labels, and saving a click.

A queue is built once per setting (mode, dataset, seed, size, overlap) and kept for the
session, so labelling a trajectory does not reshuffle the order under the annotator's feet.
Every save goes straight to `Store.save_annotation`, which commits before it returns.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any, Sequence

from core.views.inputs import validate_annotator
from core.errors import StepScopeError
from core.store import Store

QUEUE_MODES = ("unlabelled first", "random sample", "assigned list")
MAX_QUEUE = 5000
_ID_RANGE = re.compile(r"^\s*(\d{1,12})\s*(?:-\s*(\d{1,12})\s*)?$")


@dataclass(frozen=True)
class QueueSpec:
    mode: str = QUEUE_MODES[0]
    dataset: str | None = None
    size: int = 100
    seed: int = 0
    overlap: int = 100  # percent of a random sample shared by every annotator with this seed
    assigned: str = ""  # "3, 7, 10-14"


def parse_assigned(text: str, limit: int = MAX_QUEUE) -> list[int]:
    """Trajectory ids from "3, 7, 10-14" (order kept, duplicates dropped)."""
    ids: list[int] = []
    for part in text.replace(";", ",").split(","):
        if not part.strip():
            continue
        match = _ID_RANGE.match(part)
        if match is None:
            raise StepScopeError(f"an assigned list is ids or ranges like 3, 7, 10-14; not {part.strip()[:30]!r}")
        first, last = int(match[1]), int(match[2] or match[1])
        if last < first or last - first >= limit:
            raise StepScopeError(f"the range {part.strip()} is empty or longer than {limit}")
        ids.extend(range(first, last + 1))
    return list(dict.fromkeys(ids))[:limit]


def build_queue(store: Store, annotator: str, spec: QueueSpec) -> list[int]:
    size = max(1, min(spec.size, MAX_QUEUE))
    if spec.mode == "unlabelled first":
        return store.unlabelled_first(annotator, spec.dataset, size)
    if spec.mode == "random sample":
        return random_sample(store.trajectory_ids(spec.dataset), size, spec.seed, spec.overlap, annotator)
    if spec.mode == "assigned list":
        wanted = parse_assigned(spec.assigned)
        existing = store.existing_trajectory_ids(wanted)
        missing = [i for i in wanted if i not in existing]
        if missing:
            raise StepScopeError(f"no trajectory with id {', '.join(map(str, missing[:5]))}")
        return wanted
    raise StepScopeError(f"unknown queue mode {spec.mode!r}")


def random_sample(ids: Sequence[int], size: int, seed: int, overlap: int, annotator: str) -> list[int]:
    """`size` ids: the first `overlap`% are the same for every annotator with this seed, the
    rest are drawn for this annotator from what is left (so two annotators overlap by that
    share, which agreement statistics need)."""
    shuffled = list(ids)
    random.Random(seed).shuffle(shuffled)
    size = min(size, len(shuffled))
    shared = round(size * max(0, min(overlap, 100)) / 100)
    own_rng = random.Random(f"{seed}:{annotator}")
    rest = shuffled[shared:]
    own = own_rng.sample(rest, min(size - shared, len(rest)))
    queue = shuffled[:shared] + own
    own_rng.shuffle(queue)
    return queue


def labelled_steps(store: Store, annotator: str, trajectory_ids: Sequence[int]) -> dict[int, tuple[int, int]]:
    """For each trajectory: (steps in its current segmentation, of them rated by the annotator)."""
    return store.rated_current_steps(annotator, trajectory_ids)


@dataclass(frozen=True)
class QueueProgress:
    total: int
    complete: int  # every step rated

    @property
    def text(self) -> str:
        return f"{self.complete} of {self.total} trajectories fully labelled"


def queue_progress(store: Store, annotator: str, queue: Sequence[int]) -> QueueProgress:
    counts = labelled_steps(store, annotator, queue)
    complete = sum(1 for steps, rated in counts.values() if steps and rated >= steps)
    return QueueProgress(len(queue), complete)


def my_labels(store: Store, annotator: str, trajectory_id: int) -> dict[int, dict]:
    """This annotator's labels on the trajectory's current steps, by step id."""
    steps = store.steps(trajectory_id)
    segmentation = steps[0]["segmentation_id"] if steps else None
    return {
        row["step_id"]: row
        for row in store.annotations(trajectory_id, annotator=annotator, segmentation_id=segmentation)
    }


def save_label(store: Store, annotator: str, step_id: int, **fields: Any) -> dict:
    """Save one click (rating, first_error, flagged or note) for one step; returns the row.

    Committed when this returns; StepScopeError for a bad annotator name or value.
    """
    annotator = validate_annotator(annotator)
    if "note" in fields and fields["note"] is not None:
        fields["note"] = fields["note"][:5000] or None
    return store.save_annotation(annotator, step_id, **fields)


def saved_message(idx: int, row: dict, field: str) -> str:
    value = {
        "rating": {1: "+1", 0: "0", -1: "−1", None: "cleared"}.get(row.get("rating"), "?"),
        "first_error": "first error" if row.get("first_error") else "not first error",
        "flagged": "flagged" if row.get("flagged") else "unflagged",
        "note": "note saved",
    }[field]
    stamp = str(row.get("updated_at", ""))[11:19]
    return f"saved: step {idx} {value} at {stamp} UTC"
