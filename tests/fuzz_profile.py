"""How many cases a fuzz test draws: a CI-sized number, or at least 1,000 in the full run.

    STEPSCOPE_FUZZ=full pytest tests/test_formats_fuzz.py tests/test_reliability_fuzz.py

The full run also writes how many cases each test actually ran to
benchmarks/results/reliability_fuzz.json (hypothesis stops early only when a strategy has
fewer distinct values than asked for, which the counts would show).
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from hypothesis import HealthCheck, settings

FULL = os.environ.get("STEPSCOPE_FUZZ", "").lower() == "full"
FULL_EXAMPLES = 1000
RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "reliability_fuzz.json"
_lock = threading.Lock()


def examples(ci: int) -> int:
    return FULL_EXAMPLES if FULL else ci


def fuzz_settings(ci: int) -> settings:
    return settings(
        max_examples=examples(ci), deadline=None, derandomize=True, database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )  # fmt: skip


def record(name: str, cases: int) -> None:
    """Keep the number of cases `name` ran (full runs only), merged into the results file."""
    if not FULL:
        return
    with _lock:
        data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        data.setdefault("cases", {})[name] = cases
        data["profile"] = f"full: max_examples={FULL_EXAMPLES} per test"
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
