"""Shared test helpers: a fake clock, a call-counting store wrapper, cookie parsing."""

from __future__ import annotations

from http.cookies import SimpleCookie
from typing import Any

from flask_keepsake.testing import START, FakeClock, StoreSpy

#: The one store spy, under the name the tests have always used.
SpyStore = StoreSpy

__all__ = ["START", "FakeClock", "SpyStore", "parse_set_cookie", "set_cookie_headers"]


def set_cookie_headers(response: Any) -> list[str]:
    """All Set-Cookie header values of a test response."""
    return list(response.headers.getlist("Set-Cookie"))


def parse_set_cookie(header: str) -> tuple[str, str, dict[str, str]]:
    """Split a Set-Cookie header into name, value and lower-cased attributes."""
    first, *rest = header.split(";")
    name, _, value = first.strip().partition("=")
    attrs: dict[str, str] = {}
    for part in rest:
        key, _, val = part.strip().partition("=")
        attrs[key.lower()] = val
    return name, value, attrs


def simple_cookie(header: str) -> SimpleCookie:
    """Parse with the standard library, as a second opinion."""
    cookie: SimpleCookie = SimpleCookie()
    cookie.load(header)
    return cookie
