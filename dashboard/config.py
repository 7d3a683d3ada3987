"""Dashboard configuration: one frozen dataclass (`AppConfig`) every layer reads, the roles,
and the paths and names the settings use.

It is built in one place for every mode, `dashboard.hosting.settings.load_config`: from a TOML
file (hosted), ``VELODASH_<KEY>`` variables and command-line options.
"""

from __future__ import annotations

import importlib.resources
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

#: The `dashboard` package's folder: in a source checkout, or in site-packages from a wheel.
PACKAGE_DIR = Path(str(importlib.resources.files("dashboard")))
#: The source checkout velodash runs from (an editable install), None when it is installed.
CHECKOUT_ROOT = PACKAGE_DIR.parent if (PACKAGE_DIR.parent / "pyproject.toml").is_file() else None


def bundled_folder(name: str) -> Path:
    """A folder shipped with velodash (`assets`, `sample_data`): at the top of the source
    checkout, or inside the installed package (pyproject.toml's package-dir puts it there)."""
    packaged = PACKAGE_DIR / name
    if packaged.is_dir() or CHECKOUT_ROOT is None:
        return packaged
    return CHECKOUT_ROOT / name


def default_cache_dir() -> Path:
    """`.velodash` in the source checkout; installed, the user's cache folder
    (`$XDG_CACHE_HOME/velodash`, else `~/.cache/velodash`), never site-packages."""
    if CHECKOUT_ROOT is not None:
        return CHECKOUT_ROOT / ".velodash"
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache") / "velodash"


SAMPLE_PATH = bundled_folder("sample_data") / "velodash_sample.h5ad"
DEFAULT_CACHE_DIR = default_cache_dir()

ENV_REDIS_URL = "VELODASH_REDIS_URL"
#: A TOML config file; when set, `dashboard.web.app:server` (gunicorn) and
#: `dashboard.hosting.server:celery_app` (``celery -A``) use it.
ENV_CONFIG = "VELODASH_CONFIG"

Role = Literal["viewer", "editor", "admin"]
#: Roles in increasing order of rights: each role can do everything the previous ones can.
ROLES: tuple[Role, ...] = get_args(Role)


@dataclass(frozen=True)
class OIDCSettings:
    """One OpenID Connect identity provider (dash-auth `OIDCAuth`).

    `default_role` is given to signed-in users the users file does not list; None refuses them.
    """

    client_id: str
    client_secret: str = field(repr=False)
    server_metadata_url: str
    name: str = "idp"
    scope: str = "openid email profile"
    default_role: Role | None = "viewer"


@dataclass(frozen=True)
class AppConfig:
    """Everything the web app needs; immutable so every worker process agrees.

    `fit_overrides` are merged into every fit's parameters (e.g. `{"max_epochs": 10}` for tests);
    `redis_url` sends fits to Celery workers through Redis instead of the local queue.
    `auth` is "none" for the one-user local mode (everyone is admin), else "basic" (users file)
    or "oidc"; `https` marks session cookies Secure and sends HSTS and a Content-Security-Policy
    (`security_headers`); `job_concurrency` is how many fits run at once on the local queue (and
    the default of `velodash worker --concurrency`); `view_cache_mb` bounds the derived views
    shared by every process through ``cache_dir/views`` (`dashboard.data.view_cache`).
    """

    data: tuple[Path, ...] = ()
    data_dir: Path | None = None
    cache_dir: Path = DEFAULT_CACHE_DIR
    sample_path: Path | None = SAMPLE_PATH
    allow_upload: bool = True
    max_upload_mb: float = 500.0
    auto_fit_sample: bool = True
    redis_url: str | None = None
    secret_key: str | None = field(default=None, repr=False)
    fit_overrides: Mapping[str, Any] = field(default_factory=dict)
    debug: bool = False
    auth: Literal["none", "basic", "oidc"] = "none"
    users_file: Path | None = None
    oidc: OIDCSettings | None = None
    https: bool = False
    job_concurrency: int = 1
    view_cache_mb: float = 1024.0

    @property
    def max_upload_bytes(self) -> int:
        """Upload size limit in bytes."""
        return int(self.max_upload_mb * 1024 * 1024)


def parse_bool(value: Any) -> bool:
    """A boolean setting: a bool, or 1/true/yes/on and 0/false/no/off in any case (ValueError
    saying so otherwise; the caller names the setting)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"must be true or false, got {value!r}")


def resolve_secret_key(config: AppConfig) -> str:
    """The Flask secret key: the configured one, else one generated once per cache dir.

    The generated key is written to `cache_dir/secret_key` with exclusive creation, so several
    workers sharing a cache dir all read the same key (needed for the signed session cookies).
    """
    if config.secret_key:
        return config.secret_key
    path = config.cache_dir / "secret_key"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        tmp = path.with_name(f".secret_key.{os.getpid()}.{secrets.token_hex(4)}")
        tmp.write_text(secrets.token_hex(32))
        tmp.chmod(0o600)
        try:
            os.link(tmp, path)  # atomic: exactly one writer wins, readers never see a partial key
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip()
