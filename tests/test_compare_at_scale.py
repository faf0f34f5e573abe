"""Compare and Best-of-N computed set-wise (issue 22) show the same numbers as the row-by-row code
they replaced: on a seeded store (two annotators plus a third on a few steps, edited labels, MC
rollouts, a judge with re-scored and empty verdicts, a PRM that missed some steps, outcome judges
and policy samples), every figure of the old functions, copied below as the reference, equals
the new one to 1e-9.
"""

from __future__ import annotations

import math
import random
import threading
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pytest

from core import metrics
from core.formats.labels import agreed_label, majority_label, parse_label_source, resolve_label_source
from core.prm import AGGREGATIONS, prm_judges, solution_scores
from core.prm_training import consensus_labels
from core.splits import problem_split
from core.store import Store
from core.views import best_of_n as bon
from core.views import compare as cmp
from core.views import latents as lat
from core.views import prm as prm_view

POLICY = "pol"
TOL = 1e-9


# --- the seeded store ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    rng = random.Random(22)
    store = Store.open(tmp_path_factory.mktemp("scale") / "seeded.db")
    judge_rows, prm_rows, outcome_rows, rollouts = [], [], [], []
    for p in range(8):
        problem = store.add_problem("cmp", f"Seeded question {p}: what is {p} + {p}?", str(2 * p))
        for t in range(5):
            steps = rng.randint(3, 6)
            answer = rng.choice([str(2 * p), str(2 * p), str(2 * p + 1), str(2 * p + 2), None])
            text = "\n".join([f"Step {k} of try {t} on {p}." for k in range(steps - 1)] + [f"The answer is {answer}."])
            tid = store.add_trajectory(problem, text, source="policy", model=POLICY, final_answer=answer,
                                       correct=answer == str(2 * p))  # fmt: skip
            ids = [s["id"] for s in store.steps(tid)]
            for k, sid in enumerate(ids):
                a = rng.choice([-1, 0, 1, 1, 1])
                store.add_annotation("A", sid, rating=a, first_error=a == -1, confidence=rng.choice([None, 1, 2, 3, 4, 5]),
                                     dwell_ms=rng.choice([None, 400, 1200, 3000, rng.randint(100, 9000)]),
                                     category=rng.choice([None, "arithmetic", "logic"]) if a == -1 else None)  # fmt: skip
                if t % 2 == 0 and not (p == 3 and k == 1):  # B skips one step: a gap
                    b = a if rng.random() < 0.7 else rng.choice([-1, 0, 1])
                    store.save_annotation("B", sid, rating=b, confidence=rng.choice([None, 2, 4]))
                    edit = rng.random()
                    if edit < 0.2:  # an edit: the first label differs from the final one
                        store.save_annotation("B", sid, rating=rng.choice([-1, 0, 1]))
                    elif edit < 0.25:  # cleared: B no longer rates the step
                        store.save_annotation("B", sid, rating=None)
                if p < 2 and k < 2:
                    store.add_annotation("C", sid, rating=rng.choice([-1, 1]))
                if (p + t) % 3:
                    n = rng.randint(1, 6)
                    rollouts += [{"step_id": sid, "text": "x", "correct": rng.random() < 0.6, "model": POLICY}
                                 for _ in range(n)]  # fmt: skip
                if not (p == 5 and k == 0):
                    judge_rows.append({"trajectory_id": tid, "step_id": sid, "judge": "jj", "kind": "step",
                                       "p_yes": rng.choice([0.5, round(rng.random(), 3), rng.random()])})  # fmt: skip
                if k == 1 and t == 0:  # re-scored: the later verdict wins; one is empty
                    judge_rows.append({"trajectory_id": tid, "step_id": sid, "judge": "jj", "kind": "step",
                                       "p_yes": None if p == 2 else rng.random()})  # fmt: skip
                if not (t == 4 and k == steps - 1):  # the PRM missed the last step of some tries
                    prm_rows.append({"trajectory_id": tid, "step_id": sid, "judge": "pp", "kind": "step",
                                     "p_yes": rng.choice([0.0, 0.5, rng.random(), rng.random()])})  # fmt: skip
            outcome_rows.append({"trajectory_id": tid, "judge": "oj", "kind": "outcome", "p_yes": rng.choice([0.5, rng.random()])})
            if t != 3:
                outcome_rows.append({"trajectory_id": tid, "judge": "oj2", "kind": "outcome", "p_yes": rng.random()})
    store.add_rollouts(rollouts)
    store.add_verdicts(judge_rows, verifier_kind="judge")
    store.add_verdicts(prm_rows, verifier_kind="prm")
    store.add_verdicts(outcome_rows, verifier_kind="judge")
    return store


# --- the reference: the row-by-row code before issue 22 -------------------------------------------


@dataclass(frozen=True)
class OldStep:
    step_id: int
    trajectory_id: int
    idx: int
    ratings: dict
    first_errors: frozenset


def old_labelled_steps(store, dataset=None, first=False):
    grouped = {}
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
    return [OldStep(s, t, i, r, frozenset(f)) for s, (t, i, r, f) in grouped.items()]


def old_human_label(step, who):
    if who in ("majority", "consensus"):
        votes = [r >= 0 for r in step.ratings.values()]
        return (majority_label if who == "majority" else agreed_label)(votes)
    rating = step.ratings.get(who)
    return None if rating is None else rating >= 0


def old_scores(store, steps, source, policy):
    ids = [s.step_id for s in steps]
    parsed = parse_label_source(source, threshold=0.5)
    if parsed.kind in ("mc-hard", "mc-soft"):
        wanted = set(ids)
        counts = store.rated_step_rollout_counts(policy)
        return {sid: c / n for sid, (n, c) in counts.items() if n and sid in wanted}
    return store.latest_step_p_yes(resolve_label_source(store, parsed).name, ids)


def old_predicted(source, score, threshold):
    if source == "mc-hard":
        return score > 0
    return score >= (threshold if cmp.uses_threshold(source) else 0.5)


def old_kappa(a, b):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return old_cohen_kappa(a, b)


def old_cohen_kappa(a, b, confidence=0.95):
    from scipy.stats import norm
    from statsmodels.stats.inter_rater import cohens_kappa

    categories = sorted(set(a) | set(b), key=str)
    index = {c: i for i, c in enumerate(categories)}
    table = np.zeros((len(categories), len(categories)))
    for x, y in zip(a, b):
        table[index[x], index[y]] += 1
    if len(categories) == 1:
        return metrics.Interval(1.0, None, None, confidence)
    result = cohens_kappa(table)
    kappa = float(result.kappa)
    if not math.isfinite(kappa):
        return metrics.Interval(None, None, None, confidence)
    half = float(norm.ppf(0.5 + confidence / 2)) * float(result.std_kappa)
    return metrics.Interval(kappa, max(-1.0, kappa - half), min(1.0, kappa + half), confidence)


def old_processbench(pairs):
    by_trajectory = defaultdict(list)
    for step, h, a, _ in pairs:
        by_trajectory[step.trajectory_id].append((step.idx, h, a))
    gold, guess = [], []
    for items in by_trajectory.values():
        items.sort()
        if [i for i, _, _ in items] != list(range(len(items))):
            continue
        gold.append(next((i for i, h, _ in items if not h), -1))
        guess.append(next((i for i, _, a in items if not a), -1))
    return metrics.processbench_f1(guess, gold) if gold else None


def old_compare(store, steps, source, human, policy, threshold=0.5):
    values = old_scores(store, steps, source, policy)
    pairs, missing = [], 0
    for step in steps:
        label = old_human_label(step, human)
        if label is None:
            continue
        if step.step_id not in values:
            missing += 1
            continue
        score = values[step.step_id]
        pairs.append((step, label, old_predicted(source, score, threshold), score))
    out = {"n": len(pairs), "missing": missing}
    if not pairs:
        return out
    humans, autos = [p[1] for p in pairs], [p[2] for p in pairs]
    out["accuracy"] = metrics.accuracy(humans, autos)
    out["kappa"] = old_kappa(humans, autos)
    out["auroc"] = metrics.auroc(humans, [p[3] for p in pairs])
    out["confusion"] = {(h, a): sum(1 for x, y in zip(humans, autos) if (x, y) == (h, a))
                        for h in (True, False) for a in (True, False)}  # fmt: skip
    out["calibration"], out["ece"] = metrics.calibration_bins([p[3] for p in pairs], humans)
    by_idx = defaultdict(list)
    for step, h, a, _ in pairs:
        by_idx[step.idx].append(h == a)
    out["by_position"] = [{"step": i, "n": len(x), "accuracy": sum(x) / len(x)} for i, x in sorted(by_idx.items())]
    out["processbench"] = old_processbench(pairs)
    out["disagreements"] = [
        {"trajectory": s.trajectory_id, "step": s.idx, "human": "fine" if h else "wrong",
         "automatic": "fine" if a else "wrong", "score": round(score, 3),
         "explore": f"/?trajectory={s.trajectory_id}&step={s.idx}"}
        for s, h, a, score in pairs if h != a
    ]  # fmt: skip
    return out


def old_krippendorff_alpha(ratings, metric="ordinal"):
    import itertools

    units = [list(u) for u in ratings if len(u) >= 2]
    values = sorted({v for u in units for v in u})
    if len(values) < 2:
        return None
    index = {v: i for i, v in enumerate(values)}
    coincidence = np.zeros((len(values), len(values)))
    for unit in units:
        m = len(unit)
        for i, j in itertools.permutations(range(m), 2):
            coincidence[index[unit[i]], index[unit[j]]] += 1 / (m - 1)
    totals = coincidence.sum(axis=1)
    n = totals.sum()
    delta = metrics._alpha_distance(values, totals, metric)
    observed = (coincidence * delta).sum()
    expected = (np.outer(totals, totals) * delta).sum() / (n - 1)
    return None if expected == 0 else float(1 - observed / expected)


def old_inter_annotator(steps):
    names = sorted({name for s in steps for name in s.ratings})
    pairs = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            both = [(s.ratings[a], s.ratings[b]) for s in steps if a in s.ratings and b in s.ratings]
            if both:
                kappa = old_kappa([x for x, _ in both], [y for _, y in both])
                pairs.append({"a": a, "b": b, "steps": len(both), "kappa": kappa.value, "low": kappa.low,
                              "high": kappa.high})  # fmt: skip
    units = [list(s.ratings.values()) for s in steps if len(s.ratings) >= 2]
    return pairs, (old_krippendorff_alpha(units) if units else None), len(units)


def old_first_error_cases(store, steps, source, human):
    values = old_scores(store, steps, source, policy="")
    by_trajectory = defaultdict(list)
    for step in steps:
        label = old_human_label(step, human)
        if label is not None and step.step_id in values:
            by_trajectory[step.trajectory_id].append((step.idx, label, values[step.step_id]))
    cases = []
    for trajectory_id, items in sorted(by_trajectory.items()):
        items.sort()
        if [i for i, _, _ in items] != list(range(len(items))):
            continue
        split = problem_split(store.get_problem(store.get_trajectory(trajectory_id)["problem_id"]))
        cases.append({"trajectory_id": trajectory_id, "gold": next((i for i, ok, _ in items if not ok), -1),
                      "scores": [s for _, _, s in items], "split": split})  # fmt: skip
    return cases


def old_processbench_at(cases, threshold):
    if not cases:
        return None
    first = [next((i for i, s in enumerate(c["scores"]) if s < threshold), -1) for c in cases]
    return metrics.processbench_f1(first, [c["gold"] for c in cases])


def old_choose_threshold(cases):
    by_split = {split: [c for c in cases if c["split"] == split] for split in ("train", "test")}
    rows, train_f1 = [], {}
    for threshold in prm_view.THRESHOLDS:
        for split, chosen in by_split.items():
            score = old_processbench_at(chosen, threshold)
            if score is None:
                continue
            rows.append({"threshold": threshold, "split": split, "f1": score.f1,
                         "error_accuracy": score.error_accuracy, "correct_accuracy": score.correct_accuracy})  # fmt: skip
            if split == "train" and score.f1 is not None:
                train_f1[threshold] = score.f1
    best = max(train_f1, key=lambda t: (train_f1[t], -abs(t - 0.5))) if train_f1 else None
    return (best, old_processbench_at(by_split["train"], best) if best is not None else None,
            old_processbench_at(by_split["test"], best) if best is not None else None, rows,
            {split: len(chosen) for split, chosen in by_split.items()})  # fmt: skip


def old_outcome_rows(store, dataset=None):
    rows = []
    for prm in prm_judges(store):
        for aggregation in AGGREGATIONS:
            solved = solution_scores(store, prm, aggregation, dataset=dataset)
            graded = [(score, bool(store.get_trajectory(t)["correct"])) for t, score in solved.items()
                      if store.get_trajectory(t)["correct"] is not None]  # fmt: skip
            labels, values = [ok for _, ok in graded], [score for score, _ in graded]
            rows.append({"PRM": prm, "aggregation": aggregation, "solutions": len(graded), "right answers": sum(labels),
                         "AUROC": metrics.auroc(labels, values) if graded else None,
                         "accuracy at 0.5": metrics.accuracy(labels, [v >= 0.5 for v in values]) if graded else None})
    return rows


def old_agreement_kept(store, source, policy):
    judge = resolve_label_source(store, source).name
    trajectory_ids = sorted(store.step_scores_by_trajectory(judge))
    # Compare's figure is over sampled MC labels (issue 24: training also takes implied ones by default).
    labels = consensus_labels(store, trajectory_ids, judge, policy, sampled_only=True)
    return labels.kept_fraction, labels.compared


def old_best_of_k(scores, correct, k):
    total = math.comb(len(scores), k)
    by_score = defaultdict(list)
    for score, ok in zip(scores, correct):
        by_score[score].append(ok)
    expected, below = 0.0, 0
    for score in sorted(by_score):
        group = by_score[score]
        at_or_below = below + len(group)
        expected += (math.comb(at_or_below, k) - math.comb(below, k)) / total * sum(group) / len(group)
        below = at_or_below
    return expected


@lru_cache(maxsize=4096)
def _old_majority(answers, correct, k):
    return metrics.majority_vote(list(answers), list(correct), k)


def old_majority_vote(answers, correct, k):
    names = {}
    pattern = tuple(None if a is None else names.setdefault(a, len(names)) for a in answers)
    return _old_majority(pattern, tuple(bool(c) for c in correct), k)


def old_mean_interval(values, resamples=1000, seed=0):
    array = np.asarray(values, dtype=float)
    if len(array) < 2:
        return float(array.mean()), None, None
    means = array[np.random.default_rng(seed).integers(0, len(array), (resamples, len(array)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(array.mean()), float(low), float(high)


def old_curves(groups, max_k=None, verifiers=None, weighted=()):
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
    for k in bon.k_values(largest):
        per_method = defaultdict(list)
        for samples in usable:
            correct = [s.correct for s in samples]
            per_method["pass@k"].append(metrics.pass_at_k(len(samples), sum(correct), k))
            per_method["majority vote"].append(old_majority_vote([s.answer for s in samples], correct, k))
            for judge in judges:
                if all(judge in s.scores for s in samples):
                    per_method[f"best-of-k: {judge}"].append(old_best_of_k([s.scores[judge] for s in samples], correct, k))
        for method, values in per_method.items():
            points.append((method, k, *old_mean_interval(values), len(values)))
    for verifier in weighted:
        scored = [samples for samples in usable if all(verifier in s.scores for s in samples)]
        for k in bon.k_values(largest) if scored else []:
            values = [metrics.weighted_majority_vote([s.answer for s in samples], [s.correct for s in samples],
                                                     [s.scores[verifier] for s in samples], k) for samples in scored]
            points.append((f"weighted vote: {verifier}", k, *old_mean_interval(values), len(values)))
    return points, largest


# --- comparisons --------------------------------------------------------------------------------


def close(a, b) -> bool:
    """Equal to 1e-9, through dicts, lists, tuples and dataclasses."""
    if hasattr(a, "__dataclass_fields__"):
        a = {f: getattr(a, f) for f in a.__dataclass_fields__}
    if hasattr(b, "__dataclass_fields__"):
        b = {f: getattr(b, f) for f in b.__dataclass_fields__}
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b))
    if a is None or b is None or isinstance(a, str) or isinstance(b, str):
        return a == b
    return math.isclose(float(a), float(b), rel_tol=0, abs_tol=TOL) or (math.isnan(float(a)) and math.isnan(float(b)))


SOURCES = ("mc-soft", "mc-hard", "judge:jj", "prm:pp")
HUMANS = ("A", "B", "C", "majority", "consensus")


def test_the_seeded_store_has_what_the_comparison_needs(store):
    assert cmp.source_names(store) == list(SOURCES)
    steps = cmp.labelled_steps(store)
    assert cmp.annotator_names(steps) == ["A", "B", "C"] and len(steps) > 100
    final, first = old_labelled_steps(store), old_labelled_steps(store, first=True)
    assert sum(a.ratings != b.ratings for a, b in zip(final, first)) >= 5  # edited labels


@pytest.mark.parametrize("first", [False, True])
def test_labelled_steps_and_human_labels_equal_the_row_by_row_ones(store, first):
    old = old_labelled_steps(store, first=first)
    new = cmp.labelled_steps(store, first=first)
    assert [(s.step_id, s.trajectory_id, s.idx, s.ratings, s.first_errors) for s in old] == \
        [(s.step_id, s.trajectory_id, s.idx, s.ratings, s.first_errors) for s in new]  # fmt: skip
    for who in HUMANS:
        known, fine = cmp.human_labels(new, who)
        assert [None if not k else bool(f) for k, f in zip(known, fine)] == [old_human_label(s, who) for s in old]


@pytest.mark.parametrize("first", [False, True])
@pytest.mark.parametrize("threshold", [0.5, 0.3])
def test_every_compare_figure_equals_the_row_by_row_one(store, first, threshold):
    old_steps, steps = old_labelled_steps(store, first=first), cmp.labelled_steps(store, first=first)
    for source in SOURCES:
        for human in HUMANS:
            old = old_compare(store, old_steps, source, human, POLICY, threshold)
            new = cmp.compare(store, steps, source, human, POLICY, threshold)
            assert (new.n, new.missing) == (old["n"], old["missing"]), (source, human)
            if not old["n"]:
                continue
            assert close(new.accuracy, old["accuracy"]) and close(new.auroc, old["auroc"]), (source, human)
            assert close(new.kappa, old["kappa"]), (source, human)
            assert new.confusion == old["confusion"]
            assert close(new.calibration, old["calibration"]) and close(new.ece, old["ece"])
            assert close(new.by_position, old["by_position"])
            assert close(new.processbench, old["processbench"]), (source, human)
            assert new.disagreement_count == len(old["disagreements"])
            assert close(new.disagreements, old["disagreements"][: cmp.DISAGREEMENTS_SHOWN])
    pairs, alpha, units = old_inter_annotator(old_steps)
    agreement = cmp.inter_annotator(steps)
    assert close(agreement.pairs, pairs) and close(agreement.alpha, alpha) and agreement.units == units
    rows = prm_view.step_level_rows(store, steps, "majority", POLICY, threshold)
    for row in rows:
        old = old_compare(store, old_steps, row["source"], "majority", POLICY, threshold)
        assert close(row["accuracy"], old["accuracy"]) and close(row["AUROC"], old["auroc"])
        assert close(row["ProcessBench F1"], old["processbench"].f1 if old["processbench"] else None)


@pytest.mark.parametrize("human", HUMANS)
def test_the_prm_threshold_equals_the_row_by_row_choice(store, human):
    old_steps, steps = old_labelled_steps(store), cmp.labelled_steps(store)
    for source in ("prm:pp", "judge:jj"):
        old_cases = old_first_error_cases(store, old_steps, source, human)
        assert close(prm_view.first_error_cases(store, steps, source, human), old_cases)
        best, train, test, rows, counts = old_choose_threshold(old_cases)
        choice = prm_view.threshold_choice(store, steps, source, human)
        assert choice.threshold == best and choice.trajectories == counts
        assert close(choice.train, train) and close(choice.test, test) and close(choice.rows, rows)
        assert close(prm_view.choose_threshold(old_cases), choice)


def test_agreement_fraction_and_outcome_rows_equal_the_row_by_row_ones(store):
    for source in ("judge:jj", "prm:pp"):
        kept = prm_view.agreement_kept(store, source, POLICY)
        assert close((kept.kept_fraction, kept.compared), old_agreement_kept(store, source, POLICY))
    assert close(prm_view.outcome_rows(store), old_outcome_rows(store))
    assert close(prm_view.outcome_rows(store, "cmp"), old_outcome_rows(store, "cmp"))


def test_latents_equal_the_row_by_row_ones(store):
    old_rows = store.label_latents(None)
    new = lat.latent_rows(store, "judge:jj", POLICY, 0.5)
    assert len(new) == len(old_rows)
    scores = old_scores(store, [type("S", (), {"step_id": r["step_id"]})() for r in old_rows], "judge:jj", POLICY)
    for row, old in zip((new[i] for i in range(len(new))), old_rows):
        assert (row.annotator, row.step_id, row.idx, row.n_steps, row.rating, row.confidence, row.category) == \
            (old["annotator"], old["step_id"], old["idx"], old["n_steps"], old["rating"], old["confidence"],
             old["category"])  # fmt: skip
        expected = None if old["step_id"] not in scores else (scores[old["step_id"]] >= 0.5) == (old["rating"] >= 0)
        assert row.agrees == expected
    assert lat.by_confidence(new) and lat.by_dwell(new) and lat.per_annotator(new, []) and lat.categories_by_position(new)


@pytest.mark.parametrize("max_k", [None, 2, 3])
def test_best_of_n_curves_equal_the_row_by_row_ones(store, max_k):
    groups = bon.samples_by_problem(store, POLICY, "cmp")
    groups = prm_view.with_prm_scores(store, groups, AGGREGATIONS, "cmp")
    table = prm_view.with_prm_scores(store, bon.sample_table(store, POLICY, "cmp"), AGGREGATIONS, "cmp")
    assert bon.judges_of(table) == bon.judges_of(groups)
    verifiers = bon.judges_of(groups)
    old_points, old_largest = old_curves(groups, max_k, verifiers, weighted=verifiers)
    for source in (groups, table):
        points, largest = prm_view.curves_with_weighted_vote(source, max_k, verifiers, verifiers)
        assert largest == old_largest
        assert [p.method for p in points] == [p[0] for p in old_points]
        assert close([(p.method, p.k, p.value, p.low, p.high, p.problems) for p in points], old_points)


def test_best_of_k_and_votes_on_random_problems_equal_the_scalar_ones():
    """Ties, missing answers, sizes up to where the votes sample subsets (C(n, k) > 5000)."""
    rng = random.Random(7)
    groups = {}
    for p in range(60):
        n = rng.choice([2, 3, 5, 8, 16])
        groups[p] = [bon.Sample(1000 * p + i, rng.choice(["1", "2", "3", None]), rng.random() < 0.5,
                                {"v": rng.choice([0.1, 0.5, 0.5, rng.random()]), **({"w": rng.random()} if p % 3 else {})})
                     for i in range(n)]  # fmt: skip
    old_points, _ = old_curves(groups, None, ["v", "w"], weighted=["v", "w"])
    points, _ = prm_view.curves_with_weighted_vote(groups, None, ["v", "w"], ["v", "w"])
    assert close([(p.method, p.k, p.value, p.low, p.high, p.problems) for p in points], old_points)
    big = {p: s for p, s in groups.items() if len(s) == 16}
    old_points, _ = old_curves(big, None, ["v"], weighted=["v"])
    points, _ = prm_view.curves_with_weighted_vote(big, None, ["v"], ["v"])
    assert close([(p.method, p.k, p.value, p.low, p.high, p.problems) for p in points], old_points)


# Explore's "labels disagree" filter before issue 22: correlated tests driven from every annotation.
_OLD_HUMAN_FINE = "(a.rating >= 0)"
_OLD_DISAGREE_SQL = {
    "mc-hard": """((a.rating < 0 AND EXISTS (SELECT 1 FROM rollouts r WHERE r.step_id = s.id AND r.model IS ?
                                           AND r.correct = 1))
                  OR (a.rating >= 0 AND EXISTS (SELECT 1 FROM rollouts r WHERE r.step_id = s.id AND r.model IS ?)
                      AND NOT EXISTS (SELECT 1 FROM rollouts r WHERE r.step_id = s.id AND r.model IS ?
                                      AND r.correct = 1)))""",
    "judge": f"""EXISTS (SELECT 1 FROM verdicts v WHERE v.step_id = s.id AND v.kind = 'step'
                 AND v.p_yes IS NOT NULL AND (v.p_yes >= 0.5) != {_OLD_HUMAN_FINE}
                 AND v.id = (SELECT MAX(w.id) FROM verdicts w WHERE w.step_id = s.id AND w.kind = 'step'
                             AND w.judge = v.judge AND w.p_yes IS NOT NULL))""",
    "annotators": f"""EXISTS (SELECT 1 FROM annotations b WHERE b.step_id = s.id AND b.rating IS NOT NULL
                      AND (b.rating >= 0) != {_OLD_HUMAN_FINE})""",
}


@pytest.mark.parametrize("kind", ["anything", "mc-hard", "judge", "annotators"])
def test_the_disagreement_filter_finds_the_trajectories_the_correlated_one_did(store, kind):
    from core.store import TrajectoryFilter

    kinds = ["mc-hard", "judge", "annotators"] if kind == "anything" else [kind]
    tests = " OR ".join(_OLD_DISAGREE_SQL[k] for k in kinds)
    params = [POLICY] * 3 if "mc-hard" in kinds else []
    old = [row[0] for row in store.conn.execute(
        f"""SELECT t.id FROM trajectories t WHERE t.id IN (
                SELECT s.trajectory_id FROM annotations a JOIN steps s ON s.id = a.step_id
                JOIN trajectories u ON u.id = s.trajectory_id AND u.current_segmentation_id = s.segmentation_id
                WHERE a.rating IS NOT NULL AND ({tests})) ORDER BY t.id""", params)]  # fmt: skip
    filters = TrajectoryFilter(disagree=kind, policy=POLICY)
    assert 0 < len(old) and store.count_matching_trajectories(filters) == len(old)
    assert [row["id"] for row in store.find_trajectories(filters, limit=1000)] == old
    assert store.neighbour_trajectory(filters, old[0], 1) == (old[1] if len(old) > 1 else None)


def test_the_data_version_changes_with_every_label_and_the_filter_follows(tmp_path):
    from core.store import TrajectoryFilter

    store = Store.open(tmp_path / "version.db")
    problem = store.add_problem("v", "Q?", "1")
    tid = store.add_trajectory(problem, "One.\nTwo.", source="policy", model=POLICY, final_answer="1", correct=True)
    first, second = [s["id"] for s in store.steps(tid)]
    filters = TrajectoryFilter(disagree="annotators")
    versions = [store.labels_fingerprint()]
    store.save_annotation("A", first, rating=1)
    versions.append(store.labels_fingerprint())
    assert store.count_matching_trajectories(filters) == 0
    store.save_annotation("B", first, rating=-1)  # now they disagree
    versions.append(store.labels_fingerprint())
    assert store.count_matching_trajectories(filters) == 1
    store.save_annotation("B", first, rating=1)  # an edit: they agree again
    versions.append(store.labels_fingerprint())
    assert store.count_matching_trajectories(filters) == 0
    store.add_rollouts([{"step_id": second, "text": "x", "correct": True, "model": POLICY}])
    versions.append(store.labels_fingerprint())
    store.add_verdicts([{"trajectory_id": tid, "step_id": second, "judge": "jj", "kind": "step", "p_yes": 0.4}])
    versions.append(store.labels_fingerprint())
    solutions = store.solutions_fingerprint()
    with store.transaction() as conn:  # an undone import removes its newest rows by id...
        conn.execute("DELETE FROM verdicts WHERE id = (SELECT MAX(id) FROM verdicts)")
    versions.append(store.labels_fingerprint())
    store.add_verdicts([{"trajectory_id": tid, "step_id": second, "judge": "jj", "kind": "step", "p_yes": 0.9}])
    versions.append(store.labels_fingerprint())  # ...and the same largest id again is another version
    assert len(set(versions)) == len(versions) and store.solutions_fingerprint() != solutions


def test_results_kept_beside_the_database_follow_the_data_version_and_refuse_forged_entries(tmp_path):
    from core.store.disk_cache import folder, remembered

    store = Store.open(tmp_path / "kept.db")
    calls = []

    def compute():
        calls.append(1)
        return {"figure": len(calls)}

    assert remembered(store, "x", ("a",), (1,), compute) == {"figure": 1}
    again = Store.open(tmp_path / "kept.db")  # another process's store: nothing in memory
    assert remembered(again, "x", ("a",), (1,), compute) == {"figure": 1} and len(calls) == 1
    assert remembered(again, "x", ("a",), (2,), compute) == {"figure": 2}  # the data changed
    assert remembered(again, "x", ("b",), (2,), compute) == {"figure": 3}  # other parameters
    (entry,) = [p for p in folder(store.path).glob("x-*.pkl") if remembered(again, "x", ("b",), (2,), compute) and
                p.read_bytes().find(b"'b'") > 0]  # fmt: skip
    forged = bytearray(entry.read_bytes())
    forged[-5] ^= 1
    entry.write_bytes(bytes(forged))
    third = Store.open(tmp_path / "kept.db")
    assert remembered(third, "x", ("b",), (2,), compute) == {"figure": 4}  # the signature fails: computed again


def _wait_for_background(timeout: float = 30.0) -> None:
    from core.store.disk_cache import revalidating

    deadline = time.monotonic() + timeout
    while revalidating():
        assert time.monotonic() < deadline, "the background computation never finished"
        time.sleep(0.01)


def test_after_a_change_a_slow_result_is_shown_as_it_was_while_the_current_one_is_computed(tmp_path, monkeypatch):
    from core.store import disk_cache
    from core.store.disk_cache import StaleView, remembered

    monkeypatch.setattr(disk_cache, "REVALIDATE_AFTER_S", 0.0)  # every result counts as slow
    store = Store.open(tmp_path / "stale.db")
    told, gate = [], threading.Event()

    def compute(figure, wait=False):
        def run():
            if wait:
                assert gate.wait(30)
            return {"figure": figure}
        return run

    assert remembered(store, "x", ("a",), (1,), compute(1), StaleView(told.append)) == {"figure": 1}
    assert told == []  # nothing earlier to show: computed in the open
    page_run = StaleView(told.append)
    assert remembered(store, "x", ("a",), (2,), compute(2, wait=True), page_run) == {"figure": 1}
    assert [stale.name for stale in told] == ["x"] and told[0].computed_at <= time.time()
    assert remembered(store, "x", ("a",), (2,), compute(3), page_run) == {"figure": 1}  # one computation at a time
    assert len(told) == 1 and len(page_run.shown) == 2  # the page is told once a run
    assert disk_cache.revalidating() == 1
    gate.set()
    _wait_for_background()
    assert remembered(store, "x", ("a",), (2,), compute(4), StaleView(told.append)) == {"figure": 2}
    other = Store.open(tmp_path / "stale.db")  # another process finds the current one beside the database
    assert remembered(other, "x", ("a",), (2,), compute(5)) == {"figure": 2}
    # Without on_stale (a CLI, a test), the current figures are computed before returning.
    assert remembered(other, "x", ("a",), (3,), compute(6)) == {"figure": 6}


def test_a_result_that_computes_quickly_is_not_shown_stale_unless_the_page_already_shows_one(tmp_path):
    from core.store.disk_cache import Kept, StaleView, remembered

    store = Store.open(tmp_path / "quick.db")
    assert remembered(store, "quick", ("a",), (1,), lambda: 1, StaleView(lambda stale: None)) == 1
    assert remembered(store, "quick", ("a",), (2,), lambda: 2, StaleView(lambda stale: None)) == 2  # in the open
    remembered(store, "slow", ("a",), (2,), lambda: "slow 2")
    memory = store.__dict__["_kept_results"]
    for path, kept in list(memory._entries.items()):  # as if "slow" had taken a minute
        if path.name.startswith("slow-"):
            memory.put(path, Kept(kept.version, 60.0, kept.at, kept.payload))
    page_run = StaleView(lambda stale: None)
    assert remembered(store, "slow", ("a",), (3,), lambda: "slow 3", page_run) == "slow 2"
    # Once the page shows one figure as it was, a quick one is too: one set from before the change.
    assert remembered(store, "quick", ("a",), (3,), lambda: 3, page_run) == 2
    assert [stale.name for stale in page_run.shown] == ["slow", "quick"]
    _wait_for_background()
    assert remembered(store, "quick", ("a",), (3,), lambda: 4, StaleView(lambda stale: None)) == 3


def test_a_background_computation_that_fails_is_computed_in_the_open_next(tmp_path, monkeypatch):
    from core.store import disk_cache
    from core.store.disk_cache import StaleView, remembered

    monkeypatch.setattr(disk_cache, "REVALIDATE_AFTER_S", 0.0)
    store = Store.open(tmp_path / "failing.db")
    remembered(store, "x", ("a",), (1,), lambda: 1)

    def broken():
        raise RuntimeError("the figures cannot be computed")

    assert remembered(store, "x", ("a",), (2,), broken, StaleView(lambda stale: None)) == 1
    _wait_for_background()
    with pytest.raises(RuntimeError, match="cannot be computed"):  # the page shows the error, not the old figures
        remembered(store, "x", ("a",), (2,), broken, StaleView(lambda stale: None))


def test_votes_over_large_groups_fall_back_to_the_scalar_ones():
    """Where one problem's subsets would not fit in memory set-wise (n = 64, k = 32)."""
    rng = np.random.default_rng(5)
    answers = rng.integers(-1, 4, (3, 64))
    correct = answers == 1
    weights = rng.random((3, 64))
    for k in (32, 64):
        got = bon.vote_over_subsets(answers, correct, weights, k)
        named = [[None if a < 0 else int(a) for a in row] for row in answers.tolist()]
        want = [metrics.weighted_majority_vote(a, c.tolist(), w.tolist(), k) for a, c, w in zip(named, correct, weights)]
        assert close(got.tolist(), want)
    small = bon.vote_over_subsets(answers[:, :6], correct[:, :6], None, 3, block_cells=1)  # forced fallback
    assert close(small.tolist(), bon.vote_over_subsets(answers[:, :6], correct[:, :6], None, 3).tolist())


def test_bootstrap_means_are_the_same_either_way(monkeypatch):
    values = [np.random.default_rng(s).random(50) for s in range(3)]
    product = bon.mean_intervals(values)
    monkeypatch.setattr(bon, "COUNTS_LIMIT", 0)
    assert close(bon.mean_intervals(values), product) and close(product[0], old_mean_interval(values[0]))
