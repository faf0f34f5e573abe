"""`stepscope resegment`: cut trajectories another way, and optionally carry their labels over.

A new segmentation is added beside the old ones (core.store: labels, values and verdicts stay on
the steps they were made on) and becomes current. With `--move-labels`, the human labels of the
segmentation that was current are copied onto the new steps by character span
(core.store.segmentations: resegment_many, move_labels); those that find no step are counted and
reported, since a label silently lost is a label a person has to make again without knowing it.
All the trajectories are resegmented in one transaction: a failure or Ctrl-C leaves none changed.
"""

from typing import Annotated, Optional

import typer
from rich.markup import escape

from core.cli.options import Database, as_usage_error, open_store
from core.cli.output import console, user_errors
from core.errors import StepScopeError

RULE_HELP = ("the splitter: line, paragraph, blank-line, step-marker, sentence, sentence-merged[:MIN-MAX], "
             "reflection[:MARKER|MARKER...]")  # fmt: skip


def checked_rule(rule: str) -> str:
    """The rule as stored (parameters that are the defaults dropped), or StepScopeError."""
    from core.steps import parse_rule

    if rule == "pre-split":
        raise StepScopeError("'pre-split' is for steps that came split, not a way to cut text")
    return parse_rule(rule).text()


def resegment_command(
    rule: Annotated[str, typer.Option("--rule", metavar="RULE", help=RULE_HELP)],
    trajectory: Annotated[Optional[int], typer.Option(min=1, help="this trajectory (by id)")] = None,
    dataset: Annotated[Optional[str], typer.Option(help="every trajectory of this dataset")] = None,
    move_labels: Annotated[bool, typer.Option(
        "--move-labels", help="copy the human labels onto the new steps by character span; says how many did not map"
    )] = False,  # fmt: skip
    db: Database = None,
) -> None:
    """Cut trajectories by another splitter: a new segmentation, made current (the old ones and what is on them stay)."""
    stored_rule = as_usage_error(lambda: checked_rule(rule), "--rule")
    if (trajectory is None) == (dataset is None):
        raise typer.BadParameter("name one trajectory or one dataset", param_hint="--trajectory or --dataset")
    with user_errors():
        store = open_store(db)
        if trajectory is not None:
            ids = [trajectory]
        else:
            ids = [row["id"] for row in store.list_trajectories(dataset=dataset)]
            if not ids:
                raise StepScopeError(f"dataset {dataset!r} has no trajectories (`stepscope db info` lists the datasets)")
        tally = store.resegment_many(ids, stored_rule, move_labels=move_labels)
    what = f"trajectory {trajectory}" if trajectory is not None else f"{tally.trajectories} trajectories"
    console.print(
        f"{escape(what)} cut by {escape(repr(stored_rule))}: {tally.steps_after} steps (were {tally.steps_before}); "
        f"{tally.new_segmentations} new segmentations, now current",
        highlight=False, soft_wrap=True,
    )  # fmt: skip
    if move_labels:
        console.print(f"labels moved: {tally.labels_moved}; did not map: {tally.labels_unmapped}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("resegment")(resegment_command)
