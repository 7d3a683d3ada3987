"""``velodash serve --check``: what a validated configuration would serve and how (no
secrets), whether its Redis answers, and the warnings and errors that would stop it working."""

from __future__ import annotations

from core.io import SUPPORTED_SUFFIXES
from dashboard.config import ROLES
from dashboard.hosting.settings import HostedConfig, mask_url
from dashboard.hosting.users import read_users


def redis_reach(url: str) -> str:
    """Whether the job queue's Redis answers at ``url``: "reachable", "refused the password"
    (or the user name; wrong credentials are a configuration error) or "NOT reachable right
    now" (it may be started later)."""
    import redis

    from dashboard.jobs.redis_store import RedisJobStore
    from dashboard.jobs.store import QueueUnavailable

    try:
        RedisJobStore(url).ping()
    except QueueUnavailable as err:
        if isinstance(err.__cause__, redis.exceptions.AuthenticationError):
            return "refused the password"
        return "NOT reachable right now"
    return "reachable"


def check(config: HostedConfig) -> tuple[str, int]:
    """What ``velodash serve --check`` prints (what would be served and how, no secrets,
    then any warning or error) and its exit status: 1 when something would stop the
    server from working (Redis refusing its credentials), else 0."""
    app = config.app
    reach = redis_reach(app.redis_url) if app.redis_url else None
    errors, warnings = [], []
    if reach == "refused the password":
        errors.append(
            f"Redis at {mask_url(app.redis_url)} refused the password: fix the password in "
            "redis_url (VELODASH_REDIS_URL) to match Redis's requirepass."
        )
    if app.https:
        warnings.append(
            "https = true marks the sign-in cookies Secure, so browsers send them only over "
            "HTTPS (and sends HSTS and a Content-Security-Policy), but velodash itself serves "
            f"plain http ({config.serve.url}): reach it only "
            "through an HTTPS proxy (docs/hosting.md), or set https = false; over plain http "
            "nobody stays signed in."
        )
    header = "configuration OK" if not errors else "configuration has a problem"
    text = describe(config, reach).replace("configuration OK", header, 1)
    text += "".join(f"\nwarning: {w}" for w in warnings)
    text += "".join(f"\nerror: {e}" for e in errors)
    return text, 1 if errors else 0


def describe(config: HostedConfig, reach: str | None = None) -> str:
    """What would be served, and how (no secrets); ``reach`` is :func:`redis_reach`'s answer
    (asked here when not given)."""
    app, serve = config.app, config.serve
    lines = [f"velodash: configuration OK ({config.path or 'environment only'})"]
    lines.append(
        f"  listen:      {serve.url} — gunicorn, {serve.workers} workers × {serve.threads} threads"
    )
    if app.auth == "basic":
        users = read_users(app.users_file)
        roles = ", ".join(f"{sum(e['role'] == r for e in users.values())} {r}" for r in ROLES)
        lines.append(
            f"  sign-in:     passwords from {app.users_file} ({len(users)} users: {roles})"
        )
    else:
        default = app.oidc.default_role or "refused"
        lines.append(
            f"  sign-in:     OpenID Connect '{app.oidc.name}' ({app.oidc.server_metadata_url}); "
            f"users not in the users file: {default}"
        )
    if app.data_dir is not None:
        files = [p for p in app.data_dir.iterdir() if p.suffix.lower() in SUPPORTED_SUFFIXES]
        count = f"{len(files)} dataset file{'' if len(files) == 1 else 's'}"
        lines.append(f"  datasets:    {app.data_dir} ({count}, read-only)")
    else:
        lines.append("  datasets:    none configured (datasets_dir)")
    lines.append(f"  cache:       {app.cache_dir} (results, uploads, job state)")
    if app.redis_url:
        reach = reach or redis_reach(app.redis_url)
        lines.append(f"  job queue:   Celery workers over {mask_url(app.redis_url)} ({reach})")
    else:
        lines.append(f"  job queue:   local (this machine, {app.job_concurrency} fit(s) at a time)")
    lines.append(
        f"  uploads:     up to {app.max_upload_mb:g} MB, into the cache (editors)"
        if app.allow_upload
        else "  uploads:     off"
    )
    if config.secret_key_file:
        secret = f"  secret key:  {config.secret_key_file}"
    elif app.secret_key:
        secret = "  secret key:  from the secret_key setting (VELODASH_SECRET_KEY)"
    else:
        secret = f"  secret key:  generated once in {app.cache_dir / 'secret_key'}"
    lines.append(secret)

    secure = "Secure (https = true)" if app.https else "not Secure (https = false)"
    lines.append(f"  cookies:     HttpOnly, SameSite=Lax, {secure}")
    return "\n".join(lines)
