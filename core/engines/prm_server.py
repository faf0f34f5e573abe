"""A PRM served by `vllm serve` with the pooling runner: POST /pooling, task token_classify.

Start it as `vllm serve MODEL --runner pooling` (Qwen2.5-Math-PRM: nothing else; another
model: add `--pooler-config '{"tok_pooling_type": "ALL"}'` so every token's logits come back).

Requests carry token ids, built here with the PRM's own tokenizer (the model name, or the
`tokenizer` option when the server's name is not loadable here), so the scored positions are
the ones core.prm chose, the same as in process. Activation is off: the server returns every
token's raw class logits and core.prm takes the softmax. Several servers (base URLs) take
batches in turn; a server that stops answering is named in the error.
"""

from __future__ import annotations

import itertools
import time
from typing import Sequence

import numpy as np

from core.engines.base import EngineInfo
from core.errors import ModelNotFound, ServerUnreachable, StepScopeError

TIMEOUT_SECONDS = 600.0


def _root(url: str) -> str:
    url = url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


class ServedPrmEngine:
    def __init__(self, model: str, base_urls: Sequence[str], family: str, tokenizer: str | None = None,
                 timeout: float = TIMEOUT_SECONDS) -> None:  # fmt: skip
        import httpx
        from transformers import AutoTokenizer

        if not base_urls:
            raise StepScopeError("a served PRM needs --base-url (the server's URL, e.g. http://127.0.0.1:8000)")
        if family == "tag":
            raise StepScopeError("vLLM's pooling endpoint cannot read chosen vocabulary logits: tag-token PRMs run on transformers")
        started = time.perf_counter()
        self.model, self.family = model, family
        self.roots = [_root(url) for url in base_urls]
        # Loopback and lab servers: never through a proxy from the environment.
        self._client = httpx.Client(timeout=timeout, trust_env=False)
        self._next = itertools.cycle(range(len(self.roots)))
        limits = [self._served_max_len(root) for root in self.roots]
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(tokenizer or model)
        except OSError as error:
            raise ModelNotFound(
                f"cannot load the tokenizer of served PRM {model!r} here ({str(error).splitlines()[0]}): "
                "pass --tokenizer with a local directory or hub id"
            ) from None
        self.max_length = min(limits)
        self.info = EngineInfo(
            engine="prm:server", model=model, device="server", load_seconds=time.perf_counter() - started,
            extra={"fingerprint": f"served:{model}", "base_urls": self.roots, "family": family,
                   "max_length": self.max_length, "tokenizer": tokenizer or model},
        )  # fmt: skip

    def _served_max_len(self, root: str) -> int:
        import httpx

        try:
            response = self._client.get(f"{root}/v1/models")
            response.raise_for_status()
        except httpx.HTTPError as error:
            raise ServerUnreachable(f"PRM server {root} does not answer: {error}") from None
        served = {entry["id"]: entry for entry in response.json().get("data", [])}
        if self.model not in served:
            raise StepScopeError(f"server {root} serves {', '.join(served) or 'nothing'}, not {self.model!r}")
        return int(served[self.model].get("max_model_len") or 4096)

    def position_logits(self, inputs: Sequence, readout) -> list[np.ndarray]:
        import httpx

        root = self.roots[next(self._next)]
        body = {"model": self.model, "input": [list(item.token_ids) for item in inputs], "task": "token_classify",
                "use_activation": False}  # fmt: skip
        try:
            response = self._client.post(f"{root}/pooling", json=body)
        except httpx.HTTPError as error:
            raise ServerUnreachable(f"PRM server {root} does not answer: {error}") from None
        if response.status_code != 200:
            raise StepScopeError(f"PRM server {root} refused the request ({response.status_code}): {response.text[:300]}")
        return [self._rows_at_positions(item, entry["data"]) for item, entry in zip(inputs, response.json()["data"])]

    def _rows_at_positions(self, item, data) -> np.ndarray:
        """A server pools every token (ALL) or only the tag tokens (STEP, vLLM's default for
        Qwen2ForProcessRewardModel, whose step_tag_id is <extra_0>); either way, the rows of the
        scored positions, in order."""
        rows = np.asarray(data, dtype=np.float32)
        if len(rows) == len(item.token_ids):
            return rows[list(item.positions)]
        if len(rows) == len(item.positions):
            return rows
        raise StepScopeError(
            f"PRM server returned {len(rows)} rows for {len(item.token_ids)} tokens and {len(item.positions)} steps: "
            "its step tag differs from this format's; start it with --pooler-config '{\"tok_pooling_type\": \"ALL\"}'"
        )

    def close(self) -> None:
        self._client.close()
