"""Hosted configuration, the users file and `velodash users`, and OpenID Connect set-up.

No servers needed (OIDC talks to a stub discovery document on loopback); these run in seconds.
"""

from __future__ import annotations

import io
import json
import stat
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from fake_results import write_fake_results
from servers import REDIS_SERVER, RedisServer

from dashboard.cli import main
from dashboard.config import OIDCSettings
from dashboard.hosting.check import describe
from dashboard.hosting.settings import ConfigError, load_config
from dashboard.hosting.users import UsersFile, UsersFileError, add_user, read_users, remove_user
from dashboard.web.app import create_app


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A valid hosted set-up: datasets folder, users file, secret key; returns the config."""
    (tmp_path / "data").mkdir()
    write_fake_results(tmp_path / "data" / "fit.h5ad", n_cells=40, n_genes=4)
    add_user(tmp_path / "users.json", "alice", "admin", "alice-password")
    secret = tmp_path / "secret"
    secret.write_text("s" * 64)
    secret.chmod(0o600)
    config = tmp_path / "velodash.toml"
    config.write_text(
        'datasets_dir = "data"\ncache_dir = "cache"\nusers_file = "users.json"\n'
        'secret_key_file = "secret"\nredis_url = "redis://:hunter2@127.0.0.1:6379/0"\n'
    )
    return config


def _with(config: Path, line: str) -> Path:
    config.write_text(config.read_text() + line + "\n")
    return config


# -- the TOML file and the environment ----------------------------------------------------------
def test_config_file_paths_env_and_cli_overrides(site, monkeypatch):
    monkeypatch.chdir(site.parent.parent)  # relative paths are relative to the file, not cwd
    hosted = load_config(site, environ={"VELODASH_MAX_UPLOAD_MB": "12"}, port=9000)
    app = hosted.app
    assert app.data_dir == site.parent / "data"
    assert app.cache_dir == site.parent / "cache" and app.cache_dir.is_dir()
    assert app.max_upload_mb == 12.0  # from the environment
    assert hosted.serve.port == 9000  # from the command line
    assert (app.auth, app.allow_upload, app.https) == ("basic", False, False)
    assert app.job_concurrency == 1
    assert app.secret_key == "s" * 64 and "s" * 64 not in repr(app)
    assert app.sample_path is None and not app.auto_fit_sample  # hosted: no bundled sample
    env_only = load_config(None, environ={
        "VELODASH_USERS_FILE": str(site.parent / "users.json"),
        "VELODASH_CACHE_DIR": str(site.parent / "c2"),
        "VELODASH_ALLOW_UPLOAD": "yes",
        "VELODASH_HTTPS": "1",
    })  # fmt: skip
    assert env_only.app.allow_upload and env_only.app.https and env_only.app.redis_url is None


def test_velodash_run_reads_the_same_settings_with_local_defaults(tmp_path, caplog):
    """One configuration path: `velodash run` (local=True) reads the same VELODASH_<KEY>
    names through the same parsers, with the one-user defaults, and ignores (logging
    which) the keys only a shared server reads."""
    environ = {
        "VELODASH_CACHE_DIR": str(tmp_path / "c"),
        "VELODASH_MAX_UPLOAD_MB": "12",
        "VELODASH_PORT": "8123",
        "VELODASH_REDIS_URL": "redis://example:6379/0",
        "VELODASH_AUTH": "basic",
    }
    with caplog.at_level("WARNING", logger="dashboard.hosting.settings"):
        local = load_config(None, environ, local=True, cache_dir=None, host="0.0.0.0")
    app = local.app
    assert app.cache_dir == tmp_path / "c"  # a None override never masks the environment
    assert (app.max_upload_mb, local.serve.port, local.serve.host) == (12.0, 8123, "0.0.0.0")
    assert (app.auth, app.redis_url, app.allow_upload, app.auto_fit_sample) == (
        "none",
        None,
        True,
        True,
    )
    assert app.sample_path is not None and app.sample_path.name == "velodash_sample.h5ad"
    assert "ignores VELODASH_AUTH, VELODASH_REDIS_URL" in caplog.text
    # The CLI's --no-upload and the environment's allow_upload are the same setting.
    assert not load_config(None, environ, local=True, allow_upload=False).app.allow_upload
    off = {**environ, "VELODASH_ALLOW_UPLOAD": "false"}
    assert not load_config(None, off, local=True).app.allow_upload
    # A bad value names the key and where it came from, in both modes alike.
    with pytest.raises(ConfigError, match=r"'max_upload_mb' \(VELODASH_MAX_UPLOAD_MB\): must be"):
        load_config(None, {**environ, "VELODASH_MAX_UPLOAD_MB": "lots"}, local=True)
    with pytest.raises(ConfigError, match=r"'allow_upload' \(VELODASH_ALLOW_UPLOAD\): must be"):
        load_config(None, {**environ, "VELODASH_ALLOW_UPLOAD": "perhaps"}, local=True)


def test_the_old_upload_variable_still_works_and_names_the_new_one(tmp_path, caplog):
    environ = {"VELODASH_CACHE_DIR": str(tmp_path), "VELODASH_NO_UPLOAD": "1"}
    with caplog.at_level("WARNING", logger="dashboard.hosting.settings"):
        assert load_config(None, environ, local=True).app.allow_upload is False
    assert "set VELODASH_ALLOW_UPLOAD=false instead" in caplog.text
    # the new name wins when both are set
    both = {**environ, "VELODASH_ALLOW_UPLOAD": "true"}
    assert load_config(None, both, local=True).app.allow_upload is True
    with pytest.raises(ConfigError, match=r"'allow_upload' \(VELODASH_NO_UPLOAD\): must be"):
        load_config(None, {**environ, "VELODASH_NO_UPLOAD": "maybe"}, local=True)


def test_a_secret_key_from_the_environment(tmp_path, site):
    environ = {"VELODASH_CACHE_DIR": str(tmp_path), "VELODASH_SECRET_KEY": "s3cret"}
    assert load_config(None, environ, local=True).app.secret_key == "s3cret"
    with pytest.raises(ConfigError, match=r"'secret_key' .*32"):  # hosted: a strong key only
        load_config(site, {"VELODASH_SECRET_KEY": "short"})
    with pytest.raises(ConfigError, match="either secret_key or secret_key_file"):
        load_config(site, {"VELODASH_SECRET_KEY": "k" * 40})


@pytest.mark.parametrize(
    ("line", "env", "message"),
    [
        ('max_upload_mb = "lots"', {}, "config key 'max_upload_mb' (SITE): must be a "),
        ("max_upload_mb = -1", {}, "must be a positive number"),
        ("job_concurrency = 0", {}, "config key 'job_concurrency' (SITE): must be betw"),
        ("", {"VELODASH_JOB_CONCURRENCY": "two"}, "(VELODASH_JOB_CONCURRENCY): must be a whole"),
        ("allow_upload = 'sometimes'", {}, "'allow_upload' (SITE): must be true or false"),
        ("port = 70000", {}, "'port' (SITE): must be between 1 and 65535"),
        ("", {"VELODASH_REDIS_URL": "http://x"}, "'redis_url' (VELODASH_REDIS_URL): must be a red"),
        ('auth = "ldap"', {}, "'auth' (SITE): must be one of basic, oidc"),
        ("colour = 'blue'", {}, "config key 'colour' (SITE): unknown key; known keys:"),
        ("[server]\nport = 1", {}, "'server' (SITE): tables are not used"),
        ("port = ", {}, "config file "),
        ('auth = "oidc"', {}, "'oidc_client_id' (SITE): is required when auth = 'oidc'"),
        ('datasets_dir = "missing"', {}, "'datasets_dir' (SITE): "),
    ],
)
def test_a_bad_key_stops_with_one_line_naming_it(site, capsys, line, env, message, monkeypatch):
    if line.startswith("datasets_dir"):
        site.write_text(site.read_text().replace('datasets_dir = "data"\n', ""))
    _with(site, line)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    message = message.replace("SITE", str(site))
    with pytest.raises(ConfigError) as error:
        load_config(site)
    assert message in str(error.value)
    assert main(["serve", "--config", str(site), "--check"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("velodash: error: ") and message in err


def test_secret_key_and_users_file_problems_say_how_to_fix_them(site):
    secret = site.parent / "secret"
    secret.chmod(0o644)
    with pytest.raises(ConfigError, match=r"readable by other users; run `chmod 600"):
        load_config(site)
    secret.write_text("short")
    secret.chmod(0o600)
    with pytest.raises(ConfigError, match="fewer than 32 characters"):
        load_config(site)
    secret.unlink()
    with pytest.raises(ConfigError, match=r"does not exist; create it with `python3 -c"):
        load_config(site)
    site.write_text(site.read_text().replace('secret_key_file = "secret"\n', ""))
    (site.parent / "users.json").unlink()
    with pytest.raises(ConfigError, match=r"'users_file'.*velodash users add NAME"):
        load_config(site)
    add_user(site.parent / "users.json", "oidc-only@uni.edu", "editor", None)
    with pytest.raises(ConfigError, match="no user with a password, so nobody can sign in"):
        load_config(site)


def test_check_prints_what_would_be_served_without_secrets(site, capsys):
    site.write_text(site.read_text().replace(":6379/", ":1/"))  # no Redis there
    _with(site, "https = true\nallow_upload = true")
    assert main(["serve", "--config", str(site), "--check", "--workers", "3"]) == 0
    out = capsys.readouterr().out
    assert "configuration OK" in out
    assert "3 workers × 4 threads" in out
    assert "(1 users: 0 viewer, 0 editor, 1 admin)" in out
    assert "(1 dataset file, read-only)" in out
    assert "Celery workers over redis://:***@127.0.0.1:1/0 (NOT reachable right now)" in out
    assert "uploads:     up to 500 MB" in out and "Secure (https = true)" in out
    assert "hunter2" not in out and "s" * 64 not in out and "scrypt" not in out
    # velodash serves plain http: https = true (as in the docs' example) gets a warning
    assert "warning: https = true marks the sign-in cookies Secure" in out
    assert "through an HTTPS proxy" in out
    print(describe(load_config(site)))  # describe() is the body of what --check prints


@pytest.mark.skipif(REDIS_SERVER is None, reason="needs redis-server (make test installs it)")
def test_check_fails_when_redis_refuses_the_password(site, tmp_path, capsys):
    """Issue 15: a wrong Redis password passed --check as "NOT reachable right now", exit 0."""
    redis = RedisServer(tmp_path / "redis", password="right-password").start()
    try:
        url = f"redis://:wrong-password@127.0.0.1:{redis.port}/0"
        site.write_text(site.read_text().replace("redis://:hunter2@127.0.0.1:6379/0", url))
        assert main(["serve", "--config", str(site), "--check"]) == 1
        out = capsys.readouterr().out
        assert "configuration has a problem" in out and "configuration OK" not in out
        assert f"Redis at redis://:***@127.0.0.1:{redis.port}/0 refused the password" in out
        assert "wrong-password" not in out and "warning:" not in out  # https is off here
        site.write_text(site.read_text().replace("wrong-password", "right-password"))
        assert main(["serve", "--config", str(site), "--check"]) == 0
        out = capsys.readouterr().out
        assert "configuration OK" in out and "(reachable)" in out and "error:" not in out
    finally:
        redis.kill()


# -- users ----------------------------------------------------------------------------------------
def test_users_command_stores_salted_slow_hashes(tmp_path, capsys, monkeypatch):
    users = tmp_path / "users.json"
    monkeypatch.setattr("sys.stdin", io.StringIO("correct horse\n"))
    assert main(["users", "add", "bob", "--role", "editor", "--users-file", str(users)]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("correct horse\n"))
    assert main(["users", "add", "carol", "--users-file", str(users)]) == 0
    assert "added user bob (editor)" in capsys.readouterr().out
    stored = json.loads(users.read_text())["users"]
    assert stored["bob"]["password"].startswith("scrypt:")
    assert "correct horse" not in users.read_text()
    assert stored["bob"]["password"] != stored["carol"]["password"]  # salted
    assert stat.S_IMODE(users.stat().st_mode) == 0o600
    assert main(["users", "list", "--users-file", str(users)]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == [
        "bob    editor  password set",
        "carol  viewer  password set",
    ]
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["users", "add", "dan", "--users-file", str(users)]) == 2
    assert "at least 8 characters" in capsys.readouterr().err
    assert main(["users", "add", "bad:name", "--no-password", "--users-file", str(users)]) == 2
    assert "invalid user name" in capsys.readouterr().err
    assert main(["users", "remove", "carol", "--users-file", str(users)]) == 0
    assert main(["users", "remove", "carol", "--users-file", str(users)]) == 2
    assert "no user 'carol'" in capsys.readouterr().err
    assert set(read_users(users)) == {"bob"}


def test_password_checks_and_role_changes_take_effect_without_restart(tmp_path):
    path = tmp_path / "users.json"
    add_user(path, "bob", "viewer", "first-password")
    users = UsersFile(path)
    assert users.verify("bob", "first-password").role == "viewer"
    assert users.verify("bob", "wrong-password") is None
    assert users.verify("nobody", "first-password") is None
    assert users.verify("bob", "first-password").role == "viewer"  # remembered: no rehash
    add_user(path, "bob", "editor", "second-password")  # new password and role
    assert users.verify("bob", "first-password") is None  # the remembered check is invalid
    assert users.verify("bob", "second-password").can("editor")
    remove_user(path, "bob")
    assert users.verify("bob", "second-password") is None
    with pytest.raises(UsersFileError, match="unknown role"):
        add_user(path, "eve", "root", "some-password")


# -- OpenID Connect -------------------------------------------------------------------------------
class _Discovery(BaseHTTPRequestHandler):
    """A stub identity provider: only its discovery document."""

    def do_GET(self):
        base = f"http://127.0.0.1:{self.server.server_port}"
        body = json.dumps(
            {
                "issuer": base,
                "authorization_endpoint": f"{base}/authorize",
                "token_endpoint": f"{base}/token",
                "jwks_uri": f"{base}/jwks",
                "response_types_supported": ["code"],
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def identity_provider():
    server = HTTPServer(("127.0.0.1", 0), _Discovery)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/.well-known/openid-configuration"
    server.shutdown()


def _oidc_config(site: Path, metadata_url: str, **extra: str) -> Path:
    """The site's config switched to OIDC sign-in (and the local queue: no Redis here)."""
    site.write_text("\n".join(x for x in site.read_text().splitlines() if "redis" not in x))
    lines = [
        "",
        'auth = "oidc"',
        'oidc_client_id = "velodash"',
        'oidc_client_secret = "client-secret"',
        f'oidc_server_metadata_url = "{metadata_url}"',
        'oidc_name = "uni"',
        "https = true",
        *(f'{k} = "{v}"' for k, v in extra.items()),
    ]
    return _with(site, "\n".join(lines))


def test_oidc_configuration_signs_in_through_the_provider(site, identity_provider):
    add_user(site.parent / "users.json", "ed@uni.edu", "editor", None)
    hosted = load_config(_oidc_config(site, identity_provider))
    assert hosted.app.oidc == OIDCSettings(
        "velodash", "client-secret", identity_provider, name="uni", default_role="viewer"
    )
    assert "client-secret" not in repr(hosted.app)
    client = create_app(hosted.app).server.test_client()
    assert client.get("/health").status_code == 200
    # Not signed in: pages, callbacks and the API all send the browser to the provider.
    for response in (
        client.get("/"),
        client.get("/api/jobs"),
        client.post("/_dash-update-component", json={"output": "x.y", "inputs": []}),
    ):
        assert response.status_code == 302
        target = urlsplit(response.headers["Location"])
        assert f"{target.scheme}://{target.netloc}{target.path}" == identity_provider.replace(
            "/.well-known/openid-configuration", "/authorize"
        )
        query = parse_qs(target.query)
        assert query["client_id"] == ["velodash"]
        assert query["redirect_uri"][0].startswith("https://localhost/oidc/uni/callback")
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" in cookie
    # Signed in (what the provider's callback stores): roles from the users file or default.
    with client.session_transaction() as session:
        session["user"] = {"email": "ed@uni.edu"}
    assert client.get("/api/jobs").status_code == 200
    assert client.get("/api/users").status_code == 403
    with client.session_transaction() as session:
        session["user"] = {"email": "someone@uni.edu"}
    response = client.post("/api/jobs", json={"dataset": "x"})
    assert response.status_code == 403 and "you are signed in as a viewer" in response.text


def test_oidc_default_role_none_refuses_strangers(site, identity_provider):
    hosted = load_config(_oidc_config(site, identity_provider, oidc_default_role="none"))
    client = create_app(hosted.app).server.test_client()
    with client.session_transaction() as session:
        session["user"] = {"email": "stranger@elsewhere.org"}
    response = client.get("/")
    assert response.status_code == 403
    assert "may not use this velodash server" in response.text
    with client.session_transaction() as session:
        session["user"] = {"email": "alice"}  # listed in the users file (admin)
    assert client.get("/api/users").status_code == 200
