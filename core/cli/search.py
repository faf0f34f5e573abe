"""`stepscope search`: step-level search with a verifier in the loop (core.search), run as a job in
the foreground; a kill leaves it resumable with `stepscope jobs resume ID`.

The search's options are derived from `SearchConfig` (as vLLM derives its command line from
`EngineArgs`): each parameter has one name, one default and one help text, there and here. Only
the flags differ where the issue names them otherwise (`--width`, `--budget-tokens`).
"""

import codecs
import functools
import inspect
from dataclasses import fields
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from core.cli.options import Database, EngineChoice, Policy, as_usage_error, open_store, with_option_groups
from core.cli.output import console
from core.errors import StepScopeError
from core.models import DEFAULT_MODEL
from core.search.config import SearchConfig

# Flags that are not the parameter's own name.
FLAGS = {"beam_width": "--width", "token_budget": "--budget-tokens", "solution_stops": "--solution-stop"}
# SearchConfig's annotations are strings (postponed evaluation); what typer needs for each.
OPTION_TYPES = {"int": int, "float": float, "str": str, "int | None": Optional[int],
                "tuple[str, ...]": Optional[list[str]]}  # fmt: skip


def config_parameters() -> list[inspect.Parameter]:
    """One keyword parameter per SearchConfig field, for typer to read as an option."""
    parameters = []
    for f in fields(SearchConfig):
        flag = FLAGS.get(f.name, "--" + f.name.replace("_", "-"))
        help_text = f.metadata["help"] + (" (repeatable; default: the few-shot prompt's)" if f.name == "solution_stops" else "")
        # The delimiter's default is a newline: shown escaped, and typed escaped (`--step-delimiter '\n'`).
        option = typer.Option(flag, help=help_text, show_default=repr(f.default)[1:-1] if f.name == "step_delimiter" else True)
        default = None if f.name == "solution_stops" else f.default  # a list option: None keeps the config's
        parameters.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY,
                                            annotation=Annotated[OPTION_TYPES[f.type], option], default=default))  # fmt: skip
    return parameters


def with_search_config(command):
    """Let a command take `config: SearchConfig`: typer sees its fields as options, the command
    gets the config built from them; an invalid one is a usage error (one line, exit 2)."""
    signature = inspect.signature(command)
    names = {f.name for f in fields(SearchConfig)}

    @functools.wraps(command)
    def run(**options):
        given = {name: options.pop(name) for name in names}
        if given["solution_stops"] is None:
            del given["solution_stops"]
        else:
            given["solution_stops"] = tuple(_unescape(stop) for stop in given["solution_stops"])
        given["step_delimiter"] = _unescape(given["step_delimiter"])
        options["config"] = as_usage_error(lambda: SearchConfig(**given), "--strategy/--n/--width")
        return command(**options)

    expanded = []  # the config's options where the command lists `config`
    for parameter in signature.parameters.values():
        expanded += config_parameters() if parameter.name == "config" else [
            parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY)]  # fmt: skip
    run.__signature__ = signature.replace(parameters=expanded)
    return run


def _unescape(text: str) -> str:
    """`\\n` typed on a command line is the newline it names."""
    return codecs.decode(text, "unicode_escape") if "\\" in text else text


@with_option_groups
@with_search_config
def search_command(
    config: SearchConfig,
    scorer: Annotated[str, typer.Option(
        help="random[:SEED] | mc[:K] (K policy rollouts per candidate) | self-judge (the policy's P(Yes)) | "
             "orm:FOLDER (a fine-tuned ORM) | prm:FOLDER (a PRM folder, e.g. from train-prm)")] = "random",
    problems: Annotated[Optional[str], typer.Option(help="problem ids, comma-separated")] = None,
    dataset: Annotated[str, typer.Option(help="else: the problems of this dataset")] = "sample",
    limit: Annotated[Optional[int], typer.Option(min=1, help="at most this many problems")] = None,
    policy: Policy = DEFAULT_MODEL,
    engine: EngineChoice = EngineChoice(),
    db: Database = None,
) -> None:  # fmt: skip
    """Search each problem step by step with a verifier in the loop: best-of-N, beam, DVTS, MCTS or rejection."""
    from core.cli.jobs import run_in_foreground
    from core.jobs.runner import queue
    from core.jobs.search import ScorerChoice, SearchSpec

    as_usage_error(lambda: ScorerChoice.parse(scorer), "--scorer")  # before the database is opened
    listed = _ids(problems)
    store = open_store(db)
    ids = listed or tuple(p["id"] for p in store.list_problems(dataset=dataset, limit=limit))
    if not ids:
        raise StepScopeError(f"dataset {dataset!r} has no problems: import or synthesise some (stepscope problems synth)")
    job_id = queue(store, SearchSpec(policy=policy, problem_ids=ids, config=config, scorer=scorer,
                                     **engine.spec_fields()))  # fmt: skip
    run_in_foreground(store, job_id)
    print_searches(store, job_id)


def _ids(listed: Optional[str]) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in (listed or "").split(",") if part.strip())
    except ValueError:
        raise typer.BadParameter(f"ids separated by commas, not {listed!r}", param_hint="--problems") from None


def print_searches(store, job_id: int) -> None:
    """One row per problem searched, then what the job spent."""
    from core.cli.jobs import print_compute

    table = Table("search", "problem", "answer", "correct", "candidates", "chosen", "pruned", "pending", "beams",
                  "stopped")  # fmt: skip
    searches = store.job_search_summary(job_id)
    for search in searches:
        table.add_row(*(escape(str(search[column] if search[column] is not None else "")) for column in (
            "id", "problem_id", "answer", "correct", "candidates", "chosen", "pruned", "pending", "beams", "stopped")))  # fmt: skip
    console.print(table)
    correct = sum(1 for s in searches if s["correct"])
    console.print(f"{correct} of {len(searches)} searches answered correctly", highlight=False)
    print_compute(store.get_job(job_id))


def register(app: typer.Typer) -> None:
    app.command("search")(search_command)
