"""Importers and exporters, by format name (the names the CLI takes).

Import formats: gsm8k, model-solutions, prm800k, processbench, trl, jsonl, reasoning.
Export formats: trl, trl-parquet, math-shepherd, processbench, jsonl, tree-trl, prm800k.
Each has a one-line `description` (`stepscope formats` lists them); each module documents its format; `core.formats.jsonl` is the complete dump.

Every import is all or nothing: it commits in short batches (a save in the app never waits for a
whole file), and a bad record anywhere (the error names the file and line), an interruption or a
killed process leaves the database as it was (core.formats.ingest). Importing the same file twice
adds nothing.
"""

from __future__ import annotations

import difflib
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterator

from core.errors import StepScopeError
from core.formats import gsm8k, jsonl, math_shepherd, model_solutions, prm800k, processbench, reasoning, tree, trl
from core.formats.base import Exporter, ExportOptions, Importer, ImportOptions
from core.formats.ingest import ImportReport, ingest
from core.formats.labels import SOURCES_HELP, LabelSource, ProvenanceTally, parse_label_source
from core.formats.reader import read_records
from core.formats.records import Item, Job, RecordError
from core.store import Store

IMPORTERS: dict[str, Importer] = {
    importer.name: importer
    for importer in (
        gsm8k.IMPORTER, model_solutions.IMPORTER, prm800k.IMPORTER, processbench.IMPORTER,
        trl.IMPORTER, jsonl.IMPORTER, reasoning.IMPORTER,
    )
}
EXPORTERS: dict[str, Exporter] = {
    exporter.name: exporter
    for exporter in (
        *trl.EXPORTERS, math_shepherd.EXPORTER, processbench.EXPORTER, jsonl.EXPORTER, tree.EXPORTER,
        prm800k.EXPORTER,
    )
}

__all__ = [
    "EXPORTERS", "IMPORTERS", "ImportReport", "LabelSource", "ProvenanceTally", "check_export", "check_import_splitter",
    "export_file", "get_exporter", "get_importer", "import_file", "parse_label_source",
]


def _unknown(kind: str, name: str, known: dict) -> StepScopeError:
    """One line: the unknown name, the closest known one (if any is close), and all of them."""
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return StepScopeError(f"unknown {kind} format {name!r}{hint}; known formats: {', '.join(known)}")


def get_importer(name: str) -> Importer:
    if name not in IMPORTERS:
        raise _unknown("import", name, IMPORTERS)
    return IMPORTERS[name]


def get_exporter(name: str) -> Exporter:
    if name not in EXPORTERS:
        raise _unknown("export", name, EXPORTERS)
    return EXPORTERS[name]


def check_import_splitter(format_name: str, splitter: str) -> str:
    """The stored text of `splitter` for an import of `format_name`, or StepScopeError: a rule that
    does not parse or cannot cut text (`pre-split`, a model's), or a format that cuts no free text."""
    from core.steps import check_cutting_rule

    importer = get_importer(format_name)
    if importer.splitter is None:
        splitting = [name for name, entry in IMPORTERS.items() if entry.splitter is not None]
        raise StepScopeError(
            f"format {importer.name!r} takes no splitter (only {', '.join(splitting)}); "
            "cut its trajectories another way after the import with `stepscope resegment`"
        )
    return check_cutting_rule(splitter)


def check_export(format_name: str, labels: str | LabelSource | None) -> tuple[Exporter, LabelSource | None]:
    """The exporter and the parsed label source, or StepScopeError: everything an export can
    check before it opens a database."""
    exporter = get_exporter(format_name)
    source = parse_label_source(labels) if isinstance(labels, str) else labels
    if exporter.needs_labels and source is None:
        raise StepScopeError(f"export {exporter.name} needs --labels: {SOURCES_HELP}")
    return exporter, source


def import_file(
    store: Store,
    path: str | Path,
    format_name: str,
    *,
    dataset: str | None = None,
    annotator: str | None = None,
    splitter: str | None = None,
    batch_rows: int | None = None,
    after_batch: Callable[[int, int], None] | None = None,
) -> ImportReport:
    """Import a whole file or nothing; StepScopeError (file, line) if anything is wrong.
    `splitter` cuts free text into steps, for formats that cut it (reasoning; default paragraph).
    `after_batch(batches, records)` follows each committed batch (progress)."""
    importer = get_importer(format_name)
    path = Path(path)
    rule = check_import_splitter(format_name, splitter) if splitter is not None else None
    options = ImportOptions(dataset=dataset, annotator=annotator, splitter=rule)
    return ingest(store, path, importer.name, _parsed(path, importer, options), batch_rows=batch_rows,
                  after_batch=after_batch)


def _parsed(
    path: Path, importer: Importer, options: ImportOptions
) -> Iterator[tuple[int, Item | Job]]:
    for line, obj in read_records(path):
        if not isinstance(obj, dict):
            raise StepScopeError(
                f"{path}, line {line}: expected a JSON object, got {type(obj).__name__}"
            )
        try:
            records = importer.parse(obj, options)
        except (RecordError, StepScopeError) as error:
            raise StepScopeError(f"{path}, line {line}: {importer.name} record: {error}") from None
        except RecursionError:
            raise StepScopeError(f"{path}, line {line}: JSON nested too deeply") from None
        for record in records:
            yield line, record


def export_file(
    store: Store,
    format_name: str,
    out: str | Path,
    *,
    labels: str | LabelSource | None = None,
    dataset: str | None = None,
    sampled_only: bool = False,
    tally: ProvenanceTally | None = None,
) -> int:
    """Write an export file (all or nothing); returns the number of records written. MC labels
    include those the search or the outcome implies unless `sampled_only`; `tally` counts the
    provenance of the labels written (core.formats.labels)."""
    exporter, source = check_export(format_name, labels)
    if source is not None and sampled_only:
        source = replace(source, sampled_only=True)
    return exporter.write(store, Path(out), ExportOptions(labels=source, dataset=dataset, tally=tally))
