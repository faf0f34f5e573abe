"""The openai engine's own duties: spreading requests, bounding concurrency, retrying.

These run against small scripted HTTP servers on 127.0.0.1 that speak the OpenAI completions
API, because a real `vllm serve` cannot be made to fail on cue (a 503, a 429, a node that
dies mid-job). What the engine returns from a real `vllm serve` is checked by the contract
suite in test_engine_contract.py.
"""

from __future__ import annotations

import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from core.engines import openai_engine
from core.engines.base import SamplingParams
from core.engines.openai_engine import OpenAIEngine
from core.errors import ModelNotFound, ServerUnreachable, StepScopeError

MODEL = "scripted-model"


class ScriptedServer:
    """An OpenAI-compatible server whose answers a test scripts.

    `failures` is a list of HTTP statuses returned, in order, before answering normally.
    Every completion request body is recorded in `requests`.
    """

    def __init__(self, served=(MODEL,), delay_s: float = 0.0, tokenize: bool = True) -> None:
        self.served = list(served)
        self.delay_s = delay_s
        self.tokenize = tokenize
        self.failures: list[int] = []
        self.requests: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def completion(self, body: dict) -> dict:
        """Choice j of a request says which seed made it; 3 tokens, or `max_tokens` if less."""
        n = body.get("n", 1)
        choices = []
        for j in range(n):
            tokens = ["a", "b", "c"][: min(3, body["max_tokens"])]
            logprobs = None
            if body.get("logprobs") is not None:
                top = [{" Yes": -0.5, " No": -1.5}] if body["logprobs"] > 0 else None
                logprobs = {"tokens": tokens, "token_logprobs": [-1.0] * len(tokens),
                            "top_logprobs": top, "text_offset": [0] * len(tokens)}  # fmt: skip
            choices.append({
                "index": j, "text": f"seed={body.get('seed')}+{j}", "logprobs": logprobs,
                "finish_reason": "length" if body["max_tokens"] <= 3 else "stop",
            })  # fmt: skip
        used = sum(min(3, body["max_tokens"]) for _ in range(n))
        return {
            "id": "cmpl-1", "object": "text_completion", "created": 0, "model": body["model"],
            "choices": choices,
            "usage": {"prompt_tokens": 1, "completion_tokens": used, "total_tokens": used + 1},
        }  # fmt: skip

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _reply(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path == "/v1/models":
                    data = [{"id": name, "object": "model", "created": 0, "owned_by": "test",
                             "root": f"/models/{name}"} for name in server.served]  # fmt: skip
                    self._reply(200, {"object": "list", "data": data})
                else:
                    self._reply(404, {"error": {"message": "not found"}})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path == "/tokenize" and server.tokenize:
                    count = len(body["prompt"].split())  # words stand in for tokens
                    return self._reply(200, {"count": count, "tokens": list(range(count))})
                if self.path != "/v1/completions":
                    return self._reply(404, {"error": {"message": "not found"}})
                with server.lock:
                    server.requests.append(body)
                    status = server.failures.pop(0) if server.failures else 200
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    time.sleep(server.delay_s)
                    if status != 200:
                        return self._reply(status, {"error": {"message": f"scripted {status}"}})
                    self._reply(200, server.completion(body))
                finally:
                    with server.lock:
                        server.in_flight -= 1

        return Handler


@pytest.fixture
def servers():
    started: list[ScriptedServer] = []

    def start(**options) -> ScriptedServer:
        started.append(ScriptedServer(**options))
        return started[-1]

    yield start
    for server in started:
        server.stop()


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(openai_engine, "BACKOFF_BASE_S", 0.01)


def test_requests_go_round_robin_over_base_urls(servers):
    a, b = servers(), servers()
    engine = OpenAIEngine(MODEL, [a.base_url, b.base_url])
    engine.generate([f"prompt {i}" for i in range(6)], SamplingParams(max_new_tokens=2))
    assert len(a.requests) == len(b.requests) == 3
    assert engine.info.engine == "openai" and a.base_url in engine.info.device


def test_base_url_without_v1_is_accepted(servers):
    server = servers()
    engine = OpenAIEngine(MODEL, server.base_url.removesuffix("/v1") + "/")
    assert engine.base_urls == [server.base_url]


def test_sampling_options_and_per_prompt_seeds_are_sent(servers):
    server = servers()
    engine = OpenAIEngine(MODEL, server.base_url, max_concurrency=1)
    params = SamplingParams(n=3, max_new_tokens=7, temperature=0.7, top_p=0.9, stop=("\n",), seed=10)
    result = engine.generate(["p0", "p1"], params)
    bodies = sorted(server.requests, key=lambda body: body["prompt"])
    assert [body["seed"] for body in bodies] == [10, 13]  # seed + prompt index * n
    for body in bodies:
        assert (body["n"], body["max_tokens"], body["temperature"], body["top_p"], body["stop"]) == (
            3, 7, 0.7, 0.9, ["\n"])  # fmt: skip
        assert body["logprobs"] == 0  # per-choice token counts when n > 1
    # Samples come back per prompt, in prompt order and choice order.
    assert [[s.text for s in samples] for samples in result] == [
        ["seed=10+0", "seed=10+1", "seed=10+2"],
        ["seed=13+0", "seed=13+1", "seed=13+2"],
    ]
    assert all(s.num_tokens == 3 and s.finish_reason == "stop" for samples in result for s in samples)


def test_one_sample_counts_tokens_from_usage_and_greedy_is_sent_once(servers):
    server = servers()
    engine = OpenAIEngine(MODEL, server.base_url)
    [samples] = engine.generate(["p"], SamplingParams(n=4, max_new_tokens=2, temperature=0))
    # Servers refuse n > 1 with greedy decoding; one greedy sample stands for all n.
    assert [body["n"] for body in server.requests] == [1]
    assert "logprobs" not in server.requests[0]
    assert len(samples) == 4 and len({s for s in samples}) == 1
    assert samples[0].num_tokens == 2 and samples[0].finish_reason == "length"


def test_transient_errors_are_retried_then_succeed(servers):
    server = servers()
    server.failures = [503, 429, 500]
    engine = OpenAIEngine(MODEL, server.base_url, max_retries=4)
    [[sample]] = engine.generate(["p"], SamplingParams(max_new_tokens=2))
    assert sample.num_tokens == 2
    assert len(server.requests) == 4


def test_retries_give_up_with_one_line_naming_the_url(servers):
    server = servers()
    server.failures = [503] * 10
    engine = OpenAIEngine(MODEL, server.base_url, max_retries=2)
    with pytest.raises(StepScopeError, match=r"kept failing \(503\) after 3 tries") as error:
        engine.generate(["p"], SamplingParams(max_new_tokens=2))
    assert server.base_url in str(error.value) and "\n" not in str(error.value)
    assert len(server.requests) == 3


def test_a_client_error_is_not_retried(servers):
    server = servers()
    server.failures = [400]
    engine = OpenAIEngine(MODEL, server.base_url)
    with pytest.raises(StepScopeError, match=r"rejected the request \(400\): scripted 400"):
        engine.generate(["p"], SamplingParams(max_new_tokens=2))
    assert len(server.requests) == 1


def test_a_node_that_dies_mid_job_is_routed_around(servers):
    alive, dying = servers(), servers()
    engine = OpenAIEngine(MODEL, [alive.base_url, dying.base_url], max_retries=2)
    dying.stop()
    result = engine.generate([f"p{i}" for i in range(4)], SamplingParams(max_new_tokens=2))
    assert len(result) == 4 and len(alive.requests) == 4


def test_concurrency_is_bounded(servers):
    server = servers(delay_s=0.2)
    engine = OpenAIEngine(MODEL, server.base_url, max_concurrency=2)
    engine.generate([f"p{i}" for i in range(6)], SamplingParams(max_new_tokens=2))
    assert server.max_in_flight == 2


def test_candidates_are_read_from_top_logprobs(servers):
    server = servers()
    engine = OpenAIEngine(MODEL, server.base_url)
    [scores] = engine.candidate_logprobs(["Is it?"], [" Yes", " No", " Maybe"])
    assert scores == {" Yes": -0.5, " No": -1.5, " Maybe": -math.inf}
    body = server.requests[0]
    assert (body["max_tokens"], body["temperature"], body["logprobs"]) == (1, 0, 20)


def test_multi_token_candidate_is_refused_via_the_server_tokenizer(servers):
    engine = OpenAIEngine(MODEL, servers().base_url)
    with pytest.raises(StepScopeError, match="is 2 tokens for scripted-model"):
        engine.candidate_logprobs(["Is it?"], ["Yes sir"])


def test_without_a_tokenizer_anywhere_candidates_give_a_clear_error(servers):
    engine = OpenAIEngine(MODEL, servers(tokenize=False).base_url)
    with pytest.raises(StepScopeError, match="no vLLM /tokenize.*pass tokenizer_dir"):
        engine.candidate_logprobs(["Is it?"], [" Yes"])


def test_render_chat_needs_a_local_tokenizer(servers):
    engine = OpenAIEngine(MODEL, servers().base_url)
    with pytest.raises(StepScopeError, match="pass tokenizer_dir"):
        engine.render_chat([{"role": "user", "content": "hi"}])


def test_a_missing_tokenizer_dir_is_one_clear_line(servers, tmp_path):
    with pytest.raises(ModelNotFound, match=f"cannot load a tokenizer from {tmp_path}"):
        OpenAIEngine(MODEL, servers().base_url, tokenizer_dir=str(tmp_path))


def test_wrong_model_lists_what_each_server_serves(servers):
    server = servers(served=("alpha", "beta"))
    with pytest.raises(ModelNotFound, match=r"'gamma' is not served at .*; it serves: alpha, beta"):
        OpenAIEngine("gamma", server.base_url)


def test_a_url_that_is_not_an_openai_api_says_so(servers):
    server = servers()
    with pytest.raises(StepScopeError, match=r"\(404\): is this an OpenAI-compatible /v1 URL\?"):
        OpenAIEngine(MODEL, server.base_url + "/nested")


def test_one_unreachable_url_among_several_fails_at_construction(servers):
    server = servers()
    dead = ScriptedServer()
    dead.stop()
    with pytest.raises(ServerUnreachable, match=dead.base_url):
        OpenAIEngine(MODEL, [server.base_url, dead.base_url])
