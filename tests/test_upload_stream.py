"""Issue 16: uploads stream to disk through ``POST /upload`` (multipart, XMLHttpRequest with a
progress bar in the browser) instead of one base64 JSON callback.

A real threaded werkzeug server serves each app; httpx talks HTTP to it (a raw socket for the
upload that is cut off). The browser test drives real Chromium through the drop zone.
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import anndata as ad
import h5py
import httpx
import numpy as np
import pytest
from dash.testing.wait import until
from fake_results import write_fake_results
from servers import wait_until
from werkzeug.serving import make_server

from dashboard.config import AppConfig
from dashboard.data.uploads import HDF5_MAGIC
from dashboard.hosting.users import add_user
from dashboard.web.app import create_app

BOUNDARY = "velodash-test-boundary"


@pytest.fixture
def serve(tmp_path: Path) -> Iterator:
    """Start `create_app(AppConfig(cache_dir=tmp/cache, **settings))` on a free port; returns
    its base URL. Every server is shut down at the end of the test."""
    servers = []

    def start(**settings) -> str:
        config = AppConfig(
            cache_dir=tmp_path / "cache", sample_path=tmp_path / "no_sample.h5ad", **settings
        )
        server = make_server("127.0.0.1", 0, create_app(config).server, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for server in servers:
        server.shutdown()


def _uploads(tmp_path: Path) -> list[str]:
    """Every file in the uploads folder (temp files included)."""
    folder = tmp_path / "cache" / "uploads"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def _post(base: str, name: str, payload: bytes, **kwargs) -> httpx.Response:
    return httpx.post(f"{base}/upload", files={"file": (name, payload)}, timeout=30, **kwargs)


def test_streamed_upload_is_stored_named_and_a_duplicate_says_what_it_matches(
    serve, tmp_path, tiny_counts
):
    base = serve()
    payload = tiny_counts.read_bytes()
    with tiny_counts.open("rb") as fh:  # httpx streams an open file
        response = httpx.post(f"{base}/upload", files={"file": ("my counts.h5ad", fh)}, timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    ds = body["id"]
    assert body["new"] is True and body["label"] == "my counts.h5ad"
    assert body["href"] == f"/?ds={ds}" == body["notice"]["href"]
    assert body["notice"]["text"] == "Uploaded my counts.h5ad." and body["notice"]["color"]
    assert _uploads(tmp_path) == [f"{ds}.h5ad", f"{ds}.h5ad.json"]  # no temp file left
    stored = tmp_path / "cache" / "uploads" / f"{ds}.h5ad"
    assert stored.read_bytes() == payload
    assert json.loads(stored.with_name(f"{ds}.h5ad.json").read_text()) == {"name": "my counts.h5ad"}
    page = httpx.get(f"{base}/?ds={ds}", timeout=30)
    assert page.status_code == 200
    # the same bytes under another name (and a path in it) store nothing and name the first
    twin = _post(base, "../elsewhere/again.h5ad", payload)
    assert twin.status_code == 200 and twin.json()["id"] == ds and twin.json()["new"] is False
    assert twin.json()["notice"]["text"] == (
        "'again.h5ad' is identical to my counts.h5ad (not fitted yet): opened that instead."
    )
    assert _uploads(tmp_path) == [f"{ds}.h5ad", f"{ds}.h5ad.json"]


def _multipart_chunks(name: str, size: int, chunk: int = 256 * 1024) -> Iterator[bytes]:
    """A multipart body with one file part of `size` bytes, produced chunk by chunk (httpx
    sends a generator without Content-Length, chunked)."""
    yield (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode() + HDF5_MAGIC
    sent = len(HDF5_MAGIC)
    while sent < size:
        step = min(chunk, size - sent)
        yield bytes(step)
        sent += step
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_over_the_limit_is_413_and_leaves_nothing(serve, tmp_path, declared):
    """Past max_upload_mb the route answers 413 with the limit: at once when the declared
    length says so, else while the body streams (the file is cut off at the limit)."""
    base = serve(max_upload_mb=1)
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    body = _multipart_chunks("big.h5ad", int(1.2 * 2**20))
    if declared:
        response = httpx.post(f"{base}/upload", content=b"".join(body), headers=headers, timeout=30)
    else:
        response = httpx.post(f"{base}/upload", content=body, headers=headers, timeout=30)
    assert response.status_code == 413
    assert response.json()["error"] == (
        "The file is larger than the 1 MB upload limit; open it from the command line "
        "instead: `velodash run FILE`."
    )
    assert _uploads(tmp_path) == []
    # and a file three times the limit, declared up front
    big = _post(base, "bigger.h5ad", HDF5_MAGIC + bytes(3 * 2**20))
    assert big.status_code == 413 and "1 MB upload limit" in big.json()["error"]
    assert _uploads(tmp_path) == []


def test_invalid_files_are_refused_with_the_reason(serve, tmp_path):
    base = serve()
    no_layers = tmp_path / "nolayers.h5ad"
    with h5py.File(no_layers, "w") as fh:
        fh["X"] = [[1.0, 2.0]]
    cases = [
        ("table.csv", b"a,b\n1,2\n", "'table.csv' is not a supported file type"),
        ("notes.h5ad", b"just some text", "'notes.h5ad' is not an HDF5 file"),
        ("nolayers.h5ad", no_layers.read_bytes(), "holds no count matrix"),
        ("empty.loom", b"", "is not an HDF5 file"),
    ]
    for name, payload, reason in cases:
        response = _post(base, name, payload)
        assert response.status_code == 400 and reason in response.json()["error"], name
    not_form = httpx.post(f"{base}/upload", content=b"raw bytes", timeout=30)
    assert not_form.status_code == 400 and "multipart/form-data" in not_form.json()["error"]
    assert _uploads(tmp_path) == []


def test_counts_without_spliced_unspliced_are_kept_to_fit_with_a_reference(serve, tmp_path):
    """A 3' count matrix without S/U is not a dead end: it is stored and offered for a fit
    whose S/U are predicted from a reference dataset (issue 17)."""
    base = serve()
    plain = tmp_path / "plain.h5ad"
    rng = np.random.default_rng(0)
    ad.AnnData(rng.poisson(2.0, (60, 30)).astype(np.float32)).write_h5ad(plain)
    response = _post(base, "plain.h5ad", plain.read_bytes())
    assert response.status_code == 200, response.text
    ds = response.json()["id"]
    assert _uploads(tmp_path) == [f"{ds}.h5ad", f"{ds}.h5ad.json"]
    assert httpx.get(f"{base}/?ds={ds}", timeout=30).status_code == 200


def test_uploads_off_are_refused(serve, tmp_path, tiny_counts):
    base = serve(allow_upload=False)
    response = _post(base, "tiny.h5ad", tiny_counts.read_bytes())
    assert response.status_code == 403
    assert response.json()["error"].startswith("Uploads are disabled on this server")
    assert _uploads(tmp_path) == []


def test_viewers_and_strangers_are_refused_editors_upload(serve, tmp_path, tiny_counts):
    users = tmp_path / "users.json"
    add_user(users, "vera", "viewer", "viewer-password")
    add_user(users, "eddie", "editor", "editor-password")
    base = serve(auth="basic", users_file=users)
    payload = tiny_counts.read_bytes()
    assert _post(base, "tiny.h5ad", payload).status_code == 401
    viewer = _post(base, "tiny.h5ad", payload, auth=("vera", "viewer-password"))
    assert viewer.status_code == 403
    assert viewer.json()["error"] == (
        "Uploading needs the editor role; you are signed in as a viewer."
    )
    assert _uploads(tmp_path) == []
    editor = _post(base, "tiny.h5ad", payload, auth=("eddie", "editor-password"))
    assert editor.status_code == 200 and editor.json()["new"] is True


def test_a_cross_site_upload_is_refused(serve, tmp_path, tiny_counts):
    """A page on another site cannot make a visitor's browser upload (protection.py)."""
    base = serve()
    payload = tiny_counts.read_bytes()
    refused = _post(base, "x.h5ad", payload, headers={"Origin": "http://evil.example"})
    assert refused.status_code == 403 and "Cross-site request refused" in refused.text
    same_site = _post(base, "x.h5ad", payload, headers={"Origin": base})
    assert same_site.status_code == 200
    assert len(_uploads(tmp_path)) == 2


def test_an_upload_cut_off_midway_leaves_nothing(serve, tmp_path):
    base = serve()
    port = int(base.rsplit(":", 1)[1])
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="cut.h5ad"\r\n\r\n'
    ).encode() + HDF5_MAGIC
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(
            b"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n".encode()
            + f"Content-Length: {len(head) + 4 * 2**20}\r\n\r\n".encode()
            + head
            + bytes(2**20)
        )
        wait_until(lambda: any(".tmp" in n for n in _uploads(tmp_path)), 10, what="temp file")
    # the client is gone after a quarter of the file: the temp file goes too
    wait_until(lambda: _uploads(tmp_path) == [], 10, what="the temp file to be removed")


# -- the browser -------------------------------------------------------------------------------
from test_browser import CHROMIUM, dash_duo  # noqa: E402, F401  (the fixture)


@pytest.mark.browser
@pytest.mark.skipif(
    not Path(CHROMIUM).exists() or shutil.which("chromedriver") is None,
    reason="needs Chromium: apt-get install chromium chromium-driver",
)
def test_the_drop_zone_shows_progress_and_opens_the_upload(dash_duo, tmp_path, results_path):  # noqa: F811
    """Upload a real file through the drop zone's file input on a throttled connection: the
    progress bar shows percent and MB while it arrives, then the dataset opens with its notice."""
    config = AppConfig(
        cache_dir=tmp_path / "cache", sample_path=tmp_path / "no_sample.h5ad", data=(results_path,)
    )
    dash_duo.start_server(create_app(config))
    dash_duo.wait_for_contains_text("#summary-stats", "genes fitted", timeout=20)
    mine = write_fake_results(tmp_path / "lab run.h5ad", n_cells=2000, n_genes=60, seed=7)
    size_mb = mine.stat().st_size / 2**20
    assert size_mb > 1  # big enough to take a few seconds at 256 kB/s
    dash_duo.driver.execute_cdp_cmd("Network.enable", {})
    dash_duo.driver.execute_cdp_cmd(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 2**18},
    )
    dash_duo.driver.find_element("css selector", "#upload-file").send_keys(str(mine))
    dash_duo.wait_for_contains_text("#upload-progress-text", "lab run.h5ad: ", timeout=10)
    until(lambda: "% · " in dash_duo.find_element("#upload-progress-text").text, timeout=10)
    text = dash_duo.find_element("#upload-progress-text").text
    assert text.endswith(f" of {size_mb:.1f} MB"), text
    assert dash_duo.find_element("#upload-progress").is_displayed()
    dash_duo.driver.execute_cdp_cmd(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
    )
    dash_duo.wait_for_contains_text("#notice", "Uploaded lab run.h5ad.", timeout=30)
    dash_duo.wait_for_contains_text("#dataset-list", "lab run.h5ad", timeout=20)
    until(lambda: not dash_duo.find_element("#upload-progress").is_displayed(), timeout=10)
    (stored,) = (p for p in _uploads(tmp_path) if p.endswith(".h5ad"))
    assert dash_duo.driver.current_url.endswith(f"/?ds={stored[:12]}")
    assert dash_duo.get_logs() == []


def test_partial_uploads_left_by_a_stopped_server_are_swept_at_start(tmp_path):
    """A server killed mid-upload leaves its hidden temp file; the next start removes those
    untouched for hours and keeps one being written now."""
    import os
    import time

    from dashboard.data.uploads import STALE_UPLOAD_S, UPLOAD_TEMP
    from dashboard.web.app import create_app

    uploads = tmp_path / "cache" / "uploads"
    uploads.mkdir(parents=True)
    old = uploads / f"{UPLOAD_TEMP[0]}old{UPLOAD_TEMP[1]}"
    fresh = uploads / f"{UPLOAD_TEMP[0]}fresh{UPLOAD_TEMP[1]}"
    kept = uploads / "abc123.h5ad"  # a stored upload, however old, is never swept
    for path in (old, fresh, kept):
        path.write_bytes(b"x")
    past = time.time() - STALE_UPLOAD_S - 60
    os.utime(old, (past, past))
    os.utime(kept, (past, past))
    create_app(AppConfig(cache_dir=tmp_path / "cache", sample_path=tmp_path / "none.h5ad"))
    assert not old.exists() and fresh.exists() and kept.exists()
