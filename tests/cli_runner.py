"""Run the real `stepscope` command in a subprocess, as a user would, or in this process (where a
test needs no fresh interpreter and the model would otherwise be imported and loaded again)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def run_cli(*args: str, env: dict | None = None, python_prelude: str = "", timeout: float = 600) -> Result:
    """`python -c "<prelude>; from core.cli import main; main()" args...`.

    The prelude lets a test change the interpreter before the CLI starts (e.g. hide vLLM).
    """
    code = f"{python_prelude}\nimport sys\nfrom core.cli import main\nsys.argv[0] = 'stepscope'\nmain()"
    completed = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200", **(env or {})},
    )
    return Result(completed.returncode, completed.stdout, completed.stderr)


def run_in_process(monkeypatch, capsys, *args: str, columns: int = 200) -> Result:
    """`stepscope args...` in this process: its exit code (SystemExit's, else 0) and output."""
    from core.cli import main

    monkeypatch.setattr(sys, "argv", ["stepscope", *args])
    monkeypatch.setenv("COLUMNS", str(columns))
    try:
        main()
        code = 0
    except SystemExit as exited:
        code = exited.code or 0
    out, err = capsys.readouterr()
    return Result(code, out, err)


def assert_one_line_error(result: Result, *needles: str) -> str:
    """Non-zero exit, no traceback, and a last stderr line `error: ...` naming the cause."""
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("error: "), result.stderr
    assert sum(ln.startswith("error: ") for ln in lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[-1], (needle, lines[-1])
    return lines[-1]
