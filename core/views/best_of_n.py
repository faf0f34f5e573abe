"""Best-of-N: pass@k, majority vote and best-of-k per verifier against k, with intervals.

The samples are a sample set's graded trajectories, grouped by problem: a policy's own (source
"policy", one model), or any other source's (imported model solutions, a jsonl file with a
model and a source), one model's or every model's of the source together (`SampleSet`; GSM8K's
model solutions hold one solution per model and problem, so they are reranked as a whole).
For each k (powers of two up to the smallest group used), per-problem values come from
core.metrics (pass@k: the unbiased estimator; maj@k and best-of-k: exact expectations over
random k-subsets), averaged over problems with a percentile-bootstrap interval over problems.
A verifier is an outcome judge (P(yes) of the whole solution); only problems where it scored
every sample count for it.

Scale: the samples are arrays (`SampleTable`: one row per solution, a column per verifier), read
in one query for the solutions and one for the outcome verdicts, and every curve is computed for
all problems of a size at once: pass@k from a table over the number right, best-of-k from the
closed form over each problem's sorted scores, majority votes by enumerating the k-subsets (the
same subsets, in the same order, as core.metrics) for every distinct answer pattern at once.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Sequence

import numpy as np

from core import metrics
from core.orm_training import list_orms
from core.probes import list_probes
from core.splits import problem_split
from core.store import Store
from core.store.disk_cache import remembered  # noqa: F401 - the page's cache beside the database

RESAMPLES = 1000
COUNTS_LIMIT = 20_000_000  # resamples x problems up to which bootstrap means are a matrix product (160 MB)


POLICY_SOURCE = "policy"  # core.jobs.generate's: a policy's own sampled solutions


def policy_models(store: Store, dataset: str | None = None) -> list[str]:
    return store.graded_policy_models(dataset)


@dataclass(frozen=True)
class SampleSet:
    """Which solutions are the N samples of a problem: one source's, by one model or (model None)
    by every model of the source."""

    source: str
    model: str | None = None
    problems: int = field(default=0, compare=False)  # with two or more graded solutions
    solutions: int = field(default=0, compare=False)  # graded, on those problems

    @property
    def key(self) -> tuple[str, str | None]:
        """What identifies the set (cache keys, pickers): (source, model or None for every model)."""
        return self.source, self.model

    def describe(self) -> str:
        """One line for a picker (plain text: source and model names are shown, never rendered)."""
        who = "every model" if self.model is None else self.model
        problems = f"{self.problems:,} problem{'' if self.problems == 1 else 's'}"
        return f"{self.source} · {who} ({problems}, {self.solutions:,} solutions)"


def sample_sets(store: Store, dataset: str | None = None) -> list[SampleSet]:
    """Every sample set with at least one problem that has two or more graded solutions (something
    to choose between): a policy's own first, then the other sources, each model's and then the
    whole source's."""
    found = [SampleSet(row["source"], None if row["every_model"] else row["model"], int(row["problems"] or 0),
                       int(row["solutions"] or 0)) for row in store.graded_sample_set_counts(dataset)]  # fmt: skip
    found = [s for s in found if s.problems]
    return sorted(found, key=lambda s: (s.source != POLICY_SOURCE, s.source, s.model is None, s.model or ""))


def sample_set_of(sets: Sequence[SampleSet], key: tuple[str, str | None]) -> SampleSet:
    """The set with this (source, model) key, or one without counts where it is not listed."""
    return next((s for s in sets if s.key == tuple(key)), SampleSet(*key))


@dataclass(frozen=True)
class Sample:
    trajectory_id: int
    answer: str | None
    correct: bool
    scores: dict[str, float]  # judge -> outcome P(yes)


@dataclass(frozen=True)
class SampleTable:
    """A policy's graded solutions as arrays, one row per solution, grouped by problem (problems in
    the order of their first solution, solutions by id); `answer` codes are equal where the final
    answers are (-1: none); `scores` has a column per verifier (NaN: it did not score the row)."""

    problem_id: np.ndarray
    trajectory_id: np.ndarray
    answer: np.ndarray  # int64
    correct: np.ndarray  # bool
    verifiers: tuple[str, ...]
    scores: np.ndarray  # float, rows x verifiers

    def with_scores(self, verifiers: Sequence[str], columns: np.ndarray) -> "SampleTable":
        return replace(self, verifiers=(*self.verifiers, *verifiers),
                       scores=np.concatenate([self.scores, columns.reshape(len(self.problem_id), -1)], axis=1))

    def groups(self) -> dict[int, list[Sample]]:
        """The same samples as objects, by problem (for tests and small data)."""
        grouped: dict[int, list[Sample]] = {}
        for row in range(len(self.problem_id)):
            scores = {v: float(x) for v, x in zip(self.verifiers, self.scores[row]) if not np.isnan(x)}
            answer = None if self.answer[row] < 0 else str(int(self.answer[row]))
            grouped.setdefault(int(self.problem_id[row]), []).append(
                Sample(int(self.trajectory_id[row]), answer, bool(self.correct[row]), scores))
        return grouped


def table_from_groups(groups: dict[int, list[Sample]]) -> SampleTable:
    """A SampleTable with the samples of `groups`, in their order."""
    names: dict = {}
    verifiers = sorted({v for samples in groups.values() for s in samples for v in s.scores})
    rows = [(problem, s) for problem, samples in groups.items() for s in samples]
    scores = np.full((len(rows), len(verifiers)), np.nan)
    for i, (_, s) in enumerate(rows):
        for j, v in enumerate(verifiers):
            if v in s.scores:
                scores[i, j] = s.scores[v]
    return SampleTable(
        np.array([p for p, _ in rows], dtype=np.int64), np.array([s.trajectory_id for _, s in rows], dtype=np.int64),
        np.array([-1 if s.answer is None else names.setdefault(s.answer, len(names)) for _, s in rows], dtype=np.int64),
        np.array([bool(s.correct) for _, s in rows], dtype=bool), tuple(verifiers), scores,
    )  # fmt: skip


def sample_table(store: Store, model: str | None, dataset: str | None = None, split: str | None = None,
                 source: str = POLICY_SOURCE) -> SampleTable:  # fmt: skip
    """The sample set's graded solutions by problem (by default the policy `model`'s own; `source`
    for another, `model` None for every model of the source); with `split` ("train" or "test",
    core.splits), only the problems of that split: a trained verifier is compared on problems it
    never saw."""
    found = store.graded_solution_arrays(source, model, dataset)
    keep = np.ones(len(found["id"]), dtype=bool)
    if split is not None:
        side = {row["id"]: problem_split(row) == split for row in store.problems_by_id(np.unique(found["problem_id"]))}
        keep = np.array([side[p] for p in found["problem_id"].tolist()], dtype=bool)
    ids, problems, answers, correct = (found[k][keep] for k in ("id", "problem_id", "answer", "correct"))
    # Problems in the order of their first solution; solutions by id (the rows come by id).
    first = {}
    for position, problem in enumerate(problems.tolist()):
        first.setdefault(problem, position)
    order = np.lexsort((ids, np.array([first[p] for p in problems.tolist()], dtype=np.int64)))
    ids, problems, answers, correct = ids[order], problems[order], answers[order], correct[order]
    verifiers, columns = store.latest_outcome_score_arrays(ids)
    return SampleTable(problems, ids, answers, correct.astype(bool), tuple(verifiers), columns)


def samples_by_problem(store: Store, model: str | None, dataset: str | None = None, split: str | None = None,
                       source: str = POLICY_SOURCE) -> dict[int, list[Sample]]:  # fmt: skip
    """`sample_table` as Sample objects by problem (answers as stored)."""
    found = store.graded_solutions(source, model, dataset)
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


def judges_of(groups: dict[int, list[Sample]] | SampleTable) -> list[str]:
    """The verifiers that scored any of these samples."""
    if isinstance(groups, SampleTable):
        return sorted(v for j, v in enumerate(groups.verifiers) if (~np.isnan(groups.scores[:, j])).any())
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


def curves(groups: dict[int, list[Sample]] | SampleTable, max_k: int | None = None,
           verifiers: list[str] | None = None) -> tuple[list[CurvePoint], int]:  # fmt: skip
    """Every method's curve over k (best-of-k for `verifiers`, default every one that scored), and
    the k the curves go up to (the smallest group used)."""
    table = groups if isinstance(groups, SampleTable) else table_from_groups(groups)
    problems = Problems.of(table)
    if not problems.count:
        return [], 0
    largest = int(problems.size.min())
    if max_k:
        largest = min(largest, max_k)
    scored = [j for j, v in enumerate(table.verifiers) if problems.any_scored(j)]
    judges = sorted(table.verifiers[j] for j in scored)
    if verifiers is not None:
        judges = [j for j in judges if j in set(verifiers)]
    # A method's curve is listed where it first has a value, as the per-problem loop did.
    complete = {judge: problems.complete(table.verifiers.index(judge)) for judge in judges}
    order = sorted(judges, key=lambda j: (int(np.argmax(complete[j])) if complete[j].any() else problems.count,
                                          judges.index(j)))  # fmt: skip
    series = []  # (method, k, per-problem values)
    for k in k_values(largest):
        series += [("pass@k", k, problems.pass_at_k(k)), ("majority vote", k, problems.majority_vote(k))]
        for judge in order:
            if complete[judge].any():
                series.append((f"best-of-k: {judge}", k, problems.best_of_k(table.verifiers.index(judge), k)[complete[judge]]))
    intervals = mean_intervals([values for _, _, values in series])
    points = [CurvePoint(method, k, *interval, len(values)) for (method, k, values), interval in zip(series, intervals)]
    return points, largest


@dataclass
class Problems:
    """The usable problems (two or more samples) of a SampleTable, in order, with their rows
    grouped by size: every per-problem value is computed for all problems of one size at once."""

    table: SampleTable
    size: np.ndarray
    by_size: dict[int, tuple[np.ndarray, np.ndarray]]  # n -> (problem positions, rows matrix: problems x n)

    @property
    def count(self) -> int:
        return len(self.size)

    @classmethod
    def of(cls, table: SampleTable) -> "Problems":
        ids = table.problem_id
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if len(ids) else np.zeros(0, dtype=np.int64)
        ends = np.r_[starts[1:], len(ids)].astype(np.int64)
        sizes = ends - starts
        usable = sizes >= 2
        starts, sizes = starts[usable], sizes[usable]
        by_size = {}
        for n in np.unique(sizes).tolist():
            at = np.flatnonzero(sizes == n)
            by_size[n] = (at, starts[at][:, None] + np.arange(n)[None, :])
        return cls(table, sizes, by_size)

    def _each(self, compute) -> np.ndarray:
        out = np.zeros(self.count)
        for n, (at, rows) in self.by_size.items():
            out[at] = compute(n, rows)
        return out

    def any_scored(self, column: int) -> bool:
        return any((~np.isnan(self.table.scores[rows, column])).any() for _, rows in self.by_size.values())

    def complete(self, column: int) -> np.ndarray:
        """Per problem: whether the verifier scored every sample."""
        out = np.zeros(self.count, dtype=bool)
        for _, (at, rows) in self.by_size.items():
            out[at] = ~np.isnan(self.table.scores[rows, column]).any(axis=1)
        return out

    def pass_at_k(self, k: int) -> np.ndarray:
        def compute(n, rows):
            table = np.array([metrics.pass_at_k(n, c, k) for c in range(n + 1)])
            return table[self.table.correct[rows].sum(axis=1)]

        return self._each(compute)

    def best_of_k(self, column: int, k: int) -> np.ndarray:
        """The exact best-of-k expectation (ties broken fairly) per problem; NaN where unscored.
        Over each problem's sorted scores, a tie group [b, a) is the top of a random k-subset with
        probability (C(a, k) - C(b, k)) / C(n, k) and contributes its mean correctness."""

        def compute(n, rows):
            scores = self.table.scores[rows, column]
            order = np.argsort(scores, axis=1, kind="stable")
            s = np.take_along_axis(scores, order, axis=1)
            c = np.take_along_axis(self.table.correct[rows], order, axis=1).astype(float)
            positions = np.broadcast_to(np.arange(n), s.shape)
            starts = np.c_[np.ones((len(s), 1), dtype=bool), s[:, 1:] != s[:, :-1]]
            below = np.maximum.accumulate(np.where(starts, positions, 0), axis=1)
            ends = np.c_[s[:, 1:] != s[:, :-1], np.ones((len(s), 1), dtype=bool)]
            upto = np.minimum.accumulate(np.where(ends, positions + 1, n)[:, ::-1], axis=1)[:, ::-1]
            total = math.comb(n, k)
            share = np.array([math.comb(a, k) / total for a in range(n + 1)])
            return ((share[upto] - share[below]) / (upto - below) * c).sum(axis=1)

        return self._each(compute)

    def majority_vote(self, k: int) -> np.ndarray:
        """`metrics.majority_vote` per problem: one computation per distinct pattern of answers."""

        def compute(n, rows):
            answers, correct = first_occurrence(self.table.answer[rows]), self.table.correct[rows]
            patterns, which = np.unique(np.c_[answers, correct], axis=0, return_inverse=True)
            values = vote_over_subsets(patterns[:, :n], patterns[:, n:].astype(bool), None, k)
            return values[np.asarray(which).reshape(-1)]

        return self._each(compute)

    def weighted_vote(self, column: int, k: int) -> np.ndarray:
        """`metrics.weighted_majority_vote` per problem with the verifier's scores as weights."""

        def compute(n, rows):
            return vote_over_subsets(first_occurrence(self.table.answer[rows]), self.table.correct[rows],
                                     self.table.scores[rows, column], k)  # fmt: skip

        return self._each(compute)


def first_occurrence(answers: np.ndarray) -> np.ndarray:
    """Per row, each answer as the position of its first occurrence in the row (-1: none)."""
    rows, n = answers.shape
    block = max(1, 20_000_000 // max(1, n * n))  # rows x n x n comparisons at a time
    first = np.concatenate([np.argmax(answers[lo : lo + block, :, None] == answers[lo : lo + block, None, :], axis=2)
                            for lo in range(0, rows, block)]) if rows else np.zeros((0, n), dtype=np.int64)  # fmt: skip
    return np.where(answers < 0, -1, first)


@lru_cache(maxsize=64)
def _subsets(n: int, k: int) -> np.ndarray:
    """The k-subsets core.metrics' votes average over: all of them in itertools order while there
    are at most MAJORITY_EXACT_LIMIT, else that many drawn as it draws them (seeded)."""
    if k == n:
        return np.arange(n)[None, :]
    if math.comb(n, k) <= metrics.MAJORITY_EXACT_LIMIT:
        return np.array(list(itertools.combinations(range(n), k)), dtype=np.int64).reshape(-1, k)
    rng = np.random.default_rng(0)
    return np.array([rng.choice(n, size=k, replace=False) for _ in range(metrics.MAJORITY_EXACT_LIMIT)])


def _scalar_vote(answers: np.ndarray, correct: np.ndarray, weights: np.ndarray | None, k: int) -> float:
    named = [None if a < 0 else int(a) for a in answers.tolist()]
    flags = [bool(c) for c in correct.tolist()]
    if weights is None:
        return metrics.majority_vote(named, flags, k)
    return metrics.weighted_majority_vote(named, flags, weights.tolist(), k)


def vote_over_subsets(answers: np.ndarray, correct: np.ndarray, weights: np.ndarray | None, k: int,
                      block_cells: int = 4_000_000) -> np.ndarray:  # fmt: skip
    """Per row: the mean over `_subsets` of the (weighted) vote's correctness: the answer with the
    most samples (largest summed weight, ties within math.isclose's 1e-12) wins, a tie is shared,
    an answer is right when one of its samples in the subset is, no answer at all scores 0."""
    rows, n = answers.shape
    subsets = _subsets(n, k)
    if len(subsets) * k * n > block_cells:  # large groups: the scalar votes, one problem at a time
        return np.array([_scalar_vote(answers[r], correct[r], None if weights is None else weights[r], k)
                         for r in range(rows)])  # fmt: skip
    out = np.zeros(rows)
    block = max(1, block_cells // max(1, len(subsets) * k * n))
    for lo in range(0, rows, block):
        a = answers[lo : lo + block][:, subsets]  # rows x subsets x k
        c = correct[lo : lo + block][:, subsets]
        codes = np.arange(n)
        member = a[..., None] == codes  # rows x subsets x k x codes
        present = member.any(axis=2)
        right = (member & c[..., None]).any(axis=2)
        if weights is None:
            totals = member.sum(axis=2).astype(float)
            winners = present & (totals == totals.max(axis=2, keepdims=True))
        else:
            w = weights[lo : lo + block][:, subsets]
            totals = np.zeros(present.shape)
            for j in range(k):  # in subset order, as the scalar vote sums them
                totals += np.where(member[:, :, j, :], w[:, :, j, None], 0.0)
            top = np.where(present, totals, -np.inf).max(axis=2, keepdims=True)
            close = np.abs(totals - top) <= np.maximum(1e-12 * np.maximum(np.abs(totals), np.abs(top)), 1e-15)
            winners = present & close
        count = winners.sum(axis=2)
        value = np.where(count > 0, (winners & right).sum(axis=2) / np.maximum(count, 1), 0.0)
        out[lo : lo + block] = value.mean(axis=1) if len(subsets) > 1 else value[:, 0]
    return out


@lru_cache(maxsize=2)
def _resample_counts(n: int, resamples: int, seed: int) -> np.ndarray:
    """How often each of n problems is drawn in each resample (resamples x n), for the indices of
    `_resample_indices`: a resample's mean is then one row of a matrix product."""
    indices = _resample_indices(n, resamples, seed)
    counts = np.empty((resamples, n))
    for row, drawn in enumerate(indices):
        counts[row] = np.bincount(drawn, minlength=n)
    return counts


@lru_cache(maxsize=8)
def _resample_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, (resamples, n))


def mean_interval(values: list[float], resamples: int = RESAMPLES, seed: int = 0) -> tuple[float, float | None, float | None]:
    """The mean with a 95% percentile-bootstrap interval over problems (as
    `metrics.mean_interval`, resampling all at once: thousands of problems in milliseconds)."""
    return mean_intervals([values], resamples, seed)[0]


def mean_intervals(series: Sequence[Sequence[float]], resamples: int = RESAMPLES,
                   seed: int = 0) -> list[tuple[float, float | None, float | None]]:  # fmt: skip
    """`mean_interval` of each series; series of one length share the resampled problems (the
    same indices as one at a time), gathered together in blocks of resamples."""
    arrays = [np.asarray(values, dtype=float) for values in series]
    out: list = [None] * len(arrays)
    by_length: dict[int, list[int]] = defaultdict(list)
    for i, array in enumerate(arrays):
        if len(array) < 2:
            out[i] = (float(array.mean()), None, None)
        else:
            by_length[len(array)].append(i)
    for n, members in by_length.items():
        stacked = np.stack([arrays[i] for i in members], axis=1)  # problems x series
        if n * resamples <= COUNTS_LIMIT:
            means = _resample_counts(n, resamples, seed) @ stacked / n  # each resample's mean, per series
        else:  # too many problems for a counts matrix: gather the resampled rows in blocks
            indices = _resample_indices(n, resamples, seed)
            block = max(1, 4_000_000 // (n * len(members)))
            means = np.concatenate([stacked[indices[lo : lo + block]].mean(axis=1) for lo in range(0, resamples, block)])
        for column, i in enumerate(members):
            low, high = np.percentile(means[:, column], [2.5, 97.5])
            out[i] = (float(arrays[i].mean()), float(low), float(high))
    return out


def fingerprint(store: Store) -> tuple:
    """Changes whenever trajectories or verdicts are added: a cache key for the curves."""
    return store.solutions_fingerprint()
