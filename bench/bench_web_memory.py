"""Memory of a hosted velodash's web processes, per process (issue 14: light web workers).

Serves one results file with ``python -m dashboard.cli serve --config FILE --workers N`` run
from CHECKOUT (its folder first on ``sys.path``, so that checkout's code is served: checked),
Redis holding the job records, and measures the gunicorn master and each worker (RSS, PSS, USS
and whether torch or numba/llvmlite are mapped into it) with the 1-minute load average:

1. **started**: both workers forked and ``/health`` answering 200 (times reported);
2. **toured**: a signed-in headless Chromium has opened every page of the dataset and run
   their main callbacks (bench_load.capture: /stream, /genes, a gene click, a colouring, a gene
   on /stream; then /, /uncertainty, /coherence, /permutation, /portraits, /heatmap, /stream
   with both sources and /jobs);
3. **replayed**: USERS users replayed all those recorded requests for DURATION seconds
   (bench_load.replay), so every worker has served every page.

    .venv/bin/python bench/bench_web_memory.py --checkout /tmp/rss/after \\
        --results /tmp/results/pancreas_now.h5ad --label after

Raw numbers go to ``bench/out/web_memory_LABEL.json``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_load import (
    OUT_DIR,
    POLL_OUTPUT,
    Flow,
    _browser,
    _recorded,
    capture,
    replay,
    server_memory,
)
from servers import RedisServer, free_port, wait_until

USER = ("bench", "bench-password")
#: pages not in bench_load.capture -> a graph that shows the page has drawn (None: no graph)
PAGES = {
    "/": "training-curve",
    "/uncertainty": "uncertainty-maps",
    "/coherence": "coherence-cdf",
    "/permutation": "permutation-heatmap",
    "/portraits": "portraits-grid",
    "/heatmap": "heatmap-graph",
    "/stream?source=both&fade=1": "stream-agreement",
    "/jobs": None,
}
HEAVY_LIBRARIES = {"torch": "libtorch", "numba": "/numba/", "llvmlite": "libllvmlite"}


def _env() -> dict[str, str]:
    """This environment without what would put another checkout first on sys.path."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSAFEPATH")}


def _velodash(checkout: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=checkout, env=_env(), check=True, text=True, **kwargs
    )


def prepare(folder: Path, checkout: Path, results: Path, redis_url: str) -> Path:
    """Datasets folder with `results`, users file, secret key, cache; returns the config."""
    (folder / "datasets").mkdir()
    shutil.copy(results, folder / "datasets" / results.name)
    _velodash(checkout, "-m", "dashboard.cli", "users", "add", USER[0], "--role", "editor",
              "--users-file", str(folder / "users.json"), input=USER[1] + "\n",
              capture_output=True)  # fmt: skip
    key = folder / "secret_key"
    key.write_text(secrets.token_hex(32))
    key.chmod(0o600)
    config = folder / "velodash.toml"
    config.write_text(
        f'datasets_dir = "{folder / "datasets"}"\ncache_dir = "{folder / "cache"}"\n'
        f'users_file = "{folder / "users.json"}"\nsecret_key_file = "{key}"\n'
        f'redis_url = "{redis_url}"\n'
    )
    return config


def served_code(checkout: Path) -> str:
    """Where `dashboard` is imported from with the server's interpreter, folder and env."""
    done = _velodash(checkout, "-c", "import dashboard; print(dashboard.__file__)",
                     capture_output=True)  # fmt: skip
    return done.stdout.strip()


def start(checkout: Path, config: Path, port: int, workers: int, log: Path):
    """Start `velodash serve`; (process, seconds to every worker forked, to first /health 200)."""
    command = [sys.executable, "-m", "dashboard.cli", "serve", "--config", str(config),
               "--port", str(port), "--workers", str(workers)]  # fmt: skip
    began = time.time()
    with open(log, "ab") as out:
        proc = subprocess.Popen(command, cwd=checkout, env=_env(), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip

    def healthy() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"velodash serve exited:\n{log.read_text()[-2000:]}")
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(healthy, 180, interval=0.05, what="/health")
    health_s = time.time() - began
    children = wait_until(
        lambda: len(kids := psutil.Process(proc.pid).children()) >= workers and kids, 60
    )
    forked_s = sorted(child.create_time() - began for child in children)
    return proc, forked_s, health_s


def measure(pid: int) -> dict:
    """bench_load.server_memory plus, per process, its peak RSS so far (VmHWM, MB) and the
    heavy libraries mapped into it."""
    memory = server_memory(pid)
    for entry in memory["per_process"]:
        status = Path(f"/proc/{entry['pid']}/status").read_text()
        entry["peak_rss_mb"] = int(status.split("VmHWM:")[1].split()[0]) / 1024
        paths = {m.path for m in psutil.Process(entry["pid"]).memory_maps()}
        entry["heavy"] = [
            name for name, mark in HEAVY_LIBRARIES.items() if any(mark in p for p in paths)
        ]
    memory["load_1min"] = os.getloadavg()[0]
    return memory


def tour(url: str, header: str, dataset: str) -> list[Flow]:
    """Open the pages `capture` does not in headless Chromium; one recorded flow per page
    (without the job-state polls: replay sends those on their own timer)."""
    driver = _browser(header)
    flows = []
    try:
        for page, graph in PAGES.items():
            joiner = "&" if "?" in page else "?"
            driver.get(f"{url}{page}{joiner}ds={dataset}")
            if graph is not None:
                script = f"return !!document.querySelector('#{graph} .js-plotly-plot')?._fullData"
                wait_until(lambda s=script: driver.execute_script(s), 120, what=f"{page} drawn")
            time.sleep(2.0)  # follow-up callbacks
            sent = [r for r in _recorded(driver, url) if not (r.body and POLL_OUTPUT in r.body)]
            flows.append(Flow(f"open {page}", sent))
    finally:
        driver.quit()
    return flows


def table(stages: dict[str, dict]) -> str:
    """Markdown: one row per process, RSS / PSS (MB) at each stage, peak RSS at the last."""
    names = list(stages)
    stage_heads = " | ".join(f"{n}: RSS / PSS (MB)" for n in names)
    lines = [
        f"| process | {stage_heads} | peak RSS (MB) | mapped |",
        "|---|" + "---:|" * (len(names) + 1) + "---|",
    ]
    last = stages[names[-1]]["per_process"]
    for i, proc in enumerate(last):
        cells = []
        for name in names:
            entry = next((p for p in stages[name]["per_process"] if p["pid"] == proc["pid"]), None)
            cells.append(f"{entry['rss_mb']:.0f} / {entry['pss_mb']:.0f}" if entry else "–")
        label = proc["role"] if proc["role"] == "master" else f"{proc['role']} {i}"
        cells.append(f"{proc['peak_rss_mb']:.0f}")
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {', '.join(proc['heavy'])} |")
    total = [f"{s['rss_mb']:.0f} / {s['pss_mb']:.0f}" for s in stages.values()]
    lines.append("| **sum** | " + " | ".join(total) + " | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, serve, measure at each stage, report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkout", type=Path, required=True, help="velodash source to serve")
    parser.add_argument("--results", type=Path, required=True, help="a velodash results .h5ad")
    parser.add_argument("--label", default="run", help="names the JSON file")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--users", type=int, default=4, help="replaying users")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of replay")
    args = parser.parse_args(argv)
    checkout = args.checkout.resolve()
    code = served_code(checkout)
    if not code.startswith(str(checkout) + os.sep):
        raise SystemExit(f"{checkout} would serve dashboard from {code}")

    with tempfile.TemporaryDirectory(prefix="velodash-webmem-") as tmp:
        folder = Path(tmp)
        redis = RedisServer(folder / "redis").start()
        config = prepare(folder, checkout, args.results.resolve(), redis.url)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = None
        try:
            server, forked_s, health_s = start(checkout, config, port, args.workers,
                                               folder / "serve.log")  # fmt: skip
            time.sleep(3.0)  # let the workers settle
            stages = {"started": measure(server.pid)}
            datasets = httpx.get(f"{url}/api/datasets", auth=USER, timeout=120).json()
            dataset = next(d["id"] for d in datasets if d["fitted"])
            header = "Basic " + base64.b64encode(":".join(USER).encode()).decode()
            flows = capture(url, header, dataset, [])
            flows += tour(url, header, dataset)
            stages["toured"] = measure(server.pid)
            results = replay(url, USER, flows, args.users, args.duration)
            stages["replayed"] = measure(server.pid)
        finally:
            if server is not None and server.poll() is None:
                os.killpg(server.pid, signal.SIGTERM)
                server.wait(30)
            redis.kill()
    errors = sorted({e for s in results.values() for e in s.errors})
    done = sum(len(s.seconds) for s in results.values())
    print(f"{args.label}: dashboard from {code}")
    print(f"workers forked after {', '.join(f'{s:.1f}' for s in forked_s)} s; first /health "
          f"200 after {health_s:.1f} s")  # fmt: skip
    print(table(stages))
    print("load average (1 min): " + ", ".join(
        f"{name} {s['load_1min']:.1f}" for name, s in stages.items()))  # fmt: skip
    print(f"replay: {args.users} users × {args.duration:.0f} s, {done} interactions over "
          f"{len(flows)} recorded flows, {len(errors)} distinct errors")  # fmt: skip
    for error in errors[:10]:
        print("  error:", error)
    out = OUT_DIR / f"web_memory_{args.label}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "checkout": str(checkout), "code": code, "results": str(args.results),
        "workers": args.workers, "forked_s": forked_s, "health_s": health_s,
        "flows": [f.name for f in flows], "users": args.users, "duration_s": args.duration,
        "interactions": done, "errors": errors, "stages": stages, "cpus": os.cpu_count(),
    }, indent=1))  # fmt: skip
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
