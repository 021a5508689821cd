"""The :class:`Keepsake` extension: ``init_app`` and the session lifecycle API."""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from flask import current_app, g
from flask.globals import request_ctx

from . import signals
from .cli import keepsake_cli
from .config import Settings
from .cookies import CookieRegistry, DeclaredCookie, current_jar, init_cookies
from .errors import NotInitialized, StoreUnavailable
from .interface import Engine, KeepsakeSessionInterface
from .session import ServerSession, _UnloadedSession
from .store_url import store_from_url

if TYPE_CHECKING:
    from collections.abc import Iterable

    from flask import Flask, Response
    from werkzeug.wrappers import Response as BaseResponse

    from .consent import Consent
    from .cookies import CookiePolicyEntry, SameSite
    from .stores.base import SessionRecord, Store

logger = logging.getLogger("flask_keepsake")
security_logger = logging.getLogger("flask_keepsake.security")


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One session of a user, as :meth:`Keepsake.sessions` lists it. Never holds the token."""

    #: The public id of the session, for pages and URLs ("revoke this device").
    handle: str
    user_id: str | None
    created: datetime
    last_seen: datetime
    #: When the session ends if nothing happens: the earlier of idle and absolute expiry.
    expires: datetime
    #: When the session ends whatever happens (absolute timeout).
    absolute_expires: datetime
    auth_time: datetime | None
    ip: str | None
    user_agent: str | None
    #: Whether this is the session of the current request.
    current: bool


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class Keepsake:
    """Server-side sessions for Flask.

    ::

        keepsake = Keepsake(app)            # or Keepsake(), then keepsake.init_app(app)

    :param app: the application to set up now, or ``None`` to call :meth:`init_app` later.
    :param store: a store instance to use instead of ``KEEPSAKE_STORE`` (shared by every app
        this extension is initialised on).
    :param clock: returns the current time in epoch seconds; tests inject a fake one.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        store: Store | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._clock = clock
        # Declarations belong to the extension, like a blueprint's routes: every app it serves
        # has the same cookies. Per-app state (keys, consent settings) is the CookieJar in
        # app.extensions["keepsake_cookies"].
        self._cookies = CookieRegistry()
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Read and check the configuration of ``app`` and install the session interface.

        Raises :class:`~flask_keepsake.errors.ConfigError` naming the key on a mistake.
        """
        settings = Settings.from_app(app)
        store = self._store if self._store is not None else store_from_url(settings.store_url, app)
        if store.name == "memory" and not (app.debug or app.testing):
            logger.warning(
                "KEEPSAKE_STORE is memory://: sessions live in this one process and vanish on "
                "restart. Use the SQLite default or redis:// in production."
            )
        engine = Engine(settings, store, self._clock)
        if importlib.util.find_spec("flask_wtf") is not None:
            engine.csrf_field = app.config.get("WTF_CSRF_FIELD_NAME", "csrf_token")
        app.extensions["keepsake"] = engine
        app.session_interface = KeepsakeSessionInterface()
        app.register_error_handler(StoreUnavailable, _store_unavailable)
        app.cli.add_command(keepsake_cli)

        from .integrations import connect_flask_login

        connect_flask_login(app, self)
        logger.debug("Keepsake set up for %r with %s.", app.name, store.describe())
        init_cookies(app, engine, self._cookie_registry())

    # -- helpers ---------------------------------------------------------------------------

    @staticmethod
    def _engine() -> Engine:
        engine = current_app.extensions.get("keepsake")
        if not isinstance(engine, Engine):
            raise NotInitialized(
                f"Keepsake is not set up on the application {current_app.name!r}: call "
                "Keepsake(app) or keepsake.init_app(app) first."
            )
        return engine

    def _session(self) -> tuple[Engine, ServerSession]:
        engine = self._engine()
        ctx = request_ctx._get_current_object()  # type: ignore[attr-defined]
        session = ctx.session
        if not isinstance(session, ServerSession):
            raise NotInitialized(
                "The current session is not a Keepsake session: was app.session_interface "
                "replaced after init_app?"
            )
        if type(session) is _UnloadedSession:
            assert session._loader is not None
            session._loader(session)
        return engine, session

    @property
    def store(self) -> Store:
        """The store of the current application."""
        return self._engine().store

    # -- lifecycle -------------------------------------------------------------------------

    def login(self, user_id: str | int, *, fresh: bool = True) -> None:
        """Bind the current session to ``user_id`` after the user authenticated.

        At the end of the request the session gets a new token (the old cookie stops working,
        which defeats session fixation), keeps its data, records the authentication time (when
        ``fresh``) and the device, and restarts its absolute timeout. Flask-WTF's CSRF token is
        rotated. Flask-Login's ``login_user`` calls this for you.
        """
        engine, session = self._session()
        session._user_id = str(user_id)
        session._auth_time = engine.clock() if fresh else None
        session._rotate = "login"
        self._drop_csrf(engine, session)

    def logout(self) -> None:
        """End the current session now: delete its record and remove the cookie.

        Anything written to ``session`` afterwards in this request (a flash message) goes into
        a new anonymous session. Flask-Login's ``logout_user`` calls this for you.
        """
        engine, session = self._session()
        record = session._record
        if record is not None:
            engine.store.delete(record.key)
        self._reset(session)
        self._drop_csrf(engine, session)
        if record is not None:
            signals.session_destroyed.send(
                current_app._get_current_object(),  # type: ignore[attr-defined]
                handle=record.handle,
                user_id=record.user_id,
                reason="logout",
            )

    def regenerate(self) -> None:
        """Give the current session a new token at the end of the request, keeping its data.

        Call it on any privilege change that is not a login (for example, after sudo mode).
        """
        _, session = self._session()
        if session._rotate is None:
            session._rotate = "regenerate"

    def is_fresh(self, max_age: timedelta | float) -> bool:
        """Whether the user of the current session authenticated within ``max_age``.

        Use it to ask for the password again before sensitive actions (step-up).
        """
        engine, session = self._session()
        if session._auth_time is None:
            return False
        limit = max_age.total_seconds() if isinstance(max_age, timedelta) else float(max_age)
        return engine.clock() - session._auth_time <= limit

    @property
    def current_user_id(self) -> str | None:
        """The user the current session is bound to, or ``None``."""
        return self._session()[1]._user_id

    @property
    def current_handle(self) -> str | None:
        """The public handle of the current stored session, or ``None``."""
        return self._session()[1].handle

    def current_session(self) -> SessionInfo | None:
        """The stored session of this request (anonymous or not), or ``None`` if none is stored
        yet. For "what the server keeps for you" pages; it never holds the token."""
        _, session = self._session()
        record = session._record
        return None if record is None else self._info(record, True)

    def sessions(self, user_id: str | int | None = None) -> list[SessionInfo]:
        """List the live sessions of ``user_id`` (default: the current user), oldest first."""
        engine, uid, current_key = self._target(user_id)
        if uid is None:
            return []
        records = engine.store.list_user(uid, engine.clock())
        return [self._info(r, r.key == current_key) for r in records]

    def revoke(self, handle: str, *, user_id: str | int | None = None) -> bool:
        """End the session whose public handle is ``handle``; return whether one ended.

        Pass ``user_id`` (for example the current user's) so that a user can only end their own
        sessions; without it any session with that handle ends (for administrators).
        """
        engine = self._engine()
        uid = None if user_id is None else str(user_id)
        key = engine.store.delete_handle(handle, engine.clock(), user_id=uid)
        if key is None:
            return False
        security_logger.info("Session %s revoked.", handle)
        signals.session_revoked.send(
            current_app._get_current_object(),  # type: ignore[attr-defined]
            handle=handle,
            user_id=uid,
            count=1,
        )
        session = self._current_session_or_none()
        if session is not None and session._record is not None and session._record.key == key:
            self._reset(session)
        return True

    def revoke_all(self, user_id: str | int | None = None, *, keep_current: bool = True) -> int:
        """End every session of ``user_id`` (default: the current user); return how many.

        With ``keep_current`` the session of this request survives (a password change).
        """
        engine, uid, current_key = self._target(user_id)
        if uid is None:
            return 0
        except_key = current_key if keep_current else None
        count = engine.store.delete_user(uid, engine.clock(), except_key=except_key)
        security_logger.info("%d session(s) of user %s revoked.", count, uid)
        signals.session_revoked.send(
            current_app._get_current_object(),  # type: ignore[attr-defined]
            handle=None,
            user_id=uid,
            count=count,
        )
        session = self._current_session_or_none()
        if (
            not keep_current
            and session is not None
            and session._record is not None
            and session._record.key == current_key
        ):
            self._reset(session)
        return count

    # -- internals -------------------------------------------------------------------------

    def _target(self, user_id: str | int | None) -> tuple[Engine, str | None, str | None]:
        engine = self._engine()
        session = self._current_session_or_none()
        current_key = None
        if session is not None and session._record is not None:
            current_key = session._record.key
        if user_id is not None:
            return engine, str(user_id), current_key
        return engine, session._user_id if session is not None else None, current_key

    def _current_session_or_none(self) -> ServerSession | None:
        if request_ctx:
            return self._session()[1]
        return None

    @staticmethod
    def _info(record: SessionRecord, current: bool) -> SessionInfo:
        return SessionInfo(
            handle=record.handle,
            user_id=record.user_id,
            created=_dt(record.created),
            last_seen=_dt(record.last_seen),
            expires=_dt(record.expires_at),
            absolute_expires=_dt(record.absolute_expires_at),
            auth_time=None if record.auth_time is None else _dt(record.auth_time),
            ip=record.ip,
            user_agent=record.user_agent,
            current=current,
        )

    @staticmethod
    def _reset(session: ServerSession) -> None:
        dict.clear(session)
        session.modified = True
        session.new = True
        session._record = None
        session._token = None
        session._loaded = {}
        session._decoded = ({}, {})
        session._rotate = None
        session._user_id = None
        session._auth_time = None
        # The browser still holds the old cookie: remove it unless a new session replaces it.
        session._stale_cookie = True

    @staticmethod
    def _drop_csrf(engine: Engine, session: ServerSession) -> None:
        field = engine.csrf_field
        if field is None:
            return
        # Flask-WTF keeps the raw CSRF secret in the session and the signed token in g; both
        # must go so that a token seen before login is useless after it.
        session.pop(field, None)
        g.pop(field, None)

    # -- declared cookies ------------------------------------------------------------------

    def _cookie_registry(self) -> CookieRegistry:
        return self._cookies

    def cookie(
        self,
        name: str,
        *,
        purpose: str,
        category: str,
        max_age: timedelta | int | None = None,
        signed: bool = False,
        encrypted: bool = False,
        http_only: bool = True,
        secure: bool = True,
        same_site: SameSite = "Lax",
        path: str = "/",
        domain: str | None = None,
        partitioned: bool = False,
        prefix: bool = True,
    ) -> DeclaredCookie:
        """Declare a cookie once; set, read and delete it through what this returns.

        ::

            theme = keepsake.cookie("theme", purpose="Remembers your colour theme",
                                    category="preferences", max_age=timedelta(days=365))
            theme.set(response, "dark");  theme.get();  theme.delete(response)

        Declare at module level, next to ``Keepsake()``: the declaration is shared by every
        application this extension is set up on. It is checked now against RFC 6265bis, and
        against each application (``SECRET_KEY``, categories, names) now or at ``init_app``.

        :param name: the cookie's name, an RFC 6265bis token. Over HTTPS it is sent with the
            ``__Host-`` prefix (``__Secure-`` with a ``domain`` or a ``path`` other than ``/``)
            unless ``prefix=False`` or the name already has a prefix.
        :param purpose: why the cookie exists, in a sentence, for the cookie policy.
        :param category: ``"essential"`` (always allowed), ``"preferences"``, ``"analytics"``,
            ``"marketing"`` or one of ``KEEPSAKE_CONSENT_CATEGORIES``; any but essential is only
            set and read with the visitor's consent.
        :param max_age: lifetime (at most 400 days); ``None`` until the browser closes. Signed
            and encrypted values older than this are refused even if a client kept them.
        :param signed: tamper-evident with ``SECRET_KEY`` (readable by the client).
        :param encrypted: unreadable and tamper-proof (AES-GCM) with ``SECRET_KEY``.
        :param http_only: keep it from page scripts; pass ``False`` only if script must read it.
        :param secure: only over HTTPS; ``False`` also forbids prefix, ``SameSite=None`` and
            ``Partitioned``.
        :param same_site: ``"Lax"``, ``"Strict"`` or ``"None"`` (needs ``secure``).
        :param path: the ``Path`` attribute.
        :param domain: the ``Domain`` attribute; ``None`` (the default) keeps the cookie on this
            exact host.
        :param partitioned: CHIPS partitioned storage, for cookies used in a third-party frame.
        :param prefix: add the ``__Host-``/``__Secure-`` prefix to the name over HTTPS.
        :raise CookieDeclarationError: the declaration breaks a rule or repeats a name.
        :raise ConfigError: an application it is set up on cannot serve it (names the key).
        """
        registry = self._cookie_registry()
        declared = DeclaredCookie(
            name,
            purpose=purpose,
            category=category,
            max_age=max_age,
            signed=signed,
            encrypted=encrypted,
            http_only=http_only,
            secure=secure,
            same_site=same_site,
            path=path,
            domain=domain,
            partitioned=partitioned,
            prefix=prefix,
            registry=registry,
        )
        registry.declare(declared)
        return declared

    def cookie_policy(self) -> list[CookiePolicyEntry]:
        """Every cookie of the current application, for a cookie policy page.

        The session cookie first, then Flask-Login's remember-me cookie (if Flask-Login is set
        up), the consent cookie, and the declared cookies in the order they were declared.
        """
        return current_jar().policy()

    def consent(self) -> Consent:
        """The current visitor's consent by category (``decided`` is False before any choice).

        The response then varies on ``Cookie`` (it may show a banner to some visitors only).
        """
        return current_jar().consent(for_page=True)

    def set_consent(self, response: BaseResponse, categories: Iterable[str]) -> Consent:
        """Record on ``response`` that the visitor allows ``categories`` (and ``essential``).

        Replaces the previous choice. Cookies of categories no longer allowed are deleted on this
        response; unknown category names (client input) are ignored and logged. The new consent
        applies at once: a cookie set later in this request sees it.
        """
        return current_jar().set_consent(response, categories)


def _store_unavailable(exc: StoreUnavailable) -> Response:
    logger.error("Session store unavailable: %s", exc)
    engine: Engine = current_app.extensions["keepsake"]
    return engine.unavailable_response(current_app._get_current_object())  # type: ignore[attr-defined]
