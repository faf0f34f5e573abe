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

import json
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from core import metrics
from core.formats.labels import parse_label_source, resolve_label_source
from core.prm import AGGREGATIONS, aggregate, prm_judges
from core.splits import problem_split
from core.store import Store
from core.views.best_of_n import (
    CurvePoint, Problems, Sample, SampleTable, VerifierInfo, curves, k_values, mean_intervals, table_from_groups,
    verifier_info,
)  # fmt: skip
from core.views.compare import (
    LabelledSteps, compare, first_false, human_labels, prefix_groups, source_names, source_scores,
)  # fmt: skip

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


def trajectory_splits(store: Store, trajectory_ids: np.ndarray) -> np.ndarray:
    """Whether each trajectory's problem is on the test side (core.splits), set-wise: one query for
    the trajectories' problems, one split per problem."""
    ids, problems, rows = store.trajectory_problem_rows()
    test = {}
    for row in rows:
        meta = row["meta"]
        test[row["id"]] = problem_split({**row, "meta": json.loads(meta) if isinstance(meta, str) else meta}) == "test"
    at = np.searchsorted(ids, trajectory_ids)
    return np.array([test[p] for p in problems[at].tolist()], dtype=bool) if len(at) else np.zeros(0, dtype=bool)


@dataclass(frozen=True)
class FirstErrorCases:
    """Trajectories whose human-labelled, scored steps are a whole prefix from step 0, as flat
    arrays: each case's rows (scores in step order) from its start."""

    trajectory_id: np.ndarray  # per case
    gold: np.ndarray  # per case: the human's first error, -1 if none
    test: np.ndarray  # per case: its problem is on the test side
    starts: np.ndarray  # per case: its first row
    idx: np.ndarray  # per row
    scores: np.ndarray  # per row

    def __len__(self) -> int:
        return len(self.gold)

    def as_dicts(self) -> list[dict]:
        ends = np.r_[self.starts[1:], len(self.scores)]
        return [{"trajectory_id": int(t), "gold": int(g), "scores": self.scores[s:e].tolist(),
                 "split": "test" if x else "train"}
                for t, g, x, s, e in zip(self.trajectory_id, self.gold, self.test, self.starts, ends)]  # fmt: skip


def first_error_case_arrays(store: Store, steps: LabelledSteps, source: str, human: str,
                            values: np.ndarray | None = None) -> FirstErrorCases:  # fmt: skip
    if values is None:
        values = source_scores(store, steps.step_id, source, policy="")
    known, fine = human_labels(steps, human)
    chosen = known & ~np.isnan(values)
    trajectory, idx, labels, score = steps.trajectory_id[chosen], steps.idx[chosen], fine[chosen], values[chosen]
    starts, whole = prefix_groups(trajectory, idx)
    rows = np.repeat(whole, np.diff(np.r_[starts, len(trajectory)])) if len(starts) else np.zeros(0, dtype=bool)
    trajectory, idx, labels, score = trajectory[rows], idx[rows], labels[rows], score[rows]
    starts, _ = prefix_groups(trajectory, idx)
    ids = trajectory[starts]
    return FirstErrorCases(ids, first_false(labels, idx, starts), trajectory_splits(store, ids), starts, idx, score)


def first_error_cases(store: Store, steps: LabelledSteps, source: str, human: str) -> list[dict]:
    """Trajectories whose human-labelled, scored steps are a whole prefix from step 0 (as for
    Compare's ProcessBench F1): the human's first error (-1: none), the scores in step order and
    the problem's split."""
    return first_error_case_arrays(store, steps, source, human).as_dicts()


def first_error_at(step_scores: Sequence[float], threshold: float) -> int:
    """The first step scored below the threshold, -1 if none."""
    return next((i for i, score in enumerate(step_scores) if score < threshold), -1)


def processbench_at(cases: Sequence[dict], threshold: float) -> metrics.ProcessBenchScore | None:
    if not cases:
        return None
    return metrics.processbench_f1([first_error_at(c["scores"], threshold) for c in cases], [c["gold"] for c in cases])


def _cases_from_dicts(cases: Sequence[dict]) -> FirstErrorCases:
    lengths = np.array([len(c["scores"]) for c in cases], dtype=np.int64)
    starts = np.r_[0, np.cumsum(lengths)[:-1]].astype(np.int64) if len(cases) else np.zeros(0, dtype=np.int64)
    return FirstErrorCases(
        np.array([c.get("trajectory_id", 0) for c in cases], dtype=np.int64),
        np.array([c["gold"] for c in cases], dtype=np.int64),
        np.array([c["split"] == "test" for c in cases], dtype=bool), starts,
        np.concatenate([np.arange(n) for n in lengths]) if len(cases) else np.zeros(0, dtype=np.int64),
        np.array([s for c in cases for s in c["scores"]], dtype=float),
    )  # fmt: skip


def choose_threshold(cases: Sequence[dict] | FirstErrorCases, thresholds: Sequence[float] = THRESHOLDS) -> ThresholdChoice:
    """F1 against the threshold on each split; the threshold with the best train-split F1 (ties:
    the one nearest 0.5), with its scores on both splits. Set-wise: each threshold's predicted
    first errors for every case at once."""
    if not isinstance(cases, FirstErrorCases):
        cases = _cases_from_dicts(cases)
    sides = {"train": ~cases.test, "test": cases.test}
    some = {split: bool(side.any()) for split, side in sides.items()}

    def at(threshold: float) -> dict[str, metrics.ProcessBenchScore | None]:
        guess = first_false(~(cases.scores < threshold), cases.idx, cases.starts)
        return {split: metrics.processbench_f1(guess[side], cases.gold[side]) if some[split] else None
                for split, side in sides.items()}  # fmt: skip

    rows, train_f1 = [], {}
    for threshold in thresholds:
        for split, score in at(threshold).items():
            if score is None:
                continue
            rows.append({"threshold": threshold, "split": split, "f1": score.f1,
                         "error_accuracy": score.error_accuracy, "correct_accuracy": score.correct_accuracy})  # fmt: skip
            if split == "train" and score.f1 is not None:
                train_f1[threshold] = score.f1
    best = max(train_f1, key=lambda t: (train_f1[t], -abs(t - 0.5))) if train_f1 else None
    chosen = at(best) if best is not None else {"train": None, "test": None}
    return ThresholdChoice(best, chosen["train"], chosen["test"], rows,
                           {split: int(side.sum()) for split, side in sides.items()})  # fmt: skip


def threshold_choice(store: Store, steps: LabelledSteps, source: str, human: str,
                     values: np.ndarray | None = None) -> ThresholdChoice:  # fmt: skip
    return choose_threshold(first_error_case_arrays(store, steps, source, human, values))


def step_level_rows(store: Store, steps: LabelledSteps, human: str, policy: str, threshold: float = 0.5,
                    values: dict[str, np.ndarray] | None = None) -> list[dict]:  # fmt: skip
    """Every step label source (MC, judges, probes, PRMs) against the same human labels, one row
    each, with ProcessBench F1 and its two parts apart. `values`: each source's numbers, where
    the caller has them."""
    rows = []
    for source in source_names(store):
        result = compare(store, steps, source, human, policy, threshold, (values or {}).get(source))
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


@dataclass(frozen=True)
class SolutionScores:
    """A PRM's solution scores on the trajectories whose current steps it scored completely."""

    trajectory_id: np.ndarray  # sorted
    correct: np.ndarray  # 1, 0; -1 ungraded
    by_aggregation: dict[str, np.ndarray]


def solution_score_arrays(store: Store, prm: str, aggregations: Sequence[str] = AGGREGATIONS,
                          dataset: str | None = None) -> SolutionScores:  # fmt: skip
    """`core.prm.solution_scores` for several aggregations at once, from one query (the step
    scores of every trajectory the PRM scored), aggregated per trajectory with numpy."""
    for aggregation in aggregations:
        aggregate([1.0], aggregation)  # names an unknown aggregation before reading anything
    found = store.step_score_arrays(prm, dataset=dataset)
    trajectory, score = found["trajectory_id"], found["score"]
    if not len(trajectory):
        return SolutionScores(trajectory, found["correct"], {a: np.zeros(0) for a in aggregations})
    starts = np.flatnonzero(np.r_[True, trajectory[1:] != trajectory[:-1]])
    ends = np.r_[starts[1:], len(trajectory)]
    # Complete: every current step scored (as many scored steps as steps), every score a number.
    complete = (np.add.reduceat(np.isnan(score), starts) == 0) & (ends - starts == found["n_steps"][starts])
    reduce = {
        "min": lambda: np.minimum.reduceat(score, starts),
        "last": lambda: score[ends - 1],
        "mean": lambda: np.add.reduceat(score, starts) / (ends - starts),
        "product": lambda: np.multiply.reduceat(score, starts),
    }
    return SolutionScores(trajectory[starts][complete], found["correct"][starts][complete],
                          {a: reduce[a]()[complete] for a in aggregations})  # fmt: skip


def outcome_rows(store: Store, dataset: str | None = None) -> list[dict]:
    """Per PRM x aggregation, over the graded trajectories it scored completely: AUROC of the
    solution score against a right final answer, and accuracy at 0.5."""
    rows = []
    for prm in prm_judges(store):
        solved = solution_score_arrays(store, prm, AGGREGATIONS, dataset)
        graded = solved.correct >= 0
        labels = solved.correct[graded] == 1
        for aggregation in AGGREGATIONS:
            values = solved.by_aggregation[aggregation][graded]
            rows.append({
                "PRM": prm, "aggregation": aggregation, "solutions": int(graded.sum()),
                "right answers": int(labels.sum()),
                "AUROC": metrics.auroc(labels, values) if len(values) else None,
                "accuracy at 0.5": metrics.accuracy(labels, values >= 0.5) if len(values) else None,
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
    `judge:NAME` or `prm:NAME`) over the trajectories it scored: what `stepscope train-prm
    --labels mc-agree --sampled-only` would train on (core.prm_training.consensus_labels), counted
    in one query. Sampled MC labels only, as Compare reads MC values everywhere; by default
    training also takes the labels the search or the outcome implies (core.formats.labels)."""
    judge = resolve_label_source(store, source).name
    if not store.has_step_verdicts(judge):
        return Agreement(None, 0, f"{source} has no step verdicts")
    compared, agree, labelled = store.mc_agreement_counts(judge, policy)
    if not labelled:  # consensus_labels refuses: no MC-labelled trajectory has a verdict from the judge
        return Agreement(None, 0, f"no step has both an MC hard label from {policy} and a step verdict from {source}")
    return Agreement(agree / compared if compared else None, compared)


# --- Best-of-N: PRM x aggregation as verifiers, weighted majority vote ------------------------


def prm_verifier(prm: str, aggregation: str) -> str:
    return f"{prm}{AGGREGATION_JOIN}{aggregation}"


def with_prm_scores(store: Store, groups: dict[int, list[Sample]] | SampleTable, aggregations: Sequence[str],
                    dataset: str | None = None) -> dict[int, list[Sample]] | SampleTable:  # fmt: skip
    """The samples with each PRM's solution score under each aggregation added to their scores
    (as verifier `prm:NAME · AGGREGATION`): one query per PRM."""
    if isinstance(groups, SampleTable):
        names, columns = [], []
        for prm in prm_judges(store):
            solved = solution_score_arrays(store, prm, aggregations, dataset)
            at = np.minimum(np.searchsorted(solved.trajectory_id, groups.trajectory_id), max(len(solved.trajectory_id) - 1, 0))
            found = solved.trajectory_id[at] == groups.trajectory_id if len(solved.trajectory_id) else \
                np.zeros(len(groups.trajectory_id), dtype=bool)  # fmt: skip
            for aggregation in aggregations:
                column = np.full(len(groups.trajectory_id), np.nan)
                column[found] = solved.by_aggregation[aggregation][at[found]]
                if found.any():
                    names.append(prm_verifier(prm, aggregation))
                    columns.append(column)
        return groups.with_scores(names, np.stack(columns, axis=1)) if names else groups
    extra: dict[int, dict[str, float]] = defaultdict(dict)
    for prm in prm_judges(store):
        solved = solution_score_arrays(store, prm, aggregations, dataset)
        for aggregation in aggregations:
            verifier = prm_verifier(prm, aggregation)
            for trajectory_id, score in zip(solved.trajectory_id.tolist(), solved.by_aggregation[aggregation].tolist()):
                extra[trajectory_id][verifier] = score
    return {
        problem: [replace(s, scores={**s.scores, **extra.get(s.trajectory_id, {})}) for s in samples]
        for problem, samples in groups.items()
    }


def weighted_vote_curves(groups: dict[int, list[Sample]] | SampleTable, largest: int,
                         verifiers: Sequence[str]) -> list[CurvePoint]:  # fmt: skip
    """Weighted majority vote per verifier (answers weighted by its score) against k, over the
    problems where it scored every sample."""
    table = groups if isinstance(groups, SampleTable) else table_from_groups(groups)
    problems = Problems.of(table)
    series = []
    for verifier in verifiers:
        if verifier not in table.verifiers:
            continue
        column = table.verifiers.index(verifier)
        complete = problems.complete(column)
        if not complete.any():
            continue
        series += [(f"weighted vote: {verifier}", k, problems.weighted_vote(column, k)[complete]) for k in k_values(largest)]
    intervals = mean_intervals([values for _, _, values in series])
    return [CurvePoint(method, k, *interval, len(values)) for (method, k, values), interval in zip(series, intervals)]


def curves_with_weighted_vote(groups: dict[int, list[Sample]] | SampleTable, max_k: int | None, verifiers: list[str],
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
