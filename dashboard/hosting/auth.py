"""Sign-in and roles: dash-auth gates every route; roles are checked where actions happen.

`install_auth` puts dash-auth in front of the whole Flask server (pages, ``_dash-*`` callbacks,
assets, component suites, the JSON API): `BasicAuth` over the users file by default,
`OIDCAuth` for an institution's identity provider. No dash-auth public route or public callback
is declared (``/health`` is answered by a WSGI middleware before Flask, see
`dashboard.hosting.protection`), so a callback can never slip through by naming a public pathname.

Roles (`viewer` < `editor` < `admin`) are enforced by the callbacks and API handlers that act,
through `current_user()` and `require`; buttons are hidden only as a courtesy. Without sign-in
(`velodash run`, one local user) everyone is the local admin.
"""

from __future__ import annotations

from typing import Any

import flask
from dash import Dash
from dash_auth import BasicAuth

from dashboard.config import AppConfig, OIDCSettings, Role
from dashboard.hosting import security_headers
from dashboard.hosting.users import User, UsersFile

#: The user of an instance without sign-in (`velodash run`).
LOCAL_USER = User("local", "admin")
USERS_KEY = "velodash_users"
AUTH_KEY = "velodash_auth"


class Forbidden(PermissionError):
    """The signed-in user's role does not allow this action; the message says what is needed."""


def _sign_in_required() -> flask.Response:
    return flask.Response(
        "Sign-in required: this velodash server asks for a user name and password.\n",
        status=401,
        headers={"WWW-Authenticate": 'Basic realm="velodash", charset="UTF-8"'},
        mimetype="text/plain",
    )


class UsersFileBasicAuth(BasicAuth):
    """dash-auth's BasicAuth over a `UsersFile` (salted scrypt hashes, roles).

    The credentials are parsed by werkzeug rather than by dash-auth's own header parsing,
    which answers a malformed ``Authorization`` header with a server error instead of 401.
    """

    def __init__(self, app: Dash, users: UsersFile) -> None:
        self.users = users
        super().__init__(app, auth_func=lambda name, password: bool(users.verify(name, password)))

    def is_authorized(self) -> bool:
        """Whether the request carries the right password of a listed user."""
        credentials = flask.request.authorization
        if credentials is None or credentials.type != "basic" or not credentials.username:
            return False
        user = self.users.verify(credentials.username, credentials.password or "")
        if user is None:
            return False
        flask.g.velodash_user = user
        return True

    def login_request(self) -> flask.Response:
        """401 with a Basic challenge (browsers show their sign-in dialog)."""
        return _sign_in_required()


def _oidc_auth_class():
    """OIDCAuth with roles from the users file (imported lazily: it needs authlib)."""
    from dash_auth import OIDCAuth

    class RoleMappingOIDCAuth(OIDCAuth):
        """dash-auth's OIDCAuth; the role of a signed-in person comes from the users file
        (by e-mail or user name), else the configured default role, else they are refused."""

        def __init__(
            self, app: Dash, settings: OIDCSettings, users: UsersFile | None, https: bool
        ) -> None:
            # dash-auth 2.3's default secret_key is the object `Optional[None]`, which it then
            # installs as the Flask key: always pass the real one.
            super().__init__(
                app,
                secret_key=app.server.secret_key,
                force_https_callback=https,
                log_signins=True,
            )
            self.settings = settings
            self.users = users
            self.register_provider(
                settings.name,
                client_id=settings.client_id,
                client_secret=settings.client_secret,
                server_metadata_url=settings.server_metadata_url,
                client_kwargs={"scope": settings.scope},
            )

        def user_from_session(self) -> User | None:
            """The signed-in user with their role, or None (not signed in, or refused)."""
            info = flask.session.get("user")
            if not isinstance(info, dict):
                return None
            name = str(info.get("email") or info.get("preferred_username") or info.get("sub"))
            role = (self.users.role(name) if self.users else None) or self.settings.default_role
            return User(name, role) if role else None

        def is_authorized(self) -> bool:
            """Signed in with a role, or on the sign-in and sign-out routes themselves."""
            user = self.user_from_session()
            if user is not None:
                flask.g.velodash_user = user
                return True
            if flask.request.path == self.logout_route:
                return True
            return "user" not in flask.session and super().is_authorized()

        def login_request(self):
            """Send strangers to the identity provider; refuse signed-in people without a role."""
            if "user" in flask.session:
                return flask.Response(
                    "Your account may not use this velodash server; ask its administrator to "
                    "add you with `velodash users add`.\n",
                    status=403,
                    mimetype="text/plain",
                )
            return super().login_request()

    return RoleMappingOIDCAuth


def install_auth(app: Dash, config: AppConfig) -> Any:
    """Configure session cookies and security headers (`config.https`) and, unless
    `config.auth` is "none", require sign-in."""
    server = app.server
    server.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=config.https,
        SESSION_COOKIE_NAME="velodash_session",
    )
    security_headers.install(app, config.https)
    if config.auth == "none":
        return None
    users = UsersFile(config.users_file) if config.users_file else None
    server.extensions[USERS_KEY] = users
    if config.auth == "basic":
        gate = UsersFileBasicAuth(app, users)
    else:
        gate = _oidc_auth_class()(app, config.oidc, users, config.https)
    server.extensions[AUTH_KEY] = gate
    return gate


def sign_in_enabled() -> bool:
    """Whether the app serving this request requires sign-in."""
    return flask.current_app.extensions.get(AUTH_KEY) is not None


def current_user() -> User:
    """The user of the current request (the local admin when sign-in is off)."""
    user = flask.g.get("velodash_user")
    if user is not None:
        return user
    if not sign_in_enabled():
        return LOCAL_USER
    raise Forbidden("Sign-in required.")


def require(role: Role, action: str) -> User:
    """The current user if they have `role`; Forbidden naming the role needed otherwise."""
    user = current_user()
    if not user.can(role):
        article = "an" if user.role[0] in "aeiou" else "a"
        raise Forbidden(
            f"{action} needs the {role} role; you are signed in as {article} {user.role}."
        )
    return user


def can_cancel(user: User, owner: str) -> bool:
    """Admins cancel any job; editors only their own."""
    return user.can("admin") or (user.can("editor") and user.name == owner)


def users_list() -> list[dict[str, str]]:
    """Names and roles of the users file (for admins; never password hashes)."""
    users: UsersFile | None = flask.current_app.extensions.get(USERS_KEY)
    if users is None:
        return []
    return [{"name": n, "role": e["role"]} for n, e in sorted(users.users().items())]
