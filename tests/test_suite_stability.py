"""scripts/suite_stability end to end on a throwaway test file: a pass, a failure, a skip, one
quiet and one loaded run; its junit parsing on pytest's own output."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.machinery import SourceFileLoader
from importlib.util import module_from_spec, spec_from_loader
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "suite_stability"

SAMPLE = '''
import pytest

def test_passes():
    assert 1 + 1 == 2

def test_fails():
    assert 1 + 1 == 3, "arithmetic is broken"

@pytest.mark.skip(reason="not here")
def test_skipped():
    pass
'''


def load_script():
    loader = SourceFileLoader("suite_stability", str(SCRIPT))
    module = module_from_spec(spec_from_loader("suite_stability", loader))
    loader.exec_module(module)
    return module


def test_help_names_the_options():
    shown = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    for option in ("--runs", "--hogs", "--modes", "--out", "--note", "--keep-xml", "--no-ci-env"):
        assert option in shown.stdout, option


def test_a_quiet_and_a_loaded_run_report_the_failure_and_the_counts(tmp_path):
    sample = tmp_path / "test_sample.py"
    sample.write_text(SAMPLE, encoding="utf-8")
    out = tmp_path / "stability.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "-k", "1", "--hogs", "1", "--out", str(out), "--python", sys.executable,
         "--keep-xml", str(tmp_path / "xml"), "--", str(sample)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr  # a test failed
    result = json.loads(out.read_text(encoding="utf-8"))
    assert [(r["mode"], r["hogs"]) for r in result["runs"]] == [("quiet", 0), ("loaded", 1)]
    for run in result["runs"]:
        assert (run["passed"], run["failed"], run["errors"], run["skipped"]) == (1, 1, 0, 1), run
        assert len(run["load_average"]["start"]) == 3 and len(run["load_average"]["end"]) == 3
        assert len(run["slowest"]) == 3 and run["seconds"] > 0
    [(failed, failures)] = result["failures_by_test"].items()
    assert failed.endswith("test_fails") and [f["run"] for f in failures] == [1, 2]
    assert all("arithmetic is broken" in f["message"] for f in failures)
    assert result["subset"] is True and result["machine"]["cpus"] >= 1 and result["date"]
    assert result["ci_env"] == {"STEPSCOPE_REQUIRE_BROWSER": "1", "STEPSCOPE_REQUIRE_VLLM": "1"}
    assert "test_fails" in done.stdout and "arithmetic is broken" in done.stdout
    assert len(list((tmp_path / "xml").glob("*.xml"))) == 2


def test_test_ids_from_junit_class_names():
    script = load_script()
    assert script.test_id("tests.test_cli_jobs", "test_x[a-b]") == "tests/test_cli_jobs.py::test_x[a-b]"
    assert script.test_id("tests.test_store.TestMigrations", "test_y") == "tests/test_store.py::TestMigrations::test_y"
