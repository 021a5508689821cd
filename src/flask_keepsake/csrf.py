"""CSRF: Flask-WTF's ``CSRFProtect`` checks the tokens; Keepsake makes them safe to rely on.

Keepsake does not check CSRF tokens itself. With ``CSRFProtect(app)`` from Flask-WTF:

- the token is rotated at login and dropped at logout (:meth:`Keepsake.login`,
  :meth:`Keepsake.logout`), so a token seen before login is useless after it;
- a missing, malformed, oversized, expired or foreign token is answered with
  ``403 Forbidden`` (Flask-WTF's default is ``400``), through the application's own 403 handler
  if it has one, and logged on ``flask_keepsake.security``;
- ``CSRFProtect`` without ``SECRET_KEY`` (or ``WTF_CSRF_SECRET_KEY``) is refused at start-up when
  it was set up before Keepsake.

``KEEPSAKE_CHECK_ORIGIN`` adds a second, token-free defence: a ``POST``, ``PUT``, ``PATCH`` or
``DELETE`` (any method but ``GET``, ``HEAD``, ``OPTIONS`` and ``TRACE``) that the browser says is
cross-site is answered with ``403``. Browsers send ``Sec-Fetch-Site`` on every request; it is
trusted when present (``same-origin`` and ``none``, a bookmark or typed URL, pass). Older browsers
send only ``Origin``, which must then name this host. A request with neither comes from something
that is not a browser, which CSRF cannot abuse, and passes. Origins in
``KEEPSAKE_TRUSTED_ORIGINS`` (a sibling subdomain's form, a payment provider posting back) pass.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from flask import current_app, request
from werkzeug.exceptions import Forbidden

from .config import _bool
from .errors import ConfigError

if TYPE_CHECKING:
    from flask import Flask
    from flask.typing import ResponseReturnValue

__all__ = ["SAFE_METHODS", "init_csrf"]

security_logger = logging.getLogger("flask_keepsake.security")

#: Methods that must not change state, so the origin check lets them through.
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})

_PASS_SITES: Final = frozenset({"same-origin", "none"})


def init_csrf(app: Flask, *, has_secret: bool) -> None:
    """Read ``KEEPSAKE_CHECK_ORIGIN`` and ``KEEPSAKE_TRUSTED_ORIGINS``; connect to Flask-WTF."""
    check = _bool(app.config, "KEEPSAKE_CHECK_ORIGIN")
    trusted = _trusted_origins(app.config["KEEPSAKE_TRUSTED_ORIGINS"])
    if trusted and not check:
        raise ConfigError(
            "KEEPSAKE_TRUSTED_ORIGINS",
            "has no effect while KEEPSAKE_CHECK_ORIGIN is False; set KEEPSAKE_CHECK_ORIGIN = True "
            "or remove the trusted origins.",
        )
    if check:
        app.before_request(OriginCheck(trusted))
    if importlib.util.find_spec("flask_wtf") is None:
        return
    from flask_wtf.csrf import CSRFError

    # Registered only when the application has none, and replaced by one it registers later.
    if CSRFError not in app.error_handler_spec[None][400]:
        app.register_error_handler(CSRFError, _csrf_forbidden)

    # The refusal is logged where it is raised, so an application's own CSRFError handler does
    # not silence the security log. CSRFProtect may be set up after Keepsake: wrap it on the
    # first request.
    state = {"done": False}

    def log_csrf_refusals() -> None:
        if not state["done"]:
            state["done"] = True
            _log_refusals(app, CSRFError)

    app.before_request_funcs.setdefault(None, []).insert(0, log_csrf_refusals)
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
    return f"{parts.scheme}://{parts.netloc}"


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
        else:
            normal = _normal_origin(origin)
            if normal is not None and urlsplit(normal).netloc == request.host.lower():
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


def _log_refusals(app: Flask, error: type[Exception]) -> None:
    protect_ext = app.extensions.get("csrf")
    if protect_ext is None or getattr(protect_ext, "_keepsake_logged", False):
        return
    protect = protect_ext.protect

    def logged_protect(*args: Any, **kwargs: Any) -> Any:
        try:
            return protect(*args, **kwargs)
        except error as exc:
            reason = getattr(exc, "description", None) or "CSRF validation failed."
            security_logger.warning(
                "CSRF check failed for %s %r: %s", request.method, request.path[:200], reason
            )
            raise

    protect_ext.protect = logged_protect
    protect_ext._keepsake_logged = True


def _csrf_forbidden(exc: Exception) -> ResponseReturnValue:
    """Flask-WTF's ``CSRFError`` (a 400) answered as the application's 403."""
    reason = getattr(exc, "description", None) or "CSRF validation failed."
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    return app.handle_http_exception(Forbidden(reason))
