"""Signed and encrypted cookies: tampering, foreign keys, key rotation, expiry."""

from __future__ import annotations

import base64
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask, Response
from hypothesis import given, settings
from hypothesis import strategies as st
from markupsafe import Markup

from flask_keepsake import CookieValueError, DeclaredCookie, Keepsake, serialize
from flask_keepsake.crypto import have_cryptography
from flask_keepsake.stores.memory import MemoryStore

from .helpers import FakeClock, parse_set_cookie

OLD_KEY = "old-secret-key-0123456789abcdef-old"
NEW_KEY = "new-secret-key-0123456789abcdef-new"
# Encrypted cookies need the optional ``cryptography`` package; the skip reason shows with -ra.
KINDS = [
    "signed",
    pytest.param(
        "encrypted",
        marks=pytest.mark.skipif(not have_cryptography(), reason="cryptography not installed"),
    ),
]


class Site:
    """One application with a signed or encrypted cookie, and a browser's view of it."""

    def __init__(self, kind: str, clock: FakeClock, **config: Any) -> None:
        self.app = Flask(__name__)
        self.app.config.update(TESTING=True, SECRET_KEY=OLD_KEY)
        self.app.config.update(config)
        self.keepsake = Keepsake(self.app, store=MemoryStore(), clock=clock)
        self.cookie = self.declare("prefs", kind)

    def declare(self, name: str, kind: str) -> DeclaredCookie:
        return self.keepsake.cookie(
            name,
            purpose="Remembers preferences.",
            category="essential",
            max_age=timedelta(hours=1),
            signed=kind == "signed",
            encrypted=kind == "encrypted",
        )

    def set(self, value: Any, cookie: DeclaredCookie | None = None) -> str:
        """The cookie value the browser stores after ``set(value)``."""
        with self.app.test_request_context("/"):
            response = Response()
            (cookie or self.cookie).set(response, value)
        (header,) = response.headers.getlist("Set-Cookie")
        return parse_set_cookie(header)[1]

    def get(self, wire: str, cookie: DeclaredCookie | None = None) -> Any:
        """What ``get()`` returns when the browser sends ``wire``."""
        cookie = cookie or self.cookie
        header = f"{cookie.secure_name}={wire}"
        with self.app.test_request_context("/", headers={"Cookie": header}):
            return cookie.get("<absent>")


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock shared by the sites of one test."""
    return FakeClock()


@pytest.fixture(params=KINDS)
def site(request: pytest.FixtureRequest, clock: FakeClock) -> Site:
    """A site whose cookie is signed, then one whose cookie is encrypted."""
    return Site(request.param, clock)


def test_value_round_trips(site: Site) -> None:
    """A protected cookie reads back the value that was set, with its type."""
    value = {"theme": "dark", "since": datetime(2026, 1, 2, tzinfo=UTC)}
    assert site.get(site.set(value)) == value


def test_markup_allowed_in_protected_cookie(site: Site) -> None:
    """Only the server can write a protected cookie, so it may hold Markup."""
    back = site.get(site.set(Markup("<b>hi</b>")))
    assert type(back) is Markup


@pytest.mark.skipif(not have_cryptography(), reason="cryptography not installed")
def test_signed_value_is_readable_but_encrypted_is_not(clock: FakeClock) -> None:
    """Signing keeps the value visible; encryption hides it."""
    signed, encrypted = Site("signed", clock), Site("encrypted", clock)
    assert signed.set("sekrit-value") != "sekrit-value"
    payload = signed.set("sekrit-value").split(".")[0]
    assert b"sekrit-value" in base64.urlsafe_b64decode(payload + "==")
    assert "sekrit" not in encrypted.set("sekrit-value")


@pytest.mark.skipif(not have_cryptography(), reason="cryptography not installed")
def test_encryption_uses_a_fresh_nonce(clock: FakeClock) -> None:
    """Encrypting the same value twice gives two different cookies."""
    site = Site("encrypted", clock)
    assert site.set("same") != site.set("same")


def test_tampered_value_reads_absent_with_warning(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    """Changing one character of a protected cookie makes it read as absent, with a warning."""
    wire = site.set("dark")
    # Not the last character: its low bits may be base64 padding that decoders ignore.
    for i in (0, len(wire) // 2, len(wire) - 2):
        flipped = "A" if wire[i] != "A" else "B"
        with caplog.at_level(logging.WARNING, "flask_keepsake.security"):
            assert site.get(wire[:i] + flipped + wire[i + 1 :]) == "<absent>"
    assert "__Host-prefs" in caplog.text
    assert "dark" not in caplog.text


def test_unprotected_value_reads_absent(site: Site) -> None:
    """A plain value in a protected cookie (set by hand or by a client) reads as absent."""
    assert site.get("dark") == "<absent>"
    assert site.get("") == "<absent>"


def test_value_from_another_secret_reads_absent(site: Site, clock: FakeClock) -> None:
    """A cookie protected with a key this site does not have is refused."""
    kind = "signed" if site.cookie.signed else "encrypted"
    other = Site(kind, clock, SECRET_KEY="someone-elses-secret-0123456789abcdef")
    assert site.get(other.set("dark")) == "<absent>"


def test_value_cannot_move_between_cookies(site: Site) -> None:
    """A value protected for one cookie does not verify as another cookie of the same app."""
    kind = "signed" if site.cookie.signed else "encrypted"
    other = site.declare("role", kind)
    assert site.get(site.set("admin", other), site.cookie) == "<absent>"
    assert site.get(site.set("admin", other), other) == "admin"


def test_old_key_still_verifies_after_rotation(site: Site, clock: FakeClock) -> None:
    """With the old key in SECRET_KEY_FALLBACKS, cookies made before the rotation still read."""
    old_wire = site.set("dark")
    kind = "signed" if site.cookie.signed else "encrypted"
    rotated = Site(kind, clock, SECRET_KEY=NEW_KEY, SECRET_KEY_FALLBACKS=[OLD_KEY])
    assert rotated.get(old_wire) == "dark"


def test_new_cookies_use_the_new_key(site: Site, clock: FakeClock) -> None:
    """After rotation new cookies are made with SECRET_KEY: the old key alone cannot read them."""
    kind = "signed" if site.cookie.signed else "encrypted"
    rotated = Site(kind, clock, SECRET_KEY=NEW_KEY, SECRET_KEY_FALLBACKS=[OLD_KEY])
    new_wire = rotated.set("dark")
    assert site.get(new_wire) == "<absent>"
    only_new = Site(kind, clock, SECRET_KEY=NEW_KEY)
    assert only_new.get(new_wire) == "dark"


def test_dropped_fallback_no_longer_verifies(site: Site, clock: FakeClock) -> None:
    """Once the old key leaves SECRET_KEY_FALLBACKS, its cookies read as absent."""
    old_wire = site.set("dark")
    kind = "signed" if site.cookie.signed else "encrypted"
    assert Site(kind, clock, SECRET_KEY=NEW_KEY).get(old_wire) == "<absent>"


def test_value_older_than_max_age_reads_absent(site: Site, clock: FakeClock) -> None:
    """A client that keeps a protected cookie past its max_age gets nothing from it."""
    wire = site.set("dark")
    clock.advance(3600)
    assert site.get(wire) == "dark"
    clock.advance(1)
    assert site.get(wire) == "<absent>"


def test_value_from_the_future_reads_absent(site: Site, clock: FakeClock) -> None:
    """A protected value dated after now is refused."""
    wire = site.set("dark")
    clock.advance(-10)
    assert site.get(wire) == "<absent>"


def test_protected_size_limit(site: Site) -> None:
    """Protection overhead counts towards the 4096-byte limit."""
    with pytest.raises(CookieValueError, match="4096 bytes"):
        site.set("x" * 3900)


@pytest.mark.parametrize("kind", KINDS)
@given(value=st.one_of(st.text(max_size=3000), st.binary(max_size=300), st.integers()))
@settings(max_examples=100, deadline=None)
def test_any_value_round_trips_or_raises(kind: str, value: Any) -> None:
    """Any value round-trips exactly through a protected cookie, or set() raises."""
    site = Site(kind, FakeClock())
    try:
        wire = site.set(value)
    except CookieValueError:
        return
    assert serialize.dumps(site.get(wire)) == serialize.dumps(value)


@pytest.mark.parametrize("kind", KINDS)
@given(raw=st.text(max_size=300))
@settings(max_examples=200, deadline=None)
def test_any_incoming_value_reads_without_raising(kind: str, raw: str) -> None:
    """Whatever a client sends in a protected cookie, get() never raises."""
    site = Site(kind, FakeClock())
    environ = {"HTTP_COOKIE": ("__Host-prefs=" + raw).encode().decode("latin-1")}
    with site.app.test_request_context("/", environ_base=environ):
        site.cookie.get()
