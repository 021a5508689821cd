"""Blinker signals for the life of a session.

Every signal is sent with the application as sender and keyword arguments that never include a
token or a storage key::

    from flask_keepsake.signals import session_revoked

    @session_revoked.connect_via(app)
    def audit(app, handle, user_id, **extra):
        audit_log.info("session %s of user %s revoked", handle, user_id)

Receivers run inside the request (or CLI command) that caused the event; keep them quick.
"""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

#: A new session was stored. Arguments: ``handle``, ``user_id`` (``None`` while anonymous).
session_created = _signals.signal("keepsake-session-created")

#: A session got a new token. Arguments: ``handle`` (the new one), ``old_handle``, ``user_id``,
#: ``reason`` (``"login"`` or ``"regenerate"``).
session_regenerated = _signals.signal("keepsake-session-regenerated")

#: A session ended by logout, or because it was emptied. Arguments: ``handle``, ``user_id``,
#: ``reason`` (``"logout"`` or ``"emptied"``).
session_destroyed = _signals.signal("keepsake-session-destroyed")

#: Sessions were revoked by ``revoke`` or ``revoke_all``. Arguments: ``handle`` (``None`` for
#: ``revoke_all``), ``user_id`` (``None`` when revoked by handle alone), ``count``.
session_revoked = _signals.signal("keepsake-session-revoked")

#: Expired sessions were purged from the store. Arguments: ``count``.
session_expired = _signals.signal("keepsake-session-expired")

__all__ = [
    "session_created",
    "session_destroyed",
    "session_expired",
    "session_regenerated",
    "session_revoked",
]
