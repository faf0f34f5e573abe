"""Best-of-N: pass@k, majority vote and best-of-k per verifier against k, with intervals.

The samples are a policy's own trajectories (source "policy", one model), grouped by problem.
For each k (powers of two up to the smallest group used), per-problem values come from
core.metrics (pass@k: the unbiased estimator; maj@k and best-of-k: exact expectations over
random k-subsets), averaged over problems with a percentile-bootstrap interval over problems.
A verifier is an outcome judge (P(yes) of the whole solution); only problems where it scored
every sample count for it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from core import metrics
from core.orm_training import list_orms
from core.probes import list_probes
from core.splits import problem_split
from core.store import Store

RESAMPLES = 1000


def policy_models(store: Store, dataset: str | None = None) -> list[str]:
    return store.graded_policy_models(dataset)


@dataclass(frozen=True)
class Sample:
    trajectory_id: int
    answer: str | None
    correct: bool
    scores: dict[str, float]  # judge -> outcome P(yes)


def samples_by_problem(store: Store, model: str, dataset: str | None = None, split: str | None = None) -> dict[int, list[Sample]]:
    """The policy's graded solutions by problem; with `split` ("train" or "test", core.splits),
    only the problems of that split: a trained verifier is compared on problems it never saw."""
    found = store.graded_policy_solutions(model, dataset)
    if split is not None:
        side = {pid: problem_split(store.get_problem(pid)) for pid in {row["problem_id"] for row in found}}
        found = [row for row in found if side[row["problem_id"]] == split]
    scores = store.latest_outcome_p_yes([row["id"] for row in found])
    grouped: dict[int, list[Sample]] = defaultdict(list)
    for row in found:
        grouped[row["problem_id"]].append(Sample(row["id"], row["final_answer"], bool(row["correct"]), scores.get(row["id"], {})))
    return dict(grouped)


def k_values(largest: int) -> list[int]:
    ks, k = [], 1
    while k <= largest:
        ks.append(k)
        k *= 2
    if ks and ks[-1] != largest:
        ks.append(largest)
    return ks


@dataclass(frozen=True)
class CurvePoint:
    method: str
    k: int
    value: float | None
    low: float | None
    high: float | None
    problems: int


def best_of_k(scores: list[float], correct: list[bool], k: int) -> float:
    """`metrics.best_of_k` in plain Python (the same exact expectation, ties broken fairly):
    thousands of small problems in milliseconds instead of seconds."""
    n = len(scores)
    total = math.comb(n, k)
    by_score: dict[float, list[bool]] = defaultdict(list)
    for score, ok in zip(scores, correct):
        by_score[score].append(ok)
    expected, below = 0.0, 0
    for score in sorted(by_score):
        group = by_score[score]
        at_or_below = below + len(group)
        p_top = (math.comb(at_or_below, k) - math.comb(below, k)) / total
        expected += p_top * sum(group) / len(group)
        below = at_or_below
    return expected


@lru_cache(maxsize=65536)
def _majority(answers: tuple, correct: tuple, k: int) -> float:
    return metrics.majority_vote(list(answers), list(correct), k)


def majority_vote(answers: list, correct: list[bool], k: int) -> float:
    """`metrics.majority_vote`, remembered per pattern: it depends only on which samples share
    an answer, so answers are renamed by first appearance and problems with the same pattern
    (common: a few distinct answers among k samples) are computed once."""
    names: dict = {}
    pattern = tuple(None if a is None else names.setdefault(a, len(names)) for a in answers)
    return _majority(pattern, tuple(bool(c) for c in correct), k)


def judges_of(groups: dict[int, list[Sample]]) -> list[str]:
    """The verifiers that scored any of these samples."""
    return sorted({j for samples in groups.values() for s in samples for j in s.scores})


@dataclass(frozen=True)
class VerifierInfo:
    judge: str
    type: str  # fine-tuned ORM | probe | judge
    base: str  # the base model it was trained on; for a prompted judge, its model (the judge name)


def verifier_info(store: Store, judges: list[str]) -> list[VerifierInfo]:
    """What each verifier is and which base it was trained on, from the artifacts next to the
    database (a fine-tuned ORM's or probe's manifest); any other verdict name is a prompted judge."""
    known = {entry["judge"]: VerifierInfo(entry["judge"], "probe", entry["base"]) for entry in list_probes(store)}
    known |= {entry["judge"]: VerifierInfo(entry["judge"], "fine-tuned ORM", entry["base"]) for entry in list_orms(store)}
    return [known.get(judge, VerifierInfo(judge, "judge", judge)) for judge in judges]


def curves(groups: dict[int, list[Sample]], max_k: int | None = None,
           verifiers: list[str] | None = None) -> tuple[list[CurvePoint], int]:  # fmt: skip
    """Every method's curve over k (best-of-k for `verifiers`, default every one that scored), and
    the k the curves go up to (the smallest group used)."""
    usable = [samples for samples in groups.values() if len(samples) >= 2]
    if not usable:
        return [], 0
    largest = min(len(samples) for samples in usable)
    if max_k:
        largest = min(largest, max_k)
    judges = sorted({j for samples in usable for s in samples for j in s.scores})
    if verifiers is not None:
        judges = [j for j in judges if j in set(verifiers)]
    points = []
    for k in k_values(largest):
        per_method: dict[str, list[float]] = defaultdict(list)
        for samples in usable:
            correct = [s.correct for s in samples]
            per_method["pass@k"].append(metrics.pass_at_k(len(samples), sum(correct), k))
            per_method["majority vote"].append(majority_vote([s.answer for s in samples], correct, k))
            for judge in judges:
                if all(judge in s.scores for s in samples):
                    per_method[f"best-of-k: {judge}"].append(
                        best_of_k([s.scores[judge] for s in samples], correct, k))
        for method, values in per_method.items():
            value, low, high = mean_interval(values)
            points.append(CurvePoint(method, k, value, low, high, len(values)))
    return points, largest


@lru_cache(maxsize=8)
def _resample_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, (resamples, n))


def mean_interval(values: list[float], resamples: int = RESAMPLES, seed: int = 0) -> tuple[float, float | None, float | None]:
    """The mean with a 95% percentile-bootstrap interval over problems (as
    `metrics.mean_interval`, resampling all at once: thousands of problems in milliseconds)."""
    array = np.asarray(values, dtype=float)
    if len(array) < 2:
        return float(array.mean()), None, None
    means = array[_resample_indices(len(array), resamples, seed)].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(array.mean()), float(low), float(high)


def fingerprint(store: Store) -> tuple:
    """Changes whenever trajectories or verdicts are added: a cache key for the curves."""
    return store.solutions_fingerprint()
