"""Math-Shepherd step-tag format (export only).

One JSON line per trajectory:
    {"input": Q + " " + S1 + " ки\n" + S2 + " ки\n" + ... + Sn + " ки",
     "label": Q + " " + S1 + " +\n" + S2 + " -\n" + ... + Sn + " +",
     "task": <the problem's dataset>}
Q is the question and S1..Sn the exact step texts, cut to the longest prefix of steps that
all have a label. Each step ends with a space and the step tag `ки` (Cyrillic, as in the
Math-Shepherd release) in `input`; in `label` the tag is replaced by "+" (step right) or "-"
(step wrong), so a PRM reads its targets at the tag positions. Steps are joined by "\n".
A step whose own text contains the tag makes the tags ambiguous; such steps are rare and are
exported as they are. With MC labels each record also has, per tagged step, the provenance
columns of core.formats.labels.used_provenance (`provenance`: `sampled`, `implied-by-search` or
`implied-by-outcome`; `provenance_rule`; `rollouts`, `rollouts_reached`).
"""

from __future__ import annotations

from pathlib import Path

from core.formats.base import Exporter, ExportOptions
from core.formats.labels import labelled_prefix, labelled_rows, used_provenance
from core.formats.output import write_jsonl
from core.store import Store

STEP_TAG = "ки"


def record(question: str, steps: list[str], labels: list[bool], task: str) -> dict:
    tagged = "\n".join(f"{step} {STEP_TAG}" for step in steps)
    marked = "\n".join(f"{step} {'+' if ok else '-'}" for step, ok in zip(steps, labels))
    return {"input": f"{question} {tagged}", "label": f"{question} {marked}", "task": task}


def export(store: Store, out: Path, options: ExportOptions) -> int:
    def records():
        for trajectory, texts, labels, _, provenance in labelled_rows(store, options):
            n = labelled_prefix(labels)
            if n:
                row = record(trajectory["question"], texts[:n], labels[:n], trajectory["dataset"])
                used = used_provenance(options, provenance, n)
                if used is not None:
                    row.update(used)
                yield row

    return write_jsonl(out, records())


EXPORTER = Exporter(
    name="math-shepherd",
    description="Math-Shepherd: steps tagged ' ки' in input, '+'/'-' in label",
    needs_labels=True,
    write=export,
)
