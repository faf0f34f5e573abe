"""Compare: an automatic step label against human labels, with the statistics in core.metrics.

The unit is a step of a trajectory's current segmentation that a human rated. A human rating
counts as "the step is fine" when it is 0 or +1 (PRM800K's neutral is not an error) and as "wrong"
at -1. Sources on both sides are spelled in the one label-source grammar (core.formats.labels):

- automatic: `mc-soft` (the Monte Carlo value of the chosen policy is at least T; score: the
  value), `mc-hard` (some rollout from the step reached the answer), and every verifier with step
  verdicts by its stored kind: `judge:NAME`, `probe:NAME`, `orm:NAME` (P(yes) >= 0.5) and
  `prm:NAME` (a PRM's score is at least the threshold; core.views.prm chooses it on held-out
  problems);
- human: an annotator's name, `majority` (more than half say fine; a tie is wrong) or
  `consensus` (every annotator agrees; steps they disagree on are left out).

A step the source has no number for (no rollouts, no verdict) is left out and counted.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Sequence

from core import metrics
from core.formats.labels import (
    CONSENSUS, MAJORITY, MC_SOURCES, agreed_label, majority_label, parse_label_source, resolve_label_source,
    verifier_sources,
)  # fmt: skip
from core.store import Store

HUMAN_COMBINATIONS = (MAJORITY, CONSENSUS)


@dataclass(frozen=True)
class LabelledStep:
    step_id: int
    trajectory_id: int
    idx: int
    ratings: dict[str, int]  # annotator -> -1/0/+1
    first_errors: frozenset[str]  # annotators who marked this step as the first error


def labelled_steps(store: Store, dataset: str | None = None, first: bool = False) -> list[LabelledStep]:
    """Every rated step of a current segmentation, with every annotator's rating: the final one,
    or with `first` the first one they gave (before any edit; from the label history)."""
    grouped: dict[int, tuple[int, int, dict[str, int], set[str]]] = {}
    ratings = store.step_ratings(dataset)
    if first:
        given = store.first_ratings([row[0] for row in ratings])
        ratings = [(s, t, i, name, given.get((name, s), rating), fe) for s, t, i, name, rating, fe in ratings]
    for step_id, trajectory_id, idx, name, rating, first_error in ratings:
        entry = grouped.get(step_id)
        if entry is None:
            entry = grouped[step_id] = (trajectory_id, idx, {}, set())
        entry[2][name] = rating
        if first_error:
            entry[3].add(name)
    return [
        LabelledStep(step_id, trajectory_id, idx, ratings, frozenset(first_errors))
        for step_id, (trajectory_id, idx, ratings, first_errors) in grouped.items()
    ]


def fingerprint(store: Store) -> tuple:
    """Changes whenever a label, rollout or verdict is added or changed: a cache key."""
    return store.labels_fingerprint()


def annotator_names(steps: Sequence[LabelledStep]) -> list[str]:
    return sorted({name for s in steps for name in s.ratings})


def human_label(step: LabelledStep, who: str) -> bool | None:
    """True = fine (0 or +1), False = wrong (-1), None = no label (this annotator did not rate
    it; for `consensus`, the annotators disagree)."""
    if who in HUMAN_COMBINATIONS:
        votes = [r >= 0 for r in step.ratings.values()]
        return (majority_label if who == MAJORITY else agreed_label)(votes)
    rating = step.ratings.get(who)
    return None if rating is None else rating >= 0


def source_names(store: Store) -> list[str]:
    """MC soft and hard, then every verifier with step verdicts, by its kind (outcome-only
    verifiers score whole solutions, so they have nothing to say about a step)."""
    return [*MC_SOURCES[::-1], *[str(s) for s in verifier_sources(store, store.step_judges())]]


def uses_threshold(source: str) -> bool:
    """Whether a source's label is its score against a chosen threshold (MC soft, a PRM)."""
    return parse_label_source(source, threshold=0.5).kind in ("mc-soft", "prm")


def scores(store: Store, steps: Sequence[LabelledStep], source: str, policy: str) -> dict[int, float]:
    """The source's number for each step that has one: MC value (for the policy) or P(yes)."""
    ids = [s.step_id for s in steps]
    parsed = parse_label_source(source, threshold=0.5)
    if parsed.kind in MC_SOURCES:
        wanted = set(ids)
        counts = store.rated_step_rollout_counts(policy)
        return {sid: c / n for sid, (n, c) in counts.items() if n and sid in wanted}
    if parsed.is_verifier:
        return store.latest_step_p_yes(resolve_label_source(store, parsed).name, ids)
    raise ValueError(f"{source!r} is not an automatic label source")


def predicted(source: str, score: float, threshold: float) -> bool:
    if source == "mc-hard":
        return score > 0
    return score >= (threshold if uses_threshold(source) else 0.5)


@dataclass
class Comparison:
    source: str
    human: str
    n: int
    missing: int  # rated steps the source has no number for
    accuracy: float | None
    kappa: metrics.Interval | None
    auroc: float | None
    confusion: dict[tuple[bool, bool], int]  # (human, automatic) -> count
    calibration: list = field(default_factory=list)
    ece: float | None = None
    by_position: list[dict] = field(default_factory=list)
    processbench: metrics.ProcessBenchScore | None = None
    disagreements: list[dict] = field(default_factory=list)


def compare(
    store: Store, steps: Sequence[LabelledStep], source: str, human: str, policy: str, threshold: float = 0.5
) -> Comparison:
    values = scores(store, steps, source, policy)
    pairs = []  # (step, human, automatic, score)
    missing = 0
    for step in steps:
        label = human_label(step, human)
        if label is None:
            continue
        if step.step_id not in values:
            missing += 1
            continue
        score = values[step.step_id]
        pairs.append((step, label, predicted(source, score, threshold), score))
    comparison = Comparison(source, human, len(pairs), missing, None, None, None,
                            {(h, a): 0 for h in (True, False) for a in (True, False)})  # fmt: skip
    if not pairs:
        return comparison
    humans = [p[1] for p in pairs]
    autos = [p[2] for p in pairs]
    comparison.accuracy = metrics.accuracy(humans, autos)
    comparison.kappa = _kappa(humans, autos)
    comparison.auroc = metrics.auroc(humans, [p[3] for p in pairs])
    for h, a in zip(humans, autos):
        comparison.confusion[(h, a)] += 1
    comparison.calibration, comparison.ece = metrics.calibration_bins([p[3] for p in pairs], humans)
    by_idx: dict[int, list[bool]] = defaultdict(list)
    for step, h, a, _ in pairs:
        by_idx[step.idx].append(h == a)
    comparison.by_position = [
        {"step": idx, "n": len(hits), "accuracy": sum(hits) / len(hits)} for idx, hits in sorted(by_idx.items())
    ]
    comparison.processbench = _processbench(pairs, human)
    comparison.disagreements = [
        {"trajectory": s.trajectory_id, "step": s.idx, "human": "fine" if h else "wrong",
         "automatic": "fine" if a else "wrong", "score": round(score, 3),
         "explore": f"/?trajectory={s.trajectory_id}&step={s.idx}"}
        for s, h, a, score in pairs if h != a
    ]  # fmt: skip
    return comparison


def _kappa(a: Sequence, b: Sequence) -> metrics.Interval:
    # statsmodels warns (division by zero) on degenerate tables; the Interval says it already.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return metrics.cohen_kappa(a, b)


def _processbench(pairs, human: str) -> metrics.ProcessBenchScore | None:
    """First-error F1 over trajectories whose compared steps are the whole prefix it needs:
    the gold first error is the first step the human calls wrong (-1 if none), the predicted one
    the first step the source calls wrong."""
    by_trajectory: dict[int, list] = defaultdict(list)
    for step, h, a, _ in pairs:
        by_trajectory[step.trajectory_id].append((step.idx, h, a))
    gold, guess = [], []
    for items in by_trajectory.values():
        items.sort()
        if [i for i, _, _ in items] != list(range(len(items))):
            continue  # a gap: the earliest error could hide in an uncompared step
        gold.append(next((i for i, h, _ in items if not h), -1))
        guess.append(next((i for i, _, a in items if not a), -1))
    return metrics.processbench_f1(guess, gold) if gold else None


@dataclass(frozen=True)
class Agreement:
    pairs: list[dict]  # annotator a, annotator b, n, kappa, low, high
    alpha: float | None
    units: int


def inter_annotator(steps: Sequence[LabelledStep]) -> Agreement:
    """Cohen's kappa for every pair of annotators on the steps both rated (-1/0/+1), and
    Krippendorff's alpha (ordinal) over every step rated by two or more."""
    names = annotator_names(steps)
    pairs = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            both = [(s.ratings[a], s.ratings[b]) for s in steps if a in s.ratings and b in s.ratings]
            if not both:
                continue
            kappa = _kappa([x for x, _ in both], [y for _, y in both])
            pairs.append({"a": a, "b": b, "steps": len(both), "kappa": kappa.value, "low": kappa.low, "high": kappa.high})
    units = [list(s.ratings.values()) for s in steps if len(s.ratings) >= 2]
    return Agreement(pairs, metrics.krippendorff_alpha(units, metric="ordinal") if units else None, len(units))
