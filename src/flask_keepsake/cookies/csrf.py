"""CSRF: Flask-WTF's ``CSRFProtect`` checks the tokens; Keepsake makes them safe to rely on.

Keepsake does not check CSRF tokens itself. With ``CSRFProtect(app)`` from Flask-WTF:

- the token is rotated at login and dropped at logout (:meth:`Keepsake.login`,
  :meth:`Keepsake.logout`), so a token seen before login is useless after it;
- a failed check is answered as Flask-WTF answers it (its ``CSRFError``, a ``400``, through the
  application's handler if it has one); ``docs/cookies.md`` shows a handler that also logs it on
  ``flask_keepsake.security``;
- ``CSRFProtect`` without a secret key (``app.secret_key`` or ``WTF_CSRF_SECRET_KEY``) is refused
  at start-up when it was set up before Keepsake.

``KEEPSAKE_CHECK_ORIGIN`` adds a second, token-free defence: a ``POST``, ``PUT``, ``PATCH`` or
``DELETE`` (any method but ``GET``, ``HEAD``, ``OPTIONS`` and ``TRACE``) that the browser says is
cross-site is answered with ``403``. Browsers send ``Sec-Fetch-Site`` on every request; it is
trusted when present (``same-origin`` and ``none``, a bookmark or typed URL, pass). Older browsers
send only ``Origin``, which must then name this scheme, host and port (an ``http://`` page cannot
post to the ``https://`` site). A request with neither comes from something
that is not a browser, which CSRF cannot abuse, and passes. Origins in
``KEEPSAKE_TRUSTED_ORIGINS`` (a sibling subdomain's form, a payment provider posting back) pass.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from flask import request
from werkzeug.exceptions import Forbidden

from ..config import read_bool
from ..errors import ConfigError

if TYPE_CHECKING:
    from flask import Flask

__all__ = ["SAFE_METHODS", "init_csrf"]

security_logger = logging.getLogger("flask_keepsake.security")

#: Methods that must not change state, so the origin check lets them through.
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})

_PASS_SITES: Final = frozenset({"same-origin", "none"})
_DEFAULT_PORTS: Final = frozenset({("http", 80), ("https", 443)})


def init_csrf(app: Flask, *, has_secret: bool) -> None:
    """Read ``KEEPSAKE_CHECK_ORIGIN`` and ``KEEPSAKE_TRUSTED_ORIGINS``; check Flask-WTF's key."""
    check = read_bool(app.config, "KEEPSAKE_CHECK_ORIGIN")
    trusted = _trusted_origins(app.config["KEEPSAKE_TRUSTED_ORIGINS"])
    if trusted and not check:
        raise ConfigError(
            "KEEPSAKE_TRUSTED_ORIGINS",
            "has no effect while KEEPSAKE_CHECK_ORIGIN is False; set KEEPSAKE_CHECK_ORIGIN = True "
            "or remove the trusted origins.",
        )
    if check:
        app.before_request(OriginCheck(trusted))
    if (
        "csrf" in app.extensions
        and app.config.get("WTF_CSRF_ENABLED", True)
        and not (has_secret or app.config.get("WTF_CSRF_SECRET_KEY"))
    ):
        raise ConfigError(
            "SECRET_KEY",
            "Flask-WTF's CSRFProtect signs its tokens with SECRET_KEY (or WTF_CSRF_SECRET_KEY), "
            "which is not set. Set it to a long random value "
            "(python -c 'import secrets; print(secrets.token_hex(32))').",
        )


def _trusted_origins(value: Any) -> frozenset[str]:
    key = "KEEPSAKE_TRUSTED_ORIGINS"
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list | tuple | set | frozenset):
        raise ConfigError(key, "must be a list of origins such as ['https://app.example.com'].")
    origins: set[str] = set()
    for origin in value:
        normal = _normal_origin(origin) if isinstance(origin, str) else None
        if normal is None:
            raise ConfigError(
                key,
                f"{origin!r} is not an origin: write scheme and host (and port if not the "
                "default), such as 'https://app.example.com', with no path.",
            )
        origins.add(normal)
    return frozenset(origins)


def _normal_origin(origin: str) -> str | None:
    try:
        parts = urlsplit(origin.strip().rstrip("/").lower())
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return None
    if (
        parts.scheme not in {"http", "https"}
        or not parts.hostname
        or parts.username is not None
        or parts.path
        or parts.query
        or parts.fragment
    ):
        return None
    host, port = parts.hostname, parts.port
    if port is None or (parts.scheme, port) in _DEFAULT_PORTS:
        return f"{parts.scheme}://{host}"
    return f"{parts.scheme}://{host}:{port}"


class OriginCheck:
    """The ``before_request`` hook of ``KEEPSAKE_CHECK_ORIGIN``: 403 for cross-site writes."""

    def __init__(self, trusted: frozenset[str]) -> None:
        self.trusted = trusted

    def __call__(self) -> None:
        """Pass the request, or raise :class:`~werkzeug.exceptions.Forbidden`."""
        if request.method in SAFE_METHODS:
            return
        site = request.headers.get("Sec-Fetch-Site")
        origin = request.headers.get("Origin")
        if site is not None:
            if site.strip().lower() in _PASS_SITES:
                return
        elif origin is None:
            return
        elif _normal_origin(origin) == _normal_origin(f"{request.scheme}://{request.host}"):
            # Scheme, host and port: a page served over plain HTTP is another origin.
            return
        if origin is not None and _normal_origin(origin) in self.trusted:
            return
        security_logger.warning(
            "Cross-site %s %r refused (Sec-Fetch-Site %r, Origin %r).",
            request.method,
            request.path[:200],
            None if site is None else site[:40],
            None if origin is None else origin[:100],
        )
        raise Forbidden(
            "This request came from another site and would change something here, so it was "
            "refused. Go back to the form on this site and submit it again."
        )
