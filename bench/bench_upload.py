"""Memory of the web process while a multi-GB file is uploaded (issue 16: streamed uploads).

Starts ``velodash run`` on a temporary cache with a large ``VELODASH_MAX_UPLOAD_MB``, then
streams a generated file of ``--gb`` GiB to ``POST /upload`` as multipart form data with httpx
(the body is produced chunk by chunk, with its Content-Length, so the client never holds it
either). The file starts with the HDF5 signature but is otherwise zeros and random bytes, so
the server receives, hashes and stores all of it, then refuses it as unreadable HDF5 (400) and
removes it: the memory measured is the streaming path's. The server's RSS is sampled with
psutil every 50 ms: before, peak during, and after the upload.

    .venv/bin/python bench/bench_upload.py [--gb 2] [--json bench/out/upload.json]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
BOUNDARY = "velodash-bench-boundary"
CHUNK = 4 * 2**20
MB = 2**20


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _body(size: int) -> tuple[int, Iterator[bytes]]:
    """(total length, chunks) of a multipart body whose one file part has `size` bytes."""
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
        'filename="big.h5ad"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    noise = os.urandom(CHUNK)  # one random chunk, repeated: no compressible runs

    def chunks() -> Iterator[bytes]:
        yield head + HDF5_MAGIC
        sent = len(HDF5_MAGIC)
        while sent < size:
            step = min(CHUNK, size - sent)
            yield noise[:step]
            sent += step
        yield tail

    return len(head) + size + len(tail), chunks()


class Sampler(threading.Thread):
    """RSS of one process every `interval` seconds until stopped; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.interval)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gb", type=float, default=2.0, help="file size in GiB (default 2)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)
    size = int(args.gb * 2**30)
    with tempfile.TemporaryDirectory(prefix="velodash-upload-") as tmp:
        port = _free_port()
        env = {**os.environ, "VELODASH_MAX_UPLOAD_MB": str(int(size / MB) + 100)}
        sample = ROOT / "sample_data" / "velodash_sample.h5ad"  # named: no sample fit starts
        command = [sys.executable, "-m", "dashboard.cli", "run", str(sample), "--port", str(port)]
        command += ["--cache-dir", str(Path(tmp) / "cache")]
        log = Path(tmp) / "server.log"
        with log.open("wb") as out:
            server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.time() + 120
            while True:
                try:
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if server.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"velodash run did not start:\n{log.read_text()[-2000:]}")
                time.sleep(0.2)
            httpx.get(f"{url}/", timeout=30)  # a page, so the app is warm
            process = psutil.Process(server.pid)
            before = process.memory_info().rss
            sampler = Sampler(server.pid)
            sampler.start()
            length, chunks = _body(size)
            headers = {
                "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
                "Content-Length": str(length),
            }
            began = time.perf_counter()
            response = httpx.post(f"{url}/upload", content=chunks, headers=headers, timeout=None)
            seconds = time.perf_counter() - began
            time.sleep(0.5)
            sampler.halt.set()
            sampler.join()
            after = process.memory_info().rss
            left = list((Path(tmp) / "cache" / "uploads").glob("*"))
        finally:
            server.terminate()
            server.wait(30)
    result = {
        "file_gib": args.gb,
        "status": response.status_code,
        "answer": response.json().get("error") or response.json().get("notice"),
        "seconds": round(seconds, 1),
        "mib_per_s": round(size / MB / seconds, 1),
        "rss_before_mib": round(before / MB, 1),
        "rss_peak_mib": round(sampler.peak / MB, 1),
        "rss_after_mib": round(after / MB, 1),
        "rss_growth_mib": round((sampler.peak - before) / MB, 1),
        "files_left_in_uploads": len(left),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
