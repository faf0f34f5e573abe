"""Label sources for exports: where a step's correct/incorrect label comes from.

- `mc-hard`: Monte Carlo hard label: at least one rollout from the step reached the gold.
- `mc-soft:T`: the fraction of rollouts that reached the gold is at least T (0..1).
- `judge:NAME`: the latest step verdict of judge model NAME: P(Yes) >= 0.5.
- `human:NAME`: annotator NAME's rating: -1 is wrong; 0 (neutral) and +1 are right, as
  PRM800K-trained PRMs count neutral steps; an unrated step marked as first error is wrong.
- `consensus`: every annotator who labelled the step agrees (by the `human` reading); steps
  they disagree on are unlabelled.

Labels come from the trajectory's current segmentation. A step without a label is None;
exporters that need a label for every step keep the longest fully labelled prefix.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Iterator

from core.errors import StepScopeError
from core.formats.base import ExportOptions
from core.store import Store

SOURCES_HELP = "mc-hard, mc-soft:THRESHOLD, judge:NAME, human:ANNOTATOR or consensus"
_PAGE = 500


@dataclass(frozen=True)
class LabelSource:
    kind: str  # mc-hard | mc-soft | judge | human | consensus
    name: str | None = None  # judge model or annotator
    threshold: float | None = None

    def __str__(self) -> str:
        if self.kind == "mc-soft":
            return f"mc-soft:{self.threshold:g}"
        return f"{self.kind}:{self.name}" if self.name else self.kind


def parse_label_source(spec: str) -> LabelSource:
    kind, _, argument = spec.strip().partition(":")
    if kind in ("mc-hard", "consensus") and not argument:
        return LabelSource(kind)
    if kind == "mc-soft" and argument:
        try:
            threshold = float(argument)
        except ValueError:
            threshold = -1.0
        if not 0.0 <= threshold <= 1.0:
            raise StepScopeError(f"mc-soft needs a threshold between 0 and 1, not {argument!r}")
        return LabelSource(kind, threshold=threshold)
    if kind in ("judge", "human") and argument.strip():
        return LabelSource(kind, name=argument.strip())
    raise StepScopeError(f"unknown label source {spec!r}; use {SOURCES_HELP}")


def human_label(rating: int | None, first_error: bool) -> bool | None:
    if rating is not None:
        return rating >= 0
    return False if first_error else None


def step_labels(
    store: Store, trajectory_id: int, steps: list[dict], source: LabelSource
) -> list[bool | None]:
    """One label per step (None where the source says nothing)."""
    ids = [step["id"] for step in steps]
    if source.kind in ("mc-hard", "mc-soft"):
        counts = store.step_value_counts(ids)
        return [_mc_label(*counts[i], source) for i in ids]
    if source.kind == "judge":
        latest = {}
        for verdict in store.verdicts(trajectory_id, judge=source.name, kind="step"):
            latest[verdict["step_id"]] = verdict["p_yes"]  # oldest first: the last one wins
        return [None if latest.get(i) is None else latest[i] >= 0.5 for i in ids]
    if not steps:
        return []
    by_step: dict[int, list[bool | None]] = defaultdict(list)
    annotator = source.name if source.kind == "human" else None
    annotations = store.annotations(
        trajectory_id, annotator=annotator, segmentation_id=steps[0]["segmentation_id"]
    )
    for a in annotations:
        by_step[a["step_id"]].append(human_label(a["rating"], a["first_error"]))
    return [_agreed(by_step.get(i, [])) for i in ids]


def step_latents(store: Store, trajectory_id: int, steps: list[dict], source: LabelSource) -> dict[str, list] | None:
    """For a human source, the annotator's confidence and error category per step (None where not
    given); for any other source None (an MC value or a judge has no confidence to report)."""
    if source.kind != "human" or not steps:
        return None
    mine = {a["step_id"]: a for a in store.annotations(
        trajectory_id, annotator=source.name, segmentation_id=steps[0]["segmentation_id"])}
    return {
        "confidences": [(mine.get(s["id"]) or {}).get("confidence") for s in steps],
        "categories": [(mine.get(s["id"]) or {}).get("category") for s in steps],
    }


def _mc_label(n: int, n_correct: int, source: LabelSource) -> bool | None:
    if n == 0:
        return None
    if source.kind == "mc-hard":
        return n_correct > 0
    return n_correct / n >= source.threshold


def _agreed(labels: list[bool | None]) -> bool | None:
    given = {label for label in labels if label is not None}
    return given.pop() if len(given) == 1 else None


def labelled_prefix(labels: list[bool | None]) -> int:
    """How many steps from the start all have a label."""
    for k, label in enumerate(labels):
        if label is None:
            return k
    return len(labels)


def labelled_trajectories(
    store: Store, options: ExportOptions
) -> Iterator[tuple[dict, list[dict], list[bool | None]]]:
    """(trajectory, its current steps, their labels) for each trajectory with any label."""
    if options.labels is None:
        raise StepScopeError(f"this export needs --labels: {SOURCES_HELP}")
    _check_source_exists(store, options.labels)
    offset = 0
    while True:
        page = store.list_trajectories(dataset=options.dataset, limit=_PAGE, offset=offset)
        if not page:
            return
        offset += len(page)
        for row in page:
            trajectory = store.get_trajectory(row["id"])
            steps = store.steps(row["id"])
            labels = step_labels(store, row["id"], steps, options.labels)
            if any(label is not None for label in labels):
                yield trajectory, steps, labels


def _check_source_exists(store: Store, source: LabelSource) -> None:
    # A typo in a name would otherwise export an empty file without a word.
    if source.kind == "human":
        known = [a["name"] for a in store.annotators()]
        what = "annotator"
    elif source.kind == "judge":
        known = store.judges()
        what = "judge"
    else:
        return
    if source.name not in known:
        raise StepScopeError(
            f"no {what} named {source.name!r} in {store.path}; known: {', '.join(known) or 'none'}"
        )
