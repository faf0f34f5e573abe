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

import json
from pathlib import Path
from typing import Iterator

from core.formats.base import Exporter, ExportOptions, Importer, ImportOptions
from core.formats.labels import MC_SOURCES, labelled_prefix, labelled_rows, used_provenance
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


LATENT_COLUMNS = ("confidences", "categories")
_ROW_GROUP = 5000  # rows per Parquet row group: the rows an export holds at once


def rows(store: Store, options: ExportOptions) -> list[dict]:
    """The export's rows; `confidences` and `categories` are columns of every row when any of
    the human's labels has one, of none otherwise (a file keeps one shape)."""
    found = list(_rows(store, options, latents=True))
    if not any(_has_latents(row) for row in found):
        found = [_without_latents(row) for row in found]
    return found


def _may_have_latents(store: Store, options: ExportOptions) -> bool:
    source = options.labels
    return source is not None and source.kind == "human" and store.annotator_has_latents(source.name)


def _has_latents(row: dict) -> bool:
    return any(v is not None for name in LATENT_COLUMNS for v in row.get(name, []))


def _without_latents(row: dict) -> dict:
    return {name: value for name, value in row.items() if name not in LATENT_COLUMNS}


def _is_mc(options: ExportOptions) -> bool:
    return options.labels is not None and options.labels.kind in MC_SOURCES


def _rows(store: Store, options: ExportOptions, *, latents: bool) -> Iterator[dict]:
    for trajectory, texts, labels, human, provenance in labelled_rows(store, options):
        n = labelled_prefix(labels)
        if n:
            row = {
                "prompt": trajectory["question"],
                "completions": texts[:n],
                "labels": labels[:n],
            }
            # MC labels say which were sampled and which a search or the outcome implied.
            if provenance is not None:
                row.update(used_provenance(options, provenance, n))
            # A human's labels carry their confidence (1-5) and error category per step.
            if latents and human is not None:
                row.update({name: values[:n] for name, values in human.items()})
            yield row


def export_jsonl(store: Store, out: Path, options: ExportOptions) -> int:
    """Row by row. The latent columns are written only when the annotator has latents at all;
    if none of the exported steps turns out to carry one, the file is written again without."""
    if not _may_have_latents(store, options):
        return write_jsonl(out, _rows(store, options, latents=False))
    seen = False

    def tracked() -> Iterator[dict]:
        nonlocal seen
        for row in _rows(store, options, latents=True):
            seen = seen or _has_latents(row)
            yield row

    count = write_jsonl(out, tracked())
    if not seen:
        with open(out, encoding="utf-8") as written:
            write_jsonl(out, (_without_latents(json.loads(line)) for line in written))
    return count


def export_parquet(store: Store, out: Path, options: ExportOptions) -> int:
    """Row group by row group, with the same columns as the JSON lines export."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    fields = [
        ("prompt", pa.string()),
        ("completions", pa.list_(pa.string())),
        ("labels", pa.list_(pa.bool_())),
    ]
    if _is_mc(options):
        fields += [("provenance", pa.list_(pa.string())), ("provenance_rule", pa.list_(pa.string())),
                   ("rollouts", pa.list_(pa.int64())), ("rollouts_reached", pa.list_(pa.int64()))]  # fmt: skip
    latents = _may_have_latents(store, options)
    schema = pa.schema(fields + [("confidences", pa.list_(pa.int8())), ("categories", pa.list_(pa.string()))]
                       if latents else fields)  # fmt: skip
    count, seen, chunk = 0, False, []
    with atomic_path(out) as temporary:
        writer = None
        for row in _with_end(_rows(store, options, latents=latents)):
            if row is not None:
                seen = seen or _has_latents(row)
                chunk.append(row)
            if chunk and (row is None or len(chunk) >= _ROW_GROUP):
                writer = writer or pq.ParquetWriter(temporary, schema)
                writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
                count, chunk = count + len(chunk), []
        if writer is None:
            pq.write_table(pa.Table.from_pylist([], schema=pa.schema(fields)), temporary)
        else:
            writer.close()
            if latents and not seen:
                pq.write_table(pq.read_table(temporary).drop_columns(list(LATENT_COLUMNS)), temporary)
    return count


def _with_end(items: Iterator[dict]) -> Iterator[dict | None]:
    yield from items
    yield None


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
