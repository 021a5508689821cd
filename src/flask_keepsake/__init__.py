"""Keepsake: server-side sessions and cookies for Flask, secure by default."""

from .consent import Consent
from .cookies import CookieDeclarationError, CookiePolicyEntry, CookieValueError, DeclaredCookie
from .errors import ConfigError, KeepsakeError, NotInitialized, SessionTooLarge, StoreUnavailable
from .extension import Keepsake, SessionInfo
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
