"""Support of the web tier: a real ``clarion web`` process, API keys made by the CLI.

Not a conftest.py (see ``tests/testdb.py``): test modules import from here by name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
from harness import CLARION, ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclasses.dataclass
class Web:
    process: subprocess.Popen[bytes]
    port: int
    env: dict[str, str]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)  # type: ignore[arg-type]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 20) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CLARION, *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def new_key(self, name: str, *scopes: str) -> str:
        """A key made by ``clarion apikey create``; returns the key printed once."""
        done = self.cli("apikey", "create", name, *(a for s in scopes for a in ("--scope", s)))
        assert done.returncode == 0, done.stderr
        match = re.search(r"key \(shown once, keep it secret\): (clk_\S+)", done.stdout)
        assert match, done.stdout
        return match.group(1)


def web_env(settings: dict[str, str]) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
    return {**base, "PYTHONUNBUFFERED": "1", **settings}


def start_web(settings: dict[str, str], tmp: Path, *args: str) -> Web:
    """``clarion web --port P`` with ``settings``; returns once ``/healthz`` answers."""
    port = free_port()
    env = web_env(settings)
    log_path = tmp / f"web-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [CLARION, "web", "--port", str(port), *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )
    web = Web(process, port, env, log_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"clarion web exited {process.returncode}:\n{web.log()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{web.url}/healthz", timeout=2).status_code == 200:
                return web
        time.sleep(0.1)
    web.stop()
    raise RuntimeError(f"clarion web did not start:\n{web.log()}")
