"""The users file of a hosted instance: names, roles and salted slow password hashes.

A JSON file (mode 0600) managed by ``velodash users add|remove|list``::

    {"version": 1, "users": {"alice": {"role": "admin", "password": "scrypt:32768:8:1$…"}}}

Passwords are hashed with werkzeug's ``generate_password_hash`` (scrypt, random salt) and never
stored or logged in plain text. Web workers re-read the file when it changes, so adding or
removing a user needs no restart. Checking a password costs ~0.1 s and 32 MB on purpose; a
successful check is remembered in memory for a few minutes (keyed by an HMAC of the password
under a per-process random key) so that every request of a signed-in browser does not pay it
again, and at most two checks run at once per process, so failed sign-ins cannot exhaust memory.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from werkzeug.security import check_password_hash, generate_password_hash

from core.io import write_text_atomic
from dashboard.config import ROLES, Role

#: User names: letters, digits and . _ @ + - (no colon: HTTP Basic auth splits on it).
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$")
MIN_PASSWORD_LENGTH = 8
#: How long a successful password check is remembered (seconds) and how many are kept.
VERIFIED_TTL_S = 300.0
VERIFIED_MAX = 1024
FILE_VERSION = 1


class UsersFileError(ValueError):
    """A users file or a user change that cannot be used; the message says how to fix it."""


@dataclass(frozen=True)
class User:
    """A signed-in person and their role."""

    name: str
    role: Role

    def can(self, role: Role) -> bool:
        """Whether this user has `role` or a higher one."""
        return ROLES.index(self.role) >= ROLES.index(role)


def check_name(name: str) -> str:
    """`name` if it is a valid user name; UsersFileError otherwise."""
    if not NAME_PATTERN.match(name or ""):
        raise UsersFileError(
            f"invalid user name {name!r}: use 1-64 letters, digits and . _ @ + - "
            "(starting with a letter or digit)"
        )
    return name


def check_role(role: str) -> Role:
    """`role` if it is one of viewer, editor, admin; UsersFileError otherwise."""
    if role not in ROLES:
        raise UsersFileError(f"unknown role {role!r}: choose one of {', '.join(ROLES)}")
    return role  # type: ignore[return-value]


def _missing(path: Path) -> str:
    """The message for a users file that does not exist."""
    return f"{path} does not exist; create it with `velodash users add NAME --users-file {path}`"


def read_users(path: Path) -> dict[str, dict[str, str]]:
    """The users of a users file as ``{name: {"role": ..., "password": <hash or "">}}``.

    An empty file has no users. Raises UsersFileError when the file is missing, unreadable
    or malformed.
    """
    try:
        data = json.loads(path.read_text() or '{"users": {}}')
    except FileNotFoundError as err:
        raise UsersFileError(_missing(path)) from err
    except OSError as err:
        raise UsersFileError(f"{path} cannot be read: {err.strerror}") from err
    except json.JSONDecodeError as err:
        raise UsersFileError(f"{path} is not a velodash users file (invalid JSON: {err})") from err
    users = data.get("users") if isinstance(data, dict) else None
    if not isinstance(users, dict):
        raise UsersFileError(f"{path} is not a velodash users file (no 'users' table)")
    for name, entry in users.items():
        if not isinstance(entry, dict) or entry.get("role") not in ROLES:
            raise UsersFileError(f"{path}: user {name!r} has no valid role")
    return users


@contextlib.contextmanager
def _locked(path: Path, create: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on the users file itself for a read-modify-write.

    Writers replace the file atomically, so a lock won on a file that was replaced while
    waiting is dropped and taken again on the file the path names now; nothing is left beside
    the users file. `create` makes an empty file (read as no users) when there is none.
    """
    flags = os.O_RDWR | (os.O_CREAT if create else 0)
    while True:
        try:
            fd = os.open(path, flags, 0o600)
        except FileNotFoundError as err:
            raise UsersFileError(_missing(path)) from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if _same_file(os.fstat(fd), path):
                yield
                return
        finally:
            os.close(fd)


def _same_file(held: os.stat_result, path: Path) -> bool:
    """Whether `held` (an open file's stat) is the file `path` names now."""
    try:
        named = path.stat()
    except FileNotFoundError:
        return False
    return (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino)


def _write_users(path: Path, users: dict[str, dict[str, str]]) -> None:
    """Write the users file atomically with mode 0600."""
    text = json.dumps({"version": FILE_VERSION, "users": users}, indent=2, sort_keys=True)
    write_text_atomic(path, text + "\n", mode=0o600)


def add_user(path: Path, name: str, role: str, password: str | None) -> bool:
    """Add or update user `name` with `role`; returns True when the user is new.

    `password` None stores no password (a role for an OIDC sign-in name only).
    """
    check_name(name)
    check_role(role)
    if password is not None and len(password) < MIN_PASSWORD_LENGTH:
        raise UsersFileError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    entry = {"role": role, "password": generate_password_hash(password) if password else ""}
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path, create=True):
        users = read_users(path)
        new = name not in users
        users[name] = entry
        _write_users(path, users)
    return new


def remove_user(path: Path, name: str) -> None:
    """Remove user `name`; UsersFileError when there is no such user."""
    with _locked(path):
        users = read_users(path)
        if name not in users:
            raise UsersFileError(f"no user {name!r} in {path}")
        del users[name]
        _write_users(path, users)


def users_table(users: dict[str, dict[str, str]]) -> str:
    """`users` as aligned columns user, role, sign-in (a password set, or OIDC only); "" if none."""
    rows = [
        (
            name,
            entry["role"],
            "password set" if entry.get("password") else "OIDC only (no password)",
        )
        for name, entry in sorted(users.items())
    ]
    if not rows:
        return ""
    rows.insert(0, ("user", "role", "sign-in"))
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    return "\n".join(f"{n:<{widths[0]}}  {r:<{widths[1]}}  {s}" for n, r, s in rows)


class UsersFile:
    """Read access to a users file for the web app: roles and password checks.

    Re-reads the file when its size or modification time changes; a file that became
    unreadable keeps the last good copy (and is reported by ``velodash serve --check``).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._users: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()
        self._key = secrets.token_bytes(32)
        self._verified: OrderedDict[tuple[str, bytes], tuple[str, float]] = OrderedDict()
        self._hashing = threading.BoundedSemaphore(2)

    def users(self) -> dict[str, dict[str, str]]:
        """The current users (re-read when the file changed)."""
        try:
            stat = self.path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            return self._users
        with self._lock:
            if stamp != self._stamp:
                with contextlib.suppress(UsersFileError):
                    self._users = read_users(self.path)
                    self._stamp = stamp
            return self._users

    def role(self, name: str) -> Role | None:
        """The role of user `name`, or None when the file does not list them."""
        entry = self.users().get(name)
        return entry["role"] if entry else None  # type: ignore[return-value]

    def verify(self, name: str, password: str) -> User | None:
        """The user when `password` is theirs, else None (unknown name, wrong password)."""
        entry = self.users().get(name)
        if not entry or not entry.get("password"):
            return None
        stored = entry["password"]
        digest = hmac.new(self._key, password.encode("utf-8", "surrogatepass"), hashlib.sha256)
        cache_key = (name, digest.digest())
        now = time.monotonic()
        with self._lock:
            hit = self._verified.get(cache_key)
            if hit is not None and hit[0] == stored and hit[1] > now:
                return User(name, entry["role"])  # type: ignore[arg-type]
        with self._hashing:
            try:
                ok = check_password_hash(stored, password)
            except ValueError:  # a hash this werkzeug cannot read: treat as a wrong password
                ok = False
        if not ok:
            return None
        with self._lock:
            self._verified[cache_key] = (stored, now + VERIFIED_TTL_S)
            self._verified.move_to_end(cache_key)
            while len(self._verified) > VERIFIED_MAX:
                self._verified.popitem(last=False)
        return User(name, entry["role"])  # type: ignore[arg-type]
