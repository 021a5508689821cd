"""Consent by category: what the visitor agreed to, kept in an essential cookie.

Every declared cookie has a category. ``essential`` cookies (the session, the consent cookie
itself, anything the site cannot work without) are always allowed; a cookie of any other
category is only set, and only read, once the visitor consented to that category. The built-in
categories are ``essential``, ``preferences``, ``analytics`` and ``marketing``; an application adds
its own with ``KEEPSAKE_CONSENT_CATEGORIES``.

The consent cookie's value is the granted categories in sorted order joined by dots, always with
``essential`` (``essential.preferences``): plain cookie octets, so the text stays readable in the
browser's developer tools. No cookie means the visitor has not decided yet.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from ..config import read_seconds
from ..errors import ConfigError

if TYPE_CHECKING:
    from flask import Flask

__all__ = ["BUILTIN_CATEGORIES", "ESSENTIAL", "Consent", "ConsentSettings"]

#: The category that needs no consent.
ESSENTIAL: Final = "essential"

#: The categories every application has, in the order a consent banner lists them.
BUILTIN_CATEGORIES: Final = ("essential", "preferences", "analytics", "marketing")

#: What a category name looks like: lower-case, so it is also a safe cookie value and CSS class.
CATEGORY_RE: Final = re.compile(r"[a-z][a-z0-9_-]{0,63}")

# RFC 6265bis: user agents cap cookie lifetimes at 400 days.
MAX_AGE_LIMIT: Final = 400 * 24 * 3600

_MAX_VALUE: Final = 1024


@dataclass(frozen=True, slots=True)
class Consent:
    """The current visitor's consent, as :meth:`Keepsake.consent` returns it."""

    #: The categories the visitor allowed; always holds ``"essential"``.
    granted: frozenset[str]
    #: Whether the visitor has decided (a consent cookie exists); show the banner if not.
    decided: bool
    #: Every category of this application, built-in ones first, for the banner's choices.
    categories: tuple[str, ...]

    def allows(self, category: str) -> bool:
        """Whether cookies of ``category`` may be set and read."""
        return category == ESSENTIAL or category in self.granted


@dataclass(frozen=True, slots=True)
class ConsentSettings:
    """The validated consent configuration of one application."""

    cookie_name: str
    max_age: int
    categories: tuple[str, ...]

    @classmethod
    def from_app(cls, app: Flask) -> ConsentSettings:
        """Read and check ``KEEPSAKE_CONSENT_*``; raise :class:`ConfigError` naming the key."""
        config = app.config
        name = config["KEEPSAKE_CONSENT_COOKIE"]
        if not isinstance(name, str) or not name:
            raise ConfigError("KEEPSAKE_CONSENT_COOKIE", "must be a cookie name such as 'consent'.")
        max_age = read_seconds(config, "KEEPSAKE_CONSENT_MAX_AGE")
        if max_age < 1 or max_age > MAX_AGE_LIMIT:
            raise ConfigError(
                "KEEPSAKE_CONSENT_MAX_AGE",
                "must be between 1 second and 400 days (browsers cap cookies at 400 days).",
            )
        extra = _category_list(config["KEEPSAKE_CONSENT_CATEGORIES"])
        categories = tuple(dict.fromkeys([*BUILTIN_CATEGORIES, *extra]))
        return cls(cookie_name=name, max_age=int(max_age), categories=categories)


def _category_list(value: Any) -> list[str]:
    key = "KEEPSAKE_CONSENT_CATEGORIES"
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list | tuple | set | frozenset):
        raise ConfigError(key, "must be a list of category names, such as ['social'].")
    names = sorted(value) if isinstance(value, set | frozenset) else list(value)
    for name in names:
        if not isinstance(name, str) or not CATEGORY_RE.fullmatch(name):
            raise ConfigError(
                key,
                f"{name!r} is not a category name: use lower-case letters, digits, '-' and '_', "
                "starting with a letter, at most 64 characters.",
            )
    return names


def format_consent(granted: Iterable[str]) -> str:
    """The consent cookie's value for ``granted`` (``essential`` is always added)."""
    return ".".join(sorted({ESSENTIAL, *granted}))


def parse_consent(raw: str, categories: Iterable[str]) -> frozenset[str] | None:
    """The granted categories in a consent cookie value, or ``None`` if it is malformed.

    Categories the application no longer has are dropped: their consent is gone with them.
    """
    if len(raw) > _MAX_VALUE:
        return None
    parts = raw.split(".")
    if ESSENTIAL not in parts or not all(CATEGORY_RE.fullmatch(p) for p in parts):
        return None
    return frozenset(parts).intersection(categories)
