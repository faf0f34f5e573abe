"""Compare's view of human latents: what a human's confidence, dwell time and error categories
say about their labels, set against an automatic source (MC value, a judge or a PRM).

- confidence against the MC interval width (is a human less sure where the MC value is too?) and
  against agreement with the automatic source;
- dwell time against disagreement (do people look longer at the steps they disagree on?);
- per annotator: calibration (agreement with the source at each confidence level) and accuracy on
  gold items (for the organiser; the Annotate page never shows it);
- error categories of -1 steps by relative step position.

Agreement is on the binary reading Compare uses: a human 0 or +1 is "fine", -1 "wrong"; the source
says fine at its threshold (core.views.compare.predicted).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from core.errors import StepScopeError
from core.mcpe import Counts, step_value
from core.store import Store
from core.views.compare import align_values, predicted, rollout_counts, source_values

POSITION_BINS = ("first quarter", "second quarter", "third quarter", "last quarter")


@dataclass(frozen=True)
class LatentRow:
    annotator: str
    step_id: int
    trajectory_id: int
    idx: int
    n_steps: int
    rating: int
    confidence: int | None
    dwell_s: float | None
    category: str | None
    agrees: bool | None  # with the automatic source; None where it has no number for the step
    mc_width: float | None  # width of the step's MC Wilson interval (policy's rollouts)

    @property
    def position(self) -> str:
        return POSITION_BINS[min(3, int(4 * self.idx / max(self.n_steps, 1)))]


@dataclass(frozen=True)
class LatentRows:
    """One entry per rating of a current step, as arrays, ordered by annotator name, trajectory and
    position. Codes index `annotators` and `categories`; -1, NaN say "not given"."""

    annotators: tuple[str, ...]  # sorted
    categories: tuple[str, ...]
    annotator: np.ndarray  # code
    step_id: np.ndarray
    trajectory_id: np.ndarray
    idx: np.ndarray
    n_steps: np.ndarray
    rating: np.ndarray
    confidence: np.ndarray  # 1..5, -1 not given
    dwell_s: np.ndarray  # NaN not given
    category: np.ndarray  # code, -1 none
    agrees: np.ndarray  # 1, 0; -1 where the source has no number for the step
    mc_width: np.ndarray  # NaN where the policy has no rollouts from the step

    def __len__(self) -> int:
        return len(self.step_id)

    def __getitem__(self, i: int) -> LatentRow:
        return LatentRow(
            self.annotators[self.annotator[i]], int(self.step_id[i]), int(self.trajectory_id[i]), int(self.idx[i]),
            int(self.n_steps[i]), int(self.rating[i]), None if self.confidence[i] < 0 else int(self.confidence[i]),
            None if np.isnan(self.dwell_s[i]) else float(self.dwell_s[i]),
            None if self.category[i] < 0 else self.categories[self.category[i]],
            None if self.agrees[i] < 0 else bool(self.agrees[i]),
            None if np.isnan(self.mc_width[i]) else float(self.mc_width[i]),
        )  # fmt: skip

    def position_bins(self) -> np.ndarray:
        return np.minimum(3, (4 * self.idx / np.maximum(self.n_steps, 1)).astype(np.int64))


def mc_widths(store: Store, policy: str, step_ids: np.ndarray) -> np.ndarray:
    """The width of each step's MC Wilson interval from the policy's rollouts (NaN where none):
    core.mcpe's interval, computed once per distinct (n, correct)."""
    ids, n, correct = rollout_counts(store, policy)
    pairs, which = np.unique(np.stack([n, correct], axis=1), axis=0, return_inverse=True) if len(ids) else \
        (np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.int64))  # fmt: skip
    widths = []
    for total, right in pairs.tolist():
        value = step_value(Counts(total, right))
        widths.append(value.high - value.low)
    out = np.full(len(step_ids), np.nan)
    if len(ids):
        per_step = np.asarray(widths)[np.asarray(which).reshape(-1)]
        at = np.minimum(np.searchsorted(ids, step_ids), len(ids) - 1)
        found = ids[at] == step_ids
        out[found] = per_step[at[found]]
    return out


def latent_rows(store: Store, source: str, policy: str, threshold: float = 0.5, dataset: str | None = None,
                values: tuple[np.ndarray, np.ndarray] | None = None, found: dict | None = None) -> LatentRows:  # fmt: skip
    """Every rating with its latents and its agreement with `source` at `threshold`; `values`: the
    source's (step ids, numbers), `found`: the final ratings as read (`store.rated_step_arrays`),
    where the caller has them."""
    found = found if found is not None else store.rated_step_arrays(dataset)
    names = found["names"]
    annotators = tuple(sorted(set(names.values())))
    code = {a: annotators.index(name) for a, name in names.items()}
    annotator = np.array([code[a] for a in found["annotator_id"].tolist()], dtype=np.int64)
    order = np.lexsort((found["idx"], found["trajectory_id"], annotator))
    column = {key: found[key][order] for key in ("step_id", "trajectory_id", "idx", "n_steps", "rating", "confidence",
                                                 "dwell_ms", "category")}  # fmt: skip
    step_ids = column["step_id"]
    values = align_values(*(values or source_values(store, source, policy)), step_ids)
    has = ~np.isnan(values)
    agrees = np.where(has, np.asarray(predicted(source, values, threshold)) == (column["rating"] >= 0), False)
    return LatentRows(
        annotators, found["categories"], annotator[order], step_ids, column["trajectory_id"], column["idx"],
        column["n_steps"], column["rating"], column["confidence"], column["dwell_ms"] / 1000, column["category"],
        np.where(has, agrees.astype(np.int64), -1), mc_widths(store, policy, step_ids),
    )  # fmt: skip


def _rate(values: Sequence[bool]) -> float | None:
    return sum(values) / len(values) if values else None


def _share(hits: np.ndarray) -> float | None:
    return int(hits.sum()) / len(hits) if len(hits) else None


def _fmean(values: np.ndarray) -> float | None:
    return math.fsum(values.tolist()) / len(values) if len(values) else None  # statistics.fmean's sum


def _median(values: np.ndarray) -> float | None:
    return float(np.median(values)) if len(values) else None


def by_confidence(rows: LatentRows) -> list[dict]:
    """Per confidence level: labels, agreement with the source, mean MC interval width."""
    out = []
    for level in (1, 2, 3, 4, 5):
        at = rows.confidence == level
        if not at.any():
            continue
        agree = rows.agrees[at]
        agree = agree[agree >= 0]
        widths = rows.mc_width[at]
        widths = widths[~np.isnan(widths)]
        out.append({"confidence": level, "labels": int(at.sum()), "agreement": _share(agree == 1),
                    "compared": len(agree), "mean MC interval width": _fmean(widths)})  # fmt: skip
    return out


def by_dwell(rows: LatentRows, bins: int = 4) -> list[dict]:
    """Dwell-time quartiles (or fewer bins): labels, disagreement with the source, median dwell."""
    timed = np.flatnonzero(~np.isnan(rows.dwell_s) & (rows.agrees >= 0))
    if not len(timed):
        return []
    timed = timed[np.argsort(rows.dwell_s[timed], kind="stable")]
    dwell, agrees = rows.dwell_s[timed], rows.agrees[timed]
    bins = max(1, min(bins, len(timed)))
    out = []
    for b in range(bins):
        part = slice(b * len(timed) // bins, (b + 1) * len(timed) // bins)
        if len(dwell[part]):
            out.append({"dwell bin": f"{dwell[part][0]:.1f}–{dwell[part][-1]:.1f} s", "order": b,
                        "labels": len(dwell[part]), "median dwell s": _median(dwell[part]),
                        "disagreement": _share(agrees[part] == 0)})  # fmt: skip
    return out


def per_annotator(rows: LatentRows | dict[str, dict], gold_answers: Sequence[dict]) -> list[dict]:
    """Per annotator: labels, mean confidence, agreement when sure (4-5) and unsure (1-2), the
    gap between the two (calibration: positive when confidence tracks agreement), and gold accuracy.
    `rows` may be their `annotator_summaries` (what a page caches: gold items change without a
    label changing, so gold accuracy is joined in here)."""
    summaries = annotator_summaries(rows) if isinstance(rows, LatentRows) else rows
    gold = defaultdict(list)
    for answer in gold_answers:
        gold[answer["annotator"]].append(answer["given"] == answer["expected"])
    empty = {"labels": 0, "mean confidence": None, "agreement when sure (4-5)": None,
             "agreement when unsure (1-2)": None, "calibration gap": None, "median dwell s": None}  # fmt: skip
    return [{"annotator": name, **summaries.get(name, empty), "gold steps": len(gold[name]), "gold accuracy": _rate(gold[name])}
            for name in sorted(set(summaries) | set(gold))]  # fmt: skip


def annotator_summaries(rows: LatentRows) -> dict[str, dict]:
    """`per_annotator`'s figures from the labels alone, by annotator name."""
    out = {}
    for code in np.unique(rows.annotator).tolist():
        mine = rows.annotator == code
        compared = mine & (rows.agrees >= 0)
        confident = rows.agrees[compared & (rows.confidence >= 4)] == 1
        unsure = rows.agrees[compared & (rows.confidence >= 1) & (rows.confidence <= 2)] == 1
        levels = rows.confidence[mine & (rows.confidence >= 1)]
        dwell = rows.dwell_s[mine & ~np.isnan(rows.dwell_s)]
        high, low = _share(confident), _share(unsure)
        out[rows.annotators[code]] = {
            "labels": int(mine.sum()), "mean confidence": _fmean(levels.astype(float)),
            "agreement when sure (4-5)": high, "agreement when unsure (1-2)": low,
            "calibration gap": None if high is None or low is None else high - low,
            "median dwell s": _median(dwell),
        }  # fmt: skip
    return out


def latent_views(rows: LatentRows) -> dict:
    """Everything Compare shows of the latents but gold accuracy: small tables, for a cache."""
    return {"by_confidence": by_confidence(rows), "by_dwell": by_dwell(rows),
            "categories_by_position": categories_by_position(rows), "annotators": annotator_summaries(rows)}  # fmt: skip


def categories_by_position(rows: LatentRows) -> list[dict]:
    """Counts of error categories of -1 steps, by relative position in the trajectory."""
    wrong = rows.rating == -1
    names = [*rows.categories, "uncategorised"]
    category = np.where(rows.category[wrong] < 0, len(rows.categories), rows.category[wrong])
    cells, counts = np.unique(np.stack([rows.position_bins()[wrong], category], axis=1), axis=0, return_counts=True) \
        if wrong.any() else (np.zeros((0, 2), dtype=np.int64), [])  # fmt: skip
    found = sorted(((int(b), names[c], int(n)) for (b, c), n in zip(cells.tolist(), list(counts))), key=lambda x: (x[0], x[1]))
    return [{"position": POSITION_BINS[b], "category": c, "steps": n} for b, c, n in found]


def gold_from_annotator(store: Store, trajectory_id: int, annotator: str) -> int:
    """Make a trajectory a gold item whose expected ratings are `annotator`'s (say, an expert's)
    on its current steps; returns the number of gold steps."""
    labels = {r["step_id"]: r["rating"] for r in store.annotations(trajectory_id, annotator=annotator)
              if r["rating"] is not None}
    current = {s["id"] for s in store.steps(trajectory_id)}
    expected = {step: rating for step, rating in labels.items() if step in current}
    if not expected:
        raise StepScopeError(f"{annotator} has rated no current step of trajectory {trajectory_id}")
    return store.set_gold(trajectory_id, expected)
