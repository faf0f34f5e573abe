"""PRM engines: a process reward model's logits at chosen positions, one forward pass per trajectory.

The runner loads them by the engine names `prm:transformers`, `prm:vllm` and `prm:server`
(`load_prm_engine`). Each holds the model's tokenizer (inputs and positions are built from it
by core.prm) and answers `position_logits(inputs, readout)`: for each input (token ids plus the
scored positions), an array with one row per position: the full vocabulary's logits (a tag-token
causal LM) or the head's class logits (token classification, reward head). Softmax and the
choice of class happen in one place, core.prm.scores_from_logits, whatever the engine.

- transformers (every family): right-padded batches, so positions need no shifting.
- vLLM in-process, pooling runner (token_classify): the class families, where vLLM has the
  architecture (Qwen2ForProcessRewardModel; *ForTokenClassification through its classify
  adapter). vLLM's pooling runner has no causal-LM readout of chosen vocabulary logits at
  arbitrary positions, so tag-token PRMs run on transformers.
- a served PRM (`vllm serve` with the pooling runner): POST /pooling with token ids,
  task token_classify, raw logits; several base URLs take requests in turn.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from core.engines.base import EngineInfo
from core.errors import ModelNotFound, StepScopeError
from core.models import ResolvedModel

PRM_ENGINES = ("transformers", "vllm", "server")
PRM_ENGINE_PREFIX = "prm:"


def load_prm_engine(engine: str, model: str, **options):
    """Load PRM `model` (preset, directory or hub id) on `engine` (transformers | vllm | server)."""
    from core.models import resolve_model

    if engine == "transformers":
        return TransformersPrmEngine(resolve_model(model, dense=True), **options)
    if engine == "vllm":
        from core.engines.prm_vllm import VLLMPrmEngine

        return VLLMPrmEngine(resolve_model(model, dense=True), **options)
    if engine == "server":
        from core.engines.prm_server import ServedPrmEngine

        return ServedPrmEngine(model, **options)
    raise StepScopeError(f"a PRM engine is one of {', '.join(PRM_ENGINES)}, not {engine!r}")


def context_limit(config, tokenizer, max_model_len: int | None) -> int:
    """The longest input the model reads: its position table, the tokenizer's limit, a cap."""
    limits = [getattr(config, "max_position_embeddings", None), max_model_len]
    if 0 < getattr(tokenizer, "model_max_length", 0) < 10**8:  # unset limits are 1e30
        limits.append(tokenizer.model_max_length)
    limits = [int(v) for v in limits if v]
    return min(limits) if limits else 4096


def check_architecture(architectures, family: str, model: str) -> None:
    """A model whose config is not of the family asked for is not that kind of PRM."""
    names = list(architectures or [])
    wanted = {"tag": "ForCausalLM", "token-classification": "ForTokenClassification",
              "reward-head": "ProcessRewardModel"}[family]  # fmt: skip
    if not any(name.endswith(wanted) for name in names):
        raise StepScopeError(
            f"{model} is not a {family} PRM: its config names {', '.join(names) or 'no architecture'}, "
            f"not a *{wanted}"
        )


class TransformersPrmEngine:
    def __init__(
        self,
        model: ResolvedModel,
        family: str,
        device: str = "auto",
        dtype: str = "auto",
        max_model_len: int | None = None,
    ) -> None:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForTokenClassification, AutoTokenizer

        self._torch = torch
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        started = time.perf_counter()
        kwargs = {"gguf_file": model.gguf_file} if model.gguf_file else {}
        # fp32 on CPUs (bf16 matmuls are emulated on the AVX2 boxes), the checkpoint's on GPUs.
        torch_dtype = getattr(torch, dtype) if dtype != "auto" else (torch.float32 if self.device == "cpu" else "auto")
        try:
            config = AutoConfig.from_pretrained(model.directory, **kwargs)
            check_architecture(config.architectures, family, model.name)
            self.tokenizer = AutoTokenizer.from_pretrained(model.directory, **kwargs)
            if family == "tag":
                self.model = AutoModelForCausalLM.from_pretrained(model.directory, dtype=torch_dtype, **kwargs)
            elif family == "token-classification":
                self.model = AutoModelForTokenClassification.from_pretrained(model.directory, dtype=torch_dtype)
            else:
                from core.engines.reward_head import load_reward_head_model

                self.model = load_reward_head_model(model.directory, torch.bfloat16 if torch_dtype == "auto" else torch_dtype)
        except OSError as error:
            raise ModelNotFound(f"cannot load PRM {model.name!r}: {str(error).strip().splitlines()[0]}") from None
        self.model.to(self.device).eval()
        self.family = family
        self.max_length = context_limit(config, self.tokenizer, max_model_len)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.info = EngineInfo(
            engine="prm:transformers", model=model.name, device=self.device,
            dtype=str(next(self.model.parameters()).dtype).removeprefix("torch."),
            load_seconds=time.perf_counter() - started,
            extra={"fingerprint": model.fingerprint, "directory": model.directory, "family": family,
                   "architectures": list(config.architectures or []), "max_length": self.max_length},
        )  # fmt: skip

    def position_logits(self, inputs: Sequence, readout) -> list[np.ndarray]:
        """One batch, right-padded: each input's logits at its positions (float32 rows)."""
        torch = self._torch
        if not inputs:
            return []
        width = max(len(i.token_ids) for i in inputs)
        ids = torch.full((len(inputs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(inputs), width), dtype=torch.long)
        for row, item in enumerate(inputs):
            ids[row, : len(item.token_ids)] = torch.tensor(item.token_ids)
            mask[row, : len(item.token_ids)] = 1
        with torch.inference_mode():
            output = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device))
        logits = output if isinstance(output, torch.Tensor) else output.logits
        rows = []
        for row, item in enumerate(inputs):
            picked = logits[row, list(item.positions)]
            rows.append(picked.float().cpu().numpy())
        return rows

    def close(self) -> None:
        self.model = None
        if self.device == "cuda":
            self._torch.cuda.empty_cache()
