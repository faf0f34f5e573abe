"""ProcessBench: `problem`, `steps`, `label` (index of the earliest wrong step, or -1),
`final_answer_correct`, plus `id` and `generator` (the model that wrote the steps).

Import: the steps are kept as given, joined by a blank line (ProcessBench cut its solutions
at blank lines), and the label becomes annotations by annotator "processbench": the steps
before the earliest error are rated +1, the error is rated -1 and marked as the first error,
and the steps after it are left unlabelled (ProcessBench says nothing about them). With
label -1 every step is rated +1. ProcessBench has no gold answer; an optional `answer` field
is used when present.

Export: one record per trajectory with the same fields. `label` is the first step the chosen
label source calls wrong, or -1 when it calls every step right; a trajectory is skipped when
a step before its first error (or any step, when there is no error) has no label. With MC
labels each record also has, per step up to the label's step (every step when -1), the
provenance columns of core.formats.labels.used_provenance (`provenance`: `sampled`,
`implied-by-search` or `implied-by-outcome`; `provenance_rule`; `rollouts`, `rollouts_reached`),
so a correct solution whose steps were never sampled is exported and says why it is all right.
"""

from __future__ import annotations

from pathlib import Path

from core.formats.base import Exporter, ExportOptions, Importer, ImportOptions
from core.formats.labels import labelled_rows, used_provenance
from core.formats.output import write_jsonl
from core.formats.records import (
    Annotation, Item, Problem, RecordError, Trajectory, opt_str, presplit, req_bool, req_int,
    req_str, str_list,
)
from core.store import Store

ANNOTATOR = "processbench"
SOURCE = "processbench"
SEPARATOR = "\n\n"


def parse(obj: dict, options: ImportOptions) -> list[Item]:
    problem = req_str(obj, "problem", nonempty=True)
    steps = str_list(obj, "steps")
    label = req_int(obj, "label", low=-1, high=len(steps) - 1)
    final_correct = req_bool(obj, "final_answer_correct")
    record_id = obj.get("id")
    if record_id is not None and not isinstance(record_id, (str, int)):
        raise RecordError("field 'id' must be a string or an integer")
    annotator = options.annotator or ANNOTATOR

    solution, segmentation = presplit(steps, SEPARATOR)
    last_rated = len(steps) - 1 if label == -1 else label
    for k, step in enumerate(segmentation.steps[: last_rated + 1]):
        wrong = k == label
        step.annotations = [Annotation(annotator, -1 if wrong else 1, first_error=wrong)]
    trajectory = Trajectory(
        source=SOURCE, model=opt_str(obj, "generator"), solution=solution,
        segmentations=[segmentation], correct=final_correct,
        meta={k: v for k, v in obj.items() if k not in ("problem", "steps", "generator")},
    )
    gold = opt_str(obj, "answer")
    return [Item(Problem(options.dataset_or(SOURCE), problem, gold), [trajectory])]


def _earliest_error(labels: list[bool | None]) -> int | None:
    """Index of the first False, -1 if every label is True, None if that is not knowable."""
    for k, label in enumerate(labels):
        if label is None:
            return None
        if label is False:
            return k
    return -1


def export(store: Store, out: Path, options: ExportOptions) -> int:
    def records():
        for trajectory, texts, labels, _, provenance in labelled_rows(store, options):
            label = _earliest_error(labels)
            if label is None:
                continue
            record = {
                "id": f"{trajectory['key'][:16]}",
                "generator": trajectory["model"],
                "problem": trajectory["question"],
                "steps": texts,
                "final_answer_correct": trajectory["correct"],
                "label": label,
            }
            # The labels the record rests on: up to the first error, or every step.
            used = used_provenance(options, provenance, len(texts) if label == -1 else label + 1)
            if used is not None:
                record.update(used)
            yield record

    return write_jsonl(out, records())


IMPORTER = Importer(
    name="processbench",
    description="ProcessBench: problem, steps, label = earliest wrong step or -1",
    default_dataset="processbench",
    parse=parse,
)
EXPORTER = Exporter(
    name="processbench",
    description="ProcessBench records; label = first step the label source calls wrong",
    needs_labels=True,
    write=export,
)
