"""The `stepscope` command is documented (in the style of sqlite-utils' test_docs.py).

Every command has a row in the command reference (README.md, or a page under docs/) that names
its arguments and every option it takes, and no row names a command or option that is gone.
Every command, option and argument has help text. A new command or option fails here until it
is documented.

A reference row: | `stepscope jobs cancel JOB_ID` | what it does | `--db` |
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer

from core.cli import app

REPO = Path(__file__).resolve().parent.parent
ROOT = typer.main.get_command(app)
ROW = re.compile(r"^\|\s*`stepscope ([^`]+)`\s*\|(.*)\|\s*$")


def walk(group, path=()):
    """(name, command) for every command under `group`, groups included, hidden ones left out."""
    for name, command in sorted(group.commands.items()):
        if command.hidden:
            continue
        yield " ".join((*path, name)), command
        if hasattr(command, "commands"):
            yield from walk(command, (*path, name))


ALL = dict(walk(ROOT))
LEAVES = {name: command for name, command in ALL.items() if not hasattr(command, "commands")}


def long_options(command) -> set[str]:
    return {name for p in command.params if p.param_type_name == "option" and not p.hidden
            for name in (*p.opts, *p.secondary_opts) if name.startswith("--")}  # fmt: skip


def arguments(command) -> list[str]:
    return [p.name.upper() for p in command.params if p.param_type_name == "argument"]


def reference() -> dict[str, tuple[list[str], set[str]]]:
    """Command -> (arguments, options) from every reference row in the docs."""
    rows = {}
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("**/*.md"))]:
        for line in doc.read_text(encoding="utf-8").splitlines():
            match = ROW.match(line)
            if match:
                words = match.group(1).split()
                name = " ".join(w for w in words if not w.isupper())
                options = {o for cell in re.findall(r"`([^`]+)`", match.group(2)) for o in cell.split("/")
                           if o.startswith("--")}  # fmt: skip
                assert name not in rows, f"two reference rows for stepscope {name}"
                rows[name] = ([w for w in words if w.isupper()], options)
    return rows


DOCUMENTED = reference()


def test_the_walk_finds_the_commands():
    assert {"estimate", "jobs cancel", "models fetch", "import"} <= set(LEAVES)
    assert {"jobs", "models"} <= set(ALL) - set(LEAVES)
    assert "--db" in long_options(LEAVES["estimate"]) and arguments(LEAVES["import"]) == ["FILE"]


@pytest.mark.parametrize("name", sorted(LEAVES))
def test_command_is_in_the_reference(name):
    assert name in DOCUMENTED, f"no reference row for `stepscope {name}` in README.md (or docs/)"


@pytest.mark.parametrize("name", sorted(LEAVES))
def test_reference_row_names_every_argument_and_option(name):
    documented_arguments, documented_options = DOCUMENTED.get(name, ([], set()))
    command = LEAVES[name]
    assert documented_arguments == arguments(command), f"stepscope {name}: arguments"
    assert not long_options(command) - documented_options, f"stepscope {name}: options not in its reference row"
    assert not documented_options - long_options(command), f"stepscope {name}: the row names options it lacks"


def test_no_row_for_a_command_that_does_not_exist():
    assert not set(DOCUMENTED) - set(LEAVES)


@pytest.mark.parametrize("name", ["", *sorted(ALL)])
def test_command_has_help(name):
    command = ALL.get(name, ROOT)
    assert (command.help or "").strip(), f"stepscope {name}: no help text (its docstring or help=)"


@pytest.mark.parametrize("name", sorted(LEAVES))
def test_every_option_and_argument_has_help(name):
    missing = [p.name for p in LEAVES[name].params if not getattr(p, "hidden", False) and not (getattr(p, "help", None) or "").strip()]
    assert not missing, f"stepscope {name}: no help= for {missing}"
