"""The users file under concurrent `velodash users` commands, and what `users list` prints.

Pure file system and CLI: runs in about a second.
"""

from __future__ import annotations

import io
import json
import os
import threading

import pytest

from dashboard.cli import main
from dashboard.hosting.users import UsersFileError, add_user, read_users, remove_user


def test_add_and_remove_leave_nothing_beside_the_users_file(tmp_path, monkeypatch, capsys):
    users = tmp_path / "users.json"
    monkeypatch.setattr("sys.stdin", io.StringIO("correct horse\n"))
    assert main(["users", "add", "bob", "--role", "editor", "--users-file", str(users)]) == 0
    assert main(["users", "add", "ed@uni.edu", "--no-password", "--users-file", str(users)]) == 0
    assert main(["users", "remove", "bob", "--users-file", str(users)]) == 0
    assert os.listdir(tmp_path) == ["users.json"]  # no lock file, no temp file
    assert set(read_users(users)) == {"ed@uni.edu"}
    capsys.readouterr()


def test_concurrent_adds_and_removes_lose_no_change(tmp_path):
    """16 threads, each with its own open file, add 10 users and remove every other one.

    Each change replaces the file; a change made from a stale read would drop another's user.
    """
    path = tmp_path / "users.json"
    errors: list[BaseException] = []

    def edit(worker: int) -> None:
        try:
            for i in range(10):
                add_user(path, f"u{worker}-{i}", "viewer", None)
            for i in range(0, 10, 2):
                remove_user(path, f"u{worker}-{i}")
        except BaseException as err:  # reported by the test thread
            errors.append(err)

    threads = [threading.Thread(target=edit, args=(w,)) for w in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    expected = {f"u{w}-{i}" for w in range(16) for i in range(1, 10, 2)}
    assert set(read_users(path)) == expected
    assert os.listdir(tmp_path) == ["users.json"]


def test_removing_from_a_missing_file_says_how_to_create_it_and_creates_nothing(tmp_path):
    path = tmp_path / "users.json"
    with pytest.raises(UsersFileError, match=r"does not exist; create it with `velodash users add"):
        remove_user(path, "bob")
    assert os.listdir(tmp_path) == []


def test_an_empty_users_file_has_no_users(tmp_path):
    """What `users add` makes first when there is no file: a crash before the write leaves it."""
    path = tmp_path / "users.json"
    path.touch(mode=0o600)
    assert read_users(path) == {}
    assert add_user(path, "bob", "admin", None)
    assert json.loads(path.read_text())["users"]["bob"]["role"] == "admin"


def test_users_list_labels_its_columns(tmp_path, monkeypatch, capsys):
    path = tmp_path / "users.json"
    assert main(["users", "list", "--users-file", str(path)]) == 2
    assert "does not exist; create it with" in capsys.readouterr().err
    path.touch(mode=0o600)
    assert main(["users", "list", "--users-file", str(path)]) == 0
    assert capsys.readouterr().out == f"velodash: no users in {path}\n"
    add_user(path, "carol", "viewer", "a long password")
    add_user(path, "ed@uni.edu", "editor", None)
    add_user(path, "al", "admin", "another password")
    assert main(["users", "list", "--users-file", str(path)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "user        role    sign-in",
        "al          admin   password set",
        "carol       viewer  password set",
        "ed@uni.edu  editor  OIDC only (no password)",
    ]
