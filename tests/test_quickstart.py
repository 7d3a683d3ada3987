"""docs/hosting.md's "Try it on your workstation (no sudo)", followed step by step.

The section's code blocks are read from the doc itself, so the doc and this test cannot drift:
its folder becomes a temporary one and its ports free ones, then the set-up block runs in bash
from the checkout (real redis-server, `velodash users add` with the password piped in), the
TOML block becomes the config file, the `velodash serve --check` / `serve` / `worker` lines run
as written (gunicorn, a Celery worker), and the instance must answer like the doc promises.
Finally the doc's stop block stops Redis. About 30 s.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from servers import REDIS_SERVER, CeleryWorker, Process, WebServer, free_port, wait_until

from dashboard.hosting.settings import load_config
from dashboard.jobs.celery_app import make_celery

pytestmark = pytest.mark.skipif(
    REDIS_SERVER is None, reason="needs redis-server: apt-get install redis-server"
)

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "hosting.md"
HEADING = "## Try it on your workstation (no sudo)"
FOLDER, REDIS_PORT, WEB_PORT = "~/velodash-lab", "6390", "8050"
PASSWORD = "alice-trial-pw"
#: `velodash` on the PATH, as after `source .venv/bin/activate`
ENV = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


class DocWebServer(WebServer):
    """The doc's `velodash serve` line as written (the port comes from the doc's config)."""

    def __init__(self, argv: list[str], port: int, log: Path) -> None:
        Process.__init__(self, argv, log, ENV)
        self.port = port


class DocWorker(CeleryWorker):
    """The doc's `velodash worker` line as written."""

    def __init__(self, argv: list[str], log: Path) -> None:
        Process.__init__(self, argv, log, ENV)


def doc_section(folder: Path, redis_port: int, web_port: int) -> str:
    """The section's text, with the folder and ports replaced."""
    doc = DOC.read_text()
    assert HEADING in doc, f"{DOC} lost the section {HEADING!r}"
    section = doc.split(HEADING, 1)[1].split("\n## ", 1)[0]
    section = section.replace(FOLDER, str(folder))
    return section.replace(REDIS_PORT, str(redis_port)).replace(WEB_PORT, str(web_port))


def _bash(script: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=REPO,
        env={**os.environ, **ENV},
        capture_output=True,
        text=True,
        timeout=120,
        **kwargs,
    )


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _stop_redis(stop: str, pidfile: Path) -> bool:
    """Run the doc's stop block; whether it stopped Redis (killed here if not, so that a
    failed test leaves nothing running)."""
    if not pidfile.exists():
        return True
    pid = int(pidfile.read_text())
    _bash(stop)
    try:
        wait_until(lambda: not _running(pid), 10, what="redis-server to stop")
        return True
    except TimeoutError:
        os.kill(pid, signal.SIGKILL)
        return False


def test_the_workstation_quick_start_works_as_written(tmp_path):
    folder = tmp_path / "velodash-lab"
    redis_port, web_port = free_port(), free_port()
    section = doc_section(folder, redis_port, web_port)
    blocks = re.findall(r"```(\w+)\n(.*?)```", section, re.S)
    assert [language for language, _ in blocks] == ["bash", "toml", "bash", "bash"], (
        "the quick start's code blocks changed (set-up, config, run, stop): update this test"
    )
    setup, config, run, stop = (text for _, text in blocks)
    processes: list[Process] = []
    try:
        # 1. The folder, the sample, the secret key, Redis, the first user.
        done = _bash(setup, input=f"{PASSWORD}\n")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "added user alice (admin)" in done.stdout
        assert (folder / "datasets" / "velodash_sample.h5ad").exists()

        # 2. The config file, saved where its first line says.
        target = Path(config.splitlines()[0].removeprefix("#").strip())
        assert target == folder / "velodash.toml"
        target.write_text(config)
        redis_url = load_config(target).app.redis_url

        # 3. The check, the web server and the worker, each line as written.
        for line in run.splitlines():
            argv = shlex.split(line, comments=True)
            if "--check" in argv:
                checked = subprocess.run(
                    argv, env={**os.environ, **ENV}, capture_output=True, text=True, timeout=120
                )
                assert checked.returncode == 0, checked.stdout + checked.stderr
                assert "configuration OK" in checked.stdout
                assert "(reachable)" in checked.stdout, checked.stdout
                assert "warning" not in checked.stdout + checked.stderr
            elif argv[:2] == ["velodash", "serve"]:
                processes.append(DocWebServer(argv, web_port, tmp_path / "serve.log").launch())
            elif argv[:2] == ["velodash", "worker"]:
                processes.append(DocWorker(argv, tmp_path / "worker.log"))
            else:
                pytest.fail(f"unexpected line in the run block: {line!r}")
        web, worker = processes
        worker.start()
        web.start()

        # 4. What the doc promises: sign-in at http://127.0.0.1:PORT, the sample listed,
        #    a worker taking fits.
        assert f"<{web.url}>" in section
        assert httpx.get(f"{web.url}/", timeout=30).status_code == 401
        with httpx.Client(base_url=web.url, auth=("alice", PASSWORD), timeout=60) as alice:
            home = alice.get("/")
            assert home.status_code == 200 and "<title>velodash</title>" in home.text
            labels = [d["label"] for d in alice.get("/api/datasets").json()]
            assert labels == ["velodash_sample.h5ad"]
            assert alice.get("/health").json() == {"status": "ok", "queue": "ok"}
        replies = make_celery(redis_url).control.ping(timeout=10, limit=1)
        assert len(replies) == 1 and list(replies[0].values()) == [{"ok": "pong"}]
    finally:
        for process in processes:
            # gunicorn: quick shutdown; Celery: cold. gunicorn's master lingers ~8 s after its
            # workers have gone, so the group is killed after 3 s.
            process.kill(signal.SIGQUIT, timeout=3)
        stopped = _stop_redis(stop, folder / "redis.pid")
    assert stopped, "the doc's stop block did not stop redis-server"
