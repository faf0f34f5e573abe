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
_PAGE = 2000  # trajectories per page of an export


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
    return page_labels(store, steps, source)[0]


def step_latents(store: Store, trajectory_id: int, steps: list[dict], source: LabelSource) -> dict[str, list] | None:
    """For a human source, the annotator's confidence and error category per step (None where not
    given); for any other source None (an MC value or a judge has no confidence to report)."""
    if source.kind != "human" or not steps:
        return None
    return page_labels(store, steps, source)[1]


def page_labels(
    store: Store, steps: list[dict], source: LabelSource
) -> tuple[list[bool | None], dict[str, list] | None]:
    """The labels of any number of steps (of one trajectory or of a page of them), with one query,
    and for a human source the annotator's confidence and error category per step."""
    ids = [step["id"] for step in steps]
    if source.kind in MC_SOURCES:
        counts = store.step_rollout_counts(ids)
        return [_mc_label(*counts.get(i, (0, 0)), source) for i in ids], None
    if source.is_verifier:
        latest = store.latest_step_scores(source.name, ids)
        cut = 0.5 if source.threshold is None else source.threshold
        return [None if latest.get(i) is None else latest[i] >= cut for i in ids], None
    by_step: dict[int, list[bool | None]] = defaultdict(list)
    mine: dict[int, tuple] = {}
    annotator = source.name if source.kind == "human" else None
    for step_id, _, rating, first_error, confidence, category in store.step_annotations(ids, annotator=annotator):
        by_step[step_id].append(human_label(rating, bool(first_error)))
        mine[step_id] = (confidence, category)
    combine = majority_label if source.kind == MAJORITY else agreed_label
    labels = [combine(by_step.get(i, [])) for i in ids]
    if source.kind != "human":
        return labels, None
    latents = {
        "confidences": [mine.get(i, (None, None))[0] for i in ids],
        "categories": [mine.get(i, (None, None))[1] for i in ids],
    }
    return labels, latents


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
    for trajectory, steps, labels, _ in labelled_rows(store, options):
        yield trajectory, steps, labels


def labelled_rows(
    store: Store, options: ExportOptions, *, page: int = _PAGE
) -> Iterator[tuple[dict, list[dict], list[bool | None], dict[str, list] | None]]:
    """(trajectory, its current steps, their labels, a human source's latents or None) for each
    trajectory with any label, in id order. A page of trajectories costs one query per table
    (core.store.export), so memory and queries do not grow with the store.

    A trajectory is a dict with id, key, problem_id, source, model, correct, dataset, question,
    gold and segmentation_id; a step has id, segmentation_id, trajectory_id, idx and text."""
    if options.labels is None:
        raise StepScopeError(f"this export needs --labels: {SOURCES_HELP}")
    source = resolve_label_source(store, options.labels)
    after = 0
    while trajectories := store.trajectory_page(after, page, dataset=options.dataset):
        after = trajectories[-1]["id"]
        steps = store.current_steps([t["id"] for t in trajectories])
        flat = [step for t in trajectories for step in steps[t["id"]]]
        labels, latents = page_labels(store, flat, source)
        at = 0
        for trajectory in trajectories:
            n = len(steps[trajectory["id"]])
            mine = labels[at : at + n]
            if any(label is not None for label in mine):
                # Latents as step_latents gives them: none for a trajectory without steps.
                own = {name: values[at : at + n] for name, values in latents.items()} if latents else None
                yield trajectory, steps[trajectory["id"]], mine, own
            at += n
