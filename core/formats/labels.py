"""Label sources: where a step's correct/incorrect label comes from. One grammar, used by
exports, training, probes and Compare:

- `mc-hard`: Monte Carlo hard label: at least one rollout from the step reached the gold.
- `mc-soft:T`: the fraction of rollouts that reached the gold is at least T (0..1).
- `judge:NAME`, `prm:NAME`, `probe:NAME`, `orm:NAME`: the latest step verdict of verifier NAME, of
  that kind (core.store.verifiers: the kind is data, checked against the store): score >= 0.5,
  or the threshold a caller chose (Compare's for a PRM). A stored name that already starts with
  its kind (`prm:math-shepherd`, the PRM scorer's default) is also accepted as it is.
- `human:NAME`: annotator NAME's rating: -1 is wrong; 0 (neutral) and +1 are right, as
  PRM800K-trained PRMs count neutral steps; an unrated step marked as first error is wrong.
- `consensus`: every annotator who labelled the step agrees (by the `human` reading); steps
  they disagree on are unlabelled.
- `majority`: more than half of the annotators who labelled the step call it right; a tie is
  wrong (the cautious reading).

Labels come from the trajectory's current segmentation. A step without a label is None;
exporters that need a label for every step keep the longest fully labelled prefix.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Iterator

from core.errors import StepScopeError
from core.formats.base import ExportOptions
from core.store import Store

MC_SOURCES = ("mc-hard", "mc-soft")
VERIFIER_SOURCES = ("judge", "prm", "probe", "orm")  # verifier kinds whose verdicts label steps
CONSENSUS, MAJORITY = "consensus", "majority"
SOURCES_HELP = "mc-hard, mc-soft:THRESHOLD, judge|prm|probe|orm:NAME, human:ANNOTATOR, consensus or majority"
_PAGE = 500


@dataclass(frozen=True)
class LabelSource:
    kind: str  # mc-hard | mc-soft | judge | prm | probe | orm | human | consensus | majority
    name: str | None = None  # verifier or annotator
    threshold: float | None = None  # mc-soft; a verifier's score threshold (default 0.5)

    def __str__(self) -> str:
        if self.kind == "mc-soft":
            return "mc-soft" if self.threshold is None else f"mc-soft:{self.threshold:g}"
        if self.name is None:
            return self.kind
        # A name that already says its kind is shown as it is, not as "prm:prm:NAME".
        return self.name if self.name.startswith(f"{self.kind}:") else f"{self.kind}:{self.name}"

    @property
    def is_verifier(self) -> bool:
        return self.kind in VERIFIER_SOURCES

    @property
    def is_human(self) -> bool:
        return self.kind in ("human", CONSENSUS, MAJORITY)


def parse_label_source(spec: str, *, threshold: float | None = None) -> LabelSource:
    """A label source from its spelling; `threshold` stands for mc-soft's when it is left out
    (Compare chooses it with a slider)."""
    kind, _, argument = spec.strip().partition(":")
    if kind in ("mc-hard", CONSENSUS, MAJORITY) and not argument:
        return LabelSource(kind)
    if kind == "mc-soft" and (argument or threshold is not None):
        try:
            value = float(argument) if argument else threshold
        except ValueError:
            value = -1.0
        if not 0.0 <= value <= 1.0:
            raise StepScopeError(f"mc-soft needs a threshold between 0 and 1, not {argument!r}")
        return LabelSource(kind, threshold=value)
    if (kind in VERIFIER_SOURCES or kind == "human") and argument.strip():
        return LabelSource(kind, name=argument.strip())
    raise StepScopeError(f"unknown label source {spec!r}; use {SOURCES_HELP}")


def resolve_label_source(store: Store, source: LabelSource | str) -> LabelSource:
    """The source with its name as stored, checked against the store: a typo in a name would
    otherwise label nothing without a word, and a verifier of another kind is named as such."""
    if isinstance(source, str):
        source = parse_label_source(source)
    if source.kind == "human":
        known = [a["name"] for a in store.annotators()]
        if source.name not in known:
            raise StepScopeError(f"no annotator named {source.name!r} in {store.path}; known: {', '.join(known) or 'none'}")
        return source
    if not source.is_verifier:
        return source
    kinds = store.verifier_kinds()
    for name in (source.name, f"{source.kind}:{source.name}"):
        if kinds.get(name) == source.kind:
            return replace(source, name=name)
    if source.name in kinds:
        raise StepScopeError(f"{source.name!r} is a {kinds[source.name]} verifier, not a {source.kind}: "
                             f"use {kinds[source.name]}:{source.name}")  # fmt: skip
    known = [str(LabelSource(kind, name)) for name, kind in kinds.items() if kind == source.kind]
    raise StepScopeError(f"no {source.kind} named {source.name!r} in {store.path}; known: {', '.join(known) or 'none'}")


def verifier_sources(store: Store, step_verifiers: list[str]) -> list[LabelSource]:
    """Label sources for the named verifiers (e.g. those with step verdicts), by their stored kind."""
    kinds = store.verifier_kinds()
    return [LabelSource(kinds[name], name) for name in step_verifiers if kinds.get(name) in VERIFIER_SOURCES]


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
    if source.is_verifier:
        latest = {}
        for verdict in store.verdicts(trajectory_id, judge=source.name, kind="step"):
            latest[verdict["step_id"]] = verdict["p_yes"]  # oldest first: the last one wins
        cut = 0.5 if source.threshold is None else source.threshold
        return [None if latest.get(i) is None else latest[i] >= cut for i in ids]
    if not steps:
        return []
    by_step: dict[int, list[bool | None]] = defaultdict(list)
    annotator = source.name if source.kind == "human" else None
    annotations = store.annotations(
        trajectory_id, annotator=annotator, segmentation_id=steps[0]["segmentation_id"]
    )
    for a in annotations:
        by_step[a["step_id"]].append(human_label(a["rating"], a["first_error"]))
    combine = majority_label if source.kind == MAJORITY else agreed_label
    return [combine(by_step.get(i, [])) for i in ids]


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


def agreed_label(labels: list[bool | None]) -> bool | None:
    """`consensus` (and one annotator's own label): the label every given one agrees on."""
    given = {label for label in labels if label is not None}
    return given.pop() if len(given) == 1 else None


def majority_label(labels: list[bool | None]) -> bool | None:
    """`majority`: right when more than half of the given labels say right; a tie is wrong."""
    given = [label for label in labels if label is not None]
    return sum(given) > len(given) / 2 if given else None


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
    source = resolve_label_source(store, options.labels)
    offset = 0
    while True:
        page = store.list_trajectories(dataset=options.dataset, limit=_PAGE, offset=offset)
        if not page:
            return
        offset += len(page)
        for row in page:
            trajectory = store.get_trajectory(row["id"])
            steps = store.steps(row["id"])
            labels = step_labels(store, row["id"], steps, source)
            if any(label is not None for label in labels):
                yield trajectory, steps, labels
