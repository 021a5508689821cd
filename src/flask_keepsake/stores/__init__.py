"""Session stores: the abstract contract and the backends that ship with Keepsake."""

from __future__ import annotations

from .base import ROTATED, Outcome, Rotated, SessionRecord, Store, Touch
from .memory import MemoryStore
from .redis import RedisStore
from .sqlite import SQLiteStore

__all__ = [
    "ROTATED",
    "MemoryStore",
    "Outcome",
    "RedisStore",
    "Rotated",
    "SQLiteStore",
    "SessionRecord",
    "Store",
    "Touch",
]
