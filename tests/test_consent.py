"""Consent by category, kept in an essential cookie, and the generated cookie policy."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask, Response, make_response, request

from flask_keepsake import Consent, CookiePolicyEntry, DeclaredCookie, Keepsake
from flask_keepsake.stores.memory import MemoryStore

from .helpers import parse_set_cookie

SECRET = "consent-test-secret-0123456789abcdef"


class Site:
    """An application with one cookie per category and routes for a consent banner."""

    def __init__(self, **config: Any) -> None:
        self.app = Flask(__name__)
        self.app.config.update(TESTING=True, SECRET_KEY=SECRET)
        self.app.config.update(config)
        self.keepsake = keepsake = Keepsake(self.app, store=MemoryStore())
        self.cart = keepsake.cookie("cart", purpose="Your cart.", category="essential")
        self.theme = keepsake.cookie(
            "theme",
            purpose="Remembers your colour theme.",
            category="preferences",
            max_age=timedelta(days=365),
            signed=True,
        )
        self.visits = keepsake.cookie(
            "visits", purpose="Counts visits.", category="analytics", max_age=86400
        )
        app = self.app

        @app.post("/consent")
        def consent() -> Response:
            resp = make_response("saved")
            keepsake.set_consent(resp, request.form.getlist("category"))
            return resp

        @app.post("/set")
        def set_all() -> Response:
            resp = make_response("ok")
            for cookie in (self.cart, self.theme, self.visits):
                cookie.set(resp, "v")
            return resp

        @app.get("/read")
        def read() -> str:
            return ",".join(str(c.get("-")) for c in (self.cart, self.theme, self.visits))

        @app.get("/noop")
        def noop() -> str:
            return "ok"

        self.client = app.test_client()


@pytest.fixture
def site() -> Site:
    """A site whose visitor has not decided yet."""
    return Site()


def _names(response: Any) -> dict[str, tuple[str, dict[str, str]]]:
    parsed = [parse_set_cookie(h) for h in response.headers.getlist("Set-Cookie")]
    return {name: (value, attrs) for name, value, attrs in parsed}


def test_undecided_visitor_has_only_essential(site: Site) -> None:
    """Before any choice, only essential cookies are allowed and decided is False."""
    with site.app.test_request_context("/"):
        consent = site.keepsake.consent()
    assert consent == Consent(
        frozenset({"essential"}), False, ("essential", "preferences", "analytics", "marketing")
    )


def test_consent_allows_essential_always() -> None:
    """Consent.allows is True for essential whatever was granted."""
    assert Consent(frozenset(), True, ()).allows("essential")
    assert not Consent(frozenset({"essential"}), True, ()).allows("analytics")


def test_non_essential_cookie_not_set_without_consent(site: Site) -> None:
    """Without consent only the essential cookie is set; set() says so."""
    with site.app.test_request_context("/"):
        response = Response()
        assert site.cart.set(response, "1") is True
        assert site.theme.set(response, "dark") is False
        assert site.visits.set(response, "1") is False
    assert list(_names(response)) == ["__Host-cart"]


def test_consent_is_stored_in_an_essential_cookie(site: Site) -> None:
    """set_consent writes the consent cookie with secure defaults and a six-month lifetime."""
    response = site.client.post("/consent", data={"category": ["analytics"]})
    value, attrs = _names(response)["__Host-consent"]
    assert value == "analytics.essential"
    assert {"secure", "httponly"} <= set(attrs)
    assert (attrs["samesite"], attrs["path"], attrs["max-age"]) == ("Lax", "/", str(180 * 86400))


def test_consent_applies_in_the_same_request(site: Site) -> None:
    """A cookie set after set_consent in the same request sees the new consent."""
    with site.app.test_request_context("/"):
        response = Response()
        consent = site.keepsake.set_consent(response, ["preferences"])
        assert consent.decided
        assert consent.granted == {"essential", "preferences"}
        assert site.theme.set(response, "dark") is True
        assert site.visits.set(response, "1") is False
    assert set(_names(response)) == {"__Host-consent", "__Host-theme"}


def test_consented_cookies_are_set_and_read_on_later_requests(site: Site) -> None:
    """Once consented, a category's cookies are set and read on every later request."""
    site.client.post("/consent", data={"category": ["preferences", "analytics"]})
    site.client.post("/set")
    assert site.client.get("/read").text == "v,v,v"


def test_cookie_without_consent_reads_default(site: Site) -> None:
    """A non-essential cookie the browser sends without consent reads as the default."""
    site.client.post("/consent", data={"category": ["preferences", "analytics"]})
    site.client.post("/set")
    site.client.set_cookie("__Host-consent", "essential.preferences")
    assert site.client.get("/read").text.split(",")[2] == "-"


def test_withdrawing_consent_deletes_that_category(site: Site) -> None:
    """Withdrawing a category deletes its cookies on the response; others stay."""
    site.client.post("/consent", data={"category": ["preferences", "analytics"]})
    site.client.post("/set")
    response = site.client.post("/consent", data={"category": ["preferences"]})
    value, attrs = _names(response)["__Host-visits"]
    assert (value, attrs["max-age"]) == ("", "0")
    assert "__Host-theme" not in _names(response)
    assert site.client.get_cookie("__Host-visits") is None
    assert site.client.get_cookie("__Host-theme") is not None
    assert site.client.get("/read").text == "v,v,-"


def test_cookie_left_without_consent_is_deleted_on_next_response(site: Site) -> None:
    """A cookie whose category lost consent elsewhere is deleted on the next response."""
    site.client.post("/consent", data={"category": ["analytics"]})
    site.client.post("/set")
    site.client.set_cookie("__Host-consent", "essential")
    response = site.client.get("/noop")
    assert _names(response)["__Host-visits"][1]["max-age"] == "0"
    assert site.client.get_cookie("__Host-visits") is None
    assert site.client.get_cookie("__Host-cart") is not None


def test_withdrawal_overrides_a_set_in_the_same_response(site: Site) -> None:
    """A cookie set and then withdrawn in one response ends up deleted, with one header."""
    site.client.set_cookie("__Host-consent", "analytics.essential")

    @site.app.post("/set-then-withdraw")
    def set_then_withdraw() -> Response:
        resp = make_response("ok")
        site.visits.set(resp, "1")
        site.keepsake.set_consent(resp, [])
        return resp

    response = site.client.post("/set-then-withdraw")
    headers = [h for h in response.headers.getlist("Set-Cookie") if "visits" in h]
    assert len(headers) == 1
    assert "Max-Age=0" in headers[0]


def test_essential_cookies_never_deleted_for_consent(site: Site) -> None:
    """Essential cookies survive any consent choice."""
    site.client.post("/set")
    response = site.client.post("/consent", data={"category": []})
    assert "__Host-cart" not in _names(response)
    assert site.client.get("/read").text.startswith("v,")


def test_no_deletions_when_nothing_to_delete(site: Site) -> None:
    """A request with no non-consented cookies gets no Set-Cookie headers."""
    assert site.client.get("/noop").headers.getlist("Set-Cookie") == []


def test_unknown_categories_ignored_with_warning(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    """Category names the app lacks (client input) are ignored and logged, never raised."""
    with caplog.at_level(logging.WARNING, "flask_keepsake.security"):
        response = site.client.post(
            "/consent", data={"category": ["analytics", "evil\r\nx", "all", "essential"]}
        )
    assert response.status_code == 200
    assert _names(response)["__Host-consent"][0] == "analytics.essential"
    assert "unknown categories" in caplog.text


def test_single_category_string_is_one_category(site: Site) -> None:
    """set_consent(resp, "analytics") means the analytics category, not its letters."""
    with site.app.test_request_context("/"):
        consent = site.keepsake.set_consent(Response(), "analytics")
    assert consent.granted == {"essential", "analytics"}


@pytest.mark.parametrize(
    "raw", ["analytics", "essential.Analytics", "essential..x", "essential.-x", "x" * 2000, ""]
)
def test_malformed_consent_cookie_is_undecided(
    site: Site, raw: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A consent cookie not in Keepsake's format counts as no decision, with a warning."""
    headers = {"Cookie": f"__Host-consent={raw}"}
    with (
        caplog.at_level(logging.WARNING, "flask_keepsake.security"),
        site.app.test_request_context("/", headers=headers),
    ):
        consent = site.keepsake.consent()
    assert not consent.decided
    assert consent.granted == {"essential"}
    assert "consent cookie" in caplog.text.lower()


def test_consent_cookie_sent_twice_is_undecided(site: Site) -> None:
    """Two consent cookies (one may be planted) count as no decision."""
    cookie = "__Host-consent=analytics.essential; __Host-consent=essential"
    with site.app.test_request_context("/", headers={"Cookie": cookie}):
        assert not site.keepsake.consent().decided


def test_consent_for_removed_category_is_dropped(site: Site) -> None:
    """A category the app no longer has is dropped from the visitor's consent."""
    with site.app.test_request_context("/", headers={"Cookie": "__Host-consent=essential.gone"}):
        consent = site.keepsake.consent()
    assert consent.decided
    assert consent.granted == {"essential"}


def test_app_defined_category() -> None:
    """Categories from KEEPSAKE_CONSENT_CATEGORIES are offered and enforced like built-in ones."""
    site = Site(KEEPSAKE_CONSENT_CATEGORIES=["social"])
    share = site.keepsake.cookie("share", purpose="Share buttons.", category="social")
    with site.app.test_request_context("/"):
        response = Response()
        assert site.keepsake.consent().categories[-1] == "social"
        assert share.set(response, "1") is False
        site.keepsake.set_consent(response, ["social"])
        assert share.set(response, "1") is True


def test_consent_cookie_name_and_lifetime_configurable() -> None:
    """KEEPSAKE_CONSENT_COOKIE and KEEPSAKE_CONSENT_MAX_AGE set the consent cookie."""
    site = Site(KEEPSAKE_CONSENT_COOKIE="cookie_choice", KEEPSAKE_CONSENT_MAX_AGE=3600)
    response = site.client.post("/consent", data={"category": ["analytics"]})
    assert _names(response)["__Host-cookie_choice"][1]["max-age"] == "3600"


# -- the cookie policy ------------------------------------------------------------------------


def test_policy_lists_session_consent_and_declared_cookies(site: Site) -> None:
    """cookie_policy() lists every cookie: session, consent, then declared in order."""
    with site.app.app_context():
        policy = site.keepsake.cookie_policy()
    assert [e.name for e in policy] == [
        "__Host-session",
        "__Host-consent",
        "__Host-cart",
        "__Host-theme",
        "__Host-visits",
    ]
    assert [e.category for e in policy] == [
        "essential",
        "essential",
        "essential",
        "preferences",
        "analytics",
    ]


def test_policy_entry_has_purpose_lifetime_and_flags(site: Site) -> None:
    """Each entry carries the declaration's purpose, lifetime and flags."""
    with site.app.app_context():
        theme = site.keepsake.cookie_policy()[3]
    assert theme == CookiePolicyEntry(
        name="__Host-theme",
        purpose="Remembers your colour theme.",
        category="preferences",
        max_age=timedelta(days=365),
        secure=True,
        httponly=True,
        samesite="Lax",
        path="/",
        domain=None,
        partitioned=False,
        signed=True,
        encrypted=False,
    )


def test_policy_session_entry_reflects_config() -> None:
    """The session entry shows the session cookie's real name and flags; no fixed lifetime."""
    site = Site(SESSION_COOKIE_SAMESITE="Strict", KEEPSAKE_ABSOLUTE_TIMEOUT=timedelta(hours=8))
    with site.app.app_context():
        session = site.keepsake.cookie_policy()[0]
    assert (session.name, session.samesite, session.httponly) == (
        "__Host-session",
        "Strict",
        True,
    )
    assert session.max_age is None
    assert "random token" in session.purpose


def test_policy_browser_session_cookie_has_no_lifetime(site: Site) -> None:
    """A cookie declared without max_age shows max_age None (until the browser closes)."""
    with site.app.app_context():
        assert site.keepsake.cookie_policy()[2].max_age is None


def test_policy_lists_flask_login_remember_cookie() -> None:
    """With Flask-Login set up, its remember-me cookie is listed too."""
    flask_login = pytest.importorskip("flask_login")
    site = Site(REMEMBER_COOKIE_DURATION=timedelta(days=30))
    flask_login.LoginManager(site.app)
    with site.app.app_context():
        remember, grant = site.keepsake.cookie_policy()[1:3]
    assert (remember.name, remember.category) == ("remember_token", "essential")
    assert remember.max_age == timedelta(days=30)
    assert (grant.name, grant.category, grant.signed) == (
        "__Host-session_remember",
        "essential",
        True,
    )
    assert grant.max_age == timedelta(days=90)


def test_policy_of_each_app_is_its_own() -> None:
    """One extension on two apps: each policy uses that app's session and consent names."""
    keepsake = Keepsake(store=MemoryStore())
    keepsake.cookie("theme", purpose="T.", category="preferences")
    first, second = Flask("first"), Flask("second")
    second.config["KEEPSAKE_CONSENT_COOKIE"] = "choice"
    policies = []
    for app in (first, second):
        app.config["TESTING"] = True
        keepsake.init_app(app)
        with app.app_context():
            policies.append([e.name for e in keepsake.cookie_policy()])
    assert policies[0][1] == "__Host-consent"
    assert policies[1][1] == "__Host-choice"
    assert policies[0][2] == policies[1][2] == "__Host-theme"


def test_policy_needs_no_request(site: Site) -> None:
    """The policy can be built outside a request (a CLI command, a static page)."""
    with site.app.app_context():
        assert len(site.keepsake.cookie_policy()) == 5


def test_policy_declared_cookie_type(site: Site) -> None:
    """cookie() returns a DeclaredCookie whose attributes match its policy entry."""
    assert isinstance(site.theme, DeclaredCookie)
    with site.app.app_context():
        entry = site.keepsake.cookie_policy()[3]
    assert (entry.name, entry.max_age) == (site.theme.secure_name, site.theme.max_age)


def test_reading_consent_adds_vary_cookie(site: Site) -> None:
    """A page that asks for the visitor's consent (to show a banner) varies on Cookie."""

    @site.app.get("/banner")
    def banner() -> str:
        return "" if site.keepsake.consent().decided else "Choose your cookies"

    assert "Cookie" in site.client.get("/banner").vary
