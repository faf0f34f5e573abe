"""Data commands of the `stepscope` CLI: import, export, formats, and `db info`.

`register(app)` adds them to the main Typer app. The database is `--db PATH`, else
`$STEPSCOPE_DB`, else data/stepscope.db under the current directory; a new file starts with
the sample set loaded. Everything that can be checked without the database (the format, the
file, the label source) is checked before it is opened, so a mistake creates no file. A wrong
format or label source is a usage error (exit 2); other user-caused failures exit 1.
"""

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from core.cli.options import Database, Dataset, NewDataset, as_usage_error, command_group, open_store
from core.cli.output import console, errors, user_errors

from core.errors import StepScopeError

IMPORT_FORMATS_HELP = "gsm8k, model-solutions, prm800k, processbench, trl, jsonl (`stepscope formats` describes them)"
EXPORT_FORMATS_HELP = (
    "trl, trl-parquet, math-shepherd, processbench, jsonl, tree-trl, prm800k (`stepscope formats` describes them)"
)
ANNOTATOR_HELP = "annotator for labels that name none (trl, processbench)"
# core.formats.labels.SOURCES_HELP, spelled here so that reading the CLI's options does not import the store.
LABELS_HELP = ("label source: mc-hard, mc-soft:THRESHOLD, judge|prm|probe|orm:NAME, human[:ANNOTATOR] (0 = neutral "
               "counts as right; no name: more than half of the annotators), consensus or majority")
SPLITTER_HELP = ("reasoning format: how the thinking is cut into steps (default paragraph): line, paragraph, "
                 "sentence, sentence-merged[:MIN-MAX], reflection[:MARKER|MARKER...]")
SAMPLED_ONLY_HELP = ("MC labels: only steps with their own rollouts; by default a step the first-error search or the "
                     "graded outcome implies is labelled too, and marked so (provenance)")


def _usage(check):
    """An option callback: `check(value)`'s StepScopeError becomes a usage error (exit 2) that
    names the option, raised while the command line is read, before any database is opened."""

    def callback(value):
        if value is not None:
            try:
                check(value)
            except StepScopeError as error:
                raise typer.BadParameter(str(error)) from None
        return value

    return callback


def _check_import_format(name: str) -> None:
    from core.formats import get_importer

    get_importer(name)


def _check_splitter(rule: str) -> None:
    from core.steps import check_cutting_rule

    check_cutting_rule(rule)


def _check_export_format(name: str) -> None:
    from core.formats import get_exporter

    get_exporter(name)


def _check_labels(spec: str) -> None:
    from core.formats import parse_label_source

    parse_label_source(spec)


def import_command(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="file to import")],
    format: Annotated[str, typer.Option(
        "--format", "-f", help=IMPORT_FORMATS_HELP, callback=_usage(_check_import_format))],
    dataset: NewDataset = None,
    annotator: Annotated[Optional[str], typer.Option(help=ANNOTATOR_HELP)] = None,
    splitter: Annotated[Optional[str], typer.Option(
        "--splitter", metavar="RULE", help=SPLITTER_HELP, callback=_usage(_check_splitter))] = None,
    db: Database = None,
) -> None:
    """Import a file: all of it, or (on any error, Ctrl-C or a kill) nothing; written in batches, so the app
    saves labels meanwhile."""
    from core.formats import check_import_splitter, import_file

    if splitter is not None:  # a format that cuts no text is a usage error too, before a database exists
        splitter = as_usage_error(lambda: check_import_splitter(format, splitter), "--splitter")
    with user_errors():
        store = open_store(db)  # the format and the file were checked while the options were read
        report = import_file(store, file, format, dataset=dataset, annotator=annotator, splitter=splitter)
    console.print(escape(report.summary()), highlight=False, soft_wrap=True)


def export_command(
    format: Annotated[str, typer.Argument(help=EXPORT_FORMATS_HELP, callback=_usage(_check_export_format))],
    out: Annotated[Path, typer.Argument(help="file to write")],
    labels: Annotated[Optional[str], typer.Option(
        "--labels", "-l", help=LABELS_HELP, callback=_usage(_check_labels))] = None,
    sampled_only: Annotated[bool, typer.Option("--sampled-only", help=SAMPLED_ONLY_HELP)] = False,
    dataset: Dataset = None,
    db: Database = None,
) -> None:
    """Export trajectories (jsonl: a complete dump that imports back identically)."""
    from core.formats import ProvenanceTally, check_export, export_file

    with user_errors():
        _, source = check_export(format, labels)  # a missing --labels fails before a database file is created
        if sampled_only and (source is None or source.kind not in ("mc-hard", "mc-soft")):
            raise typer.BadParameter("only MC labels (mc-hard, mc-soft:T) are sampled or implied; drop it or use "
                                     "an MC label source", param_hint="--sampled-only")  # fmt: skip
        store = open_store(db)
        tally = ProvenanceTally()
        written = export_file(store, format, out, labels=labels, dataset=dataset, sampled_only=sampled_only,
                              tally=tally)  # fmt: skip
    console.print(f"wrote {written} records to {escape(str(out))}", highlight=False)
    if source is not None and source.kind in ("mc-hard", "mc-soft"):
        # Which labels were sampled and which a search or the outcome implied (core.formats.labels).
        console.print(tally.summary(), highlight=False, markup=False, soft_wrap=True)
    if written == 0:
        errors.print("[yellow]warning:[/] nothing to export with these labels", highlight=False)


def formats_command() -> None:
    """The import and export formats, each with a one-line description."""
    from core.formats import EXPORTERS, IMPORTERS

    width = max(map(len, [*IMPORTERS, *EXPORTERS]))
    for kind, registry in (("import", IMPORTERS), ("export", EXPORTERS)):
        for name, entry in registry.items():
            needs = " (needs --labels)" if getattr(entry, "needs_labels", False) else ""
            console.print(f"{kind}  {name:<{width}}  {entry.description}{needs}", highlight=False,
                          markup=False, soft_wrap=True)  # fmt: skip


def info_command(db: Database = None) -> None:
    """Counts of problems, trajectories, steps, rollouts, verdicts and annotations, and per
    dataset, source and model: trajectories, steps, labelled steps, rollouts and verdicts."""
    with user_errors():
        store = open_store(db)
        counts = store.counts()
        datasets = store.datasets()
        groups = store.breakdown()
    console.print(f"database: {escape(str(store.path))}", highlight=False)
    table = Table("table", "rows", title="contents")
    for name in ("problems", "trajectories", "segmentations", "steps", "rollouts", "verdicts",
                 "annotations", "jobs"):
        table.add_row(name, str(counts[name]))
    console.print(table)
    if datasets:
        by_dataset = Table("dataset", "problems", title="problems by dataset")
        for row in datasets:
            by_dataset.add_row(escape(row["dataset"]), str(row["problems"]))
        console.print(by_dataset)
    if groups:
        columns = ("trajectories", "steps", "labelled_steps", "rollouts", "verdicts")
        by_group = Table("dataset", "source", "model", *(c.replace("_", " ") for c in columns),
                         title="trajectories by dataset, source and model")  # fmt: skip
        for row in groups:
            by_group.add_row(escape(row["dataset"]), escape(row["source"]), escape(row["model"] or "-"),
                             *(str(row[c]) for c in columns))  # fmt: skip
        console.print(by_group)
    by_annotator = Table("annotator", "annotations", title="annotations by annotator")
    for name, n in counts["annotations_by_annotator"].items():
        by_annotator.add_row(escape(name), str(n))
    console.print(by_annotator)


def register(app: typer.Typer) -> None:
    """Add `import`, `export` and the `db` group to the main app."""
    app.command("import")(import_command)
    app.command("export")(export_command)
    app.command("formats")(formats_command)
    db_app = command_group("Inspect the database.")
    db_app.command("info")(info_command)
    app.add_typer(db_app, name="db")
