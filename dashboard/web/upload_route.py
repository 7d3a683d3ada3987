"""``POST /upload``: a dataset file streamed to disk as plain multipart form data.

The home page's drop zone sends the file with XMLHttpRequest (assets/upload.js, which shows
its progress). The body is parsed here by werkzeug's multipart parser with a stream factory
that writes the one file part straight into the uploads folder (`UploadSink`: counted,
hashed, refused past ``max_upload_mb`` while it arrives), so neither the request nor the file
is ever whole in memory. Editors only (`auth.require`); the app's cross-site refusal
(`dashboard.hosting.protection`) applies as to every POST. Every answer is JSON: 200 with the
dataset and the notice to show, else an HTTP error with ``{"error": what to do}``. Whatever
goes wrong (refused, too large, invalid, cancelled or cut off), the temp file is removed.
"""

from __future__ import annotations

from pathlib import Path

import flask
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge
from werkzeug.formparser import FormDataParser

from dashboard.data.datasets import UPLOADS_DISABLED, Dataset, DatasetRegistry
from dashboard.data.uploads import UploadError, UploadSink, UploadTooLarge, upload_limit_message
from dashboard.hosting import auth
from dashboard.web import context
from dashboard.web import widgets as ui

UPLOAD_PATH = "/upload"
#: The form field that carries the file.
FILE_FIELD = "file"
#: Room for the multipart boundaries and part headers around the file.
MULTIPART_ROOM = 64 * 1024
#: The parser buffers at most this much (it reads 64 KiB at a time); text fields, none of
#: which is expected, must fit in it too.
MAX_FIELD_BYTES = 512 * 1024
MAX_PARTS = 4
#: Chunk read while draining the rest of a refused body.
DRAIN_CHUNK = 1024 * 1024

upload_routes = flask.Blueprint("velodash_upload", __name__)


def _answer(status: int, **body) -> flask.Response:
    response = flask.jsonify(body)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


def _drain() -> None:
    """Read and drop what is left of the request body (at most its declared, limited
    length), so the client, still sending, gets the answer rather than a reset connection."""
    try:
        while flask.request.stream.read(DRAIN_CHUNK):
            pass
    except (ClientDisconnected, RequestEntityTooLarge, OSError):
        pass


def notice_for(registry: DatasetRegistry, dataset: Dataset, new: bool, filename: str) -> dict:
    """The shell notice (``ui.NOTICE``) for a stored upload, or for one identical to `dataset`."""
    href = ui.page_href("/", dataset.id)
    if new:
        return {"href": href, "text": f"Uploaded {dataset.label}.", "color": "success"}
    fitted = "already fitted" if registry.results_for(dataset) is not None else "not fitted yet"
    text = (
        f"'{Path(filename).name}' is identical to {dataset.label} ({fitted}): opened that instead."
    )
    return {"href": href, "text": text, "color": "info"}


def _receive(registry: DatasetRegistry, sinks: list[UploadSink]) -> tuple[Dataset, bool]:
    """Parse the multipart body into `sinks` (one per file part) and store the file."""

    def sink_for(filename: str | None = None, **_part) -> UploadSink:
        sink = registry.open_upload(filename or "")
        sinks.append(sink)
        return sink

    request = flask.request
    if request.mimetype != "multipart/form-data":
        raise UploadError(f"Send the file as multipart/form-data in the '{FILE_FIELD}' field.")
    # Flask ≥ 3.1: this request's own limit, enforced on the declared length and while reading.
    request.max_content_length = registry.config.max_upload_bytes + MULTIPART_ROOM
    parser = FormDataParser(
        stream_factory=sink_for,
        max_form_memory_size=MAX_FIELD_BYTES,
        max_form_parts=MAX_PARTS,
        silent=False,
    )
    try:
        _, _, files = parser.parse(
            request.stream, request.mimetype, request.content_length, request.mimetype_params
        )
    except (ClientDisconnected, ValueError) as err:
        if isinstance(err, UploadError):
            raise
        raise UploadError("The upload was cut off or malformed; nothing was stored.") from err
    if FILE_FIELD not in files or len(sinks) != 1:
        raise UploadError(
            f"The upload arrived incomplete; send exactly one file in the '{FILE_FIELD}' field."
        )
    return registry.store_upload(sinks[0])


@upload_routes.post(UPLOAD_PATH)
def receive_upload() -> flask.Response:
    """Store the uploaded dataset file: 200 ``{id, label, new, href, notice}``; 403 for a
    viewer or with uploads off, 413 past the limit, 400 for an invalid or broken upload."""
    registry = context.current_registry()
    try:
        auth.require("editor", "Uploading")
    except auth.Forbidden as err:
        _drain()
        return _answer(403, error=str(err))
    if not registry.config.allow_upload:
        _drain()
        return _answer(403, error=UPLOADS_DISABLED)
    sinks: list[UploadSink] = []
    try:
        dataset, new = _receive(registry, sinks)
    except (UploadTooLarge, RequestEntityTooLarge):
        _drain()
        return _answer(413, error=upload_limit_message(registry.config.max_upload_mb))
    except UploadError as err:
        _drain()
        return _answer(400, error=str(err))
    finally:
        for sink in sinks:
            sink.discard()
    filename = sinks[0].filename
    return _answer(
        200,
        id=dataset.id,
        label=dataset.label,
        new=new,
        href=ui.page_href("/", dataset.id),
        notice=notice_for(registry, dataset, new, filename),
    )
