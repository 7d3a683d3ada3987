"""Uploads as they arrive: each file's bytes go straight to a hidden temp file in the uploads
folder (hashed, counted and checked against the size limit as they come), and partial uploads
a stopped server left behind are swept. `datasets.DatasetRegistry` keeps or drops them."""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path

#: The first bytes of every HDF5 file (.h5ad, .loom).
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


class UploadError(ValueError):
    """An upload the dashboard cannot use; the message says why and what to do."""


class UploadTooLarge(UploadError):
    """An upload past the configured size limit (HTTP 413)."""


def upload_limit_message(max_mb: float) -> str:
    """What an oversized upload is told: the limit and how to open bigger files."""
    return (
        f"The file is larger than the {max_mb:g} MB upload limit; open it from the command line "
        "instead: `velodash run FILE`."
    )


#: A partial upload older than this was left by a server that stopped mid-upload.
STALE_UPLOAD_S = 6 * 3600.0
#: The hidden temp files partial uploads are written to (`UploadSink`): prefix and suffix.
UPLOAD_TEMP = (".upload-", ".tmp")


def sweep_stale_uploads(folder: Path, now: float | None = None) -> list[Path]:
    """Remove the partial uploads in `folder` untouched for `STALE_UPLOAD_S` (a server that
    stopped in the middle of an upload leaves one; uploads in progress are written to
    continuously, so they are never this old); returns the removed paths."""
    now = time.time() if now is None else now
    removed = []
    pattern = f"{UPLOAD_TEMP[0]}*{UPLOAD_TEMP[1]}"
    for path in folder.glob(pattern) if folder.is_dir() else ():
        try:
            if now - path.stat().st_mtime > STALE_UPLOAD_S:
                path.unlink()
                removed.append(path)
        except FileNotFoundError:  # another process swept it
            continue
    return removed


class UploadSink:
    """One upload arriving: its bytes go straight to a hidden temp file beside the stored
    uploads (same file system, so keeping it is an atomic rename), hashed and counted as they
    come; never more than one write's chunk is in memory. The file-like `write`/`seek` are
    what a multipart parser's stream factory must return."""

    def __init__(self, folder: Path, filename: str, max_mb: float) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=UPLOAD_TEMP[0], suffix=UPLOAD_TEMP[1], dir=folder)
        self.path = Path(name)
        self.filename = filename
        self.max_mb = max_mb
        self.max_bytes = int(max_mb * 1024 * 1024)
        self.size = 0
        self.head = b""
        self._file = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()

    def write(self, data: bytes) -> int:
        """Append a chunk; UploadTooLarge as soon as the file passes the limit."""
        self.size += len(data)
        if self.size > self.max_bytes:
            raise UploadTooLarge(upload_limit_message(self.max_mb))
        if len(self.head) < len(HDF5_MAGIC):
            self.head = (self.head + data)[: len(HDF5_MAGIC)]
        self._hash.update(data)
        return self._file.write(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        """Move within the temp file (the parser rewinds a finished part)."""
        return self._file.seek(offset, whence)

    @property
    def digest(self) -> str:
        """sha256 hex of the bytes received so far."""
        return self._hash.hexdigest()

    def close(self) -> None:
        """Flush the temp file to disk and close it."""
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()

    def discard(self) -> None:
        """Close and remove the temp file (nothing when `store_upload` kept it)."""
        self._file.close()
        self.path.unlink(missing_ok=True)
