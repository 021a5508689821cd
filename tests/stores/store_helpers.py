"""Shared values and builders for the store tests (imported by the test modules)."""

from __future__ import annotations

import hashlib
from typing import Any

from flask_keepsake.stores import SessionRecord

#: The fake clock's "now" in every test. Far from the real time on purpose, so a store that reads
#: the system clock instead of the ``now`` it is given fails loudly.
NOW = 1_000_000.0
#: Default lifetime of a test record.
TTL = 3600.0


def key_for(name: str) -> str:
    """Return a storage key shaped like the real ones (hex SHA-256), derived from ``name``."""
    return hashlib.sha256(name.encode()).hexdigest()


def make_record(name: str = "a", **fields: Any) -> SessionRecord:
    """Build a live record named ``name`` (key and handle derive from it); ``fields`` override."""
    values: dict[str, Any] = {
        "key": key_for(name),
        "handle": f"h-{name}",
        "data": {"greeting": '"hello"'},
        "user_id": None,
        "created": NOW,
        "last_seen": NOW,
        "expires_at": NOW + TTL,
        "absolute_expires_at": NOW + 10 * TTL,
    }
    values.update(fields)
    return SessionRecord(**values)
