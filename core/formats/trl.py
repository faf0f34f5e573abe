"""TRL stepwise supervision: `prompt` (text), `completions` (the steps), `labels` (one bool each).

This is the dataset shape TRL's PRMTrainer trains on; the trainer joins the completions with
its own `step_separator`, so steps are exported as their exact text, without separators.

Import: the steps are joined with a newline (rule "pre-split", TRL's default separator) and
the labels become annotations (True -> +1, False -> -1, the first False is the first error)
by annotator "trl", or the one given with --annotator. There is no gold answer in this format.
Conversational prompts (lists of messages) are not supported.

Export (`trl` JSONL, `trl-parquet`): one row per trajectory with labels from the chosen
source, cut to the longest prefix of steps that all have a label; trajectories with no
labelled first step are left out. With human labels (`human:NAME`) that carry any confidence or error category, every row
also has `confidences` (1-5 or null) and `categories` (the error category of a -1 step, or
null) per step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from core.formats.base import Exporter, ExportOptions, Importer, ImportOptions
from core.formats.labels import labelled_prefix, labelled_trajectories, step_latents
from core.formats.output import atomic_path, write_jsonl
from core.formats.records import (
    Annotation, Item, Problem, RecordError, Trajectory, presplit, req_list, req_str, str_list,
)
from core.store import Store

ANNOTATOR = "trl"
SOURCE = "trl"
SEPARATOR = "\n"


def parse(obj: dict, options: ImportOptions) -> list[Item]:
    if isinstance(obj.get("prompt"), list):
        raise RecordError("conversational prompts (lists of messages) are not supported")
    prompt = req_str(obj, "prompt", nonempty=True)
    completions = str_list(obj, "completions")
    labels = req_list(obj, "labels")
    if len(labels) != len(completions) or not all(isinstance(v, bool) for v in labels):
        raise RecordError(
            f"field 'labels' must be {len(completions)} booleans, one per completion"
        )
    annotator = options.annotator or ANNOTATOR
    solution, segmentation = presplit(completions, SEPARATOR)
    first_error = labels.index(False) if False in labels else None
    for k, (step, label) in enumerate(zip(segmentation.steps, labels)):
        step.annotations = [Annotation(annotator, 1 if label else -1, first_error=k == first_error)]
    meta = {k: v for k, v in obj.items() if k not in ("prompt", "completions", "labels")}
    trajectory = Trajectory(
        source=SOURCE, solution=solution, segmentations=[segmentation], meta=meta
    )
    return [Item(Problem(options.dataset_or("trl"), prompt, None), [trajectory])]


def rows(store: Store, options: ExportOptions) -> list[dict]:
    """The export's rows; `confidences` and `categories` are columns of every row when any of
    the human's labels has one, of none otherwise (a file keeps one shape)."""
    found = list(_rows(store, options))
    if not any(v is not None for row in found for name in LATENT_COLUMNS for v in row.get(name, [])):
        for row in found:
            for name in LATENT_COLUMNS:
                row.pop(name, None)
    return found


LATENT_COLUMNS = ("confidences", "categories")


def _rows(store: Store, options: ExportOptions) -> Iterator[dict]:
    for trajectory, steps, labels in labelled_trajectories(store, options):
        n = labelled_prefix(labels)
        if n:
            row = {
                "prompt": trajectory["question"],
                "completions": [step["text"] for step in steps[:n]],
                "labels": labels[:n],
            }
            # A human's labels carry their confidence (1-5) and error category per step.
            latents = step_latents(store, trajectory["id"], steps, options.labels)
            if latents is not None:
                row.update({name: values[:n] for name, values in latents.items()})
            yield row


def export_jsonl(store: Store, out: Path, options: ExportOptions) -> int:
    return write_jsonl(out, rows(store, options))


def export_parquet(store: Store, out: Path, options: ExportOptions) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    fields = [
        ("prompt", pa.string()),
        ("completions", pa.list_(pa.string())),
        ("labels", pa.list_(pa.bool_())),
    ]
    found = rows(store, options)
    if found and "confidences" in found[0]:
        fields += [("confidences", pa.list_(pa.int8())), ("categories", pa.list_(pa.string()))]
    table = pa.Table.from_pylist(found, schema=pa.schema(fields))
    with atomic_path(out) as temporary:
        pq.write_table(table, temporary)
    return table.num_rows


IMPORTER = Importer(
    name="trl",
    description="TRL stepwise supervision: prompt, completions (steps), labels (bools)",
    default_dataset="trl",
    parse=parse,
)
EXPORTERS = [
    Exporter("trl", "TRL stepwise supervision, JSON lines", True, export_jsonl),
    Exporter("trl-parquet", "TRL stepwise supervision, Parquet", True, export_parquet),
]
