"""Load test of a hosted velodash: N signed-in users replaying the requests a browser sends.

1. **Capture.** Headless Chromium (its performance log) drives the real app through each
   interaction once and records what the browser sends: the page, ``/_dash-layout``,
   ``/_dash-dependencies`` and every ``/_dash-update-component`` body, in order.
2. **Replay.** N users (asyncio + httpx, HTTP Basic sign-in, keep-alive) loop for the duration:
   think 0.5–2 s, pick an interaction, send its requests one after the other (the gene clicked
   and the colouring chosen vary), and time the whole interaction. Each user also polls the
   job state every 4 s, as an open page does.
3. **Report.** Per interaction: count, errors, p50/p95/p99/max (ms); server RSS and PSS
   (summed over gunicorn's master and workers, and per process) before and after, and the peak
   of the summed RSS during the load; the 1-minute load average.

Self-hosted (default): starts redis-server and ``velodash serve --workers 2`` in a temp folder
on a fake results file (5,000 cells × 300 genes, tests/fake_results.py), or with
``--results PATH`` on a results file that ``velodash fit`` wrote (linked into the served
folder; its views are built by the capture's first visit, as a first user would)::

    .venv/bin/python bench/bench_load.py --users 50 --duration 60 [--results RESULTS.h5ad]

Against a running server: ``--url URL --user U --password P --dataset ID [--server-pid PID]``.
Raw numbers go to ``bench/out/load.json``; a self-hosted server's log beside it
(``load.serve.log``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from load_server import REPO_ROOT, PeakSampler, self_host, server_memory

OUT_DIR = REPO_ROOT / "bench" / "out"
CHROMIUM = os.environ.get("DASH_TEST_CHROMEPATH", "/usr/bin/chromium")
SKIPPED_PATHS = ("/assets/", "/_dash-component-suites/", "/_favicon.ico")
POLL_OUTPUT = "job-state.data"
POLL_INTERVAL_S = 4.0
COLOUR_VALUES = ("cell_type", "latent_time", "state")


@dataclass
class Request:
    """One recorded request: method, path (with query) and JSON body (callbacks)."""

    method: str
    path: str
    body: str | None = None


@dataclass
class Flow:
    """One user interaction as the browser performed it."""

    name: str
    requests: list[Request]
    vary: str | None = None  # a string in the bodies to replace per replay (gene, colouring)
    choices: tuple[str, ...] = ()
    captured_s: float = float("nan")  # how long the browser took to perform it once


@dataclass
class Stats:
    """Latencies (s) and errors of one interaction."""

    seconds: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


# -- capture ---------------------------------------------------------------------------------------
def _browser(auth_header: str):
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000"):  # fmt: skip
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(options=options)
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd(
        "Network.setExtraHTTPHeaders", {"headers": {"Authorization": auth_header}}
    )
    return driver


def _recorded(driver, origin: str) -> list[Request]:
    """The requests to `origin` in the performance log since the last call."""
    found = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] != "Network.requestWillBeSent":
            continue
        request = message["params"]["request"]
        parts = urlsplit(request["url"])
        if f"{parts.scheme}://{parts.netloc}" != origin or parts.path.startswith(SKIPPED_PATHS):
            continue
        body = request.get("postData")
        if request.get("hasPostData") and body is None:
            body = driver.execute_cdp_cmd(
                "Network.getRequestPostData", {"requestId": message["params"]["requestId"]}
            )["postData"]
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        found.append(Request(request["method"], path, body))
    return found


def _points(driver, graph: str) -> int:
    return driver.execute_script(
        "const g = document.querySelector(arguments[0] + ' .js-plotly-plot');"
        "return g && g._fullData ? g._fullData.reduce((n, t) => n + ((t.x && t.x.length)"
        " || 0), 0) : 0;",
        f"#{graph}",
    )


def _wait(condition, timeout: float = 300.0) -> float:
    """Poll `condition` until true; returns the monotonic time it became true. (A first visit
    of a large results file builds its views: minutes on a loaded machine.)"""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the page did not finish loading")
        time.sleep(0.2)
    done = time.monotonic()
    time.sleep(1.5)  # let follow-up callbacks settle
    return done


def capture(url: str, auth_header: str, dataset: str, genes: list[str]) -> list[Flow]:
    """Record the requests of each interaction with the real app in headless Chromium.

    `genes` (≥ 2) are the gene names replay varies; empty: those of the gene table's first page.
    The job-state polls a page makes on its own timer are kept apart (the first one as the
    "job poll" flow): replay sends them on their own schedule, not as part of a click.
    """
    driver = _browser(auth_header)
    origin = url.rstrip("/")
    flows = []
    try:
        start = time.monotonic()
        driver.get(f"{origin}/stream?ds={dataset}")
        done = _wait(lambda: _points(driver, "stream-graph") > 0)
        flows.append(Flow("open /stream", _recorded(driver, origin), captured_s=done - start))

        start = time.monotonic()
        driver.get(f"{origin}/genes?ds={dataset}")
        done = _wait(lambda: _points(driver, "phase-portrait") > 0)
        flows.append(Flow("open /genes", _recorded(driver, origin), captured_s=done - start))

        title = driver.find_element("css selector", "#gene-title").text
        cells = driver.find_elements("css selector", '#gene-table td[data-dash-column="gene"]')
        genes = genes or [c.text for c in cells]  # a running server's dataset: its table's genes
        target = next(c for c in cells if c.text != title)
        clicked = target.text
        start = time.monotonic()
        target.click()
        done = _wait(lambda: driver.find_element("css selector", "#gene-title").text == clicked)
        flows.append(
            Flow("click a gene", _recorded(driver, origin), clicked, tuple(genes), done - start)
        )

        start = time.monotonic()
        driver.find_element("css selector", "#gene-color-by input[value=latent_time]").click()
        done = _wait(lambda: "color_by=latent_time" in driver.current_url)
        recorded = _recorded(driver, origin)
        flows.append(
            Flow("colour by (genes)", recorded, "latent_time", COLOUR_VALUES, done - start)
        )

        driver.get(f"{origin}/stream?ds={dataset}")
        _wait(lambda: _points(driver, "stream-graph") > 0)
        _recorded(driver, origin)
        dropdown = driver.find_element("css selector", "#stream-gene")  # Dash 4: a popover
        dropdown.click()
        _wait(lambda: dropdown.get_attribute("aria-controls"), timeout=10)
        popup = driver.find_element("id", dropdown.get_attribute("aria-controls"))
        popup.find_element("css selector", "input").send_keys(genes[1])
        option = f"//*[@role='option' and normalize-space()='{genes[1]}']"
        _wait(lambda: driver.find_elements("xpath", option), timeout=20)
        start = time.monotonic()
        driver.find_element("xpath", option).click()
        done = _wait(lambda: genes[1] in driver.current_url, timeout=20)
        recorded = [r for r in _recorded(driver, origin) if "stream-gene.search_value" not in (
            r.body or "")]  # fmt: skip
        flows.append(
            Flow("colour by gene (stream)", recorded, genes[1], tuple(genes), done - start)
        )
    finally:
        driver.quit()
    poll = _poll_request(flows)
    for flow in flows:
        flow.requests = [r for r in flow.requests if not (r.body and POLL_OUTPUT in r.body)]
    return [*flows, Flow("job poll", [poll])] if poll else flows


# -- replay ----------------------------------------------------------------------------------------
def _poll_request(flows: list[Flow]) -> Request | None:
    for flow in flows:
        for request in flow.requests:
            if request.body and POLL_OUTPUT in request.body:
                return request
    return None


async def _send(client: httpx.AsyncClient, request: Request, value: tuple[str, str] | None):
    body = request.body
    if body is not None and value is not None:
        body = body.replace(json.dumps(value[0]), json.dumps(value[1]))
    headers = {"Content-Type": "application/json"} if body is not None else None
    try:
        response = await client.request(request.method, request.path, content=body, headers=headers)
    except httpx.TransportError as err:  # name the request and what the connection did
        raise RuntimeError(f"{_describe(request)}: {type(err).__name__} {err}") from err
    if response.status_code >= 400:
        raise RuntimeError(f"{response.status_code} {request.path}: {response.text[:120]}")


async def _timed(client, requests, value, stats: Stats) -> None:
    start = time.perf_counter()
    try:
        for request in requests:
            await _send(client, request, value)
    except Exception as err:  # every failure counts as an error of this interaction
        stats.errors.append(f"{type(err).__name__}: {err}"[:200])
    else:
        stats.seconds.append(time.perf_counter() - start)


async def _user(url, auth, flows, poll, results, stop_at, seed) -> None:
    rng = random.Random(seed)
    # Idle connections are dropped before gunicorn's keep-alive (5 s) closes them: at equal
    # timeouts a request raced the server's close (ReadError), which browsers retry unseen.
    limits = httpx.Limits(max_connections=4, max_keepalive_connections=4, keepalive_expiry=3.0)
    async with httpx.AsyncClient(base_url=url, auth=auth, timeout=120, limits=limits) as client:

        async def polling():
            while time.monotonic() < stop_at:
                await asyncio.sleep(POLL_INTERVAL_S * rng.uniform(0.9, 1.1))
                await _timed(client, [poll], None, results["job poll"])

        poller = asyncio.create_task(polling()) if poll is not None else None
        while time.monotonic() < stop_at:
            await asyncio.sleep(rng.uniform(0.5, 2.0))
            flow = rng.choice(flows)
            value = (flow.vary, rng.choice(flow.choices)) if flow.vary else None
            await _timed(client, flow.requests, value, results[flow.name])
        if poller is not None:
            await poller


def replay(url: str, auth: tuple[str, str], flows: list[Flow], users: int, duration: float):
    """Run `users` concurrent users for `duration` seconds; {interaction: Stats}."""
    results = {flow.name: Stats() for flow in flows}
    poll = next((f.requests[0] for f in flows if f.name == "job poll"), None)
    clicks = [f for f in flows if f.name != "job poll"]
    stop_at = time.monotonic() + duration

    async def main():
        await asyncio.gather(
            *(_user(url, auth, clicks, poll, results, stop_at, seed) for seed in range(users))
        )

    asyncio.run(main())
    return results


def _describe(request: Request) -> str:
    """ "METHOD path" and, for a callback, the outputs it updates."""
    text = f"{request.method} {request.path.split('?')[0]}"
    if request.body:
        text += " → " + json.loads(request.body).get("output", "")
    return text


# -- report ----------------------------------------------------------------------------------------
def _percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else (
        values[0] if values else float("nan"))  # fmt: skip


def _seconds(value: float) -> str:
    """Seconds with one decimal; "–" for NaN (an interaction the browser did not time)."""
    return "–" if math.isnan(value) else f"{value:.1f}"


def report(results: dict[str, Stats], flows: list[Flow]) -> str:
    """A Markdown table: interaction, requests, count, errors, p50/p95/p99/max (ms), and the
    seconds the browser took for it once during capture (the first visits build the views)."""
    sizes = {flow.name: len(flow.requests) for flow in flows}
    captured = {flow.name: flow.captured_s for flow in flows}
    lines = [
        "| interaction | requests | done | errors | p50 (ms) | p95 (ms) | p99 (ms) | max (ms) "
        "| captured (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, stats in results.items():
        ms = [1000 * s for s in stats.seconds]
        cells = [f"{_percentile(ms, q):.0f}" for q in (50, 95, 99)] + [f"{max(ms, default=0):.0f}"]
        lines.append(
            f"| {name} | {sizes[name]} | {len(ms)} | {len(stats.errors)} | "
            + " | ".join(cells)
            + f" | {_seconds(captured[name])} |"
        )
    return "\n".join(lines)


def _memory_lines(before: dict, after: dict, peak_mb: float) -> list[str]:
    """The server's memory before/after the load (sum and per process), its peak, and the
    CPU seconds it used during the load."""
    lines = [
        f"server ({before['processes']} processes): RSS {before['rss_mb']:.0f} → "
        f"{after['rss_mb']:.0f} MB (peak of the sum during the load {peak_mb:.0f} MB), "
        f"PSS {before['pss_mb']:.0f} → {after['pss_mb']:.0f} MB; "
        f"{after['cpu_s'] - before['cpu_s']:.0f} s of CPU during the load"
    ]
    started = {p["pid"]: p for p in before["per_process"]}
    for now in after["per_process"]:
        was = started.get(now["pid"], {"rss_mb": float("nan"), "pss_mb": float("nan")})
        lines.append(f"  {now['role']} {now['pid']}: RSS {was['rss_mb']:.0f} → "
                     f"{now['rss_mb']:.0f} MB (peak {now['hwm_mb']:.0f}), PSS "
                     f"{was['pss_mb']:.0f} → {now['pss_mb']:.0f} MB")  # fmt: skip
    return lines


def _load(args, url: str, auth: tuple[str, str], dataset: str, genes: list[str], pid):
    """Capture the flows, then replay them under load while sampling the server's memory."""
    header = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    print(f"capturing the browser's requests from {url} ...", flush=True)
    flows = capture(url, header, dataset, genes)
    for flow in flows:
        print(f"  {flow.name}: {len(flow.requests)} requests, {_seconds(flow.captured_s)} s")
    run = {"memory_before": server_memory(pid) if pid else None, "peak_rss_mb": None}
    run["load_average"] = [os.getloadavg()[0]]
    print(f"{args.users} users for {args.duration:.0f} s ...", flush=True)
    start, client_cpu = time.perf_counter(), time.process_time()
    if pid:
        with PeakSampler(pid) as sampler:
            results = replay(url, auth, flows, args.users, args.duration)
        run["peak_rss_mb"] = sampler.peak_mb
    else:
        results = replay(url, auth, flows, args.users, args.duration)
    run["elapsed_s"] = time.perf_counter() - start
    run["client_cpu_s"] = time.process_time() - client_cpu
    run["memory_after"] = server_memory(pid) if pid else None
    run["load_average"].append(os.getloadavg()[0])
    return flows, results, run


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, (self-host,) capture, replay, report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (self-host)")
    parser.add_argument("--results", type=Path, help="a `velodash fit` results file to serve")
    parser.add_argument("--cells", type=int, default=5000, help="fake results size (self-host)")
    parser.add_argument("--genes", type=int, default=300)
    parser.add_argument("--url", help="a running server instead of self-hosting")
    parser.add_argument("--user")
    parser.add_argument("--password")
    parser.add_argument("--dataset", help="dataset id to browse (with --url)")
    parser.add_argument("--server-pid", type=int, help="gunicorn master pid (with --url)")
    parser.add_argument("--out", type=Path, default=OUT_DIR / "load.json")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="velodash-load-") as tmp:
        if args.url:
            flows, results, run = _load(
                args, args.url, (args.user, args.password), args.dataset, [], args.server_pid
            )
        else:
            hosted = self_host(Path(tmp), args.workers, args.results, args.cells, args.genes)
            try:
                pid = hosted.web.proc.pid
                flows, results, run = _load(
                    args, hosted.web.url, hosted.credentials, hosted.dataset, hosted.genes, pid
                )
            finally:
                hosted.stop()
                args.out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(hosted.web.log, args.out.with_suffix(".serve.log"))
    total = sum(len(s.seconds) + len(s.errors) for s in results.values())
    requests = sum(len(f.requests) * len(results[f.name].seconds) for f in flows)
    errors = [e for s in results.values() for e in s.errors]
    load = run["load_average"]
    print(report(results, flows))
    print(f"\n{total} interactions ({requests} requests) in {run['elapsed_s']:.0f} s, "
          f"{len(errors)} errors; load average {load[0]:.1f} → {load[1]:.1f}; the load client "
          f"used {run['client_cpu_s']:.0f} s of CPU")  # fmt: skip
    if run["memory_before"]:
        print("\n".join(_memory_lines(run["memory_before"], run["memory_after"],
                                      run["peak_rss_mb"])))  # fmt: skip
    for error in sorted(set(errors))[:10]:
        print("  error:", error)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    summary = {
        "users": args.users,
        "duration_s": args.duration,
        "workers": args.workers,
        "results": str(args.results) if args.results else None,
        "cells": None if args.results else args.cells,
        "flows": {f.name: [_describe(r) for r in f.requests] for f in flows},
        "recorded": {f.name: [asdict(r) for r in f.requests] for f in flows},  # to profile
        "varied": {f.name: f.vary for f in flows if f.vary},
        "captured_s": {f.name: f.captured_s for f in flows},
        "latency_s": {k: v.seconds for k, v in results.items()},
        "errors": {k: v.errors for k, v in results.items()},
        **run,
        "requests": requests,
        "cpus": os.cpu_count(),
    }
    args.out.write_text(json.dumps(summary, indent=1))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
