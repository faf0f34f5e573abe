"""Every command's usage errors: one `error:` line naming the cause, exit 2, no traceback, and no
database file created (issue 24).

The commands are enumerated from core.cli's Typer app, so a new command or option is covered
without a change here. Most invocations run core.cli.main in this process (each one parses its
command line and stops at the mistake, before a command body runs); a few run the real command
in a subprocess, as a user would.
"""

from __future__ import annotations

import sys

import pytest
import typer

from cli_runner import assert_one_line_error, run_cli
from core.cli import app, main

ROOT = typer.main.get_command(app)


def walk(group, path=()):
    """(path, command) for the root, every group and every command."""
    yield path, group
    for name, command in sorted(getattr(group, "commands", {}).items()):
        yield from walk(command, (*path, name))


COMMANDS = dict(walk(ROOT))


def below_minimum(command) -> list[tuple[str, str]]:
    """(option, a value below its minimum) for each numeric option that has a minimum (typer
    keeps the bound on the parameter as `min`, an int or a float)."""
    found = []
    for param in command.params:
        minimum = getattr(param, "min", None)
        if param.param_type_name == "option" and not param.is_flag and minimum is not None:
            assert isinstance(minimum, (int, float)), (param.name, minimum)
            found.append((param.opts[0], str(minimum - 1)))
    return found


CASES = [
    *[(path, (*path, "--no-such-option"), "No such option: --no-such-option") for path in COMMANDS],
    *[(path, (*path, option, value), option) for path, command in COMMANDS.items()
      for option, value in below_minimum(command)],  # fmt: skip
    ((), ("dbb",), "dbb"),
    (("import",), ("import", "{file}", "--format", "gsm8kk"), "did you mean 'gsm8k'?"),
    (("import",), ("import", "{file}", "--format", "csv"), "known formats: gsm8k"),
    (("import",), ("import", "no-such-file.jsonl", "--format", "gsm8k"), "no-such-file.jsonl"),
    (("import",), ("import", "{file}", "--format", "reasoning", "--splitter", "paragraphs"), "unknown step splitter"),
    (("import",), ("import", "{file}", "--format", "gsm8k", "--splitter", "line"), "takes no splitter"),
    (("resegment",), ("resegment", "--trajectory", "1", "--rule", "reflection:"), "empty marker"),
    (("resegment",), ("resegment", "--rule", "line"), "name one trajectory or one dataset"),
    (("export",), ("export", "trll", "out.jsonl", "--labels", "mc-hard"), "did you mean 'trl'?"),
    (("export",), ("export", "trl", "out.jsonl", "--labels", "mc-hardd"), "unknown label source"),
    # Checked in the command's body, still before the database is opened:
    (("estimate",), ("estimate", "--engine", "openai"), "--base-url"),
    (("estimate",), ("estimate", "--strategy", "fixd"), "unknown strategy 'fixd'"),
    (("judge",), ("judge", "--judge", "x", "--engine", "openai"), "--base-url"),
    (("prm", "score"), ("prm", "score", "--prm", "x", "--engine", "server"), "--base-url"),
    (("tree", "search"), ("tree", "search", "--trajectory", "1", "--mode", "grow"), "--mode"),
    (("search",), ("search", "--strategy", "greedy"), "not 'greedy'"),
    (("search",), ("search", "--strategy", "beam", "--n", "3", "--width", "2"), "multiple of the beam width"),
    (("search",), ("search", "--scorer", "oracle"), "--scorer"),
    (("search",), ("search", "--scorer", "orm:no-such-folder"), "no-such-folder"),
    (("search",), ("search", "--problems", "1,x"), "--problems"),
]


def test_the_cases_cover_every_command_and_the_numeric_minimums():
    leaves = {" ".join(path) for path, command in COMMANDS.items() if not hasattr(command, "commands")}
    assert {"estimate", "import", "export", "db info", "trajectories", "jobs worker", "tree search"} <= leaves
    covered = {" ".join(path) for path, _, needle in CASES if needle == "No such option: --no-such-option"}
    assert leaves <= covered
    minimums = {(" ".join(path), args[-2]) for path, args, needle in CASES if needle.startswith("--")}
    assert {("estimate", "--n"), ("generate", "--k"), ("trajectories", "--limit"), ("trajectories", "--offset"),
            ("judge", "--temperature"), ("train-prm", "--epochs")} <= minimums  # fmt: skip


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """A cwd and a $STEPSCOPE_DB that no usage error may create."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("STEPSCOPE_DB", str(tmp_path / "never.db"))
    monkeypatch.setenv("COLUMNS", "200")
    data = tmp_path / "records.jsonl"
    data.write_text('{"question": "1 + 1?", "answer": "#### 2"}\n')
    yield work, tmp_path / "never.db", data
    assert not (tmp_path / "never.db").exists()
    assert sorted(p.name for p in work.iterdir()) == []  # no data/stepscope.db, no export file


@pytest.mark.parametrize(("path", "args", "needle"), CASES, ids=[" ".join(a) for _, a, _ in CASES])
def test_a_usage_error_is_one_line_exit_2_and_creates_nothing(sandbox, capsys, monkeypatch, path, args, needle):
    _, _, data = sandbox
    argv = [str(data) if a == "{file}" else a for a in args]
    monkeypatch.setattr(sys, "argv", ["stepscope", *argv])
    with pytest.raises(SystemExit) as exited:
        main()
    out, err = capsys.readouterr()
    assert exited.value.code == 2, (argv, out, err)
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), (argv, err)
    assert needle in lines[0], (needle, lines[0])
    assert "see stepscope" in lines[0] and "--help" in lines[0], lines[0]


@pytest.mark.parametrize(("args", "needle"), [
    (("dbb",), "No such command 'dbb'"),
    (("import", "{file}", "--format", "gsm8kk"), "did you mean 'gsm8k'?"),
    (("trajectories", "--limit", "0"), "--limit"),
])  # fmt: skip
def test_the_real_command_agrees(tmp_path, args, needle):
    data = tmp_path / "records.jsonl"
    data.write_text('{"question": "1 + 1?", "answer": "#### 2"}\n')
    never = tmp_path / "never.db"
    result = run_cli(*[str(data) if a == "{file}" else a for a in args], env={"STEPSCOPE_DB": str(never)})
    assert_one_line_error(result, needle)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result
    assert not never.exists()


def test_wrong_formats_name_the_known_ones_and_the_closest():
    from core.errors import StepScopeError
    from core.formats import EXPORTERS, IMPORTERS, get_exporter, get_importer

    with pytest.raises(StepScopeError) as refused:
        get_exporter("math-shepard")
    message = str(refused.value)
    assert "did you mean 'math-shepherd'?" in message and all(name in message for name in EXPORTERS)
    with pytest.raises(StepScopeError) as refused:
        get_importer("xml")
    assert "did you mean" not in str(refused.value) and all(name in str(refused.value) for name in IMPORTERS)


def test_every_format_has_a_one_line_description_and_formats_lists_them():
    from core.formats import EXPORTERS, IMPORTERS

    for registry in (IMPORTERS, EXPORTERS):
        for name, entry in registry.items():
            assert entry.description.strip() and "\n" not in entry.description, name
    result = run_cli("formats")
    assert result.returncode == 0, result
    for kind, registry in (("import", IMPORTERS), ("export", EXPORTERS)):
        for name, entry in registry.items():
            assert any(line.split()[:2] == [kind, name] and entry.description[:30] in line
                       for line in result.stdout.splitlines()), (kind, name, result.stdout)  # fmt: skip
