"""A real `edge-embed serve` process on 127.0.0.1 for the server tests, and the texts they send."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from edge_embed.measure import rss_mb

WORDS = ("river stone garden light paper music window coffee engine winter market forest signal orange "
         "bridge camera pocket silver thunder ladder planet candle harbor violin meadow rocket").split()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_texts(count: int, seed: int, low: int = 3, high: int = 40) -> list[str]:
    """Texts of `low` to `high` words, different for every seed."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(low, high + 1)))) + f" {seed}-{i}"
            for i in range(count)]


def sample(text: str, name: str, **labels: str) -> float:
    """A sample's value in a Prometheus text exposition (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(rf"{re.escape(name)}(?:\{{(.*)\}})? (\S+)", line)
        if match and ",".join(sorted((match.group(1) or "").split(","))) == want:
            return float(match.group(2))
    return 0.0


class ServerProcess:
    """A server process on 127.0.0.1 whose output goes to LOG_DIR/NAME-PORT.log: started, waited for until
    /health answers 200, stopped with a signal (killed if it does not exit in time)."""

    def __init__(self, name: str, port: int, log_dir: Path):
        self.name, self.port = name, port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_dir / f"{name}-{port}.log"

    def start(self, argv: list[str], env: dict[str, str], timeout: float, cwd: Path | None = None) -> None:
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(argv, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.process.returncode}): {self.log()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer /health in {timeout} s: {self.log()}")

    def rss_mb(self) -> float:
        return rss_mb("VmRSS", self.process.pid)

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class Server(ServerProcess):
    """`edge-embed serve ARGS --port P` as a user starts it; waits until /health answers 200."""

    def __init__(self, *args: str, log_dir: Path, api_key: str | None = None):
        super().__init__("serve", free_port(), log_dir)
        self.api_key = api_key
        command = Path(sys.executable).with_name("edge-embed")
        argv = [str(command)] if command.exists() else [sys.executable, "-m", "edge_embed.cli"]
        argv += ["serve", *args, "--port", str(self.port), "--log-level", "warning"]
        if api_key:
            argv += ["--api-key", api_key]
        self.start(argv, env={**os.environ, "EDGE_EMBED_API_KEY": ""}, timeout=120)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def post(self, path: str, body, **kwargs) -> httpx.Response:
        return httpx.post(self.url + path, json=body, headers=self.headers, timeout=120, **kwargs)

    def metric(self, name: str, **labels: str) -> float:
        """A sample's value from /metrics (0 when absent)."""
        return sample(self.scrape(), name, **labels)

    def scrape(self) -> str:
        return httpx.get(self.url + "/metrics", headers=self.headers, timeout=30).text
