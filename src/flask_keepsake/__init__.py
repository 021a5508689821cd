"""Keepsake: server-side sessions and cookies for Flask, secure by default."""

from .errors import ConfigError, KeepsakeError, NotInitialized, SessionTooLarge, StoreUnavailable
from .extension import Keepsake, SessionInfo
from .session import ServerSession

__all__ = [
    "ConfigError",
    "Keepsake",
    "KeepsakeError",
    "NotInitialized",
    "ServerSession",
    "SessionInfo",
    "SessionTooLarge",
    "StoreUnavailable",
]
