"""Keepsake: server-side sessions and cookies for Flask, secure by default."""

from .cookies import (
    Consent,
    CookieDeclarationError,
    CookiePolicyEntry,
    CookieValueError,
    DeclaredCookie,
)
from .engine import SessionInfo
from .errors import ConfigError, KeepsakeError, NotInitialized, SessionTooLarge, StoreUnavailable
from .extension import Keepsake
from .session import ServerSession

__all__ = [
    "ConfigError",
    "Consent",
    "CookieDeclarationError",
    "CookiePolicyEntry",
    "CookieValueError",
    "DeclaredCookie",
    "Keepsake",
    "KeepsakeError",
    "NotInitialized",
    "ServerSession",
    "SessionInfo",
    "SessionTooLarge",
    "StoreUnavailable",
]
