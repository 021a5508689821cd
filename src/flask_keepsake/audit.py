"""The security audit behind ``flask keepsake check``: rules over the configuration of an app.

:func:`audit` returns :class:`Finding` objects, worst first; ``docs/cli.md`` lists every id. The
CLI (``cli.py``) prints them and adds one rule that needs a second process
(:func:`check_secret_across_processes`). Call :func:`audit` from your own tests to keep a
deployment honest.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from werkzeug.middleware.proxy_fix import ProxyFix

from .errors import StoreUnavailable
from .headers import is_loopback
from .interface import engine_of

if TYPE_CHECKING:
    from flask import Flask
    from flask.cli import ScriptInfo

    from .engine import Engine

#: A finding's severity. ``check`` fails on errors, and on warnings with ``--fail-level warning``;
#: notes never fail it.
Severity = Literal["error", "warning", "note"]

SEVERITY_RANK: dict[str, int] = {"note": 0, "warning": 1, "error": 2}

#: The environment variable through which ``check`` hands a random salt to the second process it
#: starts; that process prints an HMAC of its SECRET_KEY under that salt, never the key.
SALT_ENV = "KEEPSAKE_CHECK_SALT"
DIGEST_PREFIX = "keepsake-secret-digest:"

# Values seen in tutorials and templates. A key like these is as good as public.
_PLACEHOLDER_SECRETS = frozenset(
    {
        "change-me",
        "change_me",
        "changeme",
        "default",
        "dev",
        "development",
        "flask",
        "keepsake",
        "mysecret",
        "password",
        "secret",
        "secret-key",
        "secret_key",
        "secretkey",
        "super secret key",
        "super-secret",
        "super-secret-key",
        "supersecret",
        "test",
        "testing",
        "your-secret-key",
        "your_secret_key",
    }
)
_MIN_SECRET_CHARS = 32
_MIN_SECRET_BYTES = 16
_MIN_SECRET_DISTINCT = 5

# NIST SP 800-63B (rev. 3): AAL2 asks for re-authentication after 30 minutes idle and 12 hours in
# all; AAL1 after 30 days in all. Keepsake's defaults are the AAL2 values.
_AAL2_IDLE = 30 * 60
_AAL2_ABSOLUTE = 12 * 3600
_AAL1_ABSOLUTE = 30 * 24 * 3600

# A key no token can hash to (SHA-256 hex is lowercase): a read of it tests the store cheaply.
_PROBE_KEY = "keepsake-check-probe"


@dataclass(frozen=True, slots=True)
class Finding:
    """One result of :func:`audit`.

    :param id: a stable identifier such as ``"KS101"``, for ``--ignore`` and for searching the
        docs (``docs/cli.md`` lists every id).
    :param severity: ``"error"``, ``"warning"`` or ``"note"``.
    :param message: what is wrong and what it means for users.
    :param fix: what to change.
    """

    id: str
    severity: Severity
    message: str
    fix: str


def seconds_text(seconds: float) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds:g} seconds"


# -- check -----------------------------------------------------------------------------------


def audit(app: Flask, *, url: str | None = None, behind_proxy: bool = False) -> list[Finding]:
    """Audit the Keepsake and Flask configuration of ``app``; return the findings, worst first.

    This is what ``flask keepsake check`` runs, minus the second process it starts to compare
    ``SECRET_KEY`` across restarts. Call it from your own tests to keep a deployment honest::

        assert [f.id for f in audit(app) if f.severity == "error"] == []

    :param url: the public address of the site (``https://example.com``), when known: checks the
        scheme and the cookie Domain against it.
    :param behind_proxy: the application runs behind a reverse proxy or load balancer, so
        ``ProxyFix`` (or an equivalent middleware) must translate the ``X-Forwarded-*`` headers.
    :raises ValueError: ``url`` is not an ``http`` or ``https`` URL.
    :raises ~flask_keepsake.errors.NotInitialized: Keepsake is not set up on ``app``.
    """
    engine = engine_of(app)
    findings: list[Finding] = []
    findings += _check_mode(app)
    findings += _check_cookie(app, engine, url)
    findings += _check_remember_cookie(app)
    findings += _check_secret(app)
    findings += _check_timeouts(engine)
    findings += _check_store(app, engine)
    findings += _check_transport(app, url, behind_proxy)
    findings.sort(key=lambda f: (-SEVERITY_RANK[f.severity], f.id))
    return findings


def _check_mode(app: Flask) -> list[Finding]:
    if not app.debug:
        return []
    return [
        Finding(
            "KS100",
            "warning",
            "Debug mode is on: the Werkzeug debugger can run code sent by the browser, and "
            "plain-HTTP loopback requests get the session cookie without Secure.",
            "Do not pass --debug or set FLASK_DEBUG in production.",
        )
    ]


def _check_cookie(app: Flask, engine: Engine, url: str | None) -> list[Finding]:
    s = engine.settings
    cookie = engine.cookie(app, None)
    out: list[Finding] = []
    if s.cookie_secure is False:
        out.append(
            Finding(
                "KS101",
                "error",
                "The session cookie is not Secure (KEEPSAKE_COOKIE_SECURE = False): it travels "
                "over plain HTTP, where anyone on the network path can read and replay it.",
                "Remove KEEPSAKE_COOKIE_SECURE (it defaults to True) and serve the site over "
                "HTTPS.",
            )
        )
    elif s.cookie_secure == "auto":
        out.append(
            Finding(
                "KS102",
                "warning",
                "KEEPSAKE_COOKIE_SECURE is 'auto': plain-HTTP requests whose Host header names a "
                "loopback address get the session cookie without Secure. The Host header is "
                "chosen by the client.",
                "Use True (the default outside debug mode) in production.",
            )
        )
    if not cookie.httponly:
        out.append(
            Finding(
                "KS103",
                "warning",
                "The session cookie is not HttpOnly (SESSION_COOKIE_HTTPONLY = False): page "
                "script, and so any XSS bug, can read the session token.",
                "Remove SESSION_COOKIE_HTTPONLY (Flask's default is True).",
            )
        )
    if cookie.samesite == "None":
        if s.cookie_secure is not True:
            out.append(
                Finding(
                    "KS104",
                    "error",
                    "SESSION_COOKIE_SAMESITE is 'None' but the cookie is not always Secure: "
                    "browsers drop SameSite=None cookies that are not Secure.",
                    "Set KEEPSAKE_COOKIE_SECURE = True, or use SameSite 'Lax'.",
                )
            )
        out.append(
            Finding(
                "KS105",
                "warning",
                "SESSION_COOKIE_SAMESITE is 'None': browsers send the session cookie with "
                "requests from other sites (forms, fetch, iframes), so CSRF protection is the "
                "only thing between another site and your users' sessions.",
                "Use 'Lax' unless the app must run inside another site's iframe or serve "
                "credentialed cross-site fetches; then protect every state-changing route "
                "against CSRF and consider SESSION_COOKIE_PARTITIONED.",
            )
        )
    if s.cookie_secure is not False and not cookie.name.startswith("__Host-"):
        if cookie.name.startswith("__Secure-"):
            out.append(
                Finding(
                    "KS106",
                    "note",
                    f"The session cookie is named {cookie.name!r}: __Secure- because a "
                    "Domain or a Path other than '/' rules out __Host-, so subdomains or other "
                    "paths can set a cookie of that name.",
                    "Drop SESSION_COOKIE_DOMAIN and SESSION_COOKIE_PATH to get __Host-session.",
                )
            )
        else:
            out.append(
                Finding(
                    "KS106",
                    "warning",
                    f"The session cookie name {cookie.name!r} has neither the __Host- nor the "
                    "__Secure- prefix, so a sibling subdomain or a plain-HTTP page can plant a "
                    "cookie of that name (session fixation).",
                    "Remove SESSION_COOKIE_NAME to get __Host-session, or prefix your name "
                    "with __Host-.",
                )
            )
    domain = cookie.domain
    if domain is not None:
        bare = domain.lstrip(".").lower()
        if _is_local_or_ip(bare):
            out.append(
                Finding(
                    "KS108",
                    "warning",
                    f"SESSION_COOKIE_DOMAIN is {domain!r}, a loopback name or an IP address. An "
                    "IP address has no subdomains to share with, the cookie is refused when the "
                    "site is reached by another name (127.0.0.1 vs localhost), and some clients "
                    "(Python's http.cookiejar, older browsers) reject such a Domain.",
                    "Remove SESSION_COOKIE_DOMAIN: without it the cookie belongs to the exact "
                    "host that set it.",
                )
            )
        else:
            out.append(
                Finding(
                    "KS107",
                    "warning",
                    f"SESSION_COOKIE_DOMAIN is {domain!r}: browsers send the session cookie to "
                    "every subdomain, and any subdomain can set or overwrite it.",
                    "Remove SESSION_COOKIE_DOMAIN unless subdomains must share the session; if "
                    "they must, every subdomain has to be as trusted as the app.",
                )
            )
        host = urlsplit(url).hostname if url else None
        if host and not (host.lower() == bare or host.lower().endswith("." + bare)):
            out.append(
                Finding(
                    "KS109",
                    "error",
                    f"SESSION_COOKIE_DOMAIN {domain!r} does not match the site's host {host!r}: "
                    "browsers reject the cookie, so nobody stays logged in.",
                    f"Set SESSION_COOKIE_DOMAIN to {host!r} or a parent of it, or remove it.",
                )
            )
    return out


def _check_remember_cookie(app: Flask) -> list[Finding]:
    """Flask-Login's remember cookie, which Flask-Login sets with its own REMEMBER_COOKIE_* keys."""
    if getattr(app, "login_manager", None) is None or app.debug or app.testing:
        return []
    config = app.config
    weak = []
    if not config.get("REMEMBER_COOKIE_SECURE", False):
        weak.append(("REMEMBER_COOKIE_SECURE", "Secure"))
    if not config.get("REMEMBER_COOKIE_HTTPONLY", True):
        weak.append(("REMEMBER_COOKIE_HTTPONLY", "HttpOnly"))
    if not weak:
        return []
    missing = " and ".join(flag for _, flag in weak)
    return [
        Finding(
            "KS110",
            "warning",
            f"Flask-Login's remember-me cookie is set without {missing}: it can travel over "
            "plain HTTP or be read by scripts. Keepsake's own remember-me grant beside it is "
            "Secure and HttpOnly, so that cookie alone restores no one, but it still names the "
            "user and outlives the session.",
            "Set " + " and ".join(f"{key} = True" for key, _ in weak) + " (Flask-Login's config).",
        )
    ]


def _is_local_or_ip(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _check_secret(app: Flask) -> list[Finding]:
    key = app.config.get("SECRET_KEY")
    uses_csrf = "csrf" in app.extensions
    if not key:
        return [
            Finding(
                "KS201",
                "error" if uses_csrf else "warning",
                "SECRET_KEY is not set. Keepsake's sessions do not need it, but Flask-WTF's "
                "CSRF tokens, Flask-Login's remember-me cookie and signed cookies do"
                + (" (and CSRFProtect is in use)." if uses_csrf else "."),
                "Generate one with python -c 'import secrets; print(secrets.token_hex(32))' "
                "and load it from the environment or a file that every worker reads.",
            )
        ]
    out: list[Finding] = []
    text = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
    if text.strip().lower() in _PLACEHOLDER_SECRETS:
        out.append(
            Finding(
                "KS203",
                "error",
                "SECRET_KEY is a well-known placeholder: anyone can forge your signed cookies, "
                "CSRF tokens and remember-me cookies.",
                "Replace it with python -c 'import secrets; print(secrets.token_hex(32))'.",
            )
        )
    elif (
        (isinstance(key, bytes) and len(key) < _MIN_SECRET_BYTES)
        or (not isinstance(key, bytes) and len(text) < _MIN_SECRET_CHARS)
        or len(set(text)) < _MIN_SECRET_DISTINCT
    ):
        out.append(
            Finding(
                "KS202",
                "warning",
                f"SECRET_KEY is short or repetitive (fewer than {_MIN_SECRET_CHARS} characters, "
                f"{_MIN_SECRET_BYTES} bytes, or {_MIN_SECRET_DISTINCT} distinct characters): it "
                "may be guessed offline from one signed cookie.",
                "Use python -c 'import secrets; print(secrets.token_hex(32))'.",
            )
        )
    return out


def _check_timeouts(engine: Engine) -> list[Finding]:
    s = engine.settings
    out: list[Finding] = []
    if s.absolute_timeout > _AAL1_ABSOLUTE:
        out.append(
            Finding(
                "KS302",
                "warning",
                f"KEEPSAKE_ABSOLUTE_TIMEOUT is {seconds_text(s.absolute_timeout)}: longer than "
                "the 30 days NIST SP 800-63B allows even at its lowest assurance level (AAL1), "
                "so a stolen cookie stays useful for that long.",
                "Shorten it; users who stay longer log in again (Flask-Login's remember-me "
                "restores them in one request).",
            )
        )
    elif s.idle_timeout > _AAL2_IDLE or s.absolute_timeout > _AAL2_ABSOLUTE:
        out.append(
            Finding(
                "KS301",
                "note",
                f"Sessions end after {seconds_text(s.idle_timeout)} idle and "
                f"{seconds_text(s.absolute_timeout)} in all: longer than NIST SP 800-63B's "
                "AAL2 guidance (30 minutes idle, 12 hours). Fine for low-risk applications.",
                "Write the decision down (OWASP ASVS 7.1.1); ask for the password again before "
                "sensitive actions with keepsake.is_fresh().",
            )
        )
    if s.touch_interval > s.idle_timeout / 2:
        out.append(
            Finding(
                "KS303",
                "warning",
                f"KEEPSAKE_TOUCH_INTERVAL ({seconds_text(s.touch_interval)}) is more than half "
                f"of KEEPSAKE_IDLE_TIMEOUT ({seconds_text(s.idle_timeout)}): an active user's "
                "idle expiry is refreshed so rarely that they can time out while using the site.",
                "Keep the touch interval well below the idle timeout (the default is 60 seconds).",
            )
        )
    return out


def _check_store(app: Flask, engine: Engine) -> list[Finding]:
    store = engine.store
    out: list[Finding] = []
    try:
        store.load(_PROBE_KEY, engine.clock())
    except StoreUnavailable as exc:
        out.append(
            Finding(
                "KS401",
                "error",
                f"The session store {store.describe()} does not answer: {exc}. Every request "
                "that uses the session gets 503 Service Unavailable.",
                "Start the store or fix KEEPSAKE_STORE; see docs/troubleshooting.md.",
            )
        )
    if store.name == "memory" and not (app.debug or app.testing):
        out.append(
            Finding(
                "KS402",
                "warning",
                "KEEPSAKE_STORE is memory://: sessions live in one process, vanish on restart, "
                "and each worker process has its own, so users are logged out at random.",
                "Use the SQLite default on one machine, or redis:// for several.",
            )
        )
    elif store.name == "sqlite":
        out.append(
            Finding(
                "KS403",
                "note",
                f"Sessions are in SQLite ({store.describe()}): shared by the processes of one "
                "machine only, and expired records stay until cleanup removes them.",
                "Run 'flask keepsake cleanup --quiet' from cron (docs/operations.md); use "
                "redis:// when the app runs on several machines.",
            )
        )
    return out


def _check_transport(app: Flask, url: str | None, behind_proxy: bool) -> list[Finding]:
    out: list[Finding] = []
    if url:
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError(f"{url!r} is not an http(s) URL such as https://example.com")
        if parts.scheme == "http" and not is_loopback(parts.hostname):
            out.append(
                Finding(
                    "KS501",
                    "error",
                    f"The site is served over plain HTTP ({url}): browsers refuse the Secure "
                    "session cookie there, and anything sent is readable on the network.",
                    "Serve the site over HTTPS (a reverse proxy with a certificate, such as "
                    "Caddy or nginx with Let's Encrypt), and redirect HTTP to HTTPS.",
                )
            )
    else:
        server_name = app.config.get("SERVER_NAME")
        scheme = app.config.get("PREFERRED_URL_SCHEME", "http")
        if server_name and scheme == "http" and not is_loopback(server_name):
            out.append(
                Finding(
                    "KS502",
                    "warning",
                    f"SERVER_NAME is {server_name!r} and PREFERRED_URL_SCHEME is 'http': links "
                    "built outside a request (emails, background jobs) point to plain HTTP.",
                    "Set PREFERRED_URL_SCHEME = 'https', and pass --url to check the real address.",
                )
            )
    if behind_proxy:
        fix = _find_proxy_fix(app)
        if fix is None:
            out.append(
                Finding(
                    "KS503",
                    "warning",
                    "The app runs behind a proxy but app.wsgi_app is not wrapped in ProxyFix: "
                    "the X-Forwarded-* headers are ignored, so every session records the "
                    "proxy's address as the device IP, request.scheme is 'http', and "
                    "url_for(_external=True) and redirects build http:// links.",
                    "app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1) with "
                    "one per proxy hop (werkzeug.middleware.proxy_fix).",
                )
            )
        elif fix.x_for < 1 or fix.x_proto < 1:
            out.append(
                Finding(
                    "KS504",
                    "warning",
                    f"ProxyFix trusts x_for={fix.x_for} and x_proto={fix.x_proto}: with 0, the "
                    "client address or the scheme still comes from the proxy connection.",
                    "Set x_for and x_proto to the number of proxies in front of the app.",
                )
            )
    return out


def _find_proxy_fix(app: Flask) -> ProxyFix | None:
    layer: Any = app.wsgi_app
    # Middlewares keep the application they wrap in ``.app`` (ProxyFix, DispatcherMiddleware
    # and most others); stop at the Flask app itself or after a few layers.
    for _ in range(16):
        if isinstance(layer, ProxyFix):
            return layer
        layer = getattr(layer, "app", None)
        if layer is None or layer is app:
            return None
    return None


def secret_digest(app: Flask, salt: bytes) -> str | None:
    key = app.config.get("SECRET_KEY")
    if not key:
        return None
    raw = key if isinstance(key, bytes) else str(key).encode("utf-8")
    return hmac.new(salt, raw, hashlib.sha256).hexdigest()


def check_secret_across_processes(app: Flask, info: ScriptInfo) -> list[Finding]:
    """Start the app in a second process and compare an HMAC of its SECRET_KEY with ours."""
    if not app.config.get("SECRET_KEY"):
        return []
    if info.create_app is not None:
        # A custom FlaskGroup or a test runner builds the app in code; a new "flask" process
        # would not find the same app.
        return [
            Finding(
                "KS205",
                "note",
                "SECRET_KEY was not compared across processes: this command was not started "
                "as 'flask --app ... keepsake check'.",
                "Run 'flask --app yourapp keepsake check' to compare it.",
            )
        ]
    salt = secrets.token_bytes(16)
    command = [sys.executable, "-m", "flask"]
    if info.app_import_path:
        command += ["--app", info.app_import_path]
    command += ["keepsake", "secret-digest"]
    env = {**os.environ, SALT_ENV: salt.hex()}
    try:
        # The command is this interpreter running flask on the app already being audited.
        done = subprocess.run(  # noqa: S603
            command, env=env, capture_output=True, text=True, timeout=120, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [_not_compared(f"could not start it: {exc}")]
    lines = [line for line in done.stdout.splitlines() if line.startswith(DIGEST_PREFIX)]
    if done.returncode != 0 or not lines:
        return [_not_compared(f"'flask keepsake secret-digest' exited with {done.returncode}")]
    theirs = lines[-1].removeprefix(DIGEST_PREFIX)
    if hmac.compare_digest(theirs, secret_digest(app, salt) or "none"):
        return []
    return [
        Finding(
            "KS204",
            "error",
            "SECRET_KEY differs between two starts of the app: it is generated when the app is "
            "imported (os.urandom, secrets). Every restart, and every worker process, gets its "
            "own key, so CSRF tokens ('The CSRF token is invalid'), remember-me cookies and "
            "signed cookies made by one worker fail on another.",
            "Generate the key once and load it from the environment or a file "
            "(docs/troubleshooting.md, 'A secret key that differs per worker').",
        )
    ]


def _not_compared(reason: str) -> Finding:
    return Finding(
        "KS205",
        "note",
        f"SECRET_KEY was not compared across processes: a second 'flask' process failed "
        f"({reason}).",
        "Check that 'flask --app yourapp keepsake stats' runs from this directory.",
    )
