"""The transformers engine: CPU or CUDA, batched sampling with left padding.

It is the reference engine: it sees the full next-token distribution, so candidate
log-probabilities are exact, and it is the only engine that returns hidden states (for probe
verifiers).

Prefix cache: the rollout decoder keeps the KV caches of prompts it prefilled, across calls, up
to `prefix_cache_mib` (default 512 MiB, `STEPSCOPE_PREFIX_CACHE_MIB` overrides, 0 turns the
cross-call cache off; prompts of one call still share). A prompt that shares at least 16 leading
tokens with a kept one is prefilled only past them: the few-shot examples and question of every
step, and the steps before an earlier probe of the same trajectory (a first-error search probes
one trajectory in successive calls). `prompt_token_stats()` says, for the last call and in
total, how many prompt tokens were prefilled and how many of them came from the cache; the
samples are those of a prefill from scratch up to floating-point rounding (a prefill in two
pieces adds in another order), as within one call before.
"""

from __future__ import annotations

import os
import time
from typing import Sequence

import numpy as np
from transformers import StoppingCriteria, StoppingCriteriaList

from core.engines.base import EngineInfo, Sample, SamplingParams, single_token_ids
from core.engines.cpu_threads import configure_threads
from core.engines.transformers_decode import (
    PrefixCache,
    Rollout,
    RolloutDecoder,
    supports_fast_decode,
    use_grouped_decode_attention,
)
from core.errors import ModelNotFound, StepScopeError
from core.models import ResolvedModel

# KV caches of prefilled prompts kept between calls (MiB); STEPSCOPE_PREFIX_CACHE_MIB overrides.
# SmolLM2-135M in fp32 holds 45 KiB a token: 512 MiB is about 11,600 prompt tokens.
PREFIX_CACHE_MIB = 512


class TransformersEngine:
    def __init__(
        self,
        model: ResolvedModel,
        device: str = "auto",
        dtype: str = "auto",
        max_batch_sequences: int = 32,
        prefix_cache_mib: float | None = None,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._torch = torch
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        self.max_batch_sequences = max_batch_sequences
        threads = configure_threads() if self.device == "cpu" else None
        started = time.perf_counter()
        kwargs = {"gguf_file": model.gguf_file} if model.gguf_file else {}
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model.directory, **kwargs)
            self.model = AutoModelForCausalLM.from_pretrained(
                model.directory, dtype=_torch_dtype(torch, dtype, self.device), **kwargs
            )
        except OSError as error:
            raise ModelNotFound(f"cannot load model {model.name!r}: {_first_line(error)}") from None
        self.model.to(self.device).eval()
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        use_grouped_decode_attention(self.model)
        if prefix_cache_mib is None:
            prefix_cache_mib = float(os.environ.get("STEPSCOPE_PREFIX_CACHE_MIB", PREFIX_CACHE_MIB))
        self.prefix_cache_mib = prefix_cache_mib
        prefix_cache = PrefixCache(max_bytes=int(prefix_cache_mib * 2**20)) if prefix_cache_mib > 0 else None
        self._decoder = (
            RolloutDecoder(self.model, self.tokenizer.eos_token_id, max_batch_sequences, self._decode, prefix_cache)
            if supports_fast_decode(self.model)
            else None
        )
        self._prompt_totals = {
            "calls": 0, "prompt_tokens": 0, "prompt_tokens_cached": 0, "from_earlier_calls": 0, "generated_tokens": 0,
        }  # fmt: skip
        self._last_call: dict = {}
        self.info = EngineInfo(
            engine="transformers",
            model=model.name,
            device=self.device,
            dtype=str(self.model.dtype).removeprefix("torch."),
            load_seconds=time.perf_counter() - started,
            extra={
                "fingerprint": model.fingerprint,
                "directory": model.directory,
                "decode": "rollout decoder" if self._decoder else "model.generate",
                "prefix_cache_mib": prefix_cache_mib if self._decoder else 0,
                "attention": self.model.config._attn_implementation,
                "threads": torch.get_num_threads() if threads is None else threads,
            },
        )

    # -- sampling -------------------------------------------------------------------------

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[list[Sample]]:
        """For each prompt, n continuations: one prefill per prompt, finished rows leave at once."""
        if self._decoder is None:
            return self._generate_with_generate(prompts, params)
        encoded = [self.tokenizer(prompt)["input_ids"] for prompt in prompts]
        rollouts = self._decoder.run(
            encoded, n=params.n, max_new_tokens=params.max_new_tokens, temperature=params.temperature,
            top_p=params.top_p, stops=params.stop, seed=params.seed,
        )  # fmt: skip
        # Greedy samples of a prompt are decoded once (the decoder copies them): generated once.
        distinct = [row[:1] if params.temperature == 0 else row for row in rollouts]
        self._count_prompt_tokens(self._decoder.stats, sum(len(r.tokens) for row in distinct for r in row))
        return [[self._to_sample(rollout, params) for rollout in row] for row in rollouts]

    def _count_prompt_tokens(self, stats, generated_tokens: int) -> None:
        last = {
            "calls": 1, "prompt_tokens": stats.prefill_tokens + stats.reused_prefix_tokens,
            "prompt_tokens_cached": stats.reused_prefix_tokens, "from_earlier_calls": stats.reused_from_earlier_calls,
            "generated_tokens": generated_tokens,
        }  # fmt: skip
        self._last_call = {"call": "generate", **last}
        for key, value in last.items():
            self._prompt_totals[key] += value

    def prompt_token_stats(self) -> dict:
        """Tokens of `generate` (core.engines.base.PromptTokenStats' shape, with more): `last_call`
        (`call` = "generate") and `total` (since the engine loaded), each with the tokens
        prefilled (`prompt_tokens`: every prompt once, its n samples share its prefill), how many
        of them were taken from the prefix cache instead of computed (`prompt_tokens_cached`),
        how many of those from prompts of earlier calls (`from_earlier_calls`) and the tokens
        sampled (`generated_tokens`: a greedy prompt's n samples are decoded once); and what the
        cache holds now. An engine without the rollout decoder (`model.generate`) caches nothing
        and says None (its counts come from the tokenizer)."""
        if self._decoder is None:
            return {"last_call": None, "total": None, "cache": None}
        cache = self._decoder.prefix_cache
        return {
            "last_call": dict(self._last_call) or None, "total": dict(self._prompt_totals),
            "cache": {"entries": len(cache), "tokens": cache.tokens, "bytes": cache.nbytes,
                      "max_bytes": cache.max_bytes if self._decoder.keeps_prefixes_between_calls else None},
        }  # fmt: skip

    def clear_prefix_cache(self) -> None:
        """Forget the kept prompt caches (they are valid for this model's weights only)."""
        if self._decoder is not None:
            self._decoder.prefix_cache.clear()

    def _generate_with_generate(self, prompts: Sequence[str], params: SamplingParams) -> list[list[Sample]]:
        """Models whose cache cannot be sliced by row: each prompt repeated n times, in batches
        of at most `max_batch_sequences` rows, through `model.generate`."""
        rows = [prompt for prompt in prompts for _ in range(params.n)]
        samples: list[Sample] = []
        for chunk_index, start in enumerate(range(0, len(rows), self.max_batch_sequences)):
            chunk = rows[start : start + self.max_batch_sequences]
            # A per-chunk seed keeps a seeded call reproducible whatever the batch size.
            seed = None if params.seed is None else params.seed + chunk_index
            samples.extend(self._generate_rows(chunk, params, seed))
        return [samples[i * params.n : (i + 1) * params.n] for i in range(len(prompts))]

    def _generate_rows(self, rows: list[str], params: SamplingParams, seed: int | None) -> list[Sample]:
        torch = self._torch
        encoded = self.tokenizer(rows, return_tensors="pt", padding=True).to(self.device)
        greedy = params.temperature == 0
        options = dict(
            max_new_tokens=params.max_new_tokens,
            do_sample=not greedy,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
        )
        if not greedy:
            options.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
        if params.stop:
            prompt_length = encoded["input_ids"].shape[1]
            stopper = _StopInNewText(self.tokenizer, params.stop, prompt_length)
            options.update(stopping_criteria=StoppingCriteriaList([stopper]))
        if seed is not None:
            torch.manual_seed(seed)
        with torch.inference_mode():
            output = self.model.generate(**encoded, **options)
        new_tokens = output[:, encoded["input_ids"].shape[1] :].tolist()
        return [self._to_sample(self._padded_rollout(tokens), params) for tokens in new_tokens]

    def _padded_rollout(self, tokens: list[int]) -> Rollout:
        # generate() pads finished rows with the pad token (often the same id as EOS), so the
        # first EOS/pad marks where this row's own tokens end.
        end_markers = {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id}
        length = next((i for i, t in enumerate(tokens) if t in end_markers), len(tokens))
        if length < len(tokens):
            return Rollout(tokens[: length + 1], ended_by_eos=True)
        return Rollout(tokens)

    def _to_sample(self, rollout: Rollout, params: SamplingParams) -> Sample:
        tokens = rollout.tokens[:-1] if rollout.ended_by_eos else rollout.tokens
        text = self._decode(tokens)
        cut = _earliest_stop(text, params.stop)
        if cut is not None:
            return Sample(text[:cut], len(tokens), "stop")
        if rollout.ended_by_eos:
            return Sample(text, len(tokens) + 1, "stop")  # the EOS token counts as generated
        return Sample(text, len(tokens), "length")

    def _decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    # -- scoring --------------------------------------------------------------------------

    def candidate_token_ids(self, candidates: Sequence[str]) -> list[int]:
        return single_token_ids(self.tokenizer, candidates, self.info.model)

    def candidate_logprobs(
        self, prompts: Sequence[str], candidates: Sequence[str]
    ) -> list[dict[str, float]]:
        torch = self._torch
        ids = self.candidate_token_ids(candidates)
        results = []
        for start in range(0, len(prompts), self.max_batch_sequences):
            chunk = list(prompts[start : start + self.max_batch_sequences])
            encoded = self.tokenizer(chunk, return_tensors="pt", padding=True).to(self.device)
            with torch.inference_mode():
                logits = self.model(**encoded, position_ids=_left_pad_positions(encoded)).logits
            logprobs = torch.log_softmax(logits[:, -1, :].float(), dim=-1)[:, ids].tolist()
            results.extend(dict(zip(candidates, row)) for row in logprobs)
        return results

    def hidden_states(
        self, texts: Sequence[str], char_positions: Sequence[Sequence[int]], layer: int = -1
    ) -> list[np.ndarray]:
        """Hidden state of `layer` at the token that covers each character position.

        `char_positions[i]` are offsets into `texts[i]` (e.g. where each step ends); the token
        taken is the last one starting before the offset, so a step's own last token.
        """
        torch = self._torch
        states = []
        for text, positions in zip(texts, char_positions):
            encoded = self.tokenizer(text, return_tensors="pt", return_offsets_mapping=True)
            offsets = encoded.pop("offset_mapping")[0].tolist()
            token_indices = [_token_before(offsets, p) for p in positions]
            with torch.inference_mode():
                output = self.model(**encoded.to(self.device), output_hidden_states=True)
            hidden = output.hidden_states[layer][0, token_indices, :].float().cpu().numpy()
            states.append(hidden)
        return states

    def render_chat(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> str:
        if not self.tokenizer.chat_template:
            raise StepScopeError(f"model {self.info.model!r} has no chat template")
        return self.tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def close(self) -> None:
        self.clear_prefix_cache()
        self._decoder = None
        del self.model
        if self.device.startswith("cuda"):
            self._torch.cuda.empty_cache()


class _StopInNewText(StoppingCriteria):
    """Stops a row once a stop string appears in its generated text.

    transformers' own `stop_strings` also match across the end of the prompt, so a sample could
    end before it began; vLLM and OpenAI-compatible servers match generated text only, and so
    does this. Only the tail is decoded each step: a stop string that first appears now ends
    within the last few tokens, and `_to_sample` cuts the text exactly afterwards.
    """

    def __init__(self, tokenizer, stops: Sequence[str], prompt_length: int) -> None:
        self.tokenizer = tokenizer
        self.stops = [s for s in stops if s]
        self.prompt_length = prompt_length
        self.window = max((len(s) for s in self.stops), default=0) + 2  # a token holds >= 1 character

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        new = input_ids[:, self.prompt_length :]
        tails = self.tokenizer.batch_decode(new[:, -self.window :], skip_special_tokens=True)
        done = [any(stop in tail for stop in self.stops) for tail in tails]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def _torch_dtype(torch, dtype: str, device: str):
    if dtype != "auto":
        return getattr(torch, dtype)
    # On CPUs without native bf16 (AVX2 only, as measured on our 2-core boxes) bf16 matmuls
    # are emulated and generation runs 4-5x slower than fp32, so CPUs compute in fp32; GPUs
    # keep the checkpoint's own dtype.
    return torch.float32 if device == "cpu" else "auto"


def _left_pad_positions(encoded):
    """Position ids that start at 0 at each row's first real token despite left padding."""
    mask = encoded["attention_mask"]
    return (mask.cumsum(-1) - 1).clamp(min=0)


def _earliest_stop(text: str, stops: Sequence[str]) -> int | None:
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(hits) if hits else None


def _token_before(offsets: list[list[int]], position: int) -> int:
    index = 0
    for i, (start, end) in enumerate(offsets):
        if end > start and start < position:
            index = i
    return index


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
