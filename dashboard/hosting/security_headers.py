"""HSTS and a Content-Security-Policy for an instance served over HTTPS (``https = true``).

Flask-Talisman sets the headers. TLS ends at the reverse proxy, so Talisman never redirects to
https itself (``force_https`` off): gunicorn sees plain http from nginx, and the proxy
redirects. HSTS is sent on requests that arrived over HTTPS (``X-Forwarded-Proto: https`` from
the proxy, or ``wsgi.url_scheme``), as RFC 6797 requires; browsers ignore it over plain http.

The policy is the smallest that Dash's renderer and plotly accept (checked in headless Chromium
on every page by tests/test_security_headers.py): scripts only from this server plus the
SHA-256 hashes of Dash's inline scripts (`Dash.csp_hashes`: the renderer's start-up line and
clientside functions); no ``'unsafe-eval'`` (plotly.js 4 draws WebGL traces without it).
Styles allow ``'unsafe-inline'``: Dash's renderer and plotly write inline styles.
Without ``https`` (the local one-user `velodash run`, or an instance tried on plain http) no
CSP is sent: the policy comes with the hosted TLS set-up it is documented and tested with, and
the local mode (with Dash's ``--debug`` tools) stays as it was.
"""

from __future__ import annotations

from collections.abc import Iterator

from dash import Dash
from flask_talisman import Talisman

from dashboard.hosting.protection import SECURITY_HEADERS

#: One year, the usual HSTS lifetime.
HSTS_MAX_AGE_S = 365 * 24 * 3600
#: script-src before the hashes of Dash's inline scripts.
SCRIPT_SOURCES = ("'self'",)
CONTENT_SECURITY_POLICY = {
    "default-src": "'self'",
    "style-src": "'self' 'unsafe-inline'",
    "img-src": "'self' data: blob:",  # plotly's PNG/SVG export draws the figure as an image
    "object-src": "'none'",
    "base-uri": "'self'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
}


class _ScriptSources:
    """The script-src sources: `SCRIPT_SOURCES` and the hashes of the app's inline scripts,
    computed when a response is sent (callbacks registered after `install` are included).
    Talisman joins a non-string directive value with spaces, which iterates this."""

    def __init__(self, app: Dash) -> None:
        self.app = app

    def __iter__(self) -> Iterator[str]:
        return iter((*SCRIPT_SOURCES, *self.app.csp_hashes()))


def install(app: Dash, https: bool) -> Talisman | None:
    """With `https`, send HSTS, the CSP and Talisman's other headers on every response."""
    if not https:
        return None
    return Talisman(
        app.server,
        force_https=False,
        strict_transport_security=True,
        strict_transport_security_max_age=HSTS_MAX_AGE_S,
        content_security_policy={**CONTENT_SECURITY_POLICY, "script-src": _ScriptSources(app)},
        frame_options=SECURITY_HEADERS["X-Frame-Options"],
        referrer_policy=SECURITY_HEADERS["Referrer-Policy"],
        session_cookie_secure=True,
    )
