"""PRMs on the Compare and Best-of-N pages: thresholds, outcome-level scores, MC agreement, curves.

A PRM's step scores are step verdicts of a verifier of kind `prm` (core.prm, core.store.verifiers),
so at step level a PRM is one more label source beside MC, judges and probes (core.views.compare). What is particular to a
scalar PRM:

- its threshold. A step is called wrong when its score is below the threshold; the predicted
  first error is the first such step. The threshold is chosen where ProcessBench F1 is highest on
  the *train* half of the problems (core.splits: by problem, never by solution) and reported on
  the *test* half, so the figure shown is not tuned on the problems it is measured on;
- its solution score, an aggregation of its step scores (min, product, last, mean), compared
  with whether the final answer is right, and used to pick among N samples (best-of-k) or to
  weight their answers (weighted majority vote).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from core import metrics
from core.errors import StepScopeError
from core.formats.labels import parse_label_source, resolve_label_source
from core.prm import AGGREGATIONS, prm_judges, solution_scores
from core.prm_training import consensus_labels
from core.splits import problem_split
from core.store import Store
from core.views.best_of_n import CurvePoint, Sample, VerifierInfo, curves, k_values, mean_interval, verifier_info
from core.views.compare import LabelledStep, compare, human_label, scores, source_names

THRESHOLDS = tuple(round(float(t), 2) for t in np.linspace(0.05, 0.95, 19))
AGGREGATION_JOIN = " · "  # "prm:NAME · min": a PRM under one aggregation, as a Best-of-N verifier


def is_prm_source(source: str) -> bool:
    """Whether a Compare source (a label-source spelling, core.formats.labels) is a PRM."""
    return parse_label_source(source, threshold=0.5).kind == "prm"


# --- step level: ProcessBench F1 against the threshold, chosen on a held-out split -----------


@dataclass(frozen=True)
class ThresholdChoice:
    threshold: float | None  # the best on the train split's problems; None if F1 is undefined there
    train: metrics.ProcessBenchScore | None  # at the chosen threshold
    test: metrics.ProcessBenchScore | None
    rows: list[dict]  # per threshold and split: f1, error_accuracy, correct_accuracy
    trajectories: dict[str, int]  # usable trajectories per split


def first_error_cases(store: Store, steps: Sequence[LabelledStep], source: str, human: str) -> list[dict]:
    """Trajectories whose human-labelled, scored steps are a whole prefix from step 0 (as for
    Compare's ProcessBench F1): the human's first error (-1: none), the scores in step order and
    the problem's split."""
    values = scores(store, steps, source, policy="")
    by_trajectory: dict[int, list[tuple[int, bool, float]]] = defaultdict(list)
    for step in steps:
        label = human_label(step, human)
        if label is not None and step.step_id in values:
            by_trajectory[step.trajectory_id].append((step.idx, label, values[step.step_id]))
    splits: dict[int, str] = {}
    cases = []
    for trajectory_id, items in sorted(by_trajectory.items()):
        items.sort()
        if [i for i, _, _ in items] != list(range(len(items))):
            continue  # a gap: the earliest error could hide in an unscored step
        problem_id = store.get_trajectory(trajectory_id)["problem_id"]
        if problem_id not in splits:
            splits[problem_id] = problem_split(store.get_problem(problem_id))
        gold = next((i for i, ok, _ in items if not ok), -1)
        cases.append({"trajectory_id": trajectory_id, "gold": gold, "scores": [s for _, _, s in items],
                      "split": splits[problem_id]})  # fmt: skip
    return cases


def first_error_at(step_scores: Sequence[float], threshold: float) -> int:
    """The first step scored below the threshold, -1 if none."""
    return next((i for i, score in enumerate(step_scores) if score < threshold), -1)


def processbench_at(cases: Sequence[dict], threshold: float) -> metrics.ProcessBenchScore | None:
    if not cases:
        return None
    return metrics.processbench_f1([first_error_at(c["scores"], threshold) for c in cases], [c["gold"] for c in cases])


def choose_threshold(cases: Sequence[dict], thresholds: Sequence[float] = THRESHOLDS) -> ThresholdChoice:
    """F1 against the threshold on each split; the threshold with the best train-split F1 (ties:
    the one nearest 0.5), with its scores on both splits."""
    by_split = {split: [c for c in cases if c["split"] == split] for split in ("train", "test")}
    rows, train_f1 = [], {}
    for threshold in thresholds:
        for split, chosen in by_split.items():
            score = processbench_at(chosen, threshold)
            if score is None:
                continue
            rows.append({"threshold": threshold, "split": split, "f1": score.f1,
                         "error_accuracy": score.error_accuracy, "correct_accuracy": score.correct_accuracy})  # fmt: skip
            if split == "train" and score.f1 is not None:
                train_f1[threshold] = score.f1
    best = max(train_f1, key=lambda t: (train_f1[t], -abs(t - 0.5))) if train_f1 else None
    return ThresholdChoice(
        best,
        processbench_at(by_split["train"], best) if best is not None else None,
        processbench_at(by_split["test"], best) if best is not None else None,
        rows,
        {split: len(chosen) for split, chosen in by_split.items()},
    )


def threshold_choice(store: Store, steps: Sequence[LabelledStep], source: str, human: str) -> ThresholdChoice:
    return choose_threshold(first_error_cases(store, steps, source, human))


def step_level_rows(store: Store, steps: Sequence[LabelledStep], human: str, policy: str,
                    threshold: float = 0.5) -> list[dict]:  # fmt: skip
    """Every step label source (MC, judges, probes, PRMs) against the same human labels, one row
    each, with ProcessBench F1 and its two parts apart."""
    rows = []
    for source in source_names(store):
        result = compare(store, steps, source, human, policy, threshold)
        pb = result.processbench
        rows.append({
            "source": source, "steps": result.n, "accuracy": result.accuracy,
            "kappa": result.kappa.value if result.kappa else None, "AUROC": result.auroc,
            "ProcessBench F1": pb.f1 if pb else None,
            "accuracy on erroneous": pb.error_accuracy if pb else None,
            "accuracy on correct": pb.correct_accuracy if pb else None,
        })  # fmt: skip
    return rows


# --- outcome level: each PRM x aggregation against the final answer ---------------------------


def outcome_rows(store: Store, dataset: str | None = None) -> list[dict]:
    """Per PRM x aggregation, over the graded trajectories it scored completely: AUROC of the
    solution score against a right final answer, and accuracy at 0.5."""
    rows = []
    correct: dict[int, bool | None] = {}
    for prm in prm_judges(store):
        for aggregation in AGGREGATIONS:
            solved = solution_scores(store, prm, aggregation, dataset=dataset)
            for trajectory_id in solved.keys() - correct.keys():
                correct[trajectory_id] = store.get_trajectory(trajectory_id)["correct"]
            graded = [(score, bool(correct[t])) for t, score in solved.items() if correct[t] is not None]
            labels, values = [ok for _, ok in graded], [score for score, _ in graded]
            rows.append({
                "PRM": prm, "aggregation": aggregation, "solutions": len(graded),
                "right answers": sum(labels),
                "AUROC": metrics.auroc(labels, values) if graded else None,
                "accuracy at 0.5": metrics.accuracy(labels, [v >= 0.5 for v in values]) if graded else None,
            })  # fmt: skip
    return rows


# --- MC-agreement labels (MC hard kept where a verifier agrees: Qwen's recipe) -----------------


@dataclass(frozen=True)
class Agreement:
    kept_fraction: float | None
    compared: int
    problem: str | None = None  # why there is none


def agreement_kept(store: Store, source: str, policy: str | None) -> Agreement:
    """The kept fraction of MC-agreement labels with the verifier `source` (a label source such as
    `judge:NAME` or `prm:NAME`) over the trajectories it scored: what `stepscope train-prm` would
    train on with those labels."""
    judge = resolve_label_source(store, source).name
    trajectory_ids = sorted(store.step_scores_by_trajectory(judge))
    if not trajectory_ids:
        return Agreement(None, 0, f"{source} has no step verdicts")
    try:
        labels = consensus_labels(store, trajectory_ids, judge, policy)
    except StepScopeError:  # raised only when no MC-labelled step has a verdict from the judge
        return Agreement(None, 0, f"no step has both an MC hard label from {policy} and a step verdict from {source}")
    return Agreement(labels.kept_fraction, labels.compared)


# --- Best-of-N: PRM x aggregation as verifiers, weighted majority vote ------------------------


def prm_verifier(prm: str, aggregation: str) -> str:
    return f"{prm}{AGGREGATION_JOIN}{aggregation}"


def with_prm_scores(store: Store, groups: dict[int, list[Sample]], aggregations: Sequence[str],
                    dataset: str | None = None) -> dict[int, list[Sample]]:  # fmt: skip
    """The samples with each PRM's solution score under each aggregation added to their scores
    (as verifier `prm:NAME · AGGREGATION`)."""
    extra: dict[int, dict[str, float]] = defaultdict(dict)
    for prm in prm_judges(store):
        for aggregation in aggregations:
            for trajectory_id, score in solution_scores(store, prm, aggregation, dataset=dataset).items():
                extra[trajectory_id][prm_verifier(prm, aggregation)] = score
    return {
        problem: [replace(s, scores={**s.scores, **extra.get(s.trajectory_id, {})}) for s in samples]
        for problem, samples in groups.items()
    }


def weighted_vote_curves(groups: dict[int, list[Sample]], largest: int, verifiers: Sequence[str]) -> list[CurvePoint]:
    """Weighted majority vote per verifier (answers weighted by its score) against k, over the
    problems where it scored every sample."""
    usable = [samples for samples in groups.values() if len(samples) >= 2]
    points = []
    for verifier in verifiers:
        scored = [samples for samples in usable if all(verifier in s.scores for s in samples)]
        if not scored:
            continue
        for k in k_values(largest):
            values = [
                metrics.weighted_majority_vote([s.answer for s in samples], [s.correct for s in samples],
                                               [s.scores[verifier] for s in samples], k)
                for samples in scored
            ]  # fmt: skip
            value, low, high = mean_interval(values)
            points.append(CurvePoint(f"weighted vote: {verifier}", k, value, low, high, len(values)))
    return points


def curves_with_weighted_vote(groups: dict[int, list[Sample]], max_k: int | None, verifiers: list[str],
                              weighted: Sequence[str]) -> tuple[list[CurvePoint], int]:  # fmt: skip
    """`best_of_n.curves` (pass@k, majority vote, best-of-k per verifier) and the weighted
    majority vote of each of `weighted`, up to the same k."""
    points, largest = curves(groups, max_k, verifiers)
    if not largest or not weighted:
        return points, largest
    return points + weighted_vote_curves(groups, largest, weighted), largest


def aggregation_of(verifier: str, prms: Sequence[str]) -> str | None:
    """The aggregation a Best-of-N verifier carries when it is one of the PRMs `prms` under an
    aggregation (`prm_verifier`), None for a judge or an ORM."""
    name, join, aggregation = verifier.rpartition(AGGREGATION_JOIN)
    return aggregation if join and name in prms and aggregation in AGGREGATIONS else None


def verifier_info_with_prms(store: Store, verifiers: list[str]) -> list:
    """`best_of_n.verifier_info`, with a PRM under an aggregation said as such."""
    prms = prm_judges(store)
    infos = []
    for v in verifier_info(store, verifiers):
        aggregation = aggregation_of(v.judge, prms)
        infos.append(VerifierInfo(v.judge, f"PRM ({aggregation})", v.judge.rsplit(AGGREGATION_JOIN, 1)[0])
                     if aggregation else v)  # fmt: skip
    return infos
