"""Signing and encryption of declared cookies, with key rotation.

Both use the application's ``SECRET_KEY`` for new values and also accept values made with any key
in ``SECRET_KEY_FALLBACKS``, the two keys Flask's own cookie session uses. To rotate: put the old
key in ``SECRET_KEY_FALLBACKS`` and a new one in ``SECRET_KEY``; cookies issued before keep
working, and every cookie set from then on uses the new key. Remove the old key once the longest
cookie lifetime has passed.

Signed (:class:`CookieSigner`): itsdangerous's ``TimestampSigner`` with HMAC-SHA256, keyed per
cookie (the salt holds the cookie name, so a value signed for one cookie does not verify as
another). The value stays readable by anyone who holds the cookie; it only cannot be changed.

Encrypted (:class:`CookieCipher`): AES-256-GCM from ``cryptography``. The key is derived from the
secret with HKDF-SHA256, with the cookie name in the HKDF ``info``, and the name is also the
associated data: a value encrypted for one cookie neither decrypts nor verifies as another.

Both embed the time the value was made, so a cookie declared with a ``max_age`` is refused once it
is older than that, even if a client kept it longer than the browser would have.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import importlib.util
import os
import struct
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol

from itsdangerous import BadData, TimestampSigner

from .errors import ConfigError

if TYPE_CHECKING:
    from flask import Flask

__all__ = [
    "CookieCipher",
    "CookieSigner",
    "InvalidValue",
    "Protector",
    "b64decode",
    "b64encode",
    "have_cryptography",
    "secret_keys",
]

#: The longest protected value read at all; RFC 6265bis caps name plus value at 4096 bytes.
MAX_TOKEN_LENGTH: Final = 4096


class InvalidValue(ValueError):
    """A protected cookie value did not verify (tampered, foreign, expired or malformed).

    Internal: the caller treats the cookie as absent and logs the reason, which never quotes the
    value.
    """


class Protector(Protocol):
    """What signed and encrypted cookies have in common."""

    def protect(self, payload: str) -> str:
        """Return a cookie-safe token carrying ``payload`` (ASCII text)."""

    def unprotect(self, token: str, max_age: int | None) -> str:
        """Return the payload of ``token``; raise :class:`InvalidValue` if it does not verify."""


def secret_keys(app: Flask) -> list[bytes]:
    """The application's keys, oldest first and ``SECRET_KEY`` last (itsdangerous's order).

    Empty when ``SECRET_KEY`` is unset: the fallbacks alone can verify but never sign.
    """
    # app.secret_key, as Flask and Flask-WTF read it: a Flask subclass may set it as a class
    # attribute, which SECRET_KEY in app.config then does not show.
    current = app.secret_key
    if current is None or current == "" or current == b"":
        return []
    if not isinstance(current, str | bytes):
        raise ConfigError("SECRET_KEY", "must be a str or bytes, such as secrets.token_hex(32).")
    fallbacks = app.config.get("SECRET_KEY_FALLBACKS") or []
    if isinstance(fallbacks, str | bytes) or not isinstance(fallbacks, list | tuple):
        raise ConfigError(
            "SECRET_KEY_FALLBACKS", "must be a list of older keys (str or bytes), oldest first."
        )
    keys: list[bytes] = []
    for key in fallbacks:
        if not isinstance(key, str | bytes) or not key:
            raise ConfigError(
                "SECRET_KEY_FALLBACKS", "every entry must be a non-empty str or bytes key."
            )
        keys.append(key.encode() if isinstance(key, str) else key)
    keys.append(current.encode() if isinstance(current, str) else current)
    return keys


def b64encode(data: bytes) -> str:
    """base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64decode(text: str) -> bytes:
    """Strict base64url without padding: one text for one byte string, or InvalidValue."""
    if not text.isascii():
        raise InvalidValue("not base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InvalidValue("not base64url") from None
    if b64encode(data) != text:
        raise InvalidValue("not canonical base64url")
    return data


class _ClockSigner(TimestampSigner):
    """itsdangerous's timestamp signer, reading the time from the engine's clock."""

    def __init__(self, keys: list[bytes], salt: str, clock: Callable[[], float]) -> None:
        super().__init__(keys, salt=salt, key_derivation="hmac", digest_method=hashlib.sha256)
        self._clock = clock

    def get_timestamp(self) -> int:
        """The engine's current time in whole seconds."""
        return int(self._clock())


class CookieSigner:
    """Signs the values of one cookie with itsdangerous (HMAC-SHA256, rotated keys).

    :param keys: the application's keys, oldest first, the signing key last.
    :param name: the cookie's declared name; part of the salt.
    :param clock: the engine's clock (epoch seconds).
    """

    def __init__(self, keys: Sequence[bytes], name: str, clock: Callable[[], float]) -> None:
        self._signer = _ClockSigner(list(keys), f"flask-keepsake.cookie.{name}", clock)

    def protect(self, payload: str) -> str:
        """``base64url(payload).timestamp.signature``, signed with ``SECRET_KEY``."""
        return self._signer.sign(b64encode(payload.encode("utf-8"))).decode("ascii")

    def unprotect(self, token: str, max_age: int | None) -> str:
        """The payload, if a current or fallback key signed ``token`` within ``max_age``."""
        if len(token) > MAX_TOKEN_LENGTH or not token.isascii():
            raise InvalidValue("malformed signed value")
        try:
            signed = self._signer.unsign(token, max_age=max_age)
        except BadData as exc:
            raise InvalidValue(f"bad signature ({type(exc).__name__})") from None
        try:
            return b64decode(signed.decode("ascii")).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidValue("payload is not UTF-8") from None


#: Format version, 96-bit nonce, 128-bit GCM tag, 64-bit issue time.
_VERSION: Final = b"\x01"
_NONCE: Final = 12
_TAG: Final = 16
_TIME: Final = struct.Struct(">Q")
_MIN_RAW: Final = len(_VERSION) + _NONCE + _TAG + _TIME.size


def have_cryptography() -> bool:
    """Whether the ``cryptography`` package, which encrypted cookies need, is installed."""
    return importlib.util.find_spec("cryptography") is not None


class CookieCipher:
    """Encrypts the values of one cookie with AES-256-GCM; keys derived with HKDF-SHA256.

    :param keys: the application's keys, oldest first, the encrypting key last.
    :param name: the cookie's declared name; HKDF ``info`` and GCM associated data.
    :param clock: the engine's clock (epoch seconds).
    """

    def __init__(self, keys: Sequence[bytes], name: str, clock: Callable[[], float]) -> None:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        info = b"flask-keepsake cookie encryption v1\x00" + name.encode("utf-8")
        self._aad = b"flask-keepsake cookie\x00" + name.encode("utf-8")
        # Newest first: almost every value was made with the current key.
        self._ciphers: list[Any] = [
            AESGCM(
                HKDF(
                    algorithm=hashes.SHA256(), length=32, salt=b"flask-keepsake", info=info
                ).derive(key)
            )
            for key in reversed(keys)
        ]
        self._clock = clock

    def protect(self, payload: str) -> str:
        """``base64url(version | nonce | AES-GCM(issue time | payload))`` with ``SECRET_KEY``."""
        nonce = os.urandom(_NONCE)
        plaintext = _TIME.pack(int(self._clock())) + payload.encode("utf-8")
        sealed = self._ciphers[0].encrypt(nonce, plaintext, self._aad)
        return b64encode(_VERSION + nonce + sealed)

    def unprotect(self, token: str, max_age: int | None) -> str:
        """The payload, if a current or fallback key encrypted ``token`` within ``max_age``."""
        from cryptography.exceptions import InvalidTag

        if len(token) > MAX_TOKEN_LENGTH:
            raise InvalidValue("encrypted value too long")
        raw = b64decode(token)
        if len(raw) < _MIN_RAW or raw[:1] != _VERSION:
            raise InvalidValue("malformed encrypted value")
        nonce, sealed = raw[1 : 1 + _NONCE], raw[1 + _NONCE :]
        for cipher in self._ciphers:
            try:
                plaintext: bytes = cipher.decrypt(nonce, sealed, self._aad)
            except InvalidTag:
                continue
            break
        else:
            raise InvalidValue("does not decrypt with SECRET_KEY or SECRET_KEY_FALLBACKS")
        (issued,) = _TIME.unpack_from(plaintext)
        age = int(self._clock()) - issued
        # As itsdangerous's TimestampSigner does for signed cookies.
        if max_age is not None and (age < 0 or age > max_age):
            raise InvalidValue(f"expired or from the future (age {age}s)")
        try:
            return plaintext[_TIME.size :].decode("utf-8")
        except UnicodeDecodeError:  # pragma: no cover - only this class encrypts
            raise InvalidValue("payload is not UTF-8") from None
