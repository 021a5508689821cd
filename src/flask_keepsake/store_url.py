"""Build a store from ``KEEPSAKE_STORE``: one small registry of URL schemes."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from .errors import ConfigError

if TYPE_CHECKING:
    from flask import Flask

    from .stores.base import Store

_KEY = "KEEPSAKE_STORE"
DEFAULT_SQLITE_FILE = "keepsake.sqlite3"


def _memory(url: str, app: Flask) -> Store:
    from .stores.memory import MemoryStore

    return MemoryStore()


def _sqlite(url: str, app: Flask) -> Store:
    from .stores.sqlite import SQLiteStore

    parts = urlsplit(url)
    if parts.netloc:
        raise ConfigError(_KEY, f"{url!r}: write sqlite:///relative/path or sqlite:////abs/path.")
    # As in SQLAlchemy: three slashes and a relative path (under app.instance_path), or four
    # slashes and an absolute one.
    path = parts.path[1:]
    if not path:
        raise ConfigError(_KEY, f"{url!r} names no file; write sqlite:///keepsake.sqlite3.")
    if not os.path.isabs(path):
        path = os.path.join(app.instance_path, path)
    timeout = 5.0
    query = parse_qs(parts.query)
    for name in query:
        if name != "timeout":
            raise ConfigError(_KEY, f"unknown SQLite option {name!r}; the one option is timeout.")
    if "timeout" in query:
        try:
            timeout = float(query["timeout"][-1])
        except ValueError:
            raise ConfigError(_KEY, "timeout must be a number of seconds.") from None
    return SQLiteStore(path, timeout=timeout)


#: URL scheme -> factory. Backends add themselves here; there is no if/elif chain to extend.
SCHEMES: dict[str, Callable[[str, Flask], Store]] = {
    "memory": _memory,
    "sqlite": _sqlite,
}


def store_from_url(url: str | None, app: Flask) -> Store:
    """Return the store that ``url`` names; ``None`` means SQLite in ``app.instance_path``."""
    if url is None:
        from .stores.sqlite import SQLiteStore

        return SQLiteStore(os.path.join(app.instance_path, DEFAULT_SQLITE_FILE))
    scheme, sep, _ = url.partition("://")
    factory = SCHEMES.get(scheme.lower()) if sep else None
    if factory is None:
        known = ", ".join(f"{s}://" for s in SCHEMES)
        raise ConfigError(_KEY, f"unknown store URL {_hide_password(url)!r}; use one of {known}.")
    return factory(url, app)


def _hide_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(parts.password, "***", 1)
    return url
