"""Data commands of the `stepscope` CLI: import, export, and `db info`.

`register(app)` adds them to the main Typer app. The database is `--db PATH`, else
`$STEPSCOPE_DB`, else data/stepscope.db under the current directory; a new file starts with
the sample set loaded. A user-caused failure prints one red `error:` line and exits 1.
"""

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from core.cli.options import Database, Dataset, NewDataset, command_group, open_store
from core.cli.output import console, errors, user_errors

IMPORT_FORMATS_HELP = "gsm8k, model-solutions, prm800k, processbench, trl, jsonl"
ANNOTATOR_HELP = "annotator for labels that name none (trl, processbench)"
LABELS_HELP = "label source: mc-hard, mc-soft:THRESHOLD, judge:NAME, human:ANNOTATOR, consensus"


def import_command(
    file: Annotated[Path, typer.Argument(help="file to import")],
    format: Annotated[str, typer.Option("--format", "-f", help=IMPORT_FORMATS_HELP)],
    dataset: NewDataset = None,
    annotator: Annotated[Optional[str], typer.Option(help=ANNOTATOR_HELP)] = None,
    db: Database = None,
) -> None:
    """Import a file in one transaction: all of it, or (on any error) nothing."""
    from core.formats import get_importer, import_file

    with user_errors():
        get_importer(format)  # an unknown format fails before a database file is created
        store = open_store(db)
        report = import_file(store, file, format, dataset=dataset, annotator=annotator)
    console.print(escape(report.summary()), highlight=False, soft_wrap=True)


def export_command(
    format: Annotated[str, typer.Argument(help="trl, trl-parquet, math-shepherd, processbench, jsonl, tree-trl")],
    out: Annotated[Path, typer.Argument(help="file to write")],
    labels: Annotated[Optional[str], typer.Option("--labels", "-l", help=LABELS_HELP)] = None,
    dataset: Dataset = None,
    db: Database = None,
) -> None:
    """Export trajectories (jsonl: a complete dump that imports back identically)."""
    from core.formats import export_file, get_exporter

    with user_errors():
        get_exporter(format)
        store = open_store(db)
        written = export_file(store, format, out, labels=labels, dataset=dataset)
    console.print(f"wrote {written} records to {escape(str(out))}", highlight=False)
    if written == 0:
        errors.print("[yellow]warning:[/] nothing to export with these labels", highlight=False)


def info_command(db: Database = None) -> None:
    """Counts of problems, trajectories, steps, rollouts, verdicts and annotations."""
    with user_errors():
        store = open_store(db)
        counts = store.counts()
        datasets = store.datasets()
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
    by_annotator = Table("annotator", "annotations", title="annotations by annotator")
    for name, n in counts["annotations_by_annotator"].items():
        by_annotator.add_row(escape(name), str(n))
    console.print(by_annotator)


def register(app: typer.Typer) -> None:
    """Add `import`, `export` and the `db` group to the main app."""
    app.command("import")(import_command)
    app.command("export")(export_command)
    db_app = command_group("Inspect the database.")
    db_app.command("info")(info_command)
    app.add_typer(db_app, name="db")
