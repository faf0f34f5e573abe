"""The OpenAI-compatible engine: raw-text completions from one or more servers.

Any server with `/v1/completions` works (`vllm serve`, SGLang, llama.cpp's server); the
numbers below were checked against `vllm serve`. A user who outgrows one machine starts one
`vllm serve` per GPU node and passes every base URL: requests (one per prompt) go round robin
over them, at most `max_concurrency` in flight, and a request that fails transiently is
retried on the next URL after an exponential backoff.

Completions, not chat: rollouts continue a prefix string, so the same prefix is sent again
and again and the server's prefix cache applies.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence
from urllib.parse import urlsplit

from core.engines.base import (
    EngineInfo,
    PromptTokenStats,
    Sample,
    SamplingParams,
    known_sum,
    raise_multi_token,
    single_token_ids,
)
from core.errors import ModelNotFound, ServerUnreachable, StepScopeError

# vLLM serve's default cap on logprobs per token (`--max-logprobs`).
TOP_LOGPROBS = 20
# The construction check and connection attempts give up this fast, whatever `timeout_s` is
# (which bounds a whole generation request).
CONNECT_TIMEOUT_S = 5.0
BACKOFF_BASE_S = 0.5
MAX_BACKOFF_S = 8.0
TRANSIENT_STATUS = {408, 409, 429}  # and every 5xx


class OpenAIEngine:
    def __init__(
        self,
        model: str,
        base_urls: list[str] | str,
        api_key_env: str = "OPENAI_API_KEY",
        max_concurrency: int = 8,
        max_retries: int = 4,
        timeout_s: float = 120,
        tokenizer_dir: str | None = None,
        parameters: int | None = None,
    ) -> None:
        """`parameters`: the served model's size, for the FLOPs estimate of a job's compute
        record (core.search.compute); a server does not say it, so without it FLOPs are unknown."""
        import openai

        started = time.perf_counter()
        self._openai = openai
        self.model = model
        urls = [base_urls] if isinstance(base_urls, str) else list(base_urls)
        self.base_urls = [_normalise(url) for url in urls]
        if not self.base_urls:
            raise StepScopeError("the openai engine needs at least one base URL")
        self.max_retries = max_retries
        # vLLM serve without --api-key accepts any key; the client refuses an empty one.
        api_key = os.environ.get(api_key_env) or "EMPTY"
        timeout = openai.Timeout(timeout_s, connect=CONNECT_TIMEOUT_S)
        # The client's own retries are off: `_request` retries, moving to the next base URL,
        # so that one dead node among several does not fail the whole job.
        self._clients = [
            openai.OpenAI(base_url=url, api_key=api_key, max_retries=0, timeout=timeout)
            for url in self.base_urls
        ]
        try:
            roots = [self._check_serves_model(client) for client in self._clients]
        except StepScopeError:
            for client in self._clients:
                client.close()
            raise
        self._next = itertools.count()
        self._next_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_concurrency, thread_name_prefix="openai-engine")
        self.tokenizer = None
        if tokenizer_dir is not None:
            from transformers import AutoTokenizer

            try:
                self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
            except (OSError, ValueError) as error:  # missing directory; no tokenizer files in it
                self.close()
                raise ModelNotFound(
                    f"cannot load a tokenizer from {tokenizer_dir}: {_first_line(str(error))}"
                ) from None
        self._token_counts: dict[str, int] = {}  # candidate -> its token count, from the server
        self._stats = PromptTokenStats()
        self.info = EngineInfo(
            engine="openai",
            model=model,
            device="remote " + " ".join(self.base_urls),
            load_seconds=time.perf_counter() - started,
            extra={
                "base_urls": self.base_urls,
                # vLLM reports the served model's path or hub id as `root`.
                "fingerprint": f"openai:{model}:" + ",".join(sorted(set(filter(None, roots)))),
                "parameters": None if parameters is None else int(parameters),
            },
        )

    def _check_serves_model(self, client) -> str | None:
        """Fail fast with one line: the server is down, refuses us, or serves other models."""
        url = str(client.base_url).rstrip("/")
        try:
            served = client.with_options(timeout=CONNECT_TIMEOUT_S).models.list().data
        except self._openai.APIConnectionError as error:
            raise ServerUnreachable(
                f"cannot reach an OpenAI-compatible server at {url}: {_root_cause(error)}"
            ) from None
        except self._openai.APIStatusError as error:
            hint = "is this an OpenAI-compatible /v1 URL?" if error.status_code == 404 else ""
            raise StepScopeError(
                f"server at {url} refused GET /models ({error.status_code}): "
                f"{hint or _server_message(error)}"
            ) from None
        for entry in served:
            if entry.id == self.model:
                return getattr(entry, "root", None)
        names = ", ".join(sorted(entry.id for entry in served)) or "nothing"
        raise ModelNotFound(f"model {self.model!r} is not served at {url}; it serves: {names}")

    # -- requests -------------------------------------------------------------------------

    def _request(self, call: Callable):
        """`call(client)` on the next base URL; transient failures retry with backoff.

        Transient: connection errors and timeouts, 408, 409, 429 and 5xx. Each retry waits
        0.5 s * 2^attempt (capped at 8 s, +-50% jitter so that many threads do not retry in
        step) and goes to the next URL in the rotation that has not failed this request: other
        threads advance the shared rotation meanwhile, so without that a retry could land on the
        same dead node again (seen in a test with two servers, one stopped).
        """
        failed: set[int] = set()
        for attempt in range(self.max_retries + 1):
            index = self._next_client(avoid=failed)
            client = self._clients[index]
            url = str(client.base_url).rstrip("/")
            try:
                return call(client)
            except self._openai.APIConnectionError as error:
                failed.add(index)
                if attempt == self.max_retries:
                    raise ServerUnreachable(
                        f"lost the server at {url} after {attempt + 1} tries: {_root_cause(error)}"
                    ) from None
            except self._openai.APIStatusError as error:
                status = error.status_code
                if status not in TRANSIENT_STATUS and status < 500:
                    raise StepScopeError(
                        f"server at {url} rejected the request ({status}): {_server_message(error)}"
                    ) from None
                failed.add(index)
                if attempt == self.max_retries:
                    raise StepScopeError(
                        f"server at {url} kept failing ({status}) after {attempt + 1} tries: "
                        f"{_server_message(error)}"
                    ) from None
            delay = min(MAX_BACKOFF_S, BACKOFF_BASE_S * 2**attempt) * random.uniform(0.5, 1.5)
            time.sleep(delay)
        raise AssertionError("unreachable")

    def _next_client(self, avoid: set[int]) -> int:
        """The next index in the rotation, skipping `avoid` unless every server is in it."""
        with self._next_lock:
            for _ in range(len(self._clients)):
                index = next(self._next) % len(self._clients)
                if index not in avoid:
                    return index
            return index

    def _map(self, function: Callable, items: Sequence) -> list:
        """`function` over items with bounded concurrency, results in item order."""
        return list(self._pool.map(function, items))

    # -- sampling -------------------------------------------------------------------------

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[list[Sample]]:
        """One request per prompt with `n` samples, seeded like the in-process vLLM engine.

        Prompt i gets seed `seed + i * n` and vLLM gives its j-th sample `that + j`, so a
        seeded call reproduces exactly, and matches the vllm engine on the same model.
        """
        # Servers refuse n > 1 with greedy decoding (vLLM does); greedy samples are identical.
        greedy = params.temperature == 0
        n = 1 if greedy else params.n

        def one(indexed: tuple[int, str]) -> tuple[list[Sample], tuple]:
            index, prompt = indexed
            options = dict(
                model=self.model,
                prompt=prompt,
                n=n,
                temperature=params.temperature,
                top_p=params.top_p,
                max_tokens=params.max_new_tokens,
            )
            if params.stop:
                options["stop"] = list(params.stop)
            if params.seed is not None:
                options["seed"] = params.seed + index * params.n
            if n > 1:
                # `usage` counts the tokens of all n choices together; the sampled token's
                # logprob (logprobs=0) lists each choice's tokens, which counts them exactly.
                options["logprobs"] = 0
            response = self._request(lambda client: client.completions.create(**options))
            choices = sorted(response.choices, key=lambda choice: choice.index)
            samples = [self._to_sample(choice, response, n) for choice in choices]
            return (samples * params.n if greedy else samples), _usage(response, samples)

        answers = self._map(one, list(enumerate(prompts)))
        self._count("generate", [usage for _, usage in answers])
        return [samples for samples, _ in answers]

    def _to_sample(self, choice, response, n: int) -> Sample:
        finish = "length" if choice.finish_reason == "length" else "stop"
        return Sample(choice.text, self._num_tokens(choice, response, n), finish)

    def _num_tokens(self, choice, response, n: int) -> int:
        """Tokens generated for one choice, counted exactly where the server allows.

        Checked against vLLM serve: `usage.completion_tokens` (one choice) and the length of
        the choice's logprob token list both include the token that completed a stop string
        and the end-of-sequence token, as the in-process engines count them.
        """
        if n == 1 and response.usage is not None:
            return response.usage.completion_tokens
        logprobs = getattr(choice, "logprobs", None)
        if logprobs is not None and logprobs.tokens is not None:
            return len(logprobs.tokens)
        if self.tokenizer is not None:  # a server without logprobs: approximate locally
            return len(self.tokenizer.encode(choice.text, add_special_tokens=False))
        raise StepScopeError(
            f"server for {self.model!r} returned no per-choice token counts; pass tokenizer_dir"
        )

    # -- scoring --------------------------------------------------------------------------

    def candidate_logprobs(
        self, prompts: Sequence[str], candidates: Sequence[str]
    ) -> list[dict[str, float]]:
        """Candidates looked up among the top 20 logprobs of one greedy next token.

        The server names the top tokens by their text, which is why each candidate must be
        exactly one token: its text is then the key it is listed under.
        """
        self._check_single_tokens(candidates)

        def one(prompt: str) -> tuple[dict[str, float], tuple]:
            response = self._request(
                lambda client: client.completions.create(
                    model=self.model,
                    prompt=prompt,
                    max_tokens=1,
                    temperature=0,
                    logprobs=TOP_LOGPROBS,
                )
            )
            top = response.choices[0].logprobs.top_logprobs[0]
            return {c: top.get(c, -math.inf) for c in candidates}, _usage(response, None)

        answers = self._map(one, list(prompts))
        self._count("candidate_logprobs", [usage for _, usage in answers])
        return [logprobs for logprobs, _ in answers]

    def prompt_token_stats(self) -> dict:
        """Prompt, cached-prompt and generated tokens of the last call and in total, as the
        server's `usage` reported them (core.engines.base.PromptTokenStats): unknown (None)
        where a response had none; cached prompt tokens only from a server that details them
        (`vllm serve --enable-prompt-tokens-details`)."""
        return self._stats.as_dict()

    def _count(self, call: str, usages: list[tuple]) -> None:
        prompt, cached, generated = (known_sum(parts) for parts in zip(*usages)) if usages else (0, 0, 0)
        self._stats.add(call, prompt, cached, generated)

    def _check_single_tokens(self, candidates: Sequence[str]) -> None:
        if self.tokenizer is not None:
            single_token_ids(self.tokenizer, candidates, self.model)
            return
        for candidate in candidates:
            if candidate not in self._token_counts:
                self._token_counts[candidate] = self._server_token_count(candidate)
            if self._token_counts[candidate] != 1:
                raise_multi_token(candidate, self._token_counts[candidate], self.model)

    def _server_token_count(self, text: str) -> int:
        """Tokens in `text` by vLLM serve's `/tokenize` (it lives beside `/v1`, not in it)."""
        root = self.base_urls[0].removesuffix("/v1")
        body = json.dumps({"model": self.model, "prompt": text, "add_special_tokens": False})
        request = urllib.request.Request(
            root + "/tokenize", body.encode(), {"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=CONNECT_TIMEOUT_S * 2) as response:
                return int(json.load(response)["count"])
        except (urllib.error.URLError, OSError, KeyError, ValueError) as error:
            raise StepScopeError(
                f"cannot check that {text!r} is one token: {root} has no vLLM /tokenize "
                f"({_first_line(str(error))}); pass tokenizer_dir"
            ) from None

    def render_chat(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> str:
        if self.tokenizer is None:
            raise StepScopeError(
                "rendering chat messages for a server needs the model's tokenizer locally: "
                "pass tokenizer_dir"
            )
        if not self.tokenizer.chat_template:
            raise StepScopeError(f"model {self.model!r} has no chat template")
        return self.tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        for client in self._clients:
            client.close()


def _usage(response, samples: list[Sample] | None) -> tuple[int | None, int | None, int | None]:
    """(prompt tokens, of them cached, generated tokens) of one response, from its `usage`.

    vLLM serve counts a request's prompt once whatever its n (one prefill serves the n choices)
    and its completion tokens over all choices. A response without `usage` leaves the prompt
    unknown (None, never 0); its generated tokens are then the samples' own counts (from each
    choice's logprob tokens, or the local tokenizer), and a scoring probe's (samples None) unknown.
    """
    usage = getattr(response, "usage", None)
    if usage is None:
        return None, None, None if samples is None else sum(s.num_tokens for s in samples)
    details = getattr(usage, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None) if details is not None else None
    generated = getattr(usage, "completion_tokens", None)
    if generated is None and samples is not None:
        generated = sum(s.num_tokens for s in samples)
    return getattr(usage, "prompt_tokens", None), cached, generated


def _normalise(url: str) -> str:
    """`http://host:8000` and `http://host:8000/v1/` both mean `http://host:8000/v1`."""
    url = url.rstrip("/")
    return url + "/v1" if urlsplit(url).path in ("", "/") else url


def _server_message(error) -> str:
    """What the server said, without the client's "Error code: 400 - {...}" wrapping."""
    body = error.body
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return _first_line(body["message"])
    return _first_line(error.message)


def _root_cause(error: BaseException) -> str:
    """The innermost cause's message: "Connection refused", not the client's "Connection error."."""
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__
    return _first_line(str(error)) or type(error).__name__


def _first_line(text: str) -> str:
    text = str(text).strip()
    return text.splitlines()[0] if text else ""
