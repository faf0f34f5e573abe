"""The repository's Streamlit server config (.streamlit/config.toml): plain file checks, run
everywhere (they need no browser; they sat under the browser marker in
tests/test_reliability.py, which skipped them on a machine without Chromium)."""

from __future__ import annotations

import sys
from pathlib import Path

from core.views.access import served_remotely

if sys.version_info >= (3, 11):
    import tomllib
else:  # pyproject.toml declares tomli for Python 3.10
    import tomli as tomllib

CONFIG = Path(__file__).resolve().parent.parent / ".streamlit" / "config.toml"


def config() -> dict:
    return tomllib.loads(CONFIG.read_text())


def test_config_listens_on_loopback_so_the_app_is_not_served_remotely():
    address = config()["server"]["address"]
    assert address in ("localhost", "127.0.0.1"), address
    # The app's own rule agrees: started with this config, a session is the local organiser.
    assert served_remotely(address, {}) is False


def test_config_runs_no_full_garbage_collection_after_each_script_run():
    """Streamlit's default gc.collect(2) after every run held the interpreter lock ~70 ms per
    Annotate click (docs/ARCHITECTURE.md, "Annotate's save path")."""
    assert config()["runner"]["postScriptGC"] is False
