"""Every setting of velodash, read one way for both modes: a TOML file of flat keys (hosted
only), each key also settable as ``VELODASH_<KEY>``, and command-line options on top.

`load_config(path)` reads the file, then the environment (which wins), then the CLI's
overrides, validates every key and returns the app's `AppConfig` plus the `ServeSettings`.
`velodash serve`, `velodash worker` and gunicorn's ``dashboard.web.app:server`` use it with
the hosted defaults; `velodash run` uses it with ``local=True``: the same keys and names, local
defaults (no sign-in, uploads on, the bundled sample), and the keys only a shared server reads
(`HOSTED_ONLY`) ignored with a warning. A bad value stops with one `ConfigError` line naming
the key, where it came from and what is wrong. Relative paths in the file are relative to the
file's folder. What ``velodash serve --check`` prints is `dashboard.hosting.check`.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from dashboard.config import (
    DEFAULT_CACHE_DIR,
    ROLES,
    SAMPLE_PATH,
    AppConfig,
    OIDCSettings,
    parse_bool,
)
from dashboard.hosting.users import UsersFileError, read_users

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

log = logging.getLogger(__name__)
ENV_PREFIX = "VELODASH_"
#: The old name of ``VELODASH_ALLOW_UPLOAD=false`` (``VELODASH_NO_UPLOAD=1``): still honoured
#: when the new one is not set, with a warning naming it.
ENV_NO_UPLOAD = "VELODASH_NO_UPLOAD"
MIN_SECRET_KEY_LENGTH = 32
OIDC_NAME = re.compile(r"^[\w\-. ]+$")


class ConfigError(ValueError):
    """One bad configuration key: `str()` is the single line to print."""

    def __init__(self, key: str | None, source: str, reason: str) -> None:
        where = f"config key '{key}' ({source})" if key else f"config file {source}"
        super().__init__(f"{where}: {reason}")
        self.key = key


@dataclass(frozen=True)
class ServeSettings:
    """How `velodash serve` runs gunicorn: address, processes and threads per process."""

    host: str = "127.0.0.1"
    port: int = 8050
    workers: int = 2
    threads: int = 4
    timeout: int = 120

    @property
    def url(self) -> str:
        """Where the server listens (as a URL)."""
        return f"http://{self.host}:{self.port}/"


@dataclass(frozen=True)
class HostedConfig:
    """A validated configuration (hosted, or local for `velodash run`) and its file if any."""

    app: AppConfig
    serve: ServeSettings
    path: Path | None
    secret_key_file: Path | None


# -- value parsers: each takes the raw value and returns the parsed one or raises ValueError ------
def _int_at_least(low: int, high: int | None = None) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        try:
            number = int(value) if isinstance(value, str) else value
        except ValueError:
            number = None
        if isinstance(number, bool) or not isinstance(number, int):
            raise ValueError(f"must be a whole number, got {value!r}")
        if number < low or (high is not None and number > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise ValueError(f"must be {bound}, got {number}")
        return number

    return parse


def _positive_number(value: Any) -> float:
    try:
        number = float(value) if isinstance(value, str | int | float) else None
    except ValueError:
        number = None
    if isinstance(value, bool) or number is None or not number > 0 or number == float("inf"):
        raise ValueError(f"must be a positive number of megabytes, got {value!r}")
    return number


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"must be a non-empty string, got {value!r}")
    return value.strip()


def _choice(*options: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}, got {value!r}")
        return value

    return parse


def _redis_url(value: Any) -> str:
    url = _text(value)
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"must be a redis://, rediss:// or unix:// URL, got {mask_url(url)!r}")
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as err:
        raise ValueError(f"has an invalid port: {mask_url(url)!r}") from err
    if parts.scheme != "unix" and not parts.hostname:
        raise ValueError(f"names no host: {mask_url(url)!r}")
    return url


def _metadata_url(value: Any) -> str:
    url = _text(value)
    parts = urlsplit(url)
    local = parts.hostname in ("localhost", "127.0.0.1", "::1")
    if parts.scheme != "https" and not (parts.scheme == "http" and local):
        raise ValueError(f"must be an https:// URL (http only on localhost), got {url!r}")
    return url


def _oidc_name(value: Any) -> str:
    name = _text(value)
    if not OIDC_NAME.match(name):
        raise ValueError("may only contain letters, digits, spaces and - _ .")
    return name


#: Every key: its parser. Paths are parsed separately (they depend on the file's folder).
PARSERS: dict[str, Callable[[Any], Any]] = {
    "datasets_dir": _text,
    "cache_dir": _text,
    "users_file": _text,
    "secret_key_file": _text,
    "secret_key": _text,
    "redis_url": _redis_url,
    "allow_upload": parse_bool,
    "max_upload_mb": _positive_number,
    "view_cache_mb": _positive_number,
    "job_concurrency": _int_at_least(1, 64),
    "https": parse_bool,
    "include_sample": parse_bool,
    "auth": _choice("basic", "oidc"),
    "oidc_name": _oidc_name,
    "oidc_client_id": _text,
    "oidc_client_secret": _text,
    "oidc_server_metadata_url": _metadata_url,
    "oidc_scope": _text,
    "oidc_default_role": _choice(*ROLES, "none"),
    "host": _text,
    "port": _int_at_least(1, 65535),
    "workers": _int_at_least(1, 64),
    "threads": _int_at_least(1, 256),
    "timeout": _int_at_least(10, 3600),
}
PATH_KEYS = ("datasets_dir", "cache_dir", "users_file", "secret_key_file")
#: Keys only a shared server reads: `velodash run` (one user, this machine, the local queue)
#: ignores them and says so.
HOSTED_ONLY = frozenset(
    {"auth", "users_file", "redis_url", "https", "workers", "threads", "timeout"}
    | {key for key in PARSERS if key.startswith("oidc_")}
)


def mask_url(url: str) -> str:
    """`url` with any password replaced by ``***`` (for messages and --check)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as err:
        raise ConfigError(None, str(path), "does not exist") from err
    except OSError as err:
        raise ConfigError(None, str(path), f"cannot be read: {err.strerror}") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(None, str(path), f"is not valid TOML: {err}") from err


def _raw_values(path: Path | None, environ: Mapping[str, str]) -> dict[str, tuple[Any, str, Path]]:
    """{key: (raw value, where it came from, folder relative paths start from)}."""
    values: dict[str, tuple[Any, str, Path]] = {}
    if path is not None:
        for key, value in _read_toml(path).items():
            if key not in PARSERS:
                if isinstance(value, dict):
                    reason = "tables are not used: write every key at the top level"
                else:
                    reason = f"unknown key; known keys: {', '.join(sorted(PARSERS))}"
                raise ConfigError(key, str(path), reason)
            values[key] = (value, str(path), path.parent)
    if environ.get(ENV_NO_UPLOAD) and not environ.get(ENV_PREFIX + "ALLOW_UPLOAD"):
        log.warning("%s is deprecated: set %sALLOW_UPLOAD=false instead", ENV_NO_UPLOAD, ENV_PREFIX)
        try:
            no_upload = parse_bool(environ[ENV_NO_UPLOAD])
        except ValueError as err:
            raise ConfigError("allow_upload", ENV_NO_UPLOAD, str(err)) from err
        values["allow_upload"] = (not no_upload, ENV_NO_UPLOAD, Path.cwd())
    for key in PARSERS:
        name = ENV_PREFIX + key.upper()
        if environ.get(name):
            values[key] = (environ[name], name, Path.cwd())
    return values


def _path(key: str, raw: Any, base: Path) -> Path:
    return (base / Path(os.path.expanduser(PARSERS[key](raw)))).resolve()


def _check_dir(key: str, path: Path, source: str, *, create: bool) -> Path:
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(key, source, f"cannot create {path}: {err.strerror}") from err
    if not path.is_dir():
        raise ConfigError(key, source, f"{path} is not an existing folder")
    mode = os.W_OK | os.X_OK if create else os.R_OK | os.X_OK
    if not os.access(path, mode):
        raise ConfigError(key, source, f"{path} is not {'writable' if create else 'readable'}")
    return path


def _secret_key(path: Path, source: str) -> str:
    key = "secret_key_file"
    try:
        secret = path.read_text().strip()
    except FileNotFoundError as err:
        raise ConfigError(
            key,
            source,
            f"{path} does not exist; create it with "
            f"`python3 -c 'import secrets; print(secrets.token_hex(32))' > {path}` "
            f"and `chmod 600 {path}`",
        ) from err
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(key, source, f"{path} cannot be read: {err}") from err
    if len(secret) < MIN_SECRET_KEY_LENGTH:
        raise ConfigError(
            key, source, f"{path} holds fewer than {MIN_SECRET_KEY_LENGTH} characters"
        )
    if path.stat().st_mode & 0o077:
        raise ConfigError(key, source, f"{path} is readable by other users; run `chmod 600 {path}`")
    return secret


def _check_users_file(path: Path, source: str, *, need_passwords: bool) -> None:
    try:
        users = read_users(path)
    except UsersFileError as err:
        raise ConfigError("users_file", source, str(err)) from err
    if need_passwords and not any(entry.get("password") for entry in users.values()):
        raise ConfigError(
            "users_file",
            source,
            f"{path} has no user with a password, so nobody can sign in; "
            f"add one with `velodash users add NAME --users-file {path} --role admin`",
        )


def _oidc(values: dict[str, Any], sources: dict[str, str]) -> OIDCSettings:
    for key in ("oidc_client_id", "oidc_client_secret", "oidc_server_metadata_url"):
        if key not in values:
            raise ConfigError(key, sources.get("auth", "auth"), "is required when auth = 'oidc'")
    default_role = values.get("oidc_default_role", OIDCSettings.default_role)
    return OIDCSettings(
        client_id=values["oidc_client_id"],
        client_secret=values["oidc_client_secret"],
        server_metadata_url=values["oidc_server_metadata_url"],
        name=values.get("oidc_name", "idp"),
        scope=values.get("oidc_scope", "openid email profile"),
        default_role=None if default_role == "none" else default_role,
    )


def load_config(
    path: Path | None,
    environ: Mapping[str, str] | None = None,
    *,
    local: bool = False,
    **overrides: Any,
) -> HostedConfig:
    """Validate the TOML file `path` (may be None), the environment and CLI `overrides`.

    `overrides` (host, port, workers, cache_dir, ...) win over both; None values are ignored.
    `local` reads them for `velodash run`: no sign-in, uploads on and the sample included by
    default, `HOSTED_ONLY` keys ignored (logged). Raises ConfigError for the first bad key.
    """
    environ = os.environ if environ is None else environ
    raw = _raw_values(path, environ)
    for key, value in overrides.items():
        if value is not None:
            value = str(value) if isinstance(value, Path) else value
            raw[key] = (value, f"--{key.replace('_', '-')}", Path.cwd())
    if local and (ignored := sorted(key for key in raw if key in HOSTED_ONLY)):
        log.warning(
            "velodash run ignores %s: only a shared server reads them "
            "(velodash serve --config FILE, docs/hosting.md)",
            ", ".join(raw[key][1] for key in ignored),
        )
        for key in ignored:
            del raw[key]
    sources = {key: source for key, (_, source, _) in raw.items()}
    values: dict[str, Any] = {}
    for key, (value, source, base) in raw.items():
        try:
            parsed = _path(key, value, base) if key in PATH_KEYS else PARSERS[key](value)
            values[key] = parsed
        except ValueError as err:
            raise ConfigError(key, source, str(err)) from err

    cache_dir = values.get("cache_dir", DEFAULT_CACHE_DIR)
    _check_dir("cache_dir", cache_dir, sources.get("cache_dir", "default"), create=True)
    datasets_dir = values.get("datasets_dir")
    if datasets_dir is not None:
        _check_dir("datasets_dir", datasets_dir, sources["datasets_dir"], create=False)
    auth = "none" if local else values.get("auth", "basic")
    oidc = _oidc(values, sources) if auth == "oidc" else None
    users_file = values.get("users_file")
    if auth == "basic" and users_file is None:
        raise ConfigError(
            "users_file",
            sources.get("auth", "default"),
            "is required for sign-in with passwords (auth = 'basic'); "
            "create one with `velodash users add NAME --users-file FILE --role admin`",
        )
    if users_file is not None:
        _check_users_file(users_file, sources["users_file"], need_passwords=auth == "basic")
    secret_key_file = values.get("secret_key_file")
    if not local and len(values.get("secret_key", "x" * MIN_SECRET_KEY_LENGTH)) < (
        MIN_SECRET_KEY_LENGTH
    ):
        raise ConfigError(
            "secret_key", sources["secret_key"], f"needs {MIN_SECRET_KEY_LENGTH}+ characters"
        )
    if secret_key_file and "secret_key" in values:
        raise ConfigError(
            "secret_key", sources["secret_key"], "set either secret_key or secret_key_file"
        )
    secret = _secret_key(secret_key_file, sources["secret_key_file"]) if secret_key_file else None
    app = AppConfig(
        data_dir=datasets_dir,
        cache_dir=cache_dir,
        sample_path=SAMPLE_PATH if values.get("include_sample", local) else None,
        allow_upload=values.get("allow_upload", local),
        max_upload_mb=values.get("max_upload_mb", 500.0),
        auto_fit_sample=local,
        redis_url=values.get("redis_url"),
        secret_key=secret or values.get("secret_key"),
        auth=auth,
        users_file=users_file,
        oidc=oidc,
        https=values.get("https", False),
        job_concurrency=values.get("job_concurrency", 1),
        view_cache_mb=values.get("view_cache_mb", AppConfig.view_cache_mb),
    )
    serve_keys = ("host", "port", "workers", "threads", "timeout")
    serve = ServeSettings(**{k: values[k] for k in serve_keys if k in values})
    return HostedConfig(app, serve, path, secret_key_file)
