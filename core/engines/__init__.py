"""Model engines chosen by name: `transformers`, `vllm`, `openai`.

Each module imports its heavy package lazily so that `import core.engines` is cheap and a
missing optional package (vLLM) becomes a one-line `EngineUnavailable`, not an ImportError.
"""

from __future__ import annotations

from core.engines.base import Engine, EngineInfo, Sample, SamplingParams

ENGINE_NAMES = ("transformers", "vllm", "openai")

__all__ = ["ENGINE_NAMES", "Engine", "EngineInfo", "Sample", "SamplingParams", "load_engine"]


def load_engine(engine: str, model: str, **options) -> Engine:
    """Load `model` (a preset name, a local directory or a hub id) on `engine`.

    For `openai`, `model` is the model name the server knows and `options` must carry
    `base_urls` (one or more OpenAI-compatible `/v1` URLs).
    """
    from core.errors import StepScopeError

    if engine == "transformers":
        from core.engines.transformers_engine import TransformersEngine
        from core.models import resolve_model

        resolved = resolve_model(model, dense=options.pop("dense", True))
        return TransformersEngine(resolved, **options)
    if engine == "vllm":
        from core.engines.vllm_engine import VLLMEngine
        from core.models import resolve_model

        return VLLMEngine(resolve_model(model, dense=True), **options)
    if engine == "openai":
        from core.engines.openai_engine import OpenAIEngine

        return OpenAIEngine(model=model, **options)
    if engine.startswith("prm:"):  # a process reward model's scorer (core/engines/prm.py)
        from core.engines.prm import load_prm_engine

        return load_prm_engine(engine.removeprefix("prm:"), model, **options)
    raise StepScopeError(f"unknown engine {engine!r}: choose one of {', '.join(ENGINE_NAMES)}")
