"""Problem-set commands of the `stepscope` CLI: `problems synth`.

`register(app)` adds the `problems` group to the main Typer app.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from core.cli.data import DB_HELP
from core.synth import DEFAULT_TEST_FRACTION, MAX_STEPS, MIN_STEPS

_console = Console()

problems_app = typer.Typer(no_args_is_help=True, help="Create problem sets.")


@problems_app.command("synth")
def synth_command(
    steps: str = typer.Option("1-4", help=f"arithmetic steps per problem: N or A-B ({MIN_STEPS}-{MAX_STEPS})"),
    count: int = typer.Option(100, min=1, help="problems in all, spread evenly over the step counts"),
    seed: int = typer.Option(0, help="the same seed draws the same problems"),
    dataset: str = typer.Option("synth", help="put the problems in this dataset"),
    test_fraction: float = typer.Option(
        DEFAULT_TEST_FRACTION, min=0.0, max=1.0,
        help="share of template instances in the test split (by instance hash)",
    ),
    db: Optional[Path] = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """Generate GSM-style word problems with gold answers and reference solutions.

    Train and test never share a template instance; the split is in each problem's meta.
    """
    from core.store import Store
    from core.synth import parse_steps_range, write_synth

    # A StepScopeError reaches the entry point, which prints it as one line and exits 1.
    steps_range = parse_steps_range(steps)  # a bad range fails before a database is created
    store = Store.open(db)
    written = write_synth(store, dataset, steps_range, count, seed, test_fraction=test_fraction)
    _console.print(
        f"dataset {escape(dataset)}: {sum(written.values())} problems with {steps} steps "
        f"(train {written['train']}, test {written['test']}) and their reference solutions "
        f"in {escape(str(store.path))}",
        highlight=False, soft_wrap=True,
    )  # fmt: skip


def register(app: typer.Typer) -> None:
    app.add_typer(problems_app, name="problems")
