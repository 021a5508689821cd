"""Accounts: users in a small SQLite database, passwords as Werkzeug hashes.

The demo keeps its accounts apart from the sessions (which live in Keepsake's store), the way a
real application keeps users in its own database. One connection per request, closed at the end
of the request.
"""

from __future__ import annotations

import functools
import re
import sqlite3
import time
from dataclasses import dataclass
from typing import Final

from flask import Flask, current_app, g
from flask_login import UserMixin
from werkzeug.security import check_password_hash, generate_password_hash

#: The account every fresh demo has, shown on the login page.
DEMO_USERNAME: Final = "demo"
DEMO_PASSWORD: Final = "demo-password"  # noqa: S105 - public on purpose: a demo account

#: Usernames: 3 to 32 letters, digits, dots, dashes and underscores.
USERNAME_RE: Final = re.compile(r"[A-Za-z0-9_.-]{3,32}")
PASSWORD_MIN_LENGTH: Final = 8

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY,
    username TEXT NOT NULL UNIQUE COLLATE NOCASE,
    password_hash TEXT NOT NULL,
    created REAL NOT NULL,
    password_changed REAL NOT NULL
)
"""


def _method() -> str:
    method: str = current_app.config["DEMO_PASSWORD_METHOD"]
    return method


def _hash(password: str) -> str:
    return generate_password_hash(password, method=_method())


@functools.cache
def _demo_hash(method: str) -> str:
    # Once per process: the seeded password never changes, and hashing is slow on purpose.
    return generate_password_hash(DEMO_PASSWORD, method=method)


@functools.cache
def _dummy_hash(method: str) -> str:
    # Checked when a username is unknown, so that a wrong username costs as much time as a
    # wrong password and the login form does not reveal which usernames exist.
    return generate_password_hash("not-a-real-password", method=method)


@dataclass(frozen=True)
class User(UserMixin):  # type: ignore[misc]
    """A demo account, as Flask-Login's ``current_user``."""

    id: int
    username: str
    created: float
    password_changed: float

    def get_id(self) -> str:
        """The id Flask-Login and Keepsake bind the session to."""
        return str(self.id)


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=5.0)
    conn.row_factory = sqlite3.Row
    return conn


def init_db(app: Flask) -> None:
    """Create the accounts table if needed and seed the demo account."""
    path = app.config["DEMO_DATABASE"]
    conn = _connect(path)
    try:
        # WAL: the workers of one gunicorn read while another writes.
        conn.execute("PRAGMA journal_mode=WAL")
        with conn:
            conn.execute(_SCHEMA)
        if _find(conn, DEMO_USERNAME) is None:
            now = time.time()
            with conn:
                # OR IGNORE: another worker starting at the same moment may have seeded it.
                conn.execute(
                    "INSERT OR IGNORE INTO users (username, password_hash, created, "
                    "password_changed) VALUES (?, ?, ?, ?)",
                    (DEMO_USERNAME, _demo_hash(app.config["DEMO_PASSWORD_METHOD"]), now, now),
                )
    finally:
        conn.close()
    app.teardown_appcontext(_close_db)


def db() -> sqlite3.Connection:
    """The accounts database connection of the current request."""
    conn: sqlite3.Connection | None = g.get("_demo_db")
    if conn is None:
        conn = g._demo_db = _connect(current_app.config["DEMO_DATABASE"])
    return conn


def _close_db(exc: BaseException | None) -> None:
    conn: sqlite3.Connection | None = g.pop("_demo_db", None)
    if conn is not None:
        conn.close()


def _row_to_user(row: sqlite3.Row | None) -> User | None:
    if row is None:
        return None
    return User(
        id=row["id"],
        username=row["username"],
        created=row["created"],
        password_changed=row["password_changed"],
    )


def _find(conn: sqlite3.Connection, username: str) -> sqlite3.Row | None:
    row: sqlite3.Row | None = conn.execute(
        "SELECT * FROM users WHERE username = ?", (username,)
    ).fetchone()
    return row


def get_user(user_id: str | int) -> User | None:
    """The user with id ``user_id``, or ``None`` (Flask-Login's user loader)."""
    try:
        uid = int(user_id)
    except (TypeError, ValueError):
        return None
    row = db().execute("SELECT * FROM users WHERE id = ?", (uid,)).fetchone()
    return _row_to_user(row)


def authenticate(username: str, password: str) -> User | None:
    """The user if ``password`` is theirs, else ``None``; as slow for unknown usernames."""
    row = _find(db(), username)
    if row is None:
        check_password_hash(_dummy_hash(_method()), password)
        return None
    if not check_password_hash(row["password_hash"], password):
        return None
    return _row_to_user(row)


def username_taken(username: str) -> bool:
    """Whether an account with this username exists (case-insensitively)."""
    return _find(db(), username) is not None


def create_user(username: str, password: str) -> User | None:
    """Create an account; ``None`` if the username was taken meanwhile."""
    conn = db()
    now = time.time()
    try:
        with conn:
            cur = conn.execute(
                "INSERT INTO users (username, password_hash, created, password_changed) "
                "VALUES (?, ?, ?, ?)",
                (username, _hash(password), now, now),
            )
    except sqlite3.IntegrityError:
        return None
    assert cur.lastrowid is not None
    return User(id=cur.lastrowid, username=username, created=now, password_changed=now)


def check_password(user: User, password: str) -> bool:
    """Whether ``password`` is the current password of ``user``."""
    row = db().execute("SELECT password_hash FROM users WHERE id = ?", (user.id,)).fetchone()
    return row is not None and check_password_hash(row["password_hash"], password)


def set_password(user: User, password: str) -> None:
    """Replace the password of ``user``."""
    conn = db()
    with conn:
        conn.execute(
            "UPDATE users SET password_hash = ?, password_changed = ? WHERE id = ?",
            (_hash(password), time.time(), user.id),
        )
