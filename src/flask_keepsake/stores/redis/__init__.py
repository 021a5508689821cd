"""The Redis (and Valkey) store: :class:`RedisStore`, its Lua scripts, its local cache.

``store`` holds the store and its data model, ``scripts`` the Lua scripts it runs through
redis-py's ``Script``, ``cache`` the opt-in per-process cache (``local_cache``). redis-py is an
optional dependency (``pip install 'flask-keepsake[redis]'``), imported only when a store is
built, so importing this package works without it.
"""

from __future__ import annotations

from .store import (
    DEFAULT_SOCKET_TIMEOUT,
    EXTRA,
    INDEX_GRACE,
    RENAME_ATTEMPTS,
    RedisStore,
    import_redis,
)

__all__ = [
    "DEFAULT_SOCKET_TIMEOUT",
    "EXTRA",
    "INDEX_GRACE",
    "RENAME_ATTEMPTS",
    "RedisStore",
    "import_redis",
]
