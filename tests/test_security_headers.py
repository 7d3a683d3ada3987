"""HSTS and the Content-Security-Policy of ``https = true`` (dashboard.hosting.security_headers).

The headers are checked with Flask's test client; the policy itself in a real headless Chromium
that opens every page over plain http on loopback (as behind a TLS proxy) and must log no CSP
violation while every figure renders.
"""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
from pathlib import Path

import httpx
import pytest
from dash.testing.wait import until
from test_browser import CHROMIUM, _figure_points
from test_browser import dash_duo as dash_duo  # the headless dash_duo fixture
from test_browser_explore import PAGE_GRAPHS

from dashboard.config import AppConfig
from dashboard.data.datasets import DatasetRegistry
from dashboard.hosting.users import add_user
from dashboard.web.app import create_app

HSTS = "Strict-Transport-Security"
CSP = "Content-Security-Policy"
#: page -> a graph that must have rendered (the jobs page has none)
PAGES = {"/jobs": None, **PAGE_GRAPHS}
needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists() or shutil.which("chromedriver") is None,
    reason="needs Chromium: apt-get install chromium chromium-driver",
)


#: conftest's results_path: contract-complete fake results (300 cells, 30 genes).
FAKE_RESULTS = dict(n_cells=300, n_genes=30)


def _config(tmp_path: Path, results: Path, **kwargs) -> AppConfig:
    return AppConfig(
        data=(results,), cache_dir=tmp_path / "cache", sample_path=tmp_path / "none.h5ad", **kwargs
    )


def _inline_script_hashes(html: str) -> set[str]:
    """CSP hash sources of the executable inline scripts of a page (the oracle)."""
    hashes = set()
    html = re.sub(r"<!--.*?-->", "", html, flags=re.S)  # Dash's <!--[if IE]> alert never runs
    for attributes, body in re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S):
        if "src=" in attributes or "application/json" in attributes:
            continue
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        hashes.add(f"'sha256-{digest}'")
    return hashes


def _directives(policy: str) -> dict[str, list[str]]:
    return {d.split()[0]: d.split()[1:] for d in policy.split(";") if d.strip()}


def test_https_sends_hsts_and_a_csp_that_hashes_the_inline_scripts(tmp_path, results_path):
    app = create_app(_config(tmp_path, results_path, https=True))
    secure = app.server.test_client().get("/", base_url="https://velodash.lab.example.org")
    assert secure.status_code == 200
    assert secure.headers[HSTS] == "max-age=31536000; includeSubDomains"
    policy = _directives(secure.headers[CSP])
    inline = _inline_script_hashes(secure.get_data(as_text=True))
    assert len(inline) >= 2  # Dash's renderer and the clientside functions written inline
    assert set(policy["script-src"]) == {"'self'", *inline}  # no 'unsafe-inline'/'unsafe-eval'
    assert policy["default-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert secure.headers["X-Frame-Options"] == "DENY"
    assert secure.headers["X-Content-Type-Options"] == "nosniff"
    assert secure.headers["Referrer-Policy"] == "same-origin"

    # Behind the TLS proxy gunicorn sees http; the proxy says the browser used https.
    client = app.server.test_client()
    proxied = client.get("/", headers={"X-Forwarded-Proto": "https"})
    assert proxied.status_code == 200  # never redirected by the app: the proxy does that
    assert HSTS in proxied.headers
    plain = client.get("/")
    assert plain.status_code == 200
    assert HSTS not in plain.headers  # RFC 6797: never over plain http
    assert CSP in plain.headers


def test_sign_in_refusals_carry_the_headers_too(tmp_path, results_path):
    users = tmp_path / "users.json"
    add_user(users, "alice", "admin", "alice-password")
    config = _config(tmp_path, results_path, https=True, auth="basic", users_file=users)
    client = create_app(config).server.test_client()
    refused = client.get("/", base_url="https://localhost")
    assert refused.status_code == 401
    assert HSTS in refused.headers and CSP in refused.headers


def test_without_https_neither_hsts_nor_csp(tmp_path, results_path):
    """Local `velodash run` and plain-http instances: no CSP (Dash's --debug tools need inline
    scripts), no HSTS; the defensive headers of dashboard.hosting.protection stay."""
    client = create_app(_config(tmp_path, results_path)).server.test_client()
    response = client.get("/", base_url="https://localhost")
    assert response.status_code == 200
    assert HSTS not in response.headers and CSP not in response.headers
    assert response.headers["X-Frame-Options"] == "DENY"


@pytest.mark.browser
@needs_chromium
def test_every_page_renders_under_the_csp_without_violations(dash_duo, tmp_path, results_path):
    config = _config(tmp_path, results_path, https=True)
    dash_duo.start_server(create_app(config))
    ds = DatasetRegistry(config).default_id()
    assert CSP in httpx.get(dash_duo.server_url).headers
    logs = []
    for path, graph_id in PAGES.items():
        dash_duo.driver.get(f"{dash_duo.server_url}{path}?ds={ds}")
        if graph_id:
            until(lambda g=graph_id: _figure_points(dash_duo, g) > 0, timeout=30)
        else:
            dash_duo.wait_for_element("#jobs-table", timeout=20)
        logs += [entry["message"] for entry in dash_duo.get_logs()]
    exported = dash_duo.driver.execute_async_script(
        "const done = arguments[0];"
        "Plotly.toImage(document.querySelector('#heatmap-graph .js-plotly-plot'),"
        " {format: 'png', width: 300, height: 200}).then(done, (e) => done(String(e)));"
    )
    assert exported.startswith("data:image/png;base64,")  # the modebar's PNG download
    logs += [entry["message"] for entry in dash_duo.get_logs()]
    assert logs == []

    # The policy is enforced and its violations reach the log this test reads.
    dash_duo.driver.execute_script(
        "const s = document.createElement('script'); s.textContent = 'window.injected = 1';"
        "document.head.appendChild(s);"
    )
    assert dash_duo.driver.execute_script("return window.injected === undefined")
    until(lambda: any("Content Security Policy" in e["message"] for e in dash_duo.get_logs()), 5)
