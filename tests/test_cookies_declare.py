"""Cookie declarations: RFC 6265bis checks, duplicates, and what each application needs."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from flask import Flask, Response
from hypothesis import given, settings
from hypothesis import strategies as st

from flask_keepsake import (
    ConfigError,
    CookieDeclarationError,
    DeclaredCookie,
    Keepsake,
    KeepsakeError,
    NotInitialized,
)
from flask_keepsake.crypto import have_cryptography
from flask_keepsake.stores.memory import MemoryStore

from .helpers import parse_set_cookie

SECRET = "declare-test-secret-0123456789abcdef"


def _app(**config: Any) -> Flask:
    app = Flask(__name__)
    app.config.update(TESTING=True, SECRET_KEY=SECRET)
    app.config.update(config)
    return app


@pytest.fixture
def app() -> Flask:
    """A test application with a secret key (the fixture keeps it alive for the test)."""
    return _app()


@pytest.fixture
def keepsake(app: Flask) -> Keepsake:
    """A Keepsake set up on ``app``."""
    return Keepsake(app, store=MemoryStore())


def _declare(keepsake: Keepsake, name: str = "theme", **options: Any) -> DeclaredCookie:
    options.setdefault("purpose", "Remembers your colour theme.")
    options.setdefault("category", "essential")
    return keepsake.cookie(name, **options)


def test_declaration_returns_cookie_with_secure_defaults(keepsake: Keepsake) -> None:
    """Secure, HttpOnly, SameSite=Lax, Path=/, no Domain, __Host- prefix by default."""
    theme = _declare(keepsake, max_age=timedelta(days=365))
    assert (theme.secure, theme.httponly, theme.samesite) == (True, True, "Lax")
    assert (theme.path, theme.domain, theme.partitioned) == ("/", None, False)
    assert (theme.secure_name, theme.plain_name) == ("__Host-theme", "theme")
    assert theme.max_age == timedelta(days=365)
    assert theme.max_age_seconds == 365 * 86400


def test_declaration_errors_are_keepsake_errors() -> None:
    """Declaration errors share Keepsake's root and are ValueErrors."""
    assert issubclass(CookieDeclarationError, KeepsakeError)
    assert issubclass(CookieDeclarationError, ValueError)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "the me",
        "theme;",
        "theme; Domain=evil.example",
        "theme=dark",
        "theme\r\nSet-Cookie: admin=1",
        "theme\x00",
        "thème",
        '"theme"',
        "theme,other",
        "a/b",
        "(theme)",
        "theme\t",
    ],
)
def test_name_must_be_a_token(keepsake: Keepsake, name: str) -> None:
    """Names with separators, spaces, controls or non-ASCII (attribute injection) are refused."""
    with pytest.raises(CookieDeclarationError, match="not an RFC 6265bis token"):
        _declare(keepsake, name)


@given(name=st.text(max_size=30))
@settings(max_examples=200, deadline=None)
def test_any_name_is_a_safe_token_or_refused(name: str) -> None:
    """Any name either becomes a header that starts with exactly that name, or is refused."""
    app = _app()
    keepsake = Keepsake(app, store=MemoryStore())
    try:
        cookie = _declare(keepsake, name)
    except CookieDeclarationError:
        return
    with app.test_request_context("/"):
        response = Response()
        cookie.set(response, "v")
    (header,) = response.headers.getlist("Set-Cookie")
    assert header.startswith(f"{cookie.secure_name}=v; ")
    assert "\r" not in header
    assert "\n" not in header
    assert header.count(";") == len(parse_set_cookie(header)[2])


def test_host_prefix_refuses_domain(keepsake: Keepsake) -> None:
    """An explicit __Host- name with a Domain is refused."""
    with pytest.raises(CookieDeclarationError, match="__Host- prefix requires Path=/ and no Dom"):
        _declare(keepsake, "__Host-theme", domain="example.com")


def test_host_prefix_refuses_other_path(keepsake: Keepsake) -> None:
    """An explicit __Host- name with a Path other than / is refused."""
    with pytest.raises(CookieDeclarationError, match="__Host- prefix"):
        _declare(keepsake, "__Host-theme", path="/app")


def test_host_prefix_is_matched_case_insensitively(keepsake: Keepsake) -> None:
    """A "__host-" name is held to the __Host- rules, as browsers do."""
    with pytest.raises(CookieDeclarationError, match="__Host- prefix"):
        _declare(keepsake, "__host-theme", domain="example.com")


@pytest.mark.parametrize("name", ["__Host-theme", "__Secure-theme", "__SECURE-theme"])
def test_prefix_requires_secure(keepsake: Keepsake, name: str) -> None:
    """A __Host- or __Secure- name cannot be declared secure=False."""
    with pytest.raises(CookieDeclarationError, match="requires a Secure cookie"):
        _declare(keepsake, name, secure=False)


def test_prefix_alone_is_not_a_name(keepsake: Keepsake) -> None:
    """A name that is only a prefix is refused."""
    with pytest.raises(CookieDeclarationError, match="only a prefix"):
        _declare(keepsake, "__Secure-")


def test_explicit_prefix_is_kept_and_dropped_for_plain_http(keepsake: Keepsake) -> None:
    """A name written with its prefix is sent as written, and without it where Secure is off."""
    cookie = _declare(keepsake, "__Secure-theme", domain="example.com")
    assert (cookie.secure_name, cookie.plain_name) == ("__Secure-theme", "theme")


def test_domain_gets_secure_prefix(keepsake: Keepsake) -> None:
    """With a Domain, the automatic prefix is __Secure- (__Host- forbids a Domain)."""
    cookie = _declare(keepsake, domain=".Example.COM")
    assert cookie.secure_name == "__Secure-theme"
    assert cookie.domain == "example.com"


def test_path_gets_secure_prefix(keepsake: Keepsake) -> None:
    """With a Path other than /, the automatic prefix is __Secure-."""
    assert _declare(keepsake, path="/shop").secure_name == "__Secure-theme"


def test_prefix_false_keeps_the_name(keepsake: Keepsake) -> None:
    """prefix=False sends the name exactly as declared."""
    assert _declare(keepsake, prefix=False).secure_name == "theme"


def test_samesite_none_requires_secure(keepsake: Keepsake) -> None:
    """SameSite=None without Secure is refused."""
    with pytest.raises(CookieDeclarationError, match="SameSite=None requires a Secure"):
        _declare(keepsake, samesite="None", secure=False)


def test_partitioned_requires_secure(keepsake: Keepsake) -> None:
    """Partitioned without Secure is refused."""
    with pytest.raises(CookieDeclarationError, match="Partitioned cookie must be Secure"):
        _declare(keepsake, partitioned=True, secure=False)


def test_samesite_is_normalised(keepsake: Keepsake) -> None:
    """samesite is case-insensitive and stored in its canonical spelling."""
    assert _declare(keepsake, samesite="strict").samesite == "Strict"


def test_samesite_unknown_value_refused(keepsake: Keepsake) -> None:
    """Only Lax, Strict and None are SameSite values."""
    with pytest.raises(CookieDeclarationError, match="samesite must be"):
        _declare(keepsake, samesite="Relaxed")


def test_lifetime_over_400_days_refused(keepsake: Keepsake) -> None:
    """max_age above RFC 6265bis's 400 days is refused."""
    with pytest.raises(CookieDeclarationError, match="400 days"):
        _declare(keepsake, max_age=timedelta(days=401))


def test_lifetime_of_exactly_400_days_accepted(keepsake: Keepsake) -> None:
    """400 days is the longest lifetime."""
    assert _declare(keepsake, max_age=timedelta(days=400)).max_age == timedelta(days=400)


@pytest.mark.parametrize("max_age", [0, -5, timedelta(0), timedelta(milliseconds=500)])
def test_lifetime_must_be_positive(keepsake: Keepsake, max_age: Any) -> None:
    """A lifetime under one second is refused (deleting is delete()'s job)."""
    with pytest.raises(CookieDeclarationError, match="at least one second"):
        _declare(keepsake, max_age=max_age)


@pytest.mark.parametrize("max_age", [True, 1.5, "3600"])
def test_lifetime_type_checked(keepsake: Keepsake, max_age: Any) -> None:
    """max_age is a timedelta, an int or None."""
    with pytest.raises(CookieDeclarationError, match="max_age must be"):
        _declare(keepsake, max_age=max_age)


@pytest.mark.parametrize("path", ["", "shop", "/a b", "/a;b", "/a\nb", "/café"])
def test_path_checked(keepsake: Keepsake, path: str) -> None:
    """The path is absolute and made of URL path characters."""
    with pytest.raises(CookieDeclarationError, match="path"):
        _declare(keepsake, path=path)


@pytest.mark.parametrize(
    "domain", ["", "exa mple.com", "example.com;", "example.com:443", "-bad.com", "exämple.com"]
)
def test_domain_checked(keepsake: Keepsake, domain: str) -> None:
    """The domain is an ASCII host name without a port."""
    with pytest.raises(CookieDeclarationError, match="domain"):
        _declare(keepsake, domain=domain)


def test_purpose_required(keepsake: Keepsake) -> None:
    """A cookie without a purpose cannot be declared (the policy needs it)."""
    with pytest.raises(CookieDeclarationError, match="purpose"):
        _declare(keepsake, purpose="  ")


@pytest.mark.parametrize("category", ["", "Preferences", "has space", "1st"])
def test_category_must_look_like_a_category(keepsake: Keepsake, category: str) -> None:
    """Category names are lower-case identifiers."""
    with pytest.raises(CookieDeclarationError, match="category"):
        _declare(keepsake, category=category)


def test_unknown_category_refused_naming_the_key(keepsake: Keepsake) -> None:
    """A category the application lacks names KEEPSAKE_CONSENT_CATEGORIES."""
    with pytest.raises(ConfigError, match="KEEPSAKE_CONSENT_CATEGORIES"):
        _declare(keepsake, category="social")


def test_app_defined_category_accepted() -> None:
    """A category from KEEPSAKE_CONSENT_CATEGORIES can be declared."""
    keepsake = Keepsake(_app(KEEPSAKE_CONSENT_CATEGORIES=["social"]), store=MemoryStore())
    assert _declare(keepsake, category="social").category == "social"


def test_signed_and_encrypted_together_refused(keepsake: Keepsake) -> None:
    """signed and encrypted are alternatives."""
    with pytest.raises(CookieDeclarationError, match="not both"):
        _declare(keepsake, signed=True, encrypted=True)


@pytest.mark.parametrize("flag", ["signed", "httponly", "secure", "partitioned", "prefix"])
def test_flags_must_be_bool(keepsake: Keepsake, flag: str) -> None:
    """A flag given as a string (a common config slip) is refused."""
    options: dict[str, Any] = {flag: "yes"}
    with pytest.raises(CookieDeclarationError, match=f"{flag} must be True or False"):
        _declare(keepsake, **options)


def test_duplicate_declaration_refused(keepsake: Keepsake) -> None:
    """The same name cannot be declared twice."""
    _declare(keepsake)
    with pytest.raises(CookieDeclarationError, match="declared twice"):
        _declare(keepsake, purpose="Something else.")


def test_duplicate_through_prefix_refused(keepsake: Keepsake) -> None:
    """'theme' and '__Host-theme' are the same cookie on the wire."""
    _declare(keepsake)
    with pytest.raises(CookieDeclarationError, match="declared twice"):
        _declare(keepsake, "__Host-theme")


def test_duplicate_on_plain_http_refused(keepsake: Keepsake) -> None:
    """'theme' with and without prefix would collide in plain-HTTP development."""
    _declare(keepsake)
    with pytest.raises(CookieDeclarationError, match="declared twice"):
        _declare(keepsake, prefix=False)


def test_refused_declaration_leaves_no_trace(keepsake: Keepsake) -> None:
    """A refused declaration does not reserve its name."""
    with pytest.raises(ConfigError):
        _declare(keepsake, category="social")
    assert _declare(keepsake).name == "theme"


def test_session_cookie_name_is_taken(keepsake: Keepsake) -> None:
    """A cookie cannot take the session cookie's name."""
    with pytest.raises(CookieDeclarationError, match="session cookie"):
        _declare(keepsake, "session")


def test_consent_cookie_name_is_taken(keepsake: Keepsake) -> None:
    """A cookie cannot take the consent cookie's name."""
    with pytest.raises(CookieDeclarationError, match="KEEPSAKE_CONSENT_COOKIE"):
        _declare(keepsake, "consent")


@pytest.mark.parametrize(
    "kind",
    [
        "signed",
        pytest.param(
            "encrypted",
            marks=pytest.mark.skipif(not have_cryptography(), reason="cryptography not installed"),
        ),
    ],
)
def test_protected_cookie_needs_secret_key_at_declaration(kind: str) -> None:
    """Declaring a signed or encrypted cookie on an app without SECRET_KEY names SECRET_KEY."""
    app = _app(SECRET_KEY=None)
    keepsake = Keepsake(app, store=MemoryStore())
    options: dict[str, Any] = {kind: True}
    with pytest.raises(ConfigError, match="SECRET_KEY") as info:
        _declare(keepsake, **options)
    assert info.value.key == "SECRET_KEY"


def test_protected_cookie_needs_secret_key_at_init() -> None:
    """A signed cookie declared before init_app fails at init_app without SECRET_KEY."""
    keepsake = Keepsake(store=MemoryStore())
    _declare(keepsake, signed=True)
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        keepsake.init_app(_app(SECRET_KEY=None))


def test_plain_cookie_needs_no_secret_key() -> None:
    """Plain cookies work without SECRET_KEY, like sessions."""
    keepsake = Keepsake(_app(SECRET_KEY=None), store=MemoryStore())
    assert _declare(keepsake).signed is False


def test_declaration_before_init_app_serves_every_app() -> None:
    """One declaration, made before init_app, works on every app of the extension."""
    keepsake = Keepsake(store=MemoryStore())
    theme = _declare(keepsake)
    for app in (_app(), _app()):
        keepsake.init_app(app)
        with app.test_request_context("/", headers={"Cookie": "__Host-theme=dark"}):
            assert theme.get() == "dark"


def test_declaration_after_init_app_checked_against_app() -> None:
    """A declaration made after init_app is checked against the app at once."""
    keepsake = Keepsake(store=MemoryStore())
    apps = [_app(KEEPSAKE_CONSENT_CATEGORIES=["social"]), _app()]
    for app in apps:
        keepsake.init_app(app)
    with pytest.raises(ConfigError, match="KEEPSAKE_CONSENT_CATEGORIES"):
        _declare(keepsake, category="social")


def test_cookie_of_another_extension_refused() -> None:
    """A cookie declared on one Keepsake cannot be used on an app of another."""
    other = Keepsake(store=MemoryStore())
    foreign = _declare(other)
    app = _app()
    Keepsake(app, store=MemoryStore())
    with app.test_request_context("/"), pytest.raises(NotInitialized, match="not the one"):
        foreign.get()


def test_cookie_on_app_without_keepsake_refused() -> None:
    """Using a declared cookie in an app without Keepsake says so."""
    theme = _declare(Keepsake(store=MemoryStore()))
    with Flask(__name__).test_request_context("/"), pytest.raises(NotInitialized):
        theme.get()


def test_consent_cookie_name_config_checked() -> None:
    """A KEEPSAKE_CONSENT_COOKIE that is not a token is refused naming the key."""
    with pytest.raises(ConfigError, match="KEEPSAKE_CONSENT_COOKIE"):
        Keepsake(_app(KEEPSAKE_CONSENT_COOKIE="my consent"), store=MemoryStore())


@pytest.mark.parametrize("value", [timedelta(days=401), 0, "long"])
def test_consent_max_age_config_checked(value: Any) -> None:
    """KEEPSAKE_CONSENT_MAX_AGE is a positive duration of at most 400 days."""
    with pytest.raises(ConfigError, match="KEEPSAKE_CONSENT_MAX_AGE"):
        Keepsake(_app(KEEPSAKE_CONSENT_MAX_AGE=value), store=MemoryStore())


@pytest.mark.parametrize("value", [["Social"], [3], "bad name", {"a": 1}])
def test_consent_categories_config_checked(value: Any) -> None:
    """KEEPSAKE_CONSENT_CATEGORIES holds lower-case category names."""
    with pytest.raises(ConfigError, match="KEEPSAKE_CONSENT_CATEGORIES"):
        Keepsake(_app(KEEPSAKE_CONSENT_CATEGORIES=value), store=MemoryStore())


def test_consent_categories_from_env_string() -> None:
    """A comma-separated string (from an environment variable) is a list of categories."""
    keepsake = Keepsake(_app(KEEPSAKE_CONSENT_CATEGORIES="social, video"), store=MemoryStore())
    assert _declare(keepsake, category="video").category == "video"


def test_secret_key_fallbacks_config_checked() -> None:
    """SECRET_KEY_FALLBACKS must be a list of keys when signed cookies use it."""
    with pytest.raises(ConfigError, match="SECRET_KEY_FALLBACKS"):
        Keepsake(_app(SECRET_KEY_FALLBACKS="old-key"), store=MemoryStore())


def test_repr_names_cookie_category_and_kind(keepsake: Keepsake) -> None:
    """repr() shows the wire name, category and protection."""
    assert (
        repr(_declare(keepsake, signed=True)) == "<DeclaredCookie '__Host-theme' essential signed>"
    )


def test_encrypted_without_cryptography_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the cryptography package, an encrypted declaration says what to install."""
    monkeypatch.setattr("flask_keepsake.cookies.declared.have_cryptography", lambda: False)
    keepsake = Keepsake(store=MemoryStore())
    with pytest.raises(CookieDeclarationError, match="pip install cryptography"):
        _declare(keepsake, encrypted=True)
