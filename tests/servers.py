"""Real server processes for the hosted-mode tests: redis-server, `velodash worker` (Celery)
and `velodash serve` (gunicorn), each on a free loopback port with its log in a file.

Nothing is mocked: the tests talk HTTP to gunicorn, which talks to Redis, where a Celery
worker picks up fits that run the real pipeline.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REDIS_SERVER = shutil.which("redis-server")
VELODASH = [sys.executable, "-m", "dashboard.cli"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition, timeout: float, interval: float = 0.2, what: str = "condition"):
    """Poll `condition()` until it returns a truthy value (returned) or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class Process:
    """A child process in its own session, output to `log`; stopped with its whole group."""

    def __init__(self, command: list[str], log: Path, env: dict | None = None) -> None:
        self.command, self.log, self.env = command, log, env
        self.proc: subprocess.Popen | None = None

    def start(self) -> Process:
        """Start (or restart) the process."""
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.command,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(self.env or {})},
                start_new_session=True,
            )
        return self

    def output(self) -> str:
        """Everything the process wrote so far."""
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        """Whether the process is running."""
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        """Send `sig` to the process (SIGKILL: to it alone, like a crash; others: to its whole
        group) and wait for it to end."""
        if not self.alive():
            return
        if sig == signal.SIGKILL:
            self.proc.send_signal(sig)  # only the process itself, as a crash would
        else:
            os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


class RedisServer(Process):
    """redis-server on a free loopback port, persisting to `folder` (survives restarts)."""

    def __init__(self, folder: Path, password: str | None = None) -> None:
        self.port = free_port()
        folder.mkdir(parents=True, exist_ok=True)
        command = [
            REDIS_SERVER,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(folder),
            "--appendonly", "yes",
            "--save", "",
            "--protected-mode", "yes",
        ]  # fmt: skip
        if password is not None:
            command += ["--requirepass", password]
        super().__init__(command, folder / "redis.log")

    @property
    def url(self) -> str:
        """The redis:// URL of database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start and wait until it answers PING."""
        super().start()
        wait_until(self.ping, 20, what="redis-server")
        return self

    def ping(self) -> bool:
        """Whether the server answers (with a password set, by asking for it)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False


class CeleryWorker(Process):
    """`velodash worker --config FILE` (a Celery worker over Redis)."""

    def __init__(self, config: Path, log: Path, concurrency: int = 1) -> None:
        command = [*VELODASH, "worker", "--config", str(config), "--concurrency", str(concurrency)]
        super().__init__(command, log)

    def start(self) -> CeleryWorker:
        """Start and wait until Celery says it is ready."""
        mark = len(self.output()) if self.log.exists() else 0
        super().start()
        wait_until(lambda: "ready." in self.output()[mark:], 90, what="the Celery worker")
        return self


class WebServer(Process):
    """`velodash serve --config FILE --workers N` (gunicorn) on a free port."""

    def __init__(self, config: Path, log: Path, workers: int = 2) -> None:
        self.port = free_port()
        command = [
            *VELODASH, "serve", "--config", str(config),
            "--port", str(self.port), "--workers", str(workers),
        ]  # fmt: skip
        super().__init__(command, log)

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:PORT."""
        return f"http://127.0.0.1:{self.port}"

    def launch(self) -> WebServer:
        """Start without waiting (`start` then only waits)."""
        super().start()
        return self

    def start(self) -> WebServer:
        """Start (unless `launch`ed) and wait until /health answers."""
        if not self.alive():
            super().start()

        def healthy() -> bool:
            if not self.alive():
                raise RuntimeError(f"velodash serve exited:\n{self.output()[-3000:]}")
            try:
                return httpx.get(f"{self.url}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, 120, interval=0.5, what="velodash serve")
        return self
