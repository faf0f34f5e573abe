"""Metrics against the Codex estimator, brute-force enumeration and values worked out by hand."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from core.metrics import (
    auroc,
    best_of_k,
    bootstrap,
    calibration_bins,
    cohen_kappa,
    krippendorff_alpha,
    majority_vote,
    mean_interval,
    pass_at_k,
    processbench_f1,
    within_group_auroc,
    within_group_auroc_interval,
)


def codex_pass_at_k(n: int, c: int, k: int) -> float:
    """The estimator exactly as printed in Chen et al. (2021), figure 3."""
    if n - c < k:
        return 1.0
    return 1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1))


@pytest.mark.parametrize(
    "n, c, k, expected",
    [
        (2, 1, 1, 0.5),
        (5, 2, 2, 0.7),  # 1 - C(3,2)/C(5,2) = 1 - 3/10
        (10, 0, 5, 0.0),
        (10, 10, 1, 1.0),
        (8, 1, 8, 1.0),
        (8, 3, 2, 1 - math.comb(5, 2) / math.comb(8, 2)),  # 1 - 10/28
        (100, 1, 10, 0.1),
    ],
)
def test_pass_at_k_known_cases(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)
    assert pass_at_k(n, c, k) == pytest.approx(codex_pass_at_k(n, c, k), abs=1e-12)


def test_pass_at_k_matches_codex_and_combinatorics_everywhere():
    for n in range(1, 13):
        for c in range(n + 1):
            for k in range(1, n + 1):
                exact = 1 - math.comb(n - c, k) / math.comb(n, k)
                assert pass_at_k(n, c, k) == pytest.approx(codex_pass_at_k(n, c, k), abs=1e-12)
                assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)


def test_pass_at_k_rejects_impossible_counts():
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def brute_best_of_k(scores, correct, k):
    """Every k-subset, ties inside the subset's top score broken uniformly."""
    values = []
    for subset in itertools.combinations(range(len(scores)), k):
        top = max(scores[i] for i in subset)
        tied = [i for i in subset if scores[i] == top]
        values.append(np.mean([correct[i] for i in tied]))
    return float(np.mean(values))


def test_best_of_k_hand_computed():
    # Scores 0.9 (wrong), 0.5 (right), 0.1 (right). Subsets of 2: {.9,.5} -> wrong,
    # {.9,.1} -> wrong, {.5,.1} -> right: 1/3. Best of 3 picks 0.9: wrong. Best of 1: 2/3.
    scores, correct = [0.9, 0.5, 0.1], [False, True, True]
    assert best_of_k(scores, correct, 2) == pytest.approx(1 / 3)
    assert best_of_k(scores, correct, 3) == 0.0
    assert best_of_k(scores, correct, 1) == pytest.approx(2 / 3)
    # A perfect verifier turns best-of-k into pass@k; a constant one into pass@1.
    assert best_of_k([0.1, 0.9, 0.8, 0.2], [0, 1, 1, 0], 2) == pytest.approx(pass_at_k(4, 2, 2))
    assert best_of_k([0.5] * 4, [0, 1, 1, 0], 3) == pytest.approx(0.5)


def test_best_of_k_with_ties_matches_enumeration():
    rng = np.random.default_rng(0)
    for _ in range(60):
        n = int(rng.integers(1, 9))
        scores = rng.integers(0, 3, n).astype(float).tolist()  # many ties
        correct = rng.integers(0, 2, n).tolist()
        for k in range(1, n + 1):
            assert best_of_k(scores, correct, k) == pytest.approx(brute_best_of_k(scores, correct, k))


def test_majority_vote_hand_computed():
    answers = ["7", "7", "8", None]
    correct = [True, True, False, False]
    assert majority_vote(answers, correct) == 1.0
    # A 1-1 tie between a right and a wrong answer is worth half.
    assert majority_vote(["7", "8"], [True, False]) == 0.5
    # All four 2-subsets of ("1", "2", "2"): {1,2} tie -> 1/2, {1,2} -> 1/2, {2,2} -> 0. Mean 1/3.
    assert majority_vote(["1", "2", "2"], [True, False, False], 2) == pytest.approx(1 / 3)
    # No answers at all scores 0; None never wins against an answer.
    assert majority_vote([None, None], [False, False]) == 0.0
    assert majority_vote([None, None, "5"], [False, False, True]) == 1.0
    # maj@1 is pass@1.
    assert majority_vote(["3", "4", "3", "5"], [1, 0, 1, 0], 1) == pytest.approx(0.5)


def test_auroc_hand_computed():
    # Positives 0.8, 0.4; negatives 0.6, 0.2: pairs (.8>.6) (.8>.2) (.4<.6) (.4>.2) -> 3/4.
    assert auroc([1, 1, 0, 0], [0.8, 0.4, 0.6, 0.2]) == pytest.approx(0.75)
    assert auroc([1, 0], [0.5, 0.5]) == pytest.approx(0.5)  # a tie counts half
    assert auroc([1, 1], [0.1, 0.2]) is None


def test_auroc_equals_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(2)
    for _ in range(20):
        labels = rng.integers(0, 2, 40)
        scores = rng.integers(0, 6, 40) / 5  # many ties
        if labels.min() != labels.max():
            assert auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))


def test_within_group_auroc_ignores_pairs_across_problems():
    # Problem a: right 0.9 > wrong 0.8. Problem b: right 0.2 < wrong 0.3. Across problems the
    # scores separate easy from hard (plain AUROC 0.5 here), within them it is 1 of 2 pairs.
    labels = [1, 0, 1, 0]
    scores = [0.9, 0.8, 0.2, 0.3]
    groups = ["a", "a", "b", "b"]
    assert within_group_auroc(labels, scores, groups) == pytest.approx(0.5)
    assert within_group_auroc([1, 0, 1, 0], [0.9, 0.1, 0.3, 0.2], groups) == 1.0
    assert within_group_auroc([1, 1, 0, 0], [0.9, 0.1, 0.3, 0.2], groups) is None
    interval = within_group_auroc_interval([1, 0, 1, 0], [0.9, 0.1, 0.3, 0.2], groups, n_resamples=200)
    assert interval.value == 1.0 and interval.low == 1.0 == interval.high


def test_bootstrap_interval_covers_the_mean_and_resamples_whole_groups():
    rng = np.random.default_rng(1)
    values = rng.normal(0.3, 0.1, 400)
    interval = mean_interval(values, n_resamples=500)
    assert interval.low < 0.3 < interval.high and interval.high - interval.low < 0.05
    # Ten groups of identical values: a cluster bootstrap sees 10 units, not 100, so its
    # interval is wider than the item-level one.
    grouped = np.repeat(rng.normal(0, 1, 10), 10)
    stat = lambda idx: float(grouped[idx].mean())  # noqa: E731
    items = bootstrap(stat, 100, n_resamples=500)
    clusters = bootstrap(stat, 100, groups=np.repeat(np.arange(10), 10).tolist(), n_resamples=500)
    assert clusters.high - clusters.low > 2 * (items.high - items.low)
    # An undefined statistic is skipped, not counted.
    labels = np.array([1, 0, 0, 0, 0, 0])
    auc = bootstrap(lambda idx: auroc(labels[idx], np.arange(6)[idx]), 6, n_resamples=200)
    assert auc.resamples < 200 and auc.value == 0.0


def test_cohen_kappa_hand_computed():
    # Table [[2, 0], [1, 2]]: p_o = 4/5, p_e = (2*3 + 3*2)/25 = 12/25, kappa = (0.8-0.48)/0.52.
    interval = cohen_kappa([1, 1, 0, 0, 0], [1, 1, 1, 0, 0])
    assert interval.value == pytest.approx((0.8 - 0.48) / 0.52)
    assert -1 <= interval.low < interval.value < interval.high <= 1
    assert cohen_kappa([1, 0, 1], [1, 0, 1]).value == pytest.approx(1.0)


def test_calibration_bins_and_ece():
    probabilities = [0.05, 0.15, 0.95, 0.85, 0.9]
    labels = [0, 1, 1, 1, 0]
    bins, ece = calibration_bins(probabilities, labels, n_bins=2)
    assert [b.n for b in bins] == [2, 3]
    assert bins[0].mean_predicted == pytest.approx(0.1) and bins[0].fraction_positive == 0.5
    assert bins[1].fraction_positive == pytest.approx(2 / 3)
    assert ece == pytest.approx(2 / 5 * 0.4 + 3 / 5 * abs(0.9 - 2 / 3))
    assert bins[0].ci_low < 0.5 < bins[0].ci_high


def test_processbench_f1_hand_computed():
    gold = [2, 0, 1, -1, -1, -1]
    predicted = [2, 1, None, -1, -1, 0]  # 1 of 3 errors found exactly; 2 of 3 clean ones right
    score = processbench_f1(predicted, gold)
    assert score.error_accuracy == pytest.approx(1 / 3)
    assert score.correct_accuracy == pytest.approx(2 / 3)
    assert score.f1 == pytest.approx(2 * (1 / 3) * (2 / 3) / (1 / 3 + 2 / 3))
    assert (score.n_error, score.n_correct, score.unparseable) == (3, 3, 1)
    assert processbench_f1([-1], [-1]).f1 is None  # no erroneous samples: undefined


def test_krippendorff_alpha_matches_krippendorffs_worked_example():
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability": 4 observers, 12 units.
    N = None
    observers = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, N, N, N],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, N, 3],
        [N, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, N],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, N],
    ]
    units = list(zip(*observers))
    assert krippendorff_alpha(units, "nominal") == pytest.approx(0.743, abs=5e-4)
    assert krippendorff_alpha(units, "ordinal") == pytest.approx(0.815, abs=5e-4)
    assert krippendorff_alpha(units, "interval") == pytest.approx(0.849, abs=5e-4)
