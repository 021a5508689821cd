"""The exceptions Keepsake raises.

One root, :class:`KeepsakeError`. Operator mistakes raise :class:`ConfigError` at start-up with a
message that names the configuration key. Client input never raises: a bad cookie becomes a fresh
anonymous session and a warning on the ``flask_keepsake.security`` logger.
"""

from __future__ import annotations


class KeepsakeError(Exception):
    """Base class of every error Keepsake raises on purpose."""


class ConfigError(KeepsakeError, ValueError):
    """The configuration is wrong; the message names the key and the fix.

    :param key: the configuration key (for example ``"KEEPSAKE_STORE"``).
    :param message: what is wrong and how to fix it.
    """

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(f"{key}: {message}")


class StoreUnavailable(KeepsakeError):
    """The session store could not be reached or did not answer in time.

    Every backend error is wrapped in this one type, so the application needs a single handler.
    Keepsake turns it into ``503 Service Unavailable`` with a ``Retry-After`` header.
    """


class SessionTooLarge(KeepsakeError):
    """The session's serialized data exceeds ``KEEPSAKE_MAX_SESSION_BYTES``.

    Raised when the session is saved; the stored session is left as it was.
    """

    def __init__(self, size: int, limit: int, largest: list[tuple[str, int]]) -> None:
        self.size = size
        self.limit = limit
        self.largest = largest
        keys = ", ".join(f"{k!r} ({n} bytes)" for k, n in largest)
        super().__init__(
            f"The session holds {size} bytes of serialized data, more than "
            f"KEEPSAKE_MAX_SESSION_BYTES ({limit}). Largest keys: {keys}. Keep large data in your "
            "database and only its id in the session, or raise KEEPSAKE_MAX_SESSION_BYTES. "
            "The stored session was left unchanged."
        )


class NotInitialized(KeepsakeError, RuntimeError):
    """Keepsake was used on an application before ``init_app`` ran for it."""
