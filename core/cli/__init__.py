"""The `stepscope` command. Every user-caused failure ends in one line and a non-zero exit."""

import sys
import time
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from core.cli import data as cli_data, jobs as cli_jobs, judge as cli_judge, prm as cli_prm, problems as cli_problems
from core.cli import access as cli_access, trajectories as cli_trajectories, tree as cli_tree
from core.cli import search as cli_search, segmentations as cli_segmentations
from core.cli.options import EngineChoice, command_group, with_option_groups
from core.cli.output import console, errors, print_error
from core.errors import StepScopeError

try:  # typer >= 0.2x carries its own copy of click (typer._click); older typer uses click itself
    from typer._click.exceptions import ClickException, UsageError
except ImportError:  # pragma: no cover - depends on the installed typer
    from click.exceptions import ClickException, UsageError

app = command_group(__doc__, add_completion=False)
models_app = command_group("List, fetch and check models.")
app.add_typer(models_app, name="models")

@models_app.command("list")
def models_list() -> None:
    """The presets, where each comes from, and whether its files are here."""
    from core.model_status import preset_table

    rows = preset_table()
    table = Table(*rows[0].keys())
    for row in rows:
        table.add_row(*(escape(str(v)) for v in row.values()))
    console.print(table)


@models_app.command("fetch")
def models_fetch(
    name: Annotated[str, typer.Argument(help="preset name")],
    dense: Annotated[bool, typer.Option(help="also build the dense bf16 copy (vLLM needs it)")] = True,
) -> None:
    """Fetch a preset's weights into the cache under models/ (once)."""
    from core.models import resolve_model

    resolved = resolve_model(name, dense=dense)
    console.print(f"{name}: ready at {resolved.directory}", highlight=False)


@models_app.command("check")
@with_option_groups
def models_check(
    name: Annotated[str, typer.Argument(help="preset name, local directory, or hub id")],
    engine: EngineChoice = EngineChoice(),
    max_new_tokens: Annotated[int, typer.Option(min=1, help="tokens to generate")] = 32,
    prompt: Annotated[str, typer.Option(help="the text to continue")] = (
        "Question: Tom has 3 apples and buys 5 more. How many apples does he have?\nAnswer:"
    ),
) -> None:
    """Load a model, generate a few tokens, and print engine, device, load time and tokens/s."""
    from core.engines import SamplingParams, load_engine

    loaded = load_engine(engine.engine, name, **engine.options())
    try:
        params = SamplingParams(n=4, max_new_tokens=max_new_tokens, temperature=0.7, seed=0)
        loaded.generate([prompt], SamplingParams(n=1, max_new_tokens=2, temperature=0))  # warm-up
        started = time.perf_counter()
        samples = loaded.generate([prompt], params)[0]
        seconds = time.perf_counter() - started
    finally:
        loaded.close()
    tokens = sum(s.num_tokens for s in samples)
    info = loaded.info
    console.print(f"engine      {info.engine}", highlight=False)
    console.print(f"model       {info.model} ({info.extra.get('fingerprint', '')})", highlight=False)
    console.print(f"device      {info.device} {info.dtype}", highlight=False)
    console.print(f"load time   {info.load_seconds:.1f} s", highlight=False)
    console.print(f"throughput  {tokens / seconds:.1f} tokens/s ({tokens} tokens, 4 samples, {seconds:.2f} s)", highlight=False)
    console.print("sample      ", end="")
    console.print(repr(samples[0].text), highlight=False, markup=False)


# Command groups live beside their domain; registering them here keeps one entry point.
cli_access.register(app)
cli_data.register(app)
cli_jobs.register(app)
cli_judge.register(app)
cli_prm.register(app)
cli_problems.register(app)
cli_search.register(app)
cli_segmentations.register(app)
cli_trajectories.register(app)
cli_tree.register(app)


CTRL_C_EXIT = 130  # 128 + SIGINT, as shells report it


def main() -> None:
    try:
        code = app(prog_name="stepscope", standalone_mode=False) or 0
        if code == CTRL_C_EXIT:  # typer turns Ctrl-C into this exit code before it reaches us
            errors.print("aborted")
        sys.exit(code)
    except StepScopeError as error:
        print_error(str(error))
        sys.exit(1)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        errors.print("aborted")
        sys.exit(CTRL_C_EXIT)
    except UsageError as error:
        # A wrong option or value: one line, exit 2, and where to read more. (A group run bare
        # has shown its help already and raises one without a message.)
        if error.format_message():
            where = f" (see {error.ctx.command_path} --help)" if error.ctx is not None else ""
            print_error(error.format_message() + where)
        sys.exit(error.exit_code)
    except ClickException as error:  # click's other errors carry their own message and exit code
        print_error(error.format_message())
        sys.exit(error.exit_code)


if __name__ == "__main__":
    main()
