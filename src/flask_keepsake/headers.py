"""Small, fast helpers for the request and response headers the session engine touches."""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from typing import TYPE_CHECKING

from werkzeug.datastructures import Headers

if TYPE_CHECKING:
    from flask import Request
    from werkzeug.wrappers import Response

__all__ = ["cookie_values", "is_loopback", "no_store", "replace_response", "vary_on_cookie"]


@lru_cache(maxsize=16)
def _cookie_pattern(name: str) -> re.Pattern[str]:
    # Whitespace around the name is ignored, as Werkzeug's parser does.
    return re.compile(r"(?:^|;)[ \t]*" + re.escape(name) + r"[ \t]*=([^;]*)")


def cookie_values(request: Request, name: str) -> list[str]:
    """Every value the Cookie header gives ``name``, without parsing the other cookies.

    Werkzeug parses the whole header into a MultiDict on first use of ``request.cookies``; the
    session only needs its own cookie, and anything unusual about it (quotes, odd characters)
    fails the strict token check either way.
    """
    header: str = request.environ.get("HTTP_COOKIE", "")
    if name not in header:
        return []
    return [value.strip(" \t") for value in _cookie_pattern(name).findall(header)]


def no_store(response: Response) -> None:
    """Forbid shared caches to keep ``response`` (it carries a session token)."""
    # response.cache_control re-serializes the header on every change; a response without
    # Cache-Control, the usual case, needs one plain header.
    if "Cache-Control" in response.headers:
        response.cache_control.no_store = True
        response.cache_control.public = False
    else:
        response.headers["Cache-Control"] = "no-store"


def vary_on_cookie(response: Response) -> None:
    """Add ``Cookie`` to the response's ``Vary`` header unless it is already there."""
    # response.vary.add() rebuilds a HeaderSet and the header on every call; this is the same
    # result at a fraction of the per-request cost. Tokens are compared whole: "Set-Cookie" or
    # "X-Cookie-Consent" in Vary does not make a response vary on Cookie.
    headers = response.headers
    existing = headers.getlist("Vary")
    if not existing:
        headers.add("Vary", "Cookie")
        return
    tokens = {token.strip().lower() for value in existing for token in value.split(",")}
    if "cookie" not in tokens and "*" not in tokens:
        headers["Vary"] = ", ".join([*existing, "Cookie"])


def replace_response(response: Response, new: Response) -> None:
    """Make ``response`` into ``new`` in place.

    ``save_session`` cannot return a different response object, and by then the view's response
    (and any cookie it set) must not reach the client.
    """
    old = response.response
    close = getattr(old, "close", None)
    if close is not None:
        # A file being sent (a static file) would stay open, as the WSGI server never sees it.
        close()
    response.status = new.status
    response.headers = Headers(new.headers)
    response.response = new.response
    response.direct_passthrough = new.direct_passthrough


@lru_cache(maxsize=256)
def is_loopback(host: str) -> bool:
    """Whether the ``Host`` header value names this machine (localhost, 127.0.0.0/8, ::1)."""
    if host.startswith("["):
        name = host[1 : host.find("]")]
    else:
        name = host.rpartition(":")[0] if host.count(":") == 1 else host
    name = name.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
