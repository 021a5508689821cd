"""Session tokens, storage keys and public handles.

The cookie carries a token: 32 bytes from :mod:`secrets`, base64url without padding (43
characters). The store only ever sees the SHA-256 digest of it, so a copy of the store does not
yield a working cookie. The public *handle* is a separate random id, never derived from the token,
that names a session in pages and URLs.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

TOKEN_BYTES = 32
TOKEN_LENGTH = 43

# 32 bytes are 256 bits; 43 base64url characters hold 258, so the last character carries two
# zero bits and can only be one of 16 letters. Checking that rejects every non-canonical
# spelling of a token, so one token has exactly one cookie value.
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]")

# A per-process salt for log fingerprints: lets an operator correlate log lines about one cookie
# without the log ever containing (or allowing an offline search for) the token itself.
_LOG_SALT = secrets.token_bytes(16)


def new_token() -> str:
    """Return a new random session token (43 characters, 256 bits)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def is_token(value: str) -> bool:
    """Whether ``value`` has exactly the shape of a token Keepsake issues."""
    return len(value) == TOKEN_LENGTH and _TOKEN_RE.fullmatch(value) is not None


def storage_key(token: str) -> str:
    """Return the storage key of ``token``: its SHA-256 digest in hex."""
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def new_handle() -> str:
    """Return a new public session handle (16 characters, 96 random bits)."""
    return secrets.token_urlsafe(12)


def fingerprint(value: str) -> str:
    """Return a salted, truncated digest of a cookie value for log lines (never the value)."""
    digest = hmac.new(_LOG_SALT, value.encode("utf-8", "surrogateescape"), hashlib.sha256)
    return digest.hexdigest()[:12]
