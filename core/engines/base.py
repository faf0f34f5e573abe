"""The engine protocol: what every model backend offers to the rest of StepScope.

Prompts are raw text. Rollouts continue a prefix as a completion (not a chat turn) so that the
same prefix string is sent again and again and prefix caching applies; chat rendering is a
separate, explicit step (`render_chat`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1
    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError("n must be at least 1")
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        object.__setattr__(self, "stop", tuple(self.stop))

    def as_manifest(self) -> dict:
        return {
            "n": self.n,
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "stop": list(self.stop),
            "seed": self.seed,
        }


@dataclass(frozen=True)
class Sample:
    """One sampled continuation.

    `text` excludes the stop string that ended it (as vLLM and OpenAI servers do);
    `finish_reason` is "stop" (a stop string or end-of-sequence token) or "length".
    """

    text: str
    num_tokens: int
    finish_reason: str


@dataclass
class EngineInfo:
    engine: str
    model: str
    device: str
    dtype: str = ""
    load_seconds: float = 0.0
    extra: dict = field(default_factory=dict)


class PromptTokenStats:
    """What an engine's calls computed, as the engine itself counted them, behind the method
    `prompt_token_stats()` (the transformers engine's, whose shape the others give too):
    `last_call` (this thread's last `generate` or `candidate_logprobs`: `call` says which) and
    `total` (since the engine loaded), each with `prompt_tokens` (every prompt once: its n samples
    share one prefill), `prompt_tokens_cached` (of those, taken from the prefix cache instead of
    computed) and `generated_tokens` (sampled; a greedy request with n > 1 samples once). A count
    the engine cannot know (a server that sends no usage) is None, never 0, and a total with an
    unknown part is unknown. core.search.compute reads this; it counts with the tokenizer where
    the engine says nothing.

    `last_call` is per thread, so two callers sharing an engine each read their own call's."""

    KEYS = ("prompt_tokens", "prompt_tokens_cached", "generated_tokens")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._local = threading.local()
        self._total: dict = {"calls": 0, **{key: 0 for key in self.KEYS}}

    def add(self, call: str, prompt_tokens: int | None, prompt_tokens_cached: int | None,
            generated_tokens: int | None) -> None:  # fmt: skip
        last = {"call": call, "calls": 1, "prompt_tokens": prompt_tokens,
                "prompt_tokens_cached": prompt_tokens_cached, "generated_tokens": generated_tokens}  # fmt: skip
        self._local.last = last
        with self._lock:
            self._total["calls"] += 1
            for key in self.KEYS:
                mine = self._total[key]
                self._total[key] = None if mine is None or last[key] is None else mine + last[key]

    def as_dict(self) -> dict:
        last = getattr(self._local, "last", None)
        with self._lock:
            total = dict(self._total)
        return {"last_call": None if last is None else dict(last), "total": total, "cache": None}


def known_sum(values) -> int | None:
    """The sum of counts, or None (unknown) if any of them is."""
    values = list(values)
    return None if any(v is None for v in values) else sum(values)


@runtime_checkable
class Engine(Protocol):
    info: EngineInfo

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[list[Sample]]:
        """For each prompt, `params.n` continuations, in prompt order."""

    def candidate_logprobs(
        self, prompts: Sequence[str], candidates: Sequence[str]
    ) -> list[dict[str, float]]:
        """For each prompt, the next-token log-probability of each candidate.

        A candidate is a string that is exactly one token of this model's vocabulary (for
        example " Yes"). Engines that only see the top-k next tokens (vLLM, servers) report
        `-inf` for a candidate outside the top k: it is at most as likely as the k-th token.
        """

    def render_chat(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> str:
        """The model's chat template applied to messages, as raw text."""

    def close(self) -> None:
        """Free the model's memory."""


def single_token_ids(tokenizer, candidates: Sequence[str], model: str) -> list[int]:
    """The token id of each candidate, which must be exactly one token of `tokenizer`.

    Shared by the engines that hold a tokenizer, so that a multi-token candidate fails the
    same way (same message) on every engine instead of silently scoring `-inf` on one.
    """
    ids = []
    for candidate in candidates:
        encoded = tokenizer.encode(candidate, add_special_tokens=False)
        if len(encoded) != 1:
            raise_multi_token(candidate, len(encoded), model)
        ids.append(encoded[0])
    return ids


def raise_multi_token(candidate: str, num_tokens: int, model: str):
    from core.errors import StepScopeError

    raise StepScopeError(
        f"candidate {candidate!r} is {num_tokens} tokens for {model}; "
        "use a spelling that is exactly one token"
    )
