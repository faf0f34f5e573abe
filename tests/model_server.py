"""A real model behind a real OpenAI-compatible HTTP server, small enough to start in seconds.

`python tests/model_server.py MODEL_DIR PORT NAME` serves MODEL_DIR (the tiny test model) with
core's transformers engine: GET /v1/models and POST /v1/completions (prompt, n, temperature,
top_p, max_tokens, stop, seed; `logprobs` lists each choice's tokens so the openai engine can
count them). It exists for fault tests: a `vllm serve` takes a minute to start on these
machines, this takes a few seconds, and killing it mid-job is the same failure seen from the
client (connections refused or cut).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def serve(model_dir: str, port: int, name: str) -> None:
    sys.path.insert(0, str(REPO))
    from core.engines import SamplingParams, load_engine

    engine = load_engine("transformers", model_dir)
    lock = threading.Lock()  # one generation at a time: the engine is not re-entrant

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
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
                self._reply(200, {"object": "list", "data": [
                    {"id": name, "object": "model", "created": 0, "owned_by": "test", "root": model_dir}]})
            else:
                self._reply(404, {"error": {"message": "not found"}})

        def do_POST(self):
            if self.path != "/v1/completions":
                return self._reply(404, {"error": {"message": "not found"}})
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            params = SamplingParams(
                n=body.get("n", 1), max_new_tokens=body["max_tokens"], temperature=body.get("temperature", 1.0),
                top_p=body.get("top_p", 1.0), stop=tuple(body.get("stop") or ()), seed=body.get("seed"),
            )  # fmt: skip
            with lock:
                samples = engine.generate([body["prompt"]], params)[0]
            choices = [{
                "index": j, "text": s.text, "finish_reason": s.finish_reason,
                "logprobs": {"tokens": ["t"] * s.num_tokens, "token_logprobs": [0.0] * s.num_tokens,
                             "top_logprobs": None, "text_offset": [0] * s.num_tokens},
            } for j, s in enumerate(samples)]  # fmt: skip
            used = sum(s.num_tokens for s in samples)
            self._reply(200, {"id": "cmpl", "object": "text_completion", "created": 0, "model": name,
                              "choices": choices,
                              "usage": {"prompt_tokens": 0, "completion_tokens": used, "total_tokens": used}})

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print("ready", flush=True)
    server.serve_forever()


class ModelServer:
    """The server as a subprocess on a fixed port, so a restart comes back at the same URL."""

    def __init__(self, model_dir: Path, name: str, port: int, log: Path | None = None) -> None:
        self.model_dir, self.name, self.port, self.log = str(model_dir), name, port, log
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> "ModelServer":
        log = open(self.log, "a") if self.log else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [sys.executable, __file__, self.model_dir, str(self.port), self.name],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"},
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the model server exited with {self.process.returncode}")
            try:
                with urllib.request.urlopen(self.base_url + "/models", timeout=2):
                    return self
            except OSError:
                time.sleep(0.3)
        self.kill()
        raise RuntimeError("the model server did not answer in time")

    def kill(self) -> None:
        """SIGKILL: the server vanishes mid-request, as a crashed or OOM-killed node does."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]), sys.argv[3])
