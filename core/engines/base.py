"""The engine protocol: what every model backend offers to the rest of StepScope.

Prompts are raw text. Rollouts continue a prefix as a completion (not a chat turn) so that the
same prefix string is sent again and again and prefix caching applies; chat rendering is a
separate, explicit step (`render_chat`).
"""

from __future__ import annotations

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
