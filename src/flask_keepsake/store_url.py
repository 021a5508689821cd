"""Build a store from ``KEEPSAKE_STORE``: one small registry of URL schemes."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlencode, urlsplit

from .errors import ConfigError

if TYPE_CHECKING:
    from flask import Flask

    from .stores.base import Store
    from .stores.postgres import PostgresStore

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
    sizes: dict[str, int] = {}
    query = parse_qs(parts.query)
    for name in query:
        if name not in ("timeout", "cache_mib", "mmap_mib"):
            raise ConfigError(
                _KEY,
                f"unknown SQLite option {name!r}; the options are timeout, cache_mib and mmap_mib.",
            )
    if "timeout" in query:
        try:
            timeout = float(query["timeout"][-1])
        except ValueError:
            raise ConfigError(_KEY, "timeout must be a number of seconds.") from None
    for name in ("cache_mib", "mmap_mib"):
        if name in query:
            try:
                sizes[name] = int(query[name][-1])
            except ValueError:
                raise ConfigError(_KEY, f"{name} must be a whole number of MiB.") from None
    try:
        return SQLiteStore(path, timeout=timeout, **sizes)
    except ValueError as exc:
        raise ConfigError(_KEY, str(exc)) from None


# URL query options of redis:// and rediss://, each with the function that reads its text.
_REDIS_OPTIONS: dict[str, Callable[[str], object]] = {
    "socket_timeout": float,
    "socket_connect_timeout": float,
    "prefix": str,
    "cluster": lambda text: _flag("cluster", text),
    "max_connections": int,
    "health_check_interval": float,
    "client_name": str,
    "ssl_cert_reqs": str,
    "ssl_ca_certs": str,
    "ssl_certfile": str,
    "ssl_keyfile": str,
    "ssl_check_hostname": lambda text: _flag("ssl_check_hostname", text),
    "local_cache": int,
    "local_cache_ttl": float,
}


def _flag(name: str, text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be true or false")


def _redis(url: str, app: Flask) -> Store:
    try:
        from .stores.redis import EXTRA, RedisStore, import_redis

        import_redis()
    except ModuleNotFoundError:
        raise ConfigError(
            _KEY, f"{url.partition(':')[0]}:// needs redis-py: pip install '{EXTRA}'."
        ) from None
    parts = urlsplit(url)
    options: dict[str, object] = {}
    for name, values in parse_qs(parts.query, keep_blank_values=True).items():
        read = _REDIS_OPTIONS.get(name)
        if read is None:
            known = ", ".join(_REDIS_OPTIONS)
            raise ConfigError(_KEY, f"unknown Redis option {name!r}; the options are {known}.")
        try:
            options[name] = read(values[-1])
        except ValueError as exc:
            raise ConfigError(_KEY, f"Redis option {name}={values[-1]!r}: {exc}.") from None
    if parts.scheme.lower() in ("redis", "valkey") and any(n.startswith("ssl_") for n in options):
        raise ConfigError(_KEY, "the ssl_* options need TLS: use rediss:// (or valkeys://).")
    if options.get("cluster") and parts.path.strip("/") not in ("", "0"):
        raise ConfigError(_KEY, "Redis Cluster has only database 0; remove the /db from the URL.")
    try:
        return RedisStore.from_url(parts._replace(query="").geturl(), **options)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ConfigError(_KEY, f"{_hide_password(url)!r}: {exc}") from None


# Query options of postgresql:// and postgres:// that Keepsake reads, each with its reader.
_POSTGRES_OPTIONS: dict[str, Callable[[str], object]] = {
    "min_size": int,
    "max_size": int,
    "pool_timeout": float,
    "connect_timeout": float,
    "statement_timeout": float,
    "schema": str,
    "table": str,
    "prepare": lambda text: _flag("prepare", text),
    "create_schema": lambda text: _flag("create_schema", text),
}
# libpq parameters passed through as they are (TLS, and what names or routes the connection).
_LIBPQ_OPTIONS = (
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "sslcrl",
    "application_name",
    "target_session_attrs",
    "tcp_user_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
)
_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def _postgres(url: str, app: Flask) -> Store:
    try:
        from .stores.postgres import EXTRA, PostgresStore, require_psycopg

        require_psycopg()
    except ModuleNotFoundError:
        raise ConfigError(
            _KEY,
            f"{url.partition(':')[0]}:// needs psycopg 3 and psycopg_pool: pip install '{EXTRA}'.",
        ) from None
    parts = urlsplit(url)
    options: dict[str, object] = {}
    libpq: dict[str, str] = {}
    for name, values in parse_qs(parts.query, keep_blank_values=True).items():
        if name in _LIBPQ_OPTIONS:
            libpq[name] = values[-1]
            continue
        read = _POSTGRES_OPTIONS.get(name)
        if read is None:
            known = ", ".join((*_POSTGRES_OPTIONS, *_LIBPQ_OPTIONS))
            raise ConfigError(_KEY, f"unknown PostgreSQL option {name!r}; the options are {known}.")
        try:
            options[name] = read(values[-1])
        except ValueError as exc:
            raise ConfigError(_KEY, f"PostgreSQL option {name}={values[-1]!r}: {exc}.") from None
    if "sslmode" in libpq and libpq["sslmode"] not in _SSLMODES:
        raise ConfigError(_KEY, f"sslmode must be one of {', '.join(_SSLMODES)}.")
    conninfo = parts._replace(query=urlencode(libpq)).geturl()
    try:
        store = PostgresStore(conninfo, **options)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ConfigError(_KEY, f"{_hide_password(url)!r}: {exc}") from None
    if not store.create_schema:
        _check_postgres_schema(store)
    return store


def _check_postgres_schema(store: PostgresStore) -> None:
    """With create_schema off, what the DBA's schema lacks is an operator mistake: say so now."""
    import logging

    from .errors import StoreUnavailable

    try:
        missing = store.check_schema()
    except StoreUnavailable as exc:
        # The database may well be down while the app starts; requests answer 503 until it is up.
        logging.getLogger("flask_keepsake").warning(
            "%s; the schema is checked on first use instead.", exc
        )
        return
    if missing:
        store.close()
        raise ConfigError(_KEY, store.missing_message(missing))


#: URL scheme -> factory. Backends add themselves here; there is no if/elif chain to extend.
SCHEMES: dict[str, Callable[[str, Flask], Store]] = {
    "memory": _memory,
    "sqlite": _sqlite,
    "redis": _redis,
    "rediss": _redis,
    "valkey": _redis,
    "valkeys": _redis,
    "postgresql": _postgres,
    "postgres": _postgres,
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
