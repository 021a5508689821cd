"""Declared cookies: every cookie the application sets, declared once, with secure defaults.

::

    theme = keepsake.cookie(
        "theme",
        purpose="Remembers your colour theme",
        category="preferences",
        max_age=timedelta(days=365),
        signed=True,
    )

    @app.post("/theme")
    def choose_theme():
        response = redirect(url_for("index"))
        theme.set(response, request.form["theme"])
        return response

    @app.get("/")
    def index():
        return render_template("index.html", theme=theme.get("light"))

The rules, each checked where it can be (see ``docs/cookies.md``):

- **At declaration** (:class:`CookieDeclarationError`): the name is an RFC 6265bis token; a
  ``__Host-`` name is Secure with ``Path=/`` and no ``Domain``; a ``__Secure-`` name is Secure;
  ``SameSite=None`` and ``Partitioned`` need Secure; the lifetime is at most 400 days; a name is
  declared once. Per application (at ``init_app``, or at declaration for applications already set
  up): signed and encrypted cookies need ``SECRET_KEY``, the category exists, and the name is not
  taken by the session or consent cookie.
- **When set** (:class:`CookieValueError`, raised before any header is written): a ``str`` made of
  cookie octets is sent as it is; any other value (other text, ``int``, ``datetime``, ``dict``...)
  goes through the session's typed serializer and base64url, behind a ``~``; name plus value are
  at most 4096 bytes.
- **When read**: a value that does not verify, decrypt or decode, or a cookie sent twice, reads as
  absent, with a warning on the ``flask_keepsake.security`` logger.

Defaults are those of the session cookie: ``Secure``, ``HttpOnly``, ``SameSite=Lax``, ``Path=/``,
no ``Domain``, and the ``__Host-`` prefix added to the declared name (``__Secure-`` when a
``Domain`` or another ``Path`` rules ``__Host-`` out). Where ``KEEPSAKE_COOKIE_SECURE`` drops
``Secure`` from the session cookie (``"auto"`` on a plain-HTTP loopback request, or ``False`` in
tests), declared cookies drop ``Secure``, the prefix, ``Partitioned`` and ``SameSite=None`` too.
"""

from __future__ import annotations

import logging
import re
import threading
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final, Literal

from flask import current_app, g, request
from markupsafe import Markup
from werkzeug.http import dump_cookie

from .. import serialize
from ..crypto import (
    CookieCipher,
    CookieSigner,
    InvalidValue,
    Protector,
    b64decode,
    b64encode,
    have_cryptography,
    secret_keys,
)
from ..errors import ConfigError, KeepsakeError, NotInitialized
from ..headers import vary_on_cookie
from ..interface import engine_of
from .consent import (
    CATEGORY_RE,
    ESSENTIAL,
    MAX_AGE_LIMIT,
    Consent,
    ConsentSettings,
    format_consent,
    parse_consent,
)
from .csrf import init_csrf

if TYPE_CHECKING:
    from flask import Flask
    from werkzeug.wrappers import Response

    from ..engine import Engine

__all__ = [
    "CookieDeclarationError",
    "CookieJar",
    "CookiePolicyEntry",
    "CookieRegistry",
    "CookieValueError",
    "DeclaredCookie",
    "SameSite",
    "init_cookies",
]

logger = logging.getLogger("flask_keepsake")
security_logger = logging.getLogger("flask_keepsake.security")

#: RFC 6265bis: user agents refuse a cookie whose name and value exceed 4096 bytes together.
MAX_COOKIE_BYTES: Final = 4096

SameSite = Literal["Lax", "Strict", "None"]

# RFC 6265bis cookie-name = token (RFC 9110): visible ASCII without separators.
_TOKEN_RE: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 6265bis cookie-octet: visible ASCII without DQUOTE, comma, semicolon and backslash. Werkzeug
# sends exactly these unquoted, so a value made of them reaches the browser unchanged.
_OCTETS_RE: Final = re.compile(r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*")
# Characters Werkzeug leaves as they are in a Path attribute (so the path sent is the one declared).
_PATH_RE: Final = re.compile(r"/[A-Za-z0-9\-._~!$&'()*+,/:=@%]*")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN_RE: Final = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_SAMESITE: Final[dict[str, SameSite]] = {"lax": "Lax", "strict": "Strict", "none": "None"}
_HOST: Final = "__Host-"
_SECURE: Final = "__Secure-"
#: Marks a value that went through the typed serializer and base64url (never part of base64url).
_ENCODED: Final = "~"
_STATE: Final = "_keepsake_cookies"


class CookieDeclarationError(KeepsakeError, ValueError):
    """A cookie declaration breaks a rule of RFC 6265bis, or repeats a declared name.

    Raised by :meth:`Keepsake.cookie`; the message names the cookie and the fix.
    """


class CookieValueError(KeepsakeError, ValueError):
    """A value cannot go into a declared cookie: too large, or of a type it cannot hold.

    Raised by :meth:`DeclaredCookie.set` before any header is written; the response is unchanged.
    """


@dataclass(frozen=True, slots=True)
class CookiePolicyEntry:
    """One cookie as :meth:`Keepsake.cookie_policy` lists it, for a cookie policy page."""

    #: The name the browser stores over HTTPS (with its ``__Host-``/``__Secure-`` prefix).
    name: str
    purpose: str
    #: ``essential``, ``preferences``, ``analytics``, ``marketing`` or an application category.
    category: str
    #: How long the browser keeps it; ``None`` until the browser closes.
    max_age: timedelta | None
    secure: bool
    httponly: bool
    samesite: str
    path: str
    domain: str | None
    partitioned: bool
    signed: bool
    encrypted: bool


class DeclaredCookie:
    """A cookie declared with :meth:`Keepsake.cookie`: set it, read it, delete it.

    The attributes are those of the declaration, checked when it was made; they cannot change.
    """

    __slots__ = (
        "_max_age",
        "_registry",
        "category",
        "domain",
        "encrypted",
        "httponly",
        "name",
        "partitioned",
        "path",
        "plain_name",
        "purpose",
        "samesite",
        "secure",
        "secure_name",
        "signed",
    )

    #: The name as declared.
    name: str
    #: The name sent over HTTPS: the declared name with the ``__Host-``/``__Secure-`` prefix.
    secure_name: str
    #: The name sent where ``Secure`` is dropped (plain-HTTP development): no prefix.
    plain_name: str
    purpose: str
    category: str
    signed: bool
    encrypted: bool
    httponly: bool
    secure: bool
    samesite: SameSite
    path: str
    domain: str | None
    partitioned: bool

    def __init__(
        self,
        name: str,
        *,
        purpose: str,
        category: str,
        max_age: timedelta | int | None = None,
        signed: bool = False,
        encrypted: bool = False,
        httponly: bool = True,
        secure: bool = True,
        samesite: SameSite = "Lax",
        path: str = "/",
        domain: str | None = None,
        partitioned: bool = False,
        prefix: bool = True,
        registry: CookieRegistry | None = None,
    ) -> None:
        if not isinstance(name, str) or not _TOKEN_RE.fullmatch(name):
            raise CookieDeclarationError(
                f"Cookie name {name!r} is not an RFC 6265bis token: use ASCII letters, digits "
                "and !#$%&'*+-.^_`|~ only, with no spaces, '=', ';', ',', quotes or control "
                "characters."
            )
        label = f"Cookie {name!r}"
        for flag, flag_value in (
            ("signed", signed),
            ("encrypted", encrypted),
            ("httponly", httponly),
            ("secure", secure),
            ("partitioned", partitioned),
            ("prefix", prefix),
        ):
            if not isinstance(flag_value, bool):
                raise CookieDeclarationError(f"{label}: {flag} must be True or False.")
        if not isinstance(purpose, str) or not purpose.strip():
            raise CookieDeclarationError(
                f"{label}: purpose must say, in a sentence, why the cookie exists (it goes in "
                "the cookie policy)."
            )
        if not isinstance(category, str) or not CATEGORY_RE.fullmatch(category):
            raise CookieDeclarationError(
                f"{label}: category {category!r} is not a category name; use 'essential', "
                "'preferences', 'analytics', 'marketing' or one of KEEPSAKE_CONSENT_CATEGORIES."
            )
        if signed and encrypted:
            raise CookieDeclarationError(
                f"{label}: pass signed=True or encrypted=True, not both; encryption (AES-GCM) "
                "already makes the value tamper-proof."
            )
        if encrypted and not have_cryptography():
            raise CookieDeclarationError(
                f"{label}: encrypted cookies need the 'cryptography' package: "
                "pip install cryptography"
            )
        canonical = _SAMESITE.get(samesite.lower()) if isinstance(samesite, str) else None
        if canonical is None:
            raise CookieDeclarationError(f"{label}: samesite must be 'Lax', 'Strict' or 'None'.")
        samesite = canonical
        if samesite == "None" and not secure:
            raise CookieDeclarationError(
                f"{label}: SameSite=None requires a Secure cookie (RFC 6265bis); browsers drop "
                "it otherwise. Keep secure=True or use SameSite=Lax."
            )
        if partitioned and not secure:
            raise CookieDeclarationError(
                f"{label}: a Partitioned cookie must be Secure; keep secure=True."
            )
        if not isinstance(path, str) or not _PATH_RE.fullmatch(path):
            raise CookieDeclarationError(
                f"{label}: path {path!r} must start with '/' and hold only URL path characters "
                "(no spaces, ';' or control characters)."
            )
        if domain is not None:
            bare = domain.removeprefix(".") if isinstance(domain, str) else ""
            if len(bare) > 253 or not _DOMAIN_RE.fullmatch(bare):
                raise CookieDeclarationError(
                    f"{label}: domain {domain!r} must be a host name such as 'example.com' "
                    "(ASCII, punycode for international names, no port), or None for this host "
                    "only (the safer default)."
                )
            domain = bare.lower()

        lowered = name.lower()
        explicit = _HOST if lowered.startswith("__host-") else None
        if lowered.startswith("__secure-"):
            explicit = _SECURE
        if explicit is not None:
            if not secure:
                raise CookieDeclarationError(
                    f"{label}: the {explicit} prefix requires a Secure cookie; keep secure=True."
                )
            if explicit == _HOST and (domain is not None or path != "/"):
                raise CookieDeclarationError(
                    f"{label}: the __Host- prefix requires Path=/ and no Domain (RFC 6265bis). "
                    "Drop path and domain, or use the __Secure- prefix."
                )
            bare_name = name[len(explicit) :]
            if not bare_name:
                raise CookieDeclarationError(f"{label}: the name is only a prefix.")
            secure_name, plain_name = name, bare_name
        elif secure and prefix:
            auto = _HOST if domain is None and path == "/" else _SECURE
            secure_name, plain_name = auto + name, name
        else:
            secure_name = plain_name = name
        if len(secure_name) >= MAX_COOKIE_BYTES:
            raise CookieDeclarationError(f"{label}: the name alone exceeds 4096 bytes.")

        self.name = name
        self.secure_name = secure_name
        self.plain_name = plain_name
        self.purpose = purpose.strip()
        self.category = category
        self._max_age = _lifetime(label, max_age)
        self.signed = signed
        self.encrypted = encrypted
        self.httponly = httponly
        self.secure = secure
        self.samesite = samesite
        self.path = path
        self.domain = domain
        self.partitioned = partitioned
        self._registry = registry

    @property
    def max_age(self) -> timedelta | None:
        """How long the browser keeps the cookie; ``None`` until the browser closes."""
        return None if self._max_age is None else timedelta(seconds=self._max_age)

    @property
    def max_age_seconds(self) -> int | None:
        """:attr:`max_age` in whole seconds, as the ``Max-Age`` attribute carries it."""
        return self._max_age

    @property
    def protected(self) -> bool:
        """Whether the value is signed or encrypted (needs ``SECRET_KEY``)."""
        return self.signed or self.encrypted

    def __repr__(self) -> str:
        kind = "encrypted" if self.encrypted else "signed" if self.signed else "plain"
        return f"<DeclaredCookie {self.secure_name!r} {self.category} {kind}>"

    def set(self, response: Response, value: Any) -> bool:
        """Set the cookie on ``response`` to ``value``.

        A ``str`` of cookie octets is sent as it is (unless signed or encrypted); other values,
        and text with spaces, ``;``, quotes, control or non-ASCII characters, are encoded with the
        typed serializer and come back with their type from :meth:`get`.

        :return: ``True`` if the cookie was set; ``False`` if the visitor has not consented to
            its category, in which case the response is left unchanged.
        :raise CookieValueError: the value is too large (name plus value over 4096 bytes) or of
            a type the serializer does not support; nothing was written.
        """
        return _jar_for(self).set_cookie(self, response, value)

    def get(self, default: Any = None) -> Any:
        """The value the browser sent with the current request, or ``default``.

        ``default`` also when the visitor has not consented to the cookie's category, and when
        the value does not verify, decrypt or decode (logged on ``flask_keepsake.security``).
        Reading a cookie adds ``Vary: Cookie`` to the response.
        """
        return _jar_for(self).get_cookie(self, default)

    def delete(self, response: Response) -> None:
        """Remove the cookie from the browser (with the attributes it was set with)."""
        _jar_for(self).delete_cookie(self, response)


def _lifetime(label: str, max_age: timedelta | int | None) -> int | None:
    if max_age is None:
        return None
    if isinstance(max_age, timedelta):
        seconds = int(max_age.total_seconds())
    elif isinstance(max_age, int) and not isinstance(max_age, bool):
        seconds = max_age
    else:
        raise CookieDeclarationError(
            f"{label}: max_age must be a timedelta, a number of seconds, or None for a cookie "
            "that lasts until the browser closes."
        )
    if seconds < 1:
        raise CookieDeclarationError(
            f"{label}: max_age must be at least one second; use delete() to remove a cookie."
        )
    if seconds > MAX_AGE_LIMIT:
        raise CookieDeclarationError(
            f"{label}: max_age is {seconds // 86400} days; RFC 6265bis caps cookie lifetimes at "
            "400 days, and browsers shorten longer ones."
        )
    return seconds


class CookieRegistry:
    """The cookies declared on one :class:`~flask_keepsake.Keepsake` extension.

    Declarations belong to the extension, like a blueprint's routes: every application it is set
    up on has the same cookies. What differs per application (keys, consent settings, the
    session cookie's name) lives in each application's :class:`CookieJar`.
    """

    def __init__(self) -> None:
        self._cookies: dict[str, DeclaredCookie] = {}
        # Read on every request: most applications declare no non-essential cookie, and then
        # consent needs no work at all.
        self.has_optional = False
        # Weak: the registry must never keep an application (or its jar) alive.
        self._jars: weakref.WeakSet[CookieJar] = weakref.WeakSet()
        self._lock = threading.Lock()

    def __iter__(self) -> Iterator[DeclaredCookie]:
        return iter(list(self._cookies.values()))

    def __len__(self) -> int:
        return len(self._cookies)

    def declare(self, cookie: DeclaredCookie) -> None:
        """Add ``cookie``; check it against every application already set up first.

        :raise CookieDeclarationError: the name, as sent, is already declared.
        :raise ConfigError: an application cannot serve it (no ``SECRET_KEY``, unknown category).
        """
        with self._lock:
            for other in self._cookies.values():
                _check_clash(cookie, other)
            for jar in list(self._jars):
                jar.accept(cookie)
            self._cookies[cookie.name] = cookie
            if cookie.category != ESSENTIAL:
                self.has_optional = True

    def attach(self, jar: CookieJar) -> None:
        """Check every declared cookie against a newly set up application, then follow it."""
        with self._lock:
            for cookie in self._cookies.values():
                jar.accept(cookie)
            self._jars.add(jar)


def _check_clash(cookie: DeclaredCookie, other: DeclaredCookie) -> None:
    names = {cookie.secure_name, cookie.plain_name}
    if names & {other.secure_name, other.plain_name}:
        raise CookieDeclarationError(
            f"Cookie {cookie.name!r} is declared twice (it would be sent as "
            f"{cookie.secure_name!r}, like {other!r}). Declare each cookie once, at module "
            "level next to Keepsake(), and import it where you need it; in an application "
            "factory, declare it outside create_app()."
        )


@dataclass(slots=True)
class _RequestState:
    consent: Consent | None = None
    read: bool = False


class CookieJar:
    """Declared cookies for one application, kept by its engine (``engine.jar``).

    Built by :func:`init_cookies`. It holds what the configuration says (consent) and does the
    work behind :class:`DeclaredCookie` and the consent and policy methods of
    :class:`~flask_keepsake.Keepsake`. The keys for signed and encrypted cookies are read from
    ``app.secret_key`` and ``SECRET_KEY_FALLBACKS`` when used, as Flask reads them.
    """

    def __init__(self, app: Flask, engine: Engine, registry: CookieRegistry) -> None:
        self._engine = weakref.ref(engine)
        self.registry = registry
        self.consent_settings = ConsentSettings.from_app(app)
        try:
            self.consent_cookie = DeclaredCookie(
                self.consent_settings.cookie_name,
                purpose="Remembers which kinds of cookies you accepted.",
                category=ESSENTIAL,
                max_age=self.consent_settings.max_age,
            )
        except CookieDeclarationError as exc:
            raise ConfigError("KEEPSAKE_CONSENT_COOKIE", str(exc)) from None
        secure_name = engine.cookie(app, None).name
        plain = secure_name.removeprefix(_HOST).removeprefix(_SECURE)
        self._session_names = frozenset({secure_name, plain})
        consent_names = {self.consent_cookie.secure_name, self.consent_cookie.plain_name}
        if consent_names & self._session_names:
            raise ConfigError(
                "KEEPSAKE_CONSENT_COOKIE", "the consent cookie cannot share the session's name."
            )
        # Protectors by cookie name, built for the keys they were built with.
        self._protectors: dict[str, tuple[tuple[bytes, ...], Protector]] = {}
        self._warned: set[str] = set()

    @property
    def engine(self) -> Engine:
        """The engine of the application this jar serves."""
        engine = self._engine()
        if engine is None:  # pragma: no cover - a jar outliving its engine is a bug elsewhere
            raise NotInitialized("the Keepsake engine of this cookie jar no longer exists")
        return engine

    @property
    def has_secret_key(self) -> bool:
        """Whether ``app.secret_key`` is set (signed and encrypted cookies need it)."""
        return bool(secret_keys(self.engine.app))

    # -- declarations ----------------------------------------------------------------------

    def accept(self, cookie: DeclaredCookie) -> None:
        """Check that this application can serve ``cookie`` and prepare its keys."""
        label = f"cookie {cookie.name!r}"
        if cookie.category not in self.consent_settings.categories:
            raise ConfigError(
                "KEEPSAKE_CONSENT_CATEGORIES",
                f"{label} has category {cookie.category!r}, which this application does not "
                f"have ({', '.join(self.consent_settings.categories)}); add it to "
                "KEEPSAKE_CONSENT_CATEGORIES or use one of these.",
            )
        names = {cookie.secure_name, cookie.plain_name}
        if names & self._session_names:
            raise CookieDeclarationError(
                f"Cookie {cookie.name!r} would share the name of the session cookie "
                f"({sorted(self._session_names)[-1]!r}, SESSION_COOKIE_NAME); choose another."
            )
        if names & {self.consent_cookie.secure_name, self.consent_cookie.plain_name}:
            raise CookieDeclarationError(
                f"Cookie {cookie.name!r} would share the name of the consent cookie "
                "(KEEPSAKE_CONSENT_COOKIE); choose another name for one of them."
            )
        if cookie.protected and self._protector(cookie) is None:
            kind = "encrypted" if cookie.encrypted else "signed"
            raise ConfigError(
                "SECRET_KEY",
                f"{label} is {kind}, which needs SECRET_KEY. Set it to a long random value "
                "(python -c 'import secrets; print(secrets.token_hex(32))') before init_app.",
            )

    def _protector(self, cookie: DeclaredCookie) -> Protector | None:
        """The signer or cipher of ``cookie`` for the application's keys as they are now."""
        keys = tuple(secret_keys(self.engine.app))
        if not keys:
            return None
        cached = self._protectors.get(cookie.name)
        if cached is None or cached[0] != keys:
            factory = CookieCipher if cookie.encrypted else CookieSigner
            cached = (keys, factory(list(keys), cookie.name, self.engine.clock))
            self._protectors[cookie.name] = cached
        return cached[1]

    def declared(self) -> list[DeclaredCookie]:
        """The consent cookie and every declared cookie."""
        return [self.consent_cookie, *self.registry]

    # -- one cookie --------------------------------------------------------------------------

    def attributes(self, cookie: DeclaredCookie) -> tuple[str, bool, SameSite, bool]:
        """Name, Secure, SameSite and Partitioned of ``cookie`` for the current request."""
        # The session cookie's decision, reused: "auto" drops Secure on plain-HTTP loopback
        # requests (Safari refuses Secure cookies from http://localhost), False drops it always.
        engine = self.engine
        app_secure = engine.cookie(engine.app, request).secure
        if cookie.secure and app_secure:
            return cookie.secure_name, True, cookie.samesite, cookie.partitioned
        samesite: SameSite = "Lax" if cookie.samesite == "None" else cookie.samesite
        return cookie.plain_name, False, samesite, False

    def encode(self, cookie: DeclaredCookie, value: Any) -> str:
        """The cookie value for ``value``; raise :class:`CookieValueError` if there is none."""
        protector = self._protector(cookie) if cookie.protected else None
        if cookie.protected and protector is None:
            raise CookieValueError(
                f"Cookie {cookie.name!r} is {'encrypted' if cookie.encrypted else 'signed'}, "
                "which needs SECRET_KEY, and the application has none now."
            )
        if protector is not None:
            token = protector.protect(self._dumps(cookie, value))
        elif type(value) is str and _OCTETS_RE.fullmatch(value) and value[:1] != _ENCODED:
            token = value
        else:
            text = self._dumps(cookie, value)
            if _holds_markup(value):
                raise CookieValueError(
                    f"Cookie {cookie.name!r} is neither signed nor encrypted, so it cannot hold "
                    "Markup: the browser could change it, and Markup is rendered unescaped. "
                    "Store a str, or declare the cookie signed=True."
                )
            token = _ENCODED + b64encode(text.encode("ascii"))
        size = len(cookie.secure_name) + len(token)
        if size > MAX_COOKIE_BYTES:
            raise CookieValueError(
                f"Cookie {cookie.name!r} would be {size} bytes (name plus encoded value), more "
                f"than the {MAX_COOKIE_BYTES} bytes browsers keep (RFC 6265bis). Keep large data "
                "in the session or your database and only a small value in the cookie."
            )
        return token

    @staticmethod
    def _dumps(cookie: DeclaredCookie, value: Any) -> str:
        try:
            return serialize.dumps(value, cookie.name)
        except serialize.UnsupportedValue as exc:
            raise CookieValueError(
                f"Cookie {cookie.name!r} cannot hold {exc.reason} at {exc.path}. Supported "
                f"types: {serialize.SUPPORTED_TYPES}."
            ) from None

    def decode(self, cookie: DeclaredCookie, raw: str, name: str) -> tuple[bool, Any]:
        """``(True, value)`` for a good cookie value, ``(False, None)`` (and a warning) if not."""
        if len(raw) > MAX_COOKIE_BYTES:
            return _rejected(name, f"value of {len(raw)} bytes is too long")
        protector = self._protector(cookie) if cookie.protected else None
        if cookie.protected and protector is None:
            return _rejected(name, "SECRET_KEY is not set, so it cannot be verified")
        if protector is not None:
            try:
                text = protector.unprotect(raw, cookie.max_age_seconds)
            except InvalidValue as exc:
                return _rejected(name, str(exc))
        elif raw[:1] == _ENCODED:
            try:
                text = b64decode(raw[1:]).decode("ascii")
            except (InvalidValue, UnicodeDecodeError):
                return _rejected(name, "encoded value is not base64url")
        else:
            return True, raw
        try:
            value = serialize.loads(text)
        except ValueError as exc:
            return _rejected(name, f"value cannot be read ({exc})")
        if protector is None and _holds_markup(value):
            return _rejected(name, "an unsigned value claims to be Markup")
        return True, value

    def set_cookie(self, cookie: DeclaredCookie, response: Response, value: Any) -> bool:
        """See :meth:`DeclaredCookie.set`."""
        if not self.consent().allows(cookie.category):
            logger.debug(
                "Cookie %r not set: no consent for %r.", cookie.secure_name, cookie.category
            )
            return False
        self._write(cookie, response, self.encode(cookie, value))
        return True

    def get_cookie(self, cookie: DeclaredCookie, default: Any) -> Any:
        """See :meth:`DeclaredCookie.get`."""
        self._state().read = True
        if not self.consent().allows(cookie.category):
            return default
        name = self.attributes(cookie)[0]
        values = request.cookies.getlist(name)
        if not values:
            return default
        if len(values) > 1:
            # Two cookies of one name: one may have been planted by a sibling subdomain or over
            # plain HTTP (cookie tossing); neither can be trusted to be ours.
            security_logger.warning(
                "Cookie %r sent %d times; treated as absent.", name, len(values)
            )
            return default
        ok, value = self.decode(cookie, values[0], name)
        return value if ok else default

    def delete_cookie(self, cookie: DeclaredCookie, response: Response) -> None:
        """See :meth:`DeclaredCookie.delete`."""
        name, secure, samesite, partitioned = self.attributes(cookie)
        header = dump_cookie(
            name,
            "",
            max_age=0,
            expires=0,
            path=cookie.path,
            domain=cookie.domain,
            secure=secure,
            httponly=cookie.httponly,
            samesite=samesite,
            partitioned=partitioned,
            max_size=0,
        )
        _replace_set_cookie(response, name, header)

    def _write(self, cookie: DeclaredCookie, response: Response, token: str) -> None:
        name, secure, samesite, partitioned = self.attributes(cookie)
        header = dump_cookie(
            name,
            token,
            max_age=cookie.max_age_seconds,
            path=cookie.path,
            domain=cookie.domain,
            secure=secure,
            httponly=cookie.httponly,
            samesite=samesite,
            partitioned=partitioned,
            # Checked above against RFC 6265bis's 4096 bytes for name and value; Werkzeug's
            # own check counts the attributes too and would only warn.
            max_size=0,
        )
        _replace_set_cookie(response, name, header)

    # -- consent -----------------------------------------------------------------------------

    @staticmethod
    def _state() -> _RequestState:
        state: _RequestState | None = g.get(_STATE)
        if state is None:
            state = _RequestState()
            setattr(g, _STATE, state)
        return state

    def consent(self, *, for_page: bool = False) -> Consent:
        """The current visitor's consent, including a change made earlier in this request.

        :param for_page: the response depends on it (a banner): add ``Vary: Cookie``.
        """
        state = self._state()
        if for_page:
            state.read = True
        if state.consent is None:
            state.consent = self._read_consent()
        return state.consent

    def _read_consent(self) -> Consent:
        categories = self.consent_settings.categories
        undecided = Consent(frozenset({ESSENTIAL}), False, categories)
        name = self.attributes(self.consent_cookie)[0]
        values = request.cookies.getlist(name)
        if not values:
            return undecided
        if len(values) > 1:
            security_logger.warning(
                "Consent cookie %r sent %d times; treated as absent.", name, len(values)
            )
            return undecided
        granted = parse_consent(values[0], categories)
        if granted is None:
            security_logger.warning(
                "Malformed consent cookie %r (length %d); treated as absent.", name, len(values[0])
            )
            return undecided
        return Consent(granted, True, categories)

    def set_consent(self, response: Response, categories: Iterable[str]) -> Consent:
        """Record that the visitor allows ``categories`` (and ``essential``); see Keepsake."""
        known = self.consent_settings.categories
        wanted: set[str] = set()
        unknown: list[str] = []
        for category in [categories] if isinstance(categories, str) else categories:
            if isinstance(category, str) and category in known:
                wanted.add(category)
            else:
                unknown.append(repr(category)[:40])
        if unknown:
            # Consent forms post category names: a name the application lacks is client input.
            security_logger.warning(
                "Consent for unknown categories ignored: %s.", ", ".join(unknown[:5])
            )
        consent = Consent(frozenset({ESSENTIAL, *wanted}), True, known)
        self._write(self.consent_cookie, response, format_consent(consent.granted))
        self._state().consent = consent
        return consent

    # -- after each request --------------------------------------------------------------------

    def after_request(self, response: Response) -> Response:
        """Vary on Cookie when one was read, delete cookies without consent, warn in debug."""
        state: _RequestState | None = g.get(_STATE)
        if state is not None and state.read:
            vary_on_cookie(response)
        self._enforce_consent(response)
        if current_app.debug:
            self._warn_undeclared(response)
        return response

    def _enforce_consent(self, response: Response) -> None:
        if not self.registry.has_optional:
            return
        optional = [c for c in self.registry if c.category != ESSENTIAL]
        if not optional or not (request.cookies or "Set-Cookie" in response.headers):
            return
        consent = self.consent()
        present = set(request.cookies) | set(_set_cookie_names(response))
        for cookie in optional:
            if not consent.allows(cookie.category) and self.attributes(cookie)[0] in present:
                # Withdrawn (in this request or before): the browser must drop it now.
                self.delete_cookie(cookie, response)

    def known_names(self) -> set[str]:
        """Every cookie name this application sends through Keepsake or Flask-Login."""
        names = set(self._session_names)
        names.update(f"{name}_remember" for name in self._session_names)
        for cookie in self.declared():
            names.update((cookie.secure_name, cookie.plain_name))
        app = self.engine.app
        if getattr(app, "login_manager", None) is not None:
            names.add(app.config.get("REMEMBER_COOKIE_NAME", "remember_token"))
        return names

    def _warn_undeclared(self, response: Response) -> None:
        headers = response.headers.getlist("Set-Cookie")
        if not headers:
            return
        known = self.known_names()
        for header in headers:
            name = header.partition("=")[0].strip()
            if name in known or name in self._warned or _is_deletion(header):
                continue
            self._warned.add(name)
            logger.warning(
                "Cookie %r was set with response.set_cookie() but never declared. Declare it "
                "once with keepsake.cookie(%r, purpose=..., category=...) to get secure "
                "defaults, consent by category and a line in keepsake.cookie_policy().",
                name,
                name,
            )

    # -- policy --------------------------------------------------------------------------------

    def policy(self) -> list[CookiePolicyEntry]:
        """See :meth:`Keepsake.cookie_policy`."""
        engine = self.engine
        app = engine.app
        cookie = engine.cookie(app, None)
        entries = [
            CookiePolicyEntry(
                name=cookie.name,
                purpose=(
                    "Keeps your session (sign-in, forms, messages) on the server; the cookie "
                    "holds only a random token. It lasts until the browser closes, or, when "
                    "you ask to stay signed in, as long as the server keeps the session."
                ),
                category=ESSENTIAL,
                max_age=None,
                secure=cookie.secure,
                httponly=cookie.httponly,
                samesite=cookie.samesite or "Lax",
                path=cookie.path,
                domain=cookie.domain,
                partitioned=cookie.partitioned,
                signed=False,
                encrypted=False,
            )
        ]
        entries.extend(_entry(declared) for declared in self.declared())
        if getattr(app, "login_manager", None) is not None:
            remember = _flask_login_entry(app)
            grant = CookiePolicyEntry(
                name=engine.remember_cookie_name(app, None),
                purpose=(
                    "Proves that you asked this browser to keep you signed in; signing out, or "
                    "signing out everywhere, ends it."
                ),
                category=ESSENTIAL,
                max_age=timedelta(seconds=int(engine.settings.permanent_absolute_timeout)),
                secure=cookie.secure,
                httponly=True,
                samesite=cookie.samesite or "Lax",
                path=cookie.path,
                domain=cookie.domain,
                partitioned=cookie.partitioned,
                signed=True,
                encrypted=False,
            )
            entries[1:1] = [remember, grant]
        return entries


def _entry(cookie: DeclaredCookie) -> CookiePolicyEntry:
    return CookiePolicyEntry(
        name=cookie.secure_name,
        purpose=cookie.purpose,
        category=cookie.category,
        max_age=cookie.max_age,
        secure=cookie.secure,
        httponly=cookie.httponly,
        samesite=cookie.samesite,
        path=cookie.path,
        domain=cookie.domain,
        partitioned=cookie.partitioned,
        signed=cookie.signed,
        encrypted=cookie.encrypted,
    )


def _flask_login_entry(app: Flask) -> CookiePolicyEntry:
    """Flask-Login's remember-me cookie, which it sets itself, described from its config."""
    config = app.config
    duration = config.get("REMEMBER_COOKIE_DURATION", timedelta(days=365))
    if isinstance(duration, int | float):
        duration = timedelta(seconds=duration)
    return CookiePolicyEntry(
        name=config.get("REMEMBER_COOKIE_NAME", "remember_token"),
        purpose="Keeps you signed in across browser restarts when you ask to be remembered.",
        category=ESSENTIAL,
        max_age=duration if isinstance(duration, timedelta) else None,
        secure=bool(config.get("REMEMBER_COOKIE_SECURE", False)),
        httponly=bool(config.get("REMEMBER_COOKIE_HTTPONLY", True)),
        samesite=str(config.get("REMEMBER_COOKIE_SAMESITE") or "Lax"),
        path=config.get("REMEMBER_COOKIE_PATH", "/"),
        domain=config.get("REMEMBER_COOKIE_DOMAIN"),
        partitioned=False,
        signed=True,
        encrypted=False,
    )


def _rejected(name: str, reason: str) -> tuple[bool, None]:
    security_logger.warning("Cookie %r rejected: %s; treated as absent.", name, reason)
    return False, None


def _holds_markup(value: Any) -> bool:
    """Whether ``value`` or anything inside it is Markup (iterative: depth is attacker-chosen)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, Markup):
            return True
        if isinstance(item, list | tuple):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
    return False


def _set_cookie_names(response: Response) -> Iterator[str]:
    for header in response.headers.getlist("Set-Cookie"):
        yield header.partition("=")[0].strip()


def _is_deletion(header: str) -> bool:
    return any(part.strip().lower() == "max-age=0" for part in header.split(";")[1:])


def _replace_set_cookie(response: Response, name: str, header: str) -> None:
    """Add ``header``, dropping any earlier Set-Cookie of ``name`` in this response."""
    headers = response.headers
    earlier = headers.getlist("Set-Cookie")
    kept = [h for h in earlier if h.partition("=")[0].strip() != name]
    if len(kept) != len(earlier):
        del headers["Set-Cookie"]
        for other in kept:
            headers.add("Set-Cookie", other)
    headers.add("Set-Cookie", header)


def _jar() -> CookieJar:
    jar = engine_of(current_app).jar
    assert isinstance(jar, CookieJar)
    return jar


def _jar_for(cookie: DeclaredCookie) -> CookieJar:
    jar = _jar()
    if jar.registry is not cookie._registry:
        raise NotInitialized(
            f"Cookie {cookie.name!r} was declared on a Keepsake extension that is not the one "
            f"set up on the application {current_app.name!r}."
        )
    return jar


def current_jar() -> CookieJar:
    """The :class:`CookieJar` of the current application."""
    return _jar()


def init_cookies(app: Flask, engine: Engine, registry: CookieRegistry) -> None:
    """Set up declared cookies, consent and CSRF on ``app``; called at the end of ``init_app``.

    Checks every cookie declared so far against ``app`` (later declarations are checked when they
    are made), and registers the after-request hook (``Vary: Cookie``, deleting cookies whose
    consent was withdrawn, the debug-mode warning about undeclared cookies).
    """
    jar = CookieJar(app, engine, registry)
    registry.attach(jar)
    engine.jar = jar
    app.after_request(jar.after_request)
    init_csrf(app, has_secret=jar.has_secret_key)
