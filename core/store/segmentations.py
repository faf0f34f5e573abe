"""Moving labels, verdicts and values from one segmentation of a trajectory to another.

Everything said about a step stays on the step it was said about (core.store.problems: a new
segmentation gets new step rows). To see or continue it on another segmentation, it is mapped
by character span (core.steps.map_spans):

- a human label keeps its characters: it moves to the target step that contains its step's
  span (`contains`, the default) or to every target step that overlaps it (`overlaps`);
- a verdict moves like a label, but only on read: a judge scored one span, and a copy stored
  on another would pass for a score it never gave;
- a Monte Carlo value belongs to the prefix that ends at its step, so it moves only to a target
  step that ends at the same character (`same-end`), on read as well.

What does not map is counted, per kind, so a caller can say how many did not.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from core.errors import StepScopeError
from core.steps import StepSpan, check_cutting_rule, is_model_rule, map_spans
from core.store.connection import ConnectionBase

LABEL_FIELDS = ("rating", "first_error", "flagged", "note", "confidence", "rationale", "category")


@dataclass(frozen=True)
class MappedItem:
    """One label, verdict or value of a source step, with where it lands in the target."""

    kind: str  # "label" | "verdict" | "value"
    source_step_id: int
    start: int  # the source step's character span in the solution
    end: int
    target_step_ids: tuple[int, ...]
    fields: dict  # label: annotator and LABEL_FIELDS; verdict: judge, kind, p_yes; value: model, n, n_correct


@dataclass
class MappedSegmentation:
    """What one segmentation's steps carry, mapped onto another's steps."""

    items: list[MappedItem] = field(default_factory=list)
    unmapped: Counter = field(default_factory=Counter)  # kind -> how many found no target step

    def of(self, kind: str) -> list[MappedItem]:
        return [item for item in self.items if item.kind == kind]


@dataclass
class ResegmentTally:
    """What resegmenting several trajectories did: counts summed over them."""

    trajectories: int = 0
    new_segmentations: int = 0
    steps_before: int = 0
    steps_after: int = 0
    labels_moved: int = 0
    labels_unmapped: int = 0


class SegmentationQueries(ConnectionBase):
    """A segmentation's steps as spans, and what other segmentations' steps carry, mapped onto it."""

    def segmentation_steps(self, segmentation_id: int) -> tuple[list[int], list[StepSpan]]:
        """The step ids of a segmentation and their spans, in order."""
        rows = self.conn.execute(
            "SELECT id, text, start_char, end_char FROM steps WHERE segmentation_id = ? ORDER BY idx",
            [segmentation_id],
        ).fetchall()
        return [row[0] for row in rows], [StepSpan(row[1], row[2], row[3]) for row in rows]

    def _same_trajectory(self, from_segmentation: int, to_segmentation: int) -> None:
        owners = dict(self.conn.execute(
            "SELECT id, trajectory_id FROM segmentations WHERE id IN (?, ?)", [from_segmentation, to_segmentation]
        ).fetchall())  # fmt: skip
        for segmentation in (from_segmentation, to_segmentation):
            if segmentation not in owners:
                raise StepScopeError(f"segmentation {segmentation} does not exist")
        if owners[from_segmentation] != owners[to_segmentation]:
            raise StepScopeError(
                f"segmentations {from_segmentation} and {to_segmentation} are of different trajectories"
            )

    def map_segmentation(self, from_segmentation: int, to_segmentation: int, *, how: str = "contains") -> MappedSegmentation:
        """Labels and verdicts on the steps of `from_segmentation` (mapped `how`), and values (by
        the prefix end), onto the steps of `to_segmentation`, with the count of each that did not map."""
        self._same_trajectory(from_segmentation, to_segmentation)
        source_ids, source_spans = self.segmentation_steps(from_segmentation)
        target_ids, target_spans = self.segmentation_steps(to_segmentation)
        by_span = dict(zip(source_ids, zip(source_spans, map_spans(source_spans, target_spans, how))))
        by_end = dict(zip(source_ids, map_spans(source_spans, target_spans, "same-end")))
        carried = MappedSegmentation()

        def add(kind: str, step_id: int, targets: tuple[int, ...], fields: dict) -> None:
            span = by_span[step_id][0]
            if not targets:
                carried.unmapped[kind] += 1
            carried.items.append(MappedItem(kind, step_id, span.start, span.end,
                                            tuple(target_ids[i] for i in targets), fields))  # fmt: skip

        labels = self._rows(
            f"""SELECT a.step_id, n.name AS annotator, {', '.join('a.' + f for f in LABEL_FIELDS)}
                FROM annotations a JOIN annotators n ON n.id = a.annotator_id
                JOIN steps s ON s.id = a.step_id WHERE s.segmentation_id = ? ORDER BY s.idx, n.name""",
            [from_segmentation],
        )
        for row in labels:
            step_id = row.pop("step_id")
            row["first_error"], row["flagged"] = bool(row["first_error"]), bool(row["flagged"])
            add("label", step_id, by_span[step_id][1], row)
        verdicts = self._rows(
            """SELECT v.step_id, v.judge, v.kind, v.p_yes FROM verdicts v JOIN steps s ON s.id = v.step_id
               WHERE s.segmentation_id = ? ORDER BY s.idx, v.id""",
            [from_segmentation],
        )
        for row in verdicts:
            step_id = row.pop("step_id")
            add("verdict", step_id, by_span[step_id][1], row)
        values = self._rows(
            """SELECT v.step_id, v.model, v.n, v.n_correct FROM step_values v JOIN steps s ON s.id = v.step_id
               WHERE s.segmentation_id = ? ORDER BY s.idx, v.model""",
            [from_segmentation],
        )
        for row in values:
            step_id = row.pop("step_id")
            add("value", step_id, by_end[step_id], row)
        return carried

    def move_labels(
        self, from_segmentation: int, to_segmentation: int, *, how: str = "contains", annotator: str | None = None
    ) -> MappedSegmentation:
        """Copy human labels (every annotator's, or one's) onto the target segmentation's steps, in
        one transaction; returns the mapping, whose `unmapped["label"]` says how many did not map.

        A target step an annotator already labelled keeps that label (as an import does). Where
        several source labels of one annotator land on one target step (sentences onto their
        paragraph), they combine as a reader of the finer labels would: the lowest rating (one
        wrong part makes the whole wrong), first error and flag if any had them, notes joined.
        """
        mapped = self.map_segmentation(from_segmentation, to_segmentation, how=how)
        combined: dict[tuple[str, int], dict] = {}
        for item in mapped.of("label"):
            if annotator is not None and item.fields["annotator"] != annotator:
                continue
            for order, target in enumerate(item.target_step_ids):
                # A first error spread over several steps is the first of them: a solution has one.
                fields = item.fields if order == 0 else {**item.fields, "first_error": False}
                key = (item.fields["annotator"], target)
                combined[key] = _combine(combined.get(key), fields)
        with self.transaction():
            for (name, step_id), fields in combined.items():
                self.add_annotation(name, step_id, **{f: fields[f] for f in LABEL_FIELDS})
        return mapped

    def segmentation_by_rule(self, trajectory_id: int, rule: str) -> int | None:
        """The trajectory's segmentation by `rule` (the latest, were there several), or None."""
        return self._scalar(
            "SELECT id FROM segmentations WHERE trajectory_id = ? AND rule = ? ORDER BY id DESC LIMIT 1",
            [trajectory_id, rule],
        )

    def resegment_many(self, trajectory_ids, rule: str, *, move_labels: bool = False) -> ResegmentTally:
        """Cut each trajectory by `rule` and make that its current segmentation (one already cut
        so becomes current again); asked, copy the human labels of the segmentation that was
        current onto the new steps (`move_labels`), counting those that did not map. One
        transaction for all: a failure leaves every trajectory as it was.

        A model's rule (`model:FINGERPRINT`) cuts nothing: its segmentation, made by a split job
        (core.jobs.split), becomes current again, and a trajectory without one is refused."""
        if is_model_rule(rule):
            def make(trajectory_id: int) -> int:
                found = self.segmentation_by_rule(trajectory_id, rule)
                if found is None:
                    raise StepScopeError(
                        f"trajectory {trajectory_id} has no segmentation by {rule!r}: a model's steps come from a "
                        "split job (`stepscope split --model MODEL`), no rule can cut them"
                    )
                self.set_current_segmentation(trajectory_id, found)
                return found
        else:
            rule = check_cutting_rule(rule)  # as every other place stores it: default parameters dropped

            def make(trajectory_id: int) -> int:
                return self.resegment(trajectory_id, rule)

        tally = ResegmentTally()
        with self.transaction():
            for trajectory_id in trajectory_ids:
                self._switch(trajectory_id, make, move_labels, tally)
        return tally

    def add_split(self, trajectory_id: int, rule: str, spans, *, move_labels: bool = False) -> ResegmentTally:
        """Store the steps a split job chose (`spans`, rule `model:FINGERPRINT`) as a segmentation of
        the trajectory and make it current, moving the human labels as `resegment_many` does."""
        if not is_model_rule(rule):
            raise StepScopeError(f"a split job's segmentation has a model rule (model:FINGERPRINT), not {rule!r}")
        tally = ResegmentTally()
        with self.transaction():
            self._switch(trajectory_id, lambda t: self.add_segmentation(t, rule, spans), move_labels, tally)
        return tally

    def _switch(self, trajectory_id: int, make, move_labels: bool, tally: ResegmentTally) -> None:
        """Make `make(trajectory_id)` the current segmentation, labels moved if asked, into `tally`."""
        before = self.get_trajectory(trajectory_id)
        if before is None:
            raise StepScopeError(f"trajectory {trajectory_id} does not exist")
        previous = before["current_segmentation_id"]
        known = {row["id"] for row in self.segmentations(trajectory_id)}
        current = make(trajectory_id)
        steps = {row["id"]: row["n_steps"] for row in self.segmentations(trajectory_id)}
        tally.trajectories += 1
        tally.new_segmentations += current not in known
        tally.steps_before += steps.get(previous, 0)
        tally.steps_after += steps[current]
        if move_labels and previous is not None and previous != current:
            labels = self.move_labels(previous, current).of("label")
            tally.labels_moved += sum(1 for item in labels if item.target_step_ids)
            tally.labels_unmapped += sum(1 for item in labels if not item.target_step_ids)


def _combine(kept: dict | None, new: dict) -> dict:
    if kept is None:
        return dict(new)
    ratings = [r for r in (kept["rating"], new["rating"]) if r is not None]
    notes = [n for n in (kept["note"], new["note"]) if n]
    confidences = [c for c in (kept["confidence"], new["confidence"]) if c is not None]
    return {
        **kept,
        "rating": min(ratings) if ratings else None,
        "first_error": kept["first_error"] or new["first_error"],
        "flagged": kept["flagged"] or new["flagged"],
        "note": "\n".join(notes) or None,
        # The least sure of the labels combined: the combination is no surer than its parts.
        "confidence": min(confidences) if confidences else None,
        "rationale": kept["rationale"] or new["rationale"],
        "category": kept["category"] if kept["rating"] == -1 else new["category"],
    }
