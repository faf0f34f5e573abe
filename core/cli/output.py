"""Where the `stepscope` commands write: results to stdout, errors and notes to stderr.

Every user-caused failure ends in one red `error:` line (print_error) and a non-zero exit.
"""

from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.markup import escape

from core.errors import StepScopeError

console = Console()
errors = Console(stderr=True)


def print_error(message: str) -> None:
    errors.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


@contextmanager
def user_errors() -> Iterator[None]:
    """StepScopeError as one error line and exit 1, also where a command runs without core.cli's
    main (a test's own Typer app)."""
    try:
        yield
    except StepScopeError as error:
        print_error(str(error))
        # SystemExit, not typer.Exit: with standalone_mode=False click turns typer.Exit into a
        # return value, which an entry point can drop (the process would then exit 0).
        raise SystemExit(1) from None
