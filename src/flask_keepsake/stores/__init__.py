"""Session stores: the abstract contract and the backends that ship with Keepsake."""

from __future__ import annotations

from .base import SessionRecord, Store, Touch
from .memory import MemoryStore
from .redis import RedisStore
from .sqlite import SQLiteStore

__all__ = ["MemoryStore", "RedisStore", "SQLiteStore", "SessionRecord", "Store", "Touch"]
