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

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Sequence

from core.errors import StepScopeError
from core.mcpe import Counts, step_value
from core.store import Store
from core.views.compare import predicted, scores

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


def latent_rows(store: Store, source: str, policy: str, threshold: float = 0.5,
                dataset: str | None = None) -> list[LatentRow]:
    rows = store.label_latents(dataset)
    step_ids = list({row["step_id"] for row in rows})

    class _Step:  # scores() takes objects with a step_id
        def __init__(self, step_id: int) -> None:
            self.step_id = step_id

    source_scores = scores(store, [_Step(s) for s in step_ids], source, policy)
    counts = store.rated_step_rollout_counts(policy)
    widths = {}
    for step_id, (n, correct) in counts.items():
        value = step_value(Counts(n, correct))
        widths[step_id] = value.high - value.low
    return [
        LatentRow(
            row["annotator"], row["step_id"], row["trajectory_id"], row["idx"], row["n_steps"], row["rating"],
            row["confidence"], None if row["dwell_ms"] is None else row["dwell_ms"] / 1000, row["category"],
            None if row["step_id"] not in source_scores
            else predicted(source, source_scores[row["step_id"]], threshold) == (row["rating"] >= 0),
            widths.get(row["step_id"]),
        )  # fmt: skip
        for row in rows
    ]


def _rate(values: Sequence[bool]) -> float | None:
    return sum(values) / len(values) if values else None


def by_confidence(rows: Sequence[LatentRow]) -> list[dict]:
    """Per confidence level: labels, agreement with the source, mean MC interval width."""
    out = []
    for level in (1, 2, 3, 4, 5):
        at = [r for r in rows if r.confidence == level]
        if not at:
            continue
        agree = [r.agrees for r in at if r.agrees is not None]
        widths = [r.mc_width for r in at if r.mc_width is not None]
        out.append({"confidence": level, "labels": len(at), "agreement": _rate(agree), "compared": len(agree),
                    "mean MC interval width": statistics.fmean(widths) if widths else None})  # fmt: skip
    return out


def by_dwell(rows: Sequence[LatentRow], bins: int = 4) -> list[dict]:
    """Dwell-time quartiles (or fewer bins): labels, disagreement with the source, median dwell."""
    timed = sorted((r for r in rows if r.dwell_s is not None and r.agrees is not None), key=lambda r: r.dwell_s)
    if not timed:
        return []
    bins = max(1, min(bins, len(timed)))
    out = []
    for b in range(bins):
        part = timed[b * len(timed) // bins : (b + 1) * len(timed) // bins]
        if part:
            out.append({"dwell bin": f"{part[0].dwell_s:.1f}–{part[-1].dwell_s:.1f} s", "order": b,
                        "labels": len(part), "median dwell s": statistics.median(r.dwell_s for r in part),
                        "disagreement": _rate([not r.agrees for r in part])})  # fmt: skip
    return out


def per_annotator(rows: Sequence[LatentRow], gold_answers: Sequence[dict]) -> list[dict]:
    """Per annotator: labels, mean confidence, agreement when sure (4-5) and unsure (1-2), the
    gap between the two (calibration: positive when confidence tracks agreement), and gold accuracy."""
    gold = defaultdict(list)
    for answer in gold_answers:
        gold[answer["annotator"]].append(answer["given"] == answer["expected"])
    out = []
    for name in sorted({r.annotator for r in rows} | set(gold)):
        mine = [r for r in rows if r.annotator == name]
        confident = [r.agrees for r in mine if r.agrees is not None and (r.confidence or 0) >= 4]
        unsure = [r.agrees for r in mine if r.agrees is not None and r.confidence is not None and r.confidence <= 2]
        levels = [r.confidence for r in mine if r.confidence is not None]
        dwell = [r.dwell_s for r in mine if r.dwell_s is not None]
        high, low = _rate(confident), _rate(unsure)
        out.append({
            "annotator": name, "labels": len(mine),
            "mean confidence": statistics.fmean(levels) if levels else None,
            "agreement when sure (4-5)": high, "agreement when unsure (1-2)": low,
            "calibration gap": None if high is None or low is None else high - low,
            "median dwell s": statistics.median(dwell) if dwell else None,
            "gold steps": len(gold[name]), "gold accuracy": _rate(gold[name]),
        })  # fmt: skip
    return out


def categories_by_position(rows: Sequence[LatentRow]) -> list[dict]:
    """Counts of error categories of -1 steps, by relative position in the trajectory."""
    counted = Counter((r.position, r.category or "uncategorised") for r in rows if r.rating == -1)
    return [{"position": position, "category": category, "steps": n}
            for (position, category), n in sorted(counted.items(), key=lambda kv: (POSITION_BINS.index(kv[0][0]), kv[0][1]))]


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
