"""Agreement, calibration, ProcessBench F1, pass@k, majority vote and best-of-k, with intervals.

Sampling metrics are per problem, from the n solutions sampled for it, then averaged:

- pass@k: the unbiased estimator of the Codex paper (Chen et al., 2021),
  1 - C(n-c, k) / C(n, k), computed as a stable product.
- best-of-k by a verifier: the expected correctness of the highest-scored solution in a
  uniformly random k-subset of the n samples, computed exactly (no resampling): the subset's
  top score falls in the group of samples scoring s with probability
  [C(#scores <= s, k) - C(#scores < s, k)] / C(n, k), and a tie inside that group is broken
  uniformly at random, so the group contributes its mean correctness. With k = n this is the
  plain best-of-n; with constant scores it is pass@1.
- majority vote (maj@k): the expected correctness of the most frequent final answer in a
  random k-subset; a tie between answers is broken uniformly at random, samples without an
  answer do not vote, and a subset with no answer at all scores 0. Exact by enumerating the
  subsets while there are at most `MAJORITY_EXACT_LIMIT` of them, else the mean over that many
  random subsets (seeded).

Intervals come from resampling (`bootstrap`): percentile intervals over resampled clusters;
pass a problem id per item so that solutions of one problem are resampled together (they are
not independent draws). Cohen's kappa has statsmodels' asymptotic interval; calibration bins
have Wilson intervals.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Callable, Hashable, Sequence

import numpy as np

from core.mcpe import Counts, wilson_interval

MAJORITY_EXACT_LIMIT = 5000


# --- intervals --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    value: float | None
    low: float | None
    high: float | None
    confidence: float = 0.95
    resamples: int = 0  # resamples where the statistic was defined

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, entry: dict) -> "Interval":
        """Back from `as_dict()`, or from any dict with value, low and high (e.g. read from JSON)."""
        return cls(entry["value"], entry["low"], entry["high"],
                   entry.get("confidence", 0.95), entry.get("resamples", 0))  # fmt: skip

    def __str__(self) -> str:
        if self.value is None:
            return "n/a"
        if self.low is None:
            return f"{self.value:.3f}"
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"


def bootstrap(
    statistic: Callable[[np.ndarray], float | None],
    n_items: int,
    *,
    groups: Sequence[Hashable] | None = None,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Percentile bootstrap of `statistic(indices)` over items 0..n_items-1.

    With `groups`, whole groups are resampled (a cluster bootstrap). A resample where the
    statistic is undefined (returns None, e.g. AUROC with one class) is skipped and not counted.
    """
    value = statistic(np.arange(n_items))
    if groups is None:
        members = [np.array([i]) for i in range(n_items)]
    else:
        if len(groups) != n_items:
            raise ValueError("one group per item")
        by_group: dict = {}
        for index, group in enumerate(groups):
            by_group.setdefault(group, []).append(index)
        members = [np.array(v) for v in by_group.values()]
    rng = np.random.default_rng(seed)
    estimates = []
    for _ in range(n_resamples):
        chosen = rng.integers(0, len(members), len(members))
        estimate = statistic(np.concatenate([members[c] for c in chosen]))
        if estimate is not None and not math.isnan(estimate):
            estimates.append(estimate)
    if value is None or not estimates:
        return Interval(value, None, None, confidence, len(estimates))
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(estimates, [tail, 100 - tail])
    return Interval(float(value), float(low), float(high), confidence, len(estimates))


def mean_interval(values: Sequence[float], **options) -> Interval:
    """The mean of per-unit values (e.g. per-problem pass@k) with a bootstrap interval."""
    array = np.asarray(values, dtype=float)
    return bootstrap(lambda idx: float(array[idx].mean()) if len(idx) else None, len(array), **options)


# --- sampling metrics (per problem) -----------------------------------------------------------


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al., 2021)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def best_of_k(scores: Sequence[float], correct: Sequence[bool], k: int) -> float:
    """Expected correctness of the top-scored solution of a random k-subset (exact, ties fair)."""
    scores_array = np.asarray(scores, dtype=float)
    correct_array = np.asarray(correct, dtype=float)
    n = len(scores_array)
    if len(correct_array) != n or not 1 <= k <= n:
        raise ValueError(f"need one score per solution and 1 <= k <= n (n={n}, k={k})")
    if np.isnan(scores_array).any():
        raise ValueError("a verifier score is missing (NaN)")
    total = math.comb(n, k)
    expected = 0.0
    for score in np.unique(scores_array):
        at_or_below = int((scores_array <= score).sum())
        below = int((scores_array < score).sum())
        p_top = (math.comb(at_or_below, k) - math.comb(below, k)) / total
        if p_top:
            expected += p_top * correct_array[scores_array == score].mean()
    return float(expected)


def _vote(answers: Sequence[Hashable | None], correct: Sequence[bool]) -> float:
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return 0.0
    top = max(counts.values())
    winners = [a for a, c in counts.items() if c == top]
    right = {a for a, ok in zip(answers, correct) if a is not None and ok}
    return sum(a in right for a in winners) / len(winners)


def majority_vote(
    answers: Sequence[Hashable | None], correct: Sequence[bool], k: int | None = None, *, seed: int = 0
) -> float:
    """Expected correctness of the most frequent answer among a random k of the samples.

    `answers` are the extracted final answers (None = none), `correct` whether each sample is
    right. k = None uses all samples.
    """
    n = len(answers)
    if len(correct) != n:
        raise ValueError("one correctness flag per answer")
    k = n if k is None else k
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n (n={n}, k={k})")
    if k == n:
        return _vote(answers, correct)
    if math.comb(n, k) <= MAJORITY_EXACT_LIMIT:
        subsets = itertools.combinations(range(n), k)
        values = [_vote([answers[i] for i in s], [correct[i] for i in s]) for s in subsets]
        return float(np.mean(values))
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(MAJORITY_EXACT_LIMIT):
        s = rng.choice(n, size=k, replace=False)
        values.append(_vote([answers[i] for i in s], [correct[i] for i in s]))
    return float(np.mean(values))


# --- discrimination, agreement, calibration ---------------------------------------------------


def auroc(labels: Sequence[bool], scores: Sequence[float]) -> float | None:
    """Area under the ROC curve; None when only one class is present.

    Computed as the Mann-Whitney statistic from average ranks (scipy), which equals
    sklearn's roc_auc_score (ties count half) and is fast enough to bootstrap: roc_auc_score's
    input checks cost about 25 ms a call.
    """
    from scipy.stats import rankdata

    y = np.asarray(labels, dtype=bool)
    positives = int(y.sum())
    negatives = len(y) - positives
    if not positives or not negatives:
        return None
    ranks = rankdata(np.asarray(scores, dtype=float))
    return float((ranks[y].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def within_group_pairs(labels: Sequence[bool], scores: Sequence[float], groups: Sequence[Hashable]) -> dict:
    """Per group: (right-over-wrong wins, pairs) among its own solutions (ties count half)."""
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=float)
    g = np.asarray(groups)
    parts = {}
    for group in np.unique(g):
        mask = g == group
        right, wrong = s[mask & y], s[mask & ~y]
        diff = right[:, None] - wrong[None, :]
        parts[group.item() if hasattr(group, "item") else group] = (
            float((diff > 0).sum() + 0.5 * (diff == 0).sum()), int(diff.size))
    return parts


def within_group_auroc(labels: Sequence[bool], scores: Sequence[float], groups: Sequence[Hashable]) -> float | None:
    """AUROC over (right, wrong) pairs from the same group only (ties count half).

    For reranking, a verifier must order one problem's solutions; the plain AUROC also rewards
    telling easy problems from hard ones, which does not help best-of-k. None when no group
    has both a right and a wrong solution.
    """
    parts = within_group_pairs(labels, scores, groups).values()
    pairs = sum(p for _, p in parts)
    return sum(w for w, _ in parts) / pairs if pairs else None


def within_group_auroc_interval(labels, scores, groups, **options) -> Interval:
    """`within_group_auroc` with a bootstrap interval over groups."""
    parts = list(within_group_pairs(labels, scores, groups).values())
    wins = np.array([w for w, _ in parts])
    pairs = np.array([p for _, p in parts])
    return bootstrap(lambda idx: wins[idx].sum() / pairs[idx].sum() if pairs[idx].sum() else None,
                     len(parts), **options)  # fmt: skip


def accuracy(labels: Sequence, predictions: Sequence) -> float | None:
    a, b = np.asarray(labels), np.asarray(predictions)
    return float((a == b).mean()) if len(a) else None


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable], confidence: float = 0.95) -> Interval:
    """Cohen's kappa between two raters with statsmodels' asymptotic (normal) interval."""
    from statsmodels.stats.inter_rater import cohens_kappa

    if len(a) != len(b) or not len(a):
        raise ValueError("two equally long, non-empty rating lists")
    table = agreement_table(a, b)
    categories = table.shape[0]
    if categories == 1:
        return Interval(1.0, None, None, confidence)  # perfect agreement on one category
    from scipy.stats import norm

    result = cohens_kappa(table)
    kappa = float(result.kappa)
    if not math.isfinite(kappa):
        return Interval(None, None, None, confidence)
    # statsmodels' own bounds are fixed at 95%; its standard error serves any level. Kappa
    # lies in [-1, 1], so the normal interval is clipped there.
    half = float(norm.ppf(0.5 + confidence / 2)) * float(result.std_kappa)
    return Interval(kappa, max(-1.0, kappa - half), min(1.0, kappa + half), confidence)


def agreement_table(a: Sequence[Hashable], b: Sequence[Hashable]) -> np.ndarray:
    """Counts of (a's category, b's category), categories ordered by their text: counted set-wise
    (numpy) for arrays of numbers or booleans, item by item otherwise."""
    x, y = np.asarray(a), np.asarray(b)
    if x.dtype.kind in "biuf" and y.dtype.kind in "biuf" and x.ndim == y.ndim == 1:
        values = np.unique(np.concatenate([x, y]))
        ordered = sorted(values.tolist(), key=str)  # as `sorted(set(a) | set(b), key=str)`
        order = np.array([ordered.index(v) for v in values.tolist()])
        size = len(values)
        cells = order[np.searchsorted(values, x)] * size + order[np.searchsorted(values, y)]
        return np.bincount(cells, minlength=size * size).reshape(size, size).astype(float)
    categories = sorted(set(a) | set(b), key=str)
    index = {c: i for i, c in enumerate(categories)}
    table = np.zeros((len(categories), len(categories)))
    for p, q in zip(a, b):
        table[index[p], index[q]] += 1
    return table


@dataclass(frozen=True)
class CalibrationBin:
    low: float
    high: float
    n: int
    mean_predicted: float | None
    fraction_positive: float | None
    ci_low: float | None
    ci_high: float | None


def calibration_bins(probabilities: Sequence[float], labels: Sequence[bool], n_bins: int = 10) -> tuple[list[CalibrationBin], float]:
    """Equal-width bins over [0, 1] with Wilson intervals (core.mcpe's, statsmodels' to the last
    bit), and the expected calibration error."""
    p = np.asarray(probabilities, dtype=float)
    y = np.asarray(labels, dtype=float)
    edges = np.linspace(0, 1, n_bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1], right=False), 0, n_bins - 1)
    bins, ece = [], 0.0
    for b in range(n_bins):
        mask = which == b
        count = int(mask.sum())
        if not count:
            bins.append(CalibrationBin(float(edges[b]), float(edges[b + 1]), 0, None, None, None, None))
            continue
        positives = int(y[mask].sum())
        low, high = wilson_interval(Counts(count, positives))
        mean_p, frac = float(p[mask].mean()), positives / count
        ece += count / len(p) * abs(mean_p - frac)
        bins.append(CalibrationBin(float(edges[b]), float(edges[b + 1]), count, mean_p, frac, float(low), float(high)))
    return bins, float(ece)


@dataclass(frozen=True)
class ProcessBenchScore:
    error_accuracy: float | None  # on samples with an error: the earliest error found exactly
    correct_accuracy: float | None  # on samples without one: -1 predicted
    f1: float | None  # harmonic mean of the two
    n_error: int
    n_correct: int
    unparseable: int  # predictions that named no index (counted wrong)


def processbench_f1(predicted: Sequence[int | None], gold: Sequence[int]) -> ProcessBenchScore:
    """ProcessBench's score: gold -1 = no error, else the 0-based earliest wrong step."""
    if len(predicted) != len(gold):
        raise ValueError("one prediction per sample")
    if isinstance(predicted, np.ndarray) and predicted.dtype.kind in "iu":
        return _processbench_arrays(predicted, np.asarray(gold))
    errors = [(p, g) for p, g in zip(predicted, gold) if g != -1]
    clean = [(p, g) for p, g in zip(predicted, gold) if g == -1]
    error_acc = sum(p == g for p, g in errors) / len(errors) if errors else None
    correct_acc = sum(p == -1 for p, _ in clean) / len(clean) if clean else None
    return ProcessBenchScore(error_acc, correct_acc, _harmonic_mean(error_acc, correct_acc), len(errors), len(clean),
                             sum(p is None for p in predicted))  # fmt: skip


def _processbench_arrays(predicted: np.ndarray, gold: np.ndarray) -> ProcessBenchScore:
    """`processbench_f1` for integer arrays (every prediction names an index or -1)."""
    has_error = gold != -1
    n_error, n_correct = int(has_error.sum()), int((~has_error).sum())
    error_acc = int((predicted[has_error] == gold[has_error]).sum()) / n_error if n_error else None
    correct_acc = int((predicted[~has_error] == -1).sum()) / n_correct if n_correct else None
    return ProcessBenchScore(error_acc, correct_acc, _harmonic_mean(error_acc, correct_acc), n_error, n_correct, 0)


def _harmonic_mean(error_acc: float | None, correct_acc: float | None) -> float | None:
    """ProcessBench's F1: the harmonic mean of the two accuracies (None where either is undefined)."""
    if error_acc is None or correct_acc is None:
        return None
    if error_acc + correct_acc == 0:
        return 0.0
    return 2 * error_acc * correct_acc / (error_acc + correct_acc)


def krippendorff_alpha_counts(counts: np.ndarray, values: Sequence, metric: str = "nominal") -> float | None:
    """Krippendorff's alpha from a units x values matrix of how many raters gave each value to
    each unit (set-wise: the coincidence matrix is a matrix product). Units with fewer than two
    values are left out."""
    counts = np.asarray(counts, dtype=float)
    m = counts.sum(axis=1)
    pairable = m >= 2
    counts, m = counts[pairable], m[pairable]
    present = counts.sum(axis=0) > 0
    if present.sum() < 2:
        return None
    counts = counts[:, present]
    values = [v for v, keep in zip(values, present) if keep]
    weighted = counts / (m - 1)[:, None]
    coincidence = weighted.T @ counts - np.diag(weighted.sum(axis=0))
    totals = coincidence.sum(axis=1)
    n = totals.sum()
    delta = _alpha_distance(values, totals, metric)
    observed = (coincidence * delta).sum()
    expected = (np.outer(totals, totals) * delta).sum() / (n - 1)
    return None if expected == 0 else float(1 - observed / expected)


def krippendorff_alpha(ratings: Sequence[Sequence[float | None]], metric: str = "nominal") -> float | None:
    """Krippendorff's alpha; `ratings[u]` are the values given to unit u (None = missing).

    Metrics: nominal, ordinal, interval. Units with fewer than two values are not pairable
    and are left out, as the coefficient prescribes.
    """
    units = [[v for v in unit if v is not None and not (isinstance(v, float) and math.isnan(v))] for unit in ratings]
    values = sorted({v for u in units for v in u})
    index = {v: i for i, v in enumerate(values)}
    counts = np.zeros((len(units), len(values)))
    for row, unit in enumerate(units):  # one row a unit: how many times it got each value
        for v in unit:
            counts[row, index[v]] += 1
    return krippendorff_alpha_counts(counts, values, metric)


def _alpha_distance(values: list, totals: np.ndarray, metric: str) -> np.ndarray:
    size = len(values)
    if metric == "nominal":
        return 1.0 - np.eye(size)
    if metric == "interval":
        v = np.asarray(values, dtype=float)
        return (v[:, None] - v[None, :]) ** 2
    if metric == "ordinal":
        delta = np.zeros((size, size))
        for c in range(size):
            for k in range(size):
                lo, hi = min(c, k), max(c, k)
                delta[c, k] = (totals[lo : hi + 1].sum() - (totals[c] + totals[k]) / 2) ** 2
        return delta
    raise ValueError(f"metric is nominal, ordinal or interval, not {metric!r}")


def _weighted_vote(answers: Sequence[Hashable | None], correct: Sequence[bool], weights: Sequence[float]) -> float:
    totals: dict[Hashable, float] = {}
    for answer, weight in zip(answers, weights):
        if answer is not None:
            totals[answer] = totals.get(answer, 0.0) + float(weight)
    if not totals:
        return 0.0
    top = max(totals.values())
    winners = [a for a, total in totals.items() if math.isclose(total, top, rel_tol=1e-12, abs_tol=1e-15)]
    right = {a for a, ok in zip(answers, correct) if a is not None and ok}
    return sum(a in right for a in winners) / len(winners)


def weighted_majority_vote(
    answers: Sequence[Hashable | None], correct: Sequence[bool], weights: Sequence[float], k: int | None = None,
    *, seed: int = 0,
) -> float:  # fmt: skip
    """Expected correctness of the answer with the largest summed verifier score among a random
    k of the samples (ties shared; Math-Shepherd's and Uesato et al.'s weighted self-consistency).
    Equal weights give `majority_vote`."""
    n = len(answers)
    if len(correct) != n or len(weights) != n:
        raise ValueError("one correctness flag and one weight per answer")
    if any(math.isnan(float(w)) for w in weights):
        raise ValueError("a verifier score is missing (NaN)")
    k = n if k is None else k
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n (n={n}, k={k})")
    def vote(subset) -> float:
        return _weighted_vote([answers[i] for i in subset], [correct[i] for i in subset], [weights[i] for i in subset])

    if k == n:
        return vote(range(n))
    if math.comb(n, k) <= MAJORITY_EXACT_LIMIT:
        return float(np.mean([vote(s) for s in itertools.combinations(range(n), k)]))
    rng = np.random.default_rng(seed)
    return float(np.mean([vote(rng.choice(n, size=k, replace=False)) for _ in range(MAJORITY_EXACT_LIMIT)]))
