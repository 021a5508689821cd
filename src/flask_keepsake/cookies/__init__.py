"""Cookies other than the session's: declared cookies, consent, and CSRF protection.

- :mod:`.declared`: every cookie the application sets, declared once, with secure defaults
  (``keepsake.cookie(...)``), and the per-application :class:`CookieJar` behind them.
- :mod:`.consent`: the consent cookie and its categories.
- :mod:`.csrf`: Flask-WTF's CSRF protection set up for the session, and the Origin check.
"""

from .consent import Consent
from .declared import (
    CookieDeclarationError,
    CookieJar,
    CookiePolicyEntry,
    CookieRegistry,
    CookieValueError,
    DeclaredCookie,
    SameSite,
    current_jar,
    init_cookies,
)

__all__ = [
    "Consent",
    "CookieDeclarationError",
    "CookieJar",
    "CookiePolicyEntry",
    "CookieRegistry",
    "CookieValueError",
    "DeclaredCookie",
    "SameSite",
    "current_jar",
    "init_cookies",
]
