"""Configuration: every ``KEEPSAKE_*`` key, its default, and the checks made at start-up.

``KEEPSAKE_*`` keys are read and validated once, in ``init_app``; request handling only reads the
resulting :class:`Settings`. Flask's own session keys (``SESSION_COOKIE_*``,
``PERMANENT_SESSION_LIFETIME``, ``SESSION_REFRESH_EACH_REQUEST``) are checked at start-up too, but
read when they are used, through Flask's ``SessionInterface`` hooks, as Flask itself does: a key
set after ``Keepsake(app)`` takes effect. A mistake raises
:class:`~flask_keepsake.errors.ConfigError` naming the key. Every key is documented in
``docs/configuration.md``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

from .errors import ConfigError

if TYPE_CHECKING:
    from flask import Flask

logger = logging.getLogger("flask_keepsake")

#: Defaults of every Keepsake key. ``KEEPSAKE_COOKIE_SECURE`` is ``True``, or ``"auto"`` while
#: ``app.debug`` is on; ``None`` here means "decided in init_app".
DEFAULTS: dict[str, Any] = {
    "KEEPSAKE_STORE": None,
    # NIST SP 800-63B (AAL2) and the OWASP session cheat sheet: 30 minutes idle, 12 hours in all.
    "KEEPSAKE_IDLE_TIMEOUT": timedelta(minutes=30),
    "KEEPSAKE_ABSOLUTE_TIMEOUT": timedelta(hours=12),
    # A persistent ("remember me") session re-authenticates at least this often; its idle window
    # is Flask's PERMANENT_SESSION_LIFETIME. ASVS 5.0 V7.3.2 asks for an absolute maximum
    # lifetime whatever the activity; 90 days is a common choice for "stay signed in".
    "KEEPSAKE_PERMANENT_ABSOLUTE_TIMEOUT": timedelta(days=90),
    "KEEPSAKE_TOUCH_INTERVAL": timedelta(seconds=60),
    # How long a token that a login or regenerate replaced is still recognised (never honoured).
    "KEEPSAKE_ROTATION_GRACE": timedelta(seconds=60),
    "KEEPSAKE_COOKIE_SECURE": None,
    "KEEPSAKE_MAX_SESSION_BYTES": 64 * 1024,
    "KEEPSAKE_SAVE_ON_ERROR": False,
    "KEEPSAKE_RETRY_AFTER": 5,
    # Declared cookies, consent and CSRF: validated by cookies.init_cookies and csrf.init_csrf.
    "KEEPSAKE_CONSENT_COOKIE": "consent",
    # About six months: how long the CNIL advises a consent choice be remembered.
    "KEEPSAKE_CONSENT_MAX_AGE": timedelta(days=180),
    "KEEPSAKE_CONSENT_CATEGORIES": (),
    "KEEPSAKE_CHECK_ORIGIN": False,
    "KEEPSAKE_TRUSTED_ORIGINS": (),
}

#: Flask's default session cookie name, which Keepsake gives the ``__Host-`` prefix.
FLASK_DEFAULT_NAME = "session"
HOST_PREFIX = "__Host-"
SECURE_PREFIX = "__Secure-"
_SAMESITE_VALUES = {"strict": "Strict", "lax": "Lax", "none": "None"}

CookieSecure = bool | Literal["auto"]


@dataclass(frozen=True, slots=True)
class Settings:
    """The validated ``KEEPSAKE_*`` configuration of one application.

    See ``docs/configuration.md``. Durations are in seconds.
    """

    store_url: str | None
    idle_timeout: float
    absolute_timeout: float
    permanent_absolute_timeout: float
    touch_interval: float
    rotation_grace: float
    cookie_secure: CookieSecure
    max_session_bytes: int
    save_on_error: bool
    retry_after: int

    @classmethod
    def from_app(cls, app: Flask) -> Settings:
        """Read and check the configuration of ``app``, and check Flask's session keys.

        Logs once which of Flask's insecure defaults Keepsake replaces for this application.
        """
        config = app.config
        for key, value in DEFAULTS.items():
            config.setdefault(key, value)

        idle = read_seconds(config, "KEEPSAKE_IDLE_TIMEOUT")
        absolute = read_seconds(config, "KEEPSAKE_ABSOLUTE_TIMEOUT")
        permanent_absolute = read_seconds(config, "KEEPSAKE_PERMANENT_ABSOLUTE_TIMEOUT")
        touch = read_seconds(config, "KEEPSAKE_TOUCH_INTERVAL", allow_zero=True)
        grace = read_seconds(config, "KEEPSAKE_ROTATION_GRACE", allow_zero=True)
        if idle > absolute:
            raise ConfigError(
                "KEEPSAKE_IDLE_TIMEOUT",
                f"the idle timeout ({idle:g}s) is longer than KEEPSAKE_ABSOLUTE_TIMEOUT "
                f"({absolute:g}s); make it shorter or equal.",
            )
        if touch >= idle:
            raise ConfigError(
                "KEEPSAKE_TOUCH_INTERVAL",
                f"the touch interval ({touch:g}s) must be shorter than KEEPSAKE_IDLE_TIMEOUT "
                f"({idle:g}s), or active users would time out.",
            )
        lifetime = permanent_lifetime(app)
        if lifetime > permanent_absolute:
            raise ConfigError(
                "KEEPSAKE_PERMANENT_ABSOLUTE_TIMEOUT",
                f"the absolute window of persistent sessions ({permanent_absolute:g}s) is "
                f"shorter than their idle window, PERMANENT_SESSION_LIFETIME ({lifetime:g}s); "
                "make it longer or equal.",
            )

        store_url = config["KEEPSAKE_STORE"]
        if store_url is not None and not isinstance(store_url, str):
            raise ConfigError("KEEPSAKE_STORE", "must be a URL string such as 'sqlite:///path'.")

        max_bytes = config["KEEPSAKE_MAX_SESSION_BYTES"]
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1024:
            raise ConfigError(
                "KEEPSAKE_MAX_SESSION_BYTES", "must be an integer number of bytes, at least 1024."
            )
        retry_after = config["KEEPSAKE_RETRY_AFTER"]
        if isinstance(retry_after, bool) or not isinstance(retry_after, int) or retry_after < 1:
            raise ConfigError("KEEPSAKE_RETRY_AFTER", "must be a whole number of seconds, >= 1.")

        settings = cls(
            store_url=store_url,
            idle_timeout=idle,
            absolute_timeout=absolute,
            permanent_absolute_timeout=permanent_absolute,
            touch_interval=touch,
            rotation_grace=grace,
            cookie_secure=_cookie_secure(app),
            max_session_bytes=max_bytes,
            save_on_error=read_bool(config, "KEEPSAKE_SAVE_ON_ERROR"),
            retry_after=retry_after,
        )
        replaced = check_session_cookie(app, settings.cookie_secure)
        if replaced:
            logger.info(
                "Keepsake replaces Flask's insecure session cookie defaults for %r: %s.",
                app.name,
                "; ".join(replaced),
            )
        return settings


def check_session_cookie(app: Flask, secure: CookieSecure) -> list[str]:
    """Check Flask's ``SESSION_COOKIE_*`` keys as they are now; return what Keepsake replaces.

    Raises :class:`ConfigError` naming the key for a combination browsers refuse. Used at
    start-up and by ``flask keepsake check``; requests read the keys through the session
    interface's hooks.
    """
    config = app.config
    replaced: list[str] = []
    samesite_raw = config.get("SESSION_COOKIE_SAMESITE")
    if samesite_raw is None:
        samesite: str | None = "Lax"
        replaced.append("SESSION_COOKIE_SAMESITE None -> 'Lax'")
    elif isinstance(samesite_raw, str) and samesite_raw.lower() in _SAMESITE_VALUES:
        samesite = _SAMESITE_VALUES[samesite_raw.lower()]
    else:
        raise ConfigError(
            "SESSION_COOKIE_SAMESITE", "must be 'Lax', 'Strict', 'None' or unset (Lax)."
        )
    if samesite == "None" and secure is False:
        raise ConfigError(
            "SESSION_COOKIE_SAMESITE",
            "SameSite=None requires a Secure cookie, and KEEPSAKE_COOKIE_SECURE is False; "
            "browsers drop such a cookie.",
        )
    if config.get("SESSION_COOKIE_PARTITIONED", False) and secure is False:
        raise ConfigError(
            "SESSION_COOKIE_PARTITIONED",
            "a Partitioned cookie must be Secure, and KEEPSAKE_COOKIE_SECURE is False.",
        )
    domain = config.get("SESSION_COOKIE_DOMAIN") or None
    path = config.get("SESSION_COOKIE_PATH") or config.get("APPLICATION_ROOT") or "/"
    if not isinstance(path, str) or not path.startswith("/"):
        raise ConfigError("SESSION_COOKIE_PATH", "must be an absolute path such as '/'.")
    if domain is not None and not isinstance(domain, str):
        raise ConfigError("SESSION_COOKIE_DOMAIN", "must be a host name string or unset.")
    name = config.get("SESSION_COOKIE_NAME") or FLASK_DEFAULT_NAME
    if not isinstance(name, str):
        raise ConfigError("SESSION_COOKIE_NAME", "must be a string.")
    if name == FLASK_DEFAULT_NAME and secure is not False:
        name = default_cookie_name(domain, path)
        replaced.append(f"SESSION_COOKIE_NAME 'session' -> {name!r}")
    check_prefix(name, secure, domain, path)
    if secure is not False and not config.get("SESSION_COOKIE_SECURE"):
        replaced.append(f"SESSION_COOKIE_SECURE False -> {secure!r}")
    return replaced


def default_cookie_name(domain: str | None, path: str) -> str:
    """The name Keepsake gives Flask's default ``session`` cookie over HTTPS."""
    # __Host- binds the cookie to this exact host, over HTTPS, for the whole site: a sibling
    # subdomain or a plain-HTTP man in the middle cannot plant or overwrite it.
    prefix = HOST_PREFIX if domain is None and path == "/" else SECURE_PREFIX
    return prefix + FLASK_DEFAULT_NAME


def permanent_lifetime(app: Flask) -> float:
    """``PERMANENT_SESSION_LIFETIME`` in seconds: the idle window of persistent sessions."""
    try:
        lifetime = app.permanent_session_lifetime
    except (TypeError, ValueError):
        lifetime = None
    if isinstance(lifetime, timedelta):
        seconds = lifetime.total_seconds()
        if seconds > 0:
            return seconds
    raise ConfigError(
        "PERMANENT_SESSION_LIFETIME",
        "must be a positive timedelta or number of seconds: it is how long a persistent "
        "session lasts without use, and the Expires of its cookie.",
    )


def read_seconds(config: Any, key: str, *, allow_zero: bool = False) -> float:
    """The duration under ``key`` in seconds; ConfigError naming the key if it is not one."""
    value = config[key]
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise ConfigError(key, "must be a timedelta or a number of seconds.")
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise ConfigError(key, "must be a positive duration.")
    return seconds


def read_bool(config: Any, key: str) -> bool:
    """The boolean under ``key`` (or its usual spellings); ConfigError naming the key."""
    value = config[key]
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {"true", "1", "yes", "false", "0", "no"}:
        return value.lower() in {"true", "1", "yes"}
    raise ConfigError(key, "must be True or False.")


def _cookie_secure(app: Flask) -> CookieSecure:
    value = app.config["KEEPSAKE_COOKIE_SECURE"]
    if value is None:
        if app.config.get("SESSION_COOKIE_SECURE"):
            return True
        return "auto" if app.debug else True
    if isinstance(value, str):
        lowered = value.lower()
        if lowered == "auto":
            return "auto"
        if lowered in {"true", "1", "yes"}:
            return True
        if lowered in {"false", "0", "no"}:
            value = False
    if value is True:
        return True
    if value is False:
        if not (app.debug or app.testing):
            raise ConfigError(
                "KEEPSAKE_COOKIE_SECURE",
                "False is refused outside debug and testing: the session cookie would travel "
                "over plain HTTP. Use 'auto' for development on http://localhost.",
            )
        return False
    raise ConfigError("KEEPSAKE_COOKIE_SECURE", "must be True, False or 'auto'.")


def check_prefix(name: str, secure: CookieSecure, domain: str | None, path: str) -> None:
    """Refuse a ``__Host-`` or ``__Secure-`` name that browsers would drop, naming the key."""
    if not name.startswith(("__Host-", "__Secure-")):
        return
    if secure is False:
        raise ConfigError(
            "SESSION_COOKIE_NAME",
            f"{name!r} has a __Host-/__Secure- prefix, which requires a Secure cookie, but "
            "KEEPSAKE_COOKIE_SECURE is False.",
        )
    if name.startswith(HOST_PREFIX) and (domain is not None or path != "/"):
        raise ConfigError(
            "SESSION_COOKIE_NAME",
            f"{name!r} has the __Host- prefix, which forbids SESSION_COOKIE_DOMAIN and requires "
            "SESSION_COOKIE_PATH '/'. Drop the Domain, or use the __Secure- prefix.",
        )
