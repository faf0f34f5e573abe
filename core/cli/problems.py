"""Problem-set commands of the `stepscope` CLI: `problems synth`.

`register(app)` adds the `problems` group to the main Typer app.
"""

from typing import Annotated

import typer
from rich.markup import escape

from core.cli.options import Database, NewDataset, command_group, open_store
from core.cli.output import console
from core.synth import DEFAULT_TEST_FRACTION, MAX_STEPS, MIN_STEPS

problems_app = command_group("Create problem sets.")


@problems_app.command("synth")
def synth_command(
    steps: Annotated[str, typer.Option(
        help=f"arithmetic steps per problem: N or A-B ({MIN_STEPS}-{MAX_STEPS})")] = "1-4",
    count: Annotated[int, typer.Option(min=1, help="problems in all, spread evenly over the step counts")] = 100,
    seed: Annotated[int, typer.Option(help="the same seed draws the same problems")] = 0,
    dataset: NewDataset = "synth",
    test_fraction: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="share of template instances in the test split (by instance hash)",
    )] = DEFAULT_TEST_FRACTION,
    db: Database = None,
) -> None:
    """Generate GSM-style word problems with gold answers and reference solutions.

    Train and test never share a template instance; the split is in each problem's meta.
    """
    from core.synth import parse_steps_range, write_synth

    # A StepScopeError reaches the entry point, which prints it as one line and exits 1.
    steps_range = parse_steps_range(steps)  # a bad range fails before a database is created
    store = open_store(db)
    written = write_synth(store, dataset, steps_range, count, seed, test_fraction=test_fraction)
    console.print(
        f"dataset {escape(dataset)}: {sum(written.values())} problems with {steps} steps "
        f"(train {written['train']}, test {written['test']}) and their reference solutions "
        f"in {escape(str(store.path))}",
        highlight=False, soft_wrap=True,
    )  # fmt: skip


def register(app: typer.Typer) -> None:
    app.add_typer(problems_app, name="problems")
