"""The server side of `bench_load.py`: self-hosting `velodash serve` on a results file (fake or
given) and measuring the server's memory (RSS/PSS per process, and the peak while under load)."""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import psutil

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))
SAMPLE_INTERVAL_S = 0.5


@dataclass
class Hosted:
    """A self-hosted server: its processes, the dataset it serves and a user to sign in as."""

    web: object  # servers.WebServer
    redis: object | None  # servers.RedisServer
    dataset: str
    genes: list[str]
    credentials: tuple[str, str]

    def stop(self) -> None:
        """Stop the web server and redis-server."""
        for process in (self.web, self.redis):
            if process is not None:
                process.kill()


def _peak_rss_mb(pid: int) -> float:
    """The process's peak RSS so far (VmHWM, MB); NaN where /proc does not say."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _processes(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def server_memory(pid: int) -> dict:
    """RSS and PSS (MB) and CPU seconds (user + system) summed over process `pid` and its
    descendants, their count, and `per_process`: pid, role, RSS/PSS/USS and peak RSS (VmHWM)
    in MB and CPU seconds of each. Roles: "master"
    (`pid`), "worker" (a fork with the master's command line: a gunicorn worker), "child" (any
    other process, e.g. the local queue's worker)."""
    each = []
    processes = _processes(pid)
    for proc in processes:
        info = proc.memory_full_info()
        same = proc.cmdline() == processes[0].cmdline()
        each.append({
            "pid": proc.pid,
            "role": "master" if proc.pid == pid else ("worker" if same else "child"),
            **{f"{k}_mb": getattr(info, k, info.rss) / 2**20 for k in ("rss", "pss", "uss")},
            "hwm_mb": _peak_rss_mb(proc.pid),
            "cpu_s": sum(proc.cpu_times()[:2]),
        })  # fmt: skip
    return {
        "rss_mb": sum(p["rss_mb"] for p in each),
        "pss_mb": sum(p["pss_mb"] for p in each),
        "cpu_s": sum(p["cpu_s"] for p in each),
        "processes": len(each),
        "per_process": each,
    }


class PeakSampler:
    """Samples the RSS summed over a process tree every 0.5 s in a thread, between `with`
    entry and exit; `peak_mb` is the largest sum seen (all processes at the same moment)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                total = sum(p.memory_info().rss for p in _processes(self.pid)) / 2**20
            except psutil.Error:  # a process ended between listing and reading it
                continue
            self.peak_mb = max(self.peak_mb, total)
            self._stop.wait(SAMPLE_INTERVAL_S)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _served_results(data: Path, results: Path | None, n_cells: int, n_genes: int) -> Path:
    """The results file in the served folder `data`: a link to `results`, else fake results
    (tests/fake_results.py) of `n_cells` × `n_genes`."""
    if results is None:
        from fake_results import write_fake_results

        return write_fake_results(data / "bench.h5ad", n_cells=n_cells, n_genes=n_genes)
    from dashboard.data.datasets import h5_info

    try:
        is_results = results.suffix.lower() == ".h5ad" and h5_info(results)[0]
    except OSError as err:
        raise SystemExit(f"--results {results}: cannot read it ({err}).") from None
    if not is_results:
        raise SystemExit(
            f"--results {results} is not a velodash results file; give the .h5ad that "
            "`velodash fit DATA.h5ad --out RESULTS.h5ad` wrote."
        )
    link = data / results.name
    link.symlink_to(results.resolve())
    return link


def self_host(
    folder: Path, workers: int, results: Path | None, n_cells: int, n_genes: int
) -> Hosted:
    """Start redis-server (when installed) and `velodash serve --workers N` with one editor
    user, serving `results` (linked into a data folder under `folder`) or fake results."""
    import anndata
    from servers import REDIS_SERVER, RedisServer, WebServer

    from dashboard.data.datasets import fingerprint
    from dashboard.hosting.users import add_user

    data = folder / "datasets"
    data.mkdir()
    served = _served_results(data, results, n_cells, n_genes)
    credentials = ("bench", "bench-password")
    add_user(folder / "users.json", credentials[0], "editor", credentials[1])
    redis = RedisServer(folder / "redis").start() if REDIS_SERVER else None
    lines = [
        f'datasets_dir = "{data}"',
        f'cache_dir = "{folder / "cache"}"',
        f'users_file = "{folder / "users.json"}"',
        *([f'redis_url = "{redis.url}"'] if redis else []),
    ]
    config = folder / "velodash.toml"
    config.write_text("\n".join(lines) + "\n")
    try:
        web = WebServer(config, folder / "serve.log", workers=workers).start()
    except BaseException:
        if redis is not None:
            redis.kill()
        raise
    genes = list(anndata.read_h5ad(served, backed="r").var_names)
    return Hosted(web, redis, fingerprint(served)[:12], genes, credentials)
