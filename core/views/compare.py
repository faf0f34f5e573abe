"""Compare: an automatic step label against human labels, with the statistics in core.metrics.

The unit is a step of a trajectory's current segmentation that a human rated. A human rating
counts as "the step is fine" when it is 0 or +1 (PRM800K's neutral is not an error) and as "wrong"
at -1; the consensus of several annotators is the majority of their binary labels (ties: wrong,
the cautious reading). Automatic sources:

- `mc-soft:T`: the Monte Carlo value of the chosen policy is at least T (score: the value);
- `mc-hard`: some rollout from the step reached the answer (score: the value);
- `judge:NAME`: the judge's P(yes) is at least 0.5 (score: P(yes));
- `probe:NAME`: the same for a probe verifier's step verdicts (core.probes stores them as verdicts);
- `prm:NAME`: a PRM's step score is at least the threshold (core.prm stores them as verdicts
  under that name; core.views.prm chooses the threshold on held-out problems).

A step the source has no number for (no rollouts, no verdict) is left out and counted.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Sequence

from core import metrics
from core.prm import PRM_JUDGE_PREFIX
from core.probes import is_probe_judge
from core.store import Store

CONSENSUS = "consensus"


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
    """True = fine (0 or +1), False = wrong (-1), None = this annotator did not rate it."""
    if who == CONSENSUS:
        votes = [r >= 0 for r in step.ratings.values()]
        return sum(votes) > len(votes) / 2 if votes else None
    rating = step.ratings.get(who)
    return None if rating is None else rating >= 0


def source_names(store: Store) -> list[str]:
    """MC soft and hard, then every judge and probe with step verdicts (outcome-only judges
    score whole solutions, so they have nothing to say about a step)."""
    judges = store.step_judges()
    return ["mc-soft", "mc-hard", *[_source_of(j) for j in judges]]


def _source_of(judge: str) -> str:
    if judge.startswith(PRM_JUDGE_PREFIX):
        return judge  # already "prm:NAME"
    return f"probe:{judge}" if is_probe_judge(judge) else f"judge:{judge}"


def scores(store: Store, steps: Sequence[LabelledStep], source: str, policy: str) -> dict[int, float]:
    """The source's number for each step that has one: MC value (for the policy) or P(yes)."""
    ids = [s.step_id for s in steps]
    if source in ("mc-soft", "mc-hard"):
        wanted = set(ids)
        counts = store.rated_step_rollout_counts(policy)
        return {sid: c / n for sid, (n, c) in counts.items() if n and sid in wanted}
    if source.startswith(("judge:", "probe:")):
        return store.latest_step_p_yes(source.split(":", 1)[1], ids)
    if source.startswith(PRM_JUDGE_PREFIX):
        return store.latest_step_p_yes(source, ids)
    raise ValueError(f"unknown label source {source!r}")


def predicted(source: str, score: float, threshold: float) -> bool:
    if source == "mc-hard":
        return score > 0
    if source == "mc-soft" or source.startswith(PRM_JUDGE_PREFIX):
        return score >= threshold
    return score >= 0.5


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
