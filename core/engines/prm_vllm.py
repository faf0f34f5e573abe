"""A PRM on vLLM's pooling runner, in process: per-token class logits (task token_classify).

vLLM returns every token's logits (ALL pooling, activation off) and the positions are picked
here, so the softmax is core.prm's, the same as on transformers. The class families only:
Qwen2ForProcessRewardModel is a vLLM architecture; a *ForTokenClassification model of a
decoder (Llama, Qwen2) goes through vLLM's classify adapter when vLLM has it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np

from core.engines.base import EngineInfo
from core.engines.vllm_engine import _construction_environment, import_vllm
from core.errors import ModelNotFound, StepScopeError
from core.models import ResolvedModel


class VLLMPrmEngine:
    def __init__(self, model: ResolvedModel, family: str, max_model_len: int | None = None,
                 kv_cache_gib: float = 2, gpu_memory_utilization: float = 0.85, enforce_eager: bool | None = None) -> None:  # fmt: skip
        if family == "tag":
            raise StepScopeError("vLLM's pooling runner cannot read chosen vocabulary logits: tag-token PRMs run on transformers")
        started = time.perf_counter()
        vllm = import_vllm()
        from vllm.platforms import current_platform

        on_cpu = current_platform.is_cpu()
        self.device = "cpu" if on_cpu else current_platform.device_type
        options = dict(
            model=model.directory, runner="pooling", max_model_len=max_model_len,
            enforce_eager=on_cpu if enforce_eager is None else enforce_eager,
            gpu_memory_utilization=gpu_memory_utilization,
            pooler_config={"tok_pooling_type": "ALL", "use_activation": False},
        )  # fmt: skip
        if on_cpu:
            options["distributed_executor_backend"] = "mp"
        try:
            with _construction_environment(on_cpu, kv_cache_gib, Path(model.directory).is_dir()):
                self._llm = vllm.LLM(**options)
        except OSError as error:
            raise ModelNotFound(f"vLLM cannot load {model.name!r}: {_first_line(error)}") from None
        except (ValueError, RuntimeError) as error:
            raise StepScopeError(f"vLLM cannot run {model.name!r} as a {family} PRM: {_first_line(error)}") from None
        self.tokenizer = self._llm.get_tokenizer()
        model_config = self._llm.llm_engine.model_config
        self.max_length = int(model_config.max_model_len)
        self.family = family
        self.info = EngineInfo(
            engine="prm:vllm", model=model.name, device=self.device,
            dtype=str(model_config.dtype).removeprefix("torch."), load_seconds=time.perf_counter() - started,
            extra={"fingerprint": model.fingerprint, "directory": model.directory, "family": family,
                   "max_length": self.max_length, "vllm_version": getattr(vllm, "__version__", "unknown")},
        )  # fmt: skip

    def position_logits(self, inputs: Sequence, readout) -> list[np.ndarray]:
        from vllm import PoolingParams

        prompts = [{"prompt_token_ids": list(item.token_ids)} for item in inputs]
        outputs = self._llm.encode(prompts, pooling_task="token_classify",
                                   pooling_params=PoolingParams(use_activation=False), use_tqdm=False)  # fmt: skip
        rows = []
        for item, output in zip(inputs, outputs):
            data = output.outputs.data.float().cpu().numpy()
            rows.append(data[list(item.positions)])
        return rows

    def close(self) -> None:
        llm, self._llm = getattr(self, "_llm", None), None
        if llm is not None:
            llm.llm_engine.engine_core.shutdown()
            del llm


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
