"""Session stores: the abstract contract and the backends that ship with Keepsake."""

from __future__ import annotations

from .base import ROTATED, AdminStore, Outcome, Rotated, SessionRecord, Store, Touch, admin_store
from .memory import MemoryStore

# psycopg is imported when a PostgresStore is made, not here: it stays optional.
from .postgres import PostgresStore
from .redis import RedisStore
from .sqlite import SQLiteStore

__all__ = [
    "ROTATED",
    "AdminStore",
    "MemoryStore",
    "Outcome",
    "PostgresStore",
    "RedisStore",
    "Rotated",
    "SQLiteStore",
    "SessionRecord",
    "Store",
    "Touch",
    "admin_store",
]
