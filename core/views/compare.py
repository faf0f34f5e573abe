"""Compare: an automatic step label against a reference, human or automatic, with the statistics
in core.metrics.

With a human reference the unit is a step of a trajectory's current segmentation that a human
rated. A human rating counts as "the step is fine" when it is 0 or +1 (PRM800K's neutral is not an
error) and as "wrong" at -1. With an automatic reference (MC vs a judge vs a PRM, no humans
needed) the unit is a current step both sources labelled: the reference's labels are packed as
`LabelledSteps` with one column named after it (`reference_steps`), so every statistic, the PRM
threshold choice and the every-source table read them as they read an annotator's. Sources on
both sides are spelled in the one label-source grammar (core.formats.labels):

- automatic: `mc-soft` (the Monte Carlo value of the chosen policy is at least T; score: the
  value), `mc-hard` (some rollout from the step reached the answer), and every verifier with step
  verdicts by its stored kind: `judge:NAME`, `probe:NAME`, `orm:NAME` (P(yes) >= 0.5) and
  `prm:NAME` (a PRM's score is at least the threshold; core.views.prm chooses it on held-out
  problems);
- human: an annotator's name, `majority` (more than half say fine; a tie is wrong) or
  `consensus` (every annotator agrees; steps they disagree on are left out).

A step the source has no number for (no rollouts, no verdict) is left out and counted.

Scale: the rated steps are compact arrays (`LabelledSteps`: ids, positions and an annotators
column each, fetched in one query), a source's numbers are one query per source aligned to them
by step id, and every statistic is computed set-wise (numpy), so a page caches a few arrays per
data version instead of an object per step.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

from core import metrics
from core.formats.labels import (
    CONSENSUS, MAJORITY, MC_SOURCES, agreed_label, majority_label, parse_label_source, resolve_label_source,
    verifier_sources,
)  # fmt: skip
from core.store import Store
from core.store.disk_cache import remembered  # noqa: F401 - the pages' cache beside the database

HUMAN_COMBINATIONS = (MAJORITY, CONSENSUS)
NO_RATING = -2  # in LabelledSteps.ratings: this annotator did not rate the step
DISAGREEMENTS_SHOWN = 1000  # rows of the disagreement list kept (the count is of all)


@dataclass(frozen=True)
class LabelledStep:
    """One rated step (what indexing or iterating `LabelledSteps` gives: for tests and small data)."""

    step_id: int
    trajectory_id: int
    idx: int
    ratings: dict[str, int]  # annotator -> -1/0/+1
    first_errors: frozenset[str]  # annotators who marked this step as the first error


@dataclass(frozen=True)
class LabelledSteps:
    """Every rated step of a current segmentation, ordered by trajectory and position, as arrays:
    one row per step, one column per annotator (names sorted)."""

    step_id: np.ndarray  # int64
    trajectory_id: np.ndarray  # int64
    idx: np.ndarray  # int64
    annotators: tuple[str, ...]
    ratings: np.ndarray  # int8, steps x annotators; NO_RATING where not rated
    first_errors: np.ndarray  # bool, steps x annotators
    automatic: bool = False  # an automatic reference's labels (`reference_steps`): +1 fine, -1 wrong

    def __len__(self) -> int:
        return len(self.step_id)

    def __getitem__(self, row: int) -> LabelledStep:
        rated = self.ratings[row] != NO_RATING
        return LabelledStep(
            int(self.step_id[row]), int(self.trajectory_id[row]), int(self.idx[row]),
            {name: int(r) for name, r, ok in zip(self.annotators, self.ratings[row], rated) if ok},
            frozenset(name for name, fe, ok in zip(self.annotators, self.first_errors[row], rated) if ok and fe),
        )  # fmt: skip

    def __iter__(self) -> Iterator[LabelledStep]:
        return (self[row] for row in range(len(self)))


def labelled_steps(store: Store, dataset: str | None = None, first: bool = False,
                   found: dict | None = None) -> LabelledSteps:  # fmt: skip
    """Every rated step of a current segmentation, with every annotator's rating: the final one,
    or with `first` the first one they gave (before any edit; from the label history). `found`:
    the ratings as read (`store.rated_step_arrays`), where the caller has them."""
    found = found if found is not None else store.rated_step_arrays(dataset, first)
    names = found["names"]
    present = sorted({names[int(a)] for a in np.unique(found["annotator_id"])})
    column_of = {a: present.index(name) for a, name in names.items() if name in present}
    order = np.lexsort((found["annotator_id"], found["idx"], found["trajectory_id"]))
    step_ids = found["step_id"][order]
    starts = np.flatnonzero(np.r_[True, step_ids[1:] != step_ids[:-1]]) if len(step_ids) else np.array([], dtype=int)
    row = np.cumsum(np.r_[False, step_ids[1:] != step_ids[:-1]]) if len(step_ids) else np.array([], dtype=int)
    columns = np.array([column_of[int(a)] for a in found["annotator_id"][order]], dtype=np.int64) if len(order) else \
        np.array([], dtype=np.int64)  # fmt: skip
    ratings = np.full((len(starts), len(present)), NO_RATING, dtype=np.int8)
    first_errors = np.zeros((len(starts), len(present)), dtype=bool)
    ratings[row, columns] = found["rating"][order]
    first_errors[row, columns] = found["first_error"][order] != 0
    return LabelledSteps(step_ids[starts], found["trajectory_id"][order][starts], found["idx"][order][starts],
                         tuple(present), ratings, first_errors)  # fmt: skip


def fingerprint(store: Store) -> tuple:
    """Changes whenever a label, rollout or verdict is added or changed: a cache key."""
    return store.labels_fingerprint()


def annotator_names(steps: LabelledSteps | Sequence[LabelledStep]) -> list[str]:
    if isinstance(steps, LabelledSteps):
        return list(steps.annotators)
    return sorted({name for s in steps for name in s.ratings})


def human_label(step: LabelledStep, who: str) -> bool | None:
    """True = fine (0 or +1), False = wrong (-1), None = no label (this annotator did not rate
    it; for `consensus`, the annotators disagree)."""
    if who in HUMAN_COMBINATIONS:
        votes = [r >= 0 for r in step.ratings.values()]
        return (majority_label if who == MAJORITY else agreed_label)(votes)
    rating = step.ratings.get(who)
    return None if rating is None else rating >= 0


def human_labels(steps: LabelledSteps, who: str) -> tuple[np.ndarray, np.ndarray]:
    """`human_label` for every step at once: (has a label, the label is "fine")."""
    rated = steps.ratings != NO_RATING
    fine = rated & (steps.ratings >= 0)
    if who in HUMAN_COMBINATIONS:
        given, fine_votes = rated.sum(axis=1), fine.sum(axis=1)
        if who == MAJORITY:  # more than half say fine; a tie is wrong
            return given > 0, 2 * fine_votes > given
        return (given > 0) & ((fine_votes == given) | (fine_votes == 0)), (given > 0) & (fine_votes == given)
    if who not in steps.annotators:
        return np.zeros(len(steps), dtype=bool), np.zeros(len(steps), dtype=bool)
    column = steps.annotators.index(who)
    return rated[:, column], fine[:, column]


def source_names(store: Store) -> list[str]:
    """MC soft and hard, then every verifier with step verdicts, by its kind (outcome-only
    verifiers score whole solutions, so they have nothing to say about a step)."""
    return [*MC_SOURCES[::-1], *[str(s) for s in verifier_sources(store, store.step_judges())]]


def uses_threshold(source: str) -> bool:
    """Whether a source's label is its score against a chosen threshold (MC soft, a PRM)."""
    return parse_label_source(source, threshold=0.5).kind in ("mc-soft", "prm")


def rating_rows(store: Store, dataset: str | None = None, first: bool = False) -> dict:
    """Every rating of a current step with its latents, as arrays (`store.rated_step_arrays`): what
    `labelled_steps` and core.views.latents build on, read once for both."""
    return store.rated_step_arrays(dataset, first)


def values_key(source: str) -> str:
    """Sources with the same numbers share them: MC soft and hard both read the MC value."""
    return "mc-soft" if parse_label_source(source, threshold=0.5).kind in MC_SOURCES else source


def source_values(store: Store, source: str, policy: str, every_step: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(step ids, sorted; the source's number for each): the policy's MC value of every rated step
    with rollouts (with `every_step`, of every step with rollouts: for an automatic reference), or
    a verifier's latest P(yes) on every step it scored. One query per source."""
    parsed = parse_label_source(source, threshold=0.5)
    if parsed.kind in MC_SOURCES:
        ids, n, correct = rollout_counts(store, policy, every_step)
        keep = n > 0
        return ids[keep], correct[keep] / n[keep]
    if parsed.is_verifier:
        return store.latest_step_score_arrays(resolve_label_source(store, parsed).name)
    raise ValueError(f"{source!r} is not an automatic label source")


def rollout_counts(store: Store, policy: str, every_step: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(step ids, n, n correct) of the policy's rollouts from every rated step
    (`store.rated_step_rollout_arrays`; with `every_step`, from every step:
    `store.step_rollout_arrays`), read once per data version for MC values and their interval
    widths alike."""
    memo = store.__dict__.setdefault("_rollout_count_memo", {})
    version = store.labels_fingerprint()
    if any(old[1] != version for old in memo):
        memo.clear()
    key = (policy, version, every_step)
    if key not in memo:
        memo[key] = store.step_rollout_arrays(policy) if every_step else store.rated_step_rollout_arrays(policy)
    return memo[key]


# --- the reference: human labels, or an automatic source's -----------------------------------


def is_human_reference(reference: str, annotators: Sequence[str]) -> bool:
    """Whether a reference names humans (an annotator, `majority`, `consensus`) rather than an
    automatic source. An annotator's name wins over an automatic source of the same spelling
    (annotator names cannot hold a colon, so only `mc-hard` and `mc-soft` could collide)."""
    return reference in HUMAN_COMBINATIONS or reference in annotators


def reference_names(sources: Sequence[str], annotators: Sequence[str], source: str) -> list[str]:
    """What the compared `source` can be measured against: the human labels (their majority, their
    consensus, each annotator) where there are any, then every other automatic source."""
    humans = [*HUMAN_COMBINATIONS, *annotators] if annotators else []
    return [*humans, *[s for s in sources if s != source and s not in annotators]]


def reference_steps(store: Store, reference: str, policy: str, threshold: float = 0.5, dataset: str | None = None,
                    values: tuple[np.ndarray, np.ndarray] | None = None) -> LabelledSteps:  # fmt: skip
    """An automatic reference's labels on every current step (of the dataset's trajectories) it
    has a number for, as LabelledSteps with one column named `reference`: +1 where it calls the
    step fine (`predicted` at `threshold`), -1 where wrong; ordered by trajectory and position.
    `values`: the reference's (step ids, numbers) over every step (`source_values` with
    `every_step`), where the caller has them. Set-wise: one query for the steps, one for the
    numbers."""
    steps = store.current_step_arrays(dataset)
    numbers = align_values(*(values if values is not None else source_values(store, reference, policy, True)),
                           steps["id"])  # fmt: skip
    has = ~np.isnan(numbers)
    trajectory, idx, ids, numbers = steps["trajectory_id"][has], steps["idx"][has], steps["id"][has], numbers[has]
    order = np.lexsort((idx, trajectory))
    fine = np.asarray(predicted(reference, numbers[order], threshold), dtype=bool)
    ratings = np.where(fine, 1, -1).astype(np.int8)[:, None]
    return LabelledSteps(ids[order], trajectory[order], idx[order], (reference,), ratings,
                         np.zeros(ratings.shape, dtype=bool), automatic=True)  # fmt: skip


def align_values(ids: np.ndarray, values: np.ndarray, step_ids: np.ndarray) -> np.ndarray:
    """`values` (by sorted `ids`) for each of `step_ids`, NaN where there is none."""
    step_ids = np.asarray(step_ids, dtype=np.int64)
    out = np.full(len(step_ids), np.nan)
    if len(ids):
        at = np.minimum(np.searchsorted(ids, step_ids), len(ids) - 1)
        found = ids[at] == step_ids
        out[found] = values[at[found]]
    return out


def source_scores(store: Store, step_ids: np.ndarray, source: str, policy: str, every_step: bool = False) -> np.ndarray:
    """The source's number for each of the steps (NaN where it has none): MC value (for the
    policy) or P(yes). `every_step`: the steps may be unrated ones (an automatic reference's)."""
    return align_values(*source_values(store, source, policy, every_step), step_ids)


def scores(store: Store, steps: Sequence, source: str, policy: str) -> dict[int, float]:
    """The source's number for each step that has one, by step id (`source_scores` as a dict)."""
    ids = steps.step_id if isinstance(steps, LabelledSteps) else np.array([s.step_id for s in steps], dtype=np.int64)
    values = source_scores(store, ids, source, policy)
    has = ~np.isnan(values)
    return dict(zip(ids[has].tolist(), values[has].tolist()))


def predicted(source: str, score, threshold: float):
    """Whether the source calls a step fine at its score (a number or an array of them)."""
    if source == "mc-hard":
        return score > 0
    return score >= (threshold if uses_threshold(source) else 0.5)


@dataclass
class Comparison:
    source: str
    human: str  # the reference: human labels, or an automatic source (`automatic_reference`)
    n: int
    missing: int  # steps the reference labelled that the source has no number for
    accuracy: float | None
    kappa: metrics.Interval | None
    auroc: float | None
    confusion: dict[tuple[bool, bool], int]  # (reference, automatic) -> count
    calibration: list = field(default_factory=list)
    ece: float | None = None
    by_position: list[dict] = field(default_factory=list)
    processbench: metrics.ProcessBenchScore | None = None
    disagreements: list[dict] = field(default_factory=list)  # the first DISAGREEMENTS_SHOWN, in step order
    disagreement_count: int = 0
    automatic_reference: bool = False  # the reference is an automatic source, not humans

    @property
    def reference(self) -> str:
        return self.human


def compare(
    store: Store, steps: LabelledSteps, source: str, human: str, policy: str, threshold: float = 0.5,
    values: np.ndarray | None = None,
) -> Comparison:  # fmt: skip
    """The source against the reference labels of `steps` (`human`: an annotator, `majority` or
    `consensus` of `labelled_steps`, or the automatic source of `reference_steps`); `values` are the
    source's numbers for the steps (`source_scores`), read from the store when not given."""
    if values is None:
        values = source_scores(store, steps.step_id, source, policy, every_step=steps.automatic)
    known, fine = human_labels(steps, human)
    has = ~np.isnan(values)
    chosen = known & has
    missing = int((known & ~has).sum())
    comparison = Comparison(source, human, int(chosen.sum()), missing, None, None, None,
                            {(h, a): 0 for h in (True, False) for a in (True, False)},
                            automatic_reference=steps.automatic)  # fmt: skip
    if not comparison.n:
        return comparison
    humans, score = fine[chosen], values[chosen]
    autos = np.asarray(predicted(source, score, threshold), dtype=bool)
    trajectory, idx = steps.trajectory_id[chosen], steps.idx[chosen]
    comparison.accuracy = metrics.accuracy(humans, autos)
    comparison.kappa = _kappa(humans, autos)
    comparison.auroc = metrics.auroc(humans, score)
    cells = np.bincount(2 * humans.astype(int) + autos.astype(int), minlength=4)
    comparison.confusion = {(h, a): int(cells[2 * int(h) + int(a)]) for h in (True, False) for a in (True, False)}
    comparison.calibration, comparison.ece = metrics.calibration_bins(score, humans)
    positions, at = np.unique(idx, return_inverse=True)
    totals = np.bincount(at)
    hits = np.bincount(at, weights=humans == autos)
    comparison.by_position = [
        {"step": int(p), "n": int(n), "accuracy": int(h) / int(n)} for p, n, h in zip(positions, totals, hits)
    ]
    comparison.processbench = _processbench(trajectory, idx, humans, autos)
    differ = np.flatnonzero(humans != autos)
    comparison.disagreement_count = len(differ)
    said = "reference" if steps.automatic else "human"
    comparison.disagreements = [
        {"trajectory": t, "step": i, said: "fine" if h else "wrong", "automatic": "fine" if a else "wrong",
         "score": round(s, 3), "explore": f"/?trajectory={t}&step={i}"}
        for t, i, h, a, s in zip(trajectory[differ[:DISAGREEMENTS_SHOWN]].tolist(), idx[differ[:DISAGREEMENTS_SHOWN]].tolist(),
                                 humans[differ[:DISAGREEMENTS_SHOWN]].tolist(), autos[differ[:DISAGREEMENTS_SHOWN]].tolist(),
                                 score[differ[:DISAGREEMENTS_SHOWN]].tolist())
    ]  # fmt: skip
    return comparison


def _kappa(a: Sequence, b: Sequence) -> metrics.Interval:
    # statsmodels warns (division by zero) on degenerate tables; the Interval says it already.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return metrics.cohen_kappa(a, b)


def prefix_groups(trajectory: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For rows ordered by trajectory and position: where each trajectory's rows start, and
    whether they are the whole prefix 0..m-1 (no gap: the earliest error cannot hide in a
    missing step)."""
    if not len(trajectory):
        return np.array([], dtype=np.int64), np.array([], dtype=bool)
    starts = np.flatnonzero(np.r_[True, trajectory[1:] != trajectory[:-1]])
    ends = np.r_[starts[1:], len(trajectory)]
    return starts, idx[ends - 1] == ends - starts - 1


def first_false(ok: np.ndarray, idx: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Per group (rows from each start): the position of the first row that is not ok, -1 if none."""
    if not len(starts):
        return np.array([], dtype=np.int64)
    big = np.iinfo(np.int64).max
    first = np.minimum.reduceat(np.where(ok, big, idx), starts)
    return np.where(first == big, -1, first)


def _processbench(trajectory: np.ndarray, idx: np.ndarray, humans: np.ndarray,
                  autos: np.ndarray) -> metrics.ProcessBenchScore | None:  # fmt: skip
    """First-error F1 over trajectories whose compared steps are the whole prefix it needs:
    the gold first error is the first step the human calls wrong (-1 if none), the predicted one
    the first step the source calls wrong."""
    starts, whole = prefix_groups(trajectory, idx)
    if not whole.any():
        return None
    gold = first_false(humans, idx, starts)[whole]
    guess = first_false(autos, idx, starts)[whole]
    return metrics.processbench_f1(guess, gold)


@dataclass(frozen=True)
class Agreement:
    pairs: list[dict]  # annotator a, annotator b, n, kappa, low, high
    alpha: float | None
    units: int


def inter_annotator(steps: LabelledSteps) -> Agreement:
    """Cohen's kappa for every pair of annotators on the steps both rated (-1/0/+1), and
    Krippendorff's alpha (ordinal) over every step rated by two or more."""
    names = annotator_names(steps)
    rated = steps.ratings != NO_RATING
    pairs = []
    for i, a in enumerate(names):
        for j in range(i + 1, len(names)):
            both = rated[:, i] & rated[:, j]
            if not both.any():
                continue
            kappa = _kappa(steps.ratings[both, i].astype(np.int64), steps.ratings[both, j].astype(np.int64))
            pairs.append({"a": a, "b": names[j], "steps": int(both.sum()), "kappa": kappa.value, "low": kappa.low,
                          "high": kappa.high})  # fmt: skip
    several = rated.sum(axis=1) >= 2
    units = int(several.sum())
    if not units:
        return Agreement(pairs, None, 0)
    values = sorted(np.unique(steps.ratings[several][rated[several]]).tolist())
    counts = np.stack([((steps.ratings[several] == v) & rated[several]).sum(axis=1) for v in values], axis=1)
    return Agreement(pairs, metrics.krippendorff_alpha_counts(counts, values, metric="ordinal"), units)
