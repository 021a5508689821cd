"""The :class:`Keepsake` extension: ``init_app`` and the session lifecycle API.

``Keepsake`` is what ``app.extensions["keepsake"]`` holds. The per-application state, the
:class:`~flask_keepsake.engine.Engine`, belongs to the application's session interface, so the
extension never holds an application and an application is freed when its last reference goes.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING

from flask import current_app, got_request_exception

from .config import Settings
from .cookies import CookieRegistry, DeclaredCookie, current_jar, init_cookies
from .engine import Engine, SessionCookie, SessionInfo, session_info
from .errors import KeepsakeError, NotInitialized, StoreUnavailable
from .interface import KeepsakeSessionInterface, engine_of
from .session import current_session, quiet_from_now, state_of
from .store_url import store_from_url

if TYPE_CHECKING:
    from collections.abc import Iterable

    from flask import Flask, Response
    from werkzeug.wrappers import Response as BaseResponse

    from .cookies import Consent, CookiePolicyEntry, SameSite
    from .session import ServerSession
    from .stores.base import Store

logger = logging.getLogger("flask_keepsake")
security_logger = logging.getLogger("flask_keepsake.security")


class Keepsake:
    """Server-side sessions for Flask.

    ::

        keepsake = Keepsake(app)            # or Keepsake(), then keepsake.init_app(app)

    :param app: the application to set up now, or ``None`` to call :meth:`init_app` later.
    :param store: a store instance to use instead of ``KEEPSAKE_STORE`` (shared by every app
        this extension is initialised on).
    :param clock: returns the current time in epoch seconds; tests inject a fake one.
    :param session_interface: the session interface class to install, a subclass of
        :class:`~flask_keepsake.interface.KeepsakeSessionInterface` that overrides some of
        Flask's hooks (``get_cookie_name``, ``should_set_cookie``, ...).
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        store: Store | None = None,
        clock: Callable[[], float] = time.time,
        session_interface: type[KeepsakeSessionInterface] = KeepsakeSessionInterface,
    ) -> None:
        if not (
            isinstance(session_interface, type)
            and issubclass(session_interface, KeepsakeSessionInterface)
        ):
            raise TypeError("session_interface must be a KeepsakeSessionInterface subclass")
        self._store = store
        self._clock = clock
        self._interface = session_interface
        # Declarations belong to the extension, like a blueprint's routes: every app it serves
        # has the same cookies. Per-app state (keys, consent settings) is each app's CookieJar.
        self._cookies = CookieRegistry()
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Read and check the configuration of ``app`` and install the session interface.

        Raises :class:`~flask_keepsake.errors.ConfigError` naming the key on a mistake, and
        :class:`~flask_keepsake.errors.KeepsakeError` if Keepsake is already set up on ``app``.
        """
        if "keepsake" in app.extensions:
            raise KeepsakeError(
                f"Keepsake is already set up on the application {app.name!r}; call "
                "Keepsake(app) or init_app(app) once per application."
            )
        settings = Settings.from_app(app)
        store = self._store if self._store is not None else store_from_url(settings.store_url, app)
        if store.name == "memory" and not (app.debug or app.testing):
            logger.warning(
                "KEEPSAKE_STORE is memory://: sessions live in this one process and vanish on "
                "restart. Use the SQLite default or redis:// in production."
            )
        engine = Engine(settings, store, self._clock, app)
        if importlib.util.find_spec("flask_wtf") is not None:
            engine.csrf_field = app.config.get("WTF_CSRF_FIELD_NAME", "csrf_token")
        app.extensions["keepsake"] = self
        app.session_interface = self._interface(engine)
        app.register_error_handler(StoreUnavailable, _store_unavailable)
        # Module-level and connected once for every app: nothing here holds the application.
        got_request_exception.connect(_request_failed)

        from .cli import keepsake_cli
        from .integrations import connect_flask_login

        app.cli.add_command(keepsake_cli)
        connect_flask_login(app, engine)
        logger.debug("Keepsake set up for %r with %s.", app.name, store.describe())
        init_cookies(app, engine, self._cookies)

    # -- helpers ---------------------------------------------------------------------------

    @staticmethod
    def _engine() -> Engine:
        return engine_of(current_app)

    def _session(self) -> tuple[Engine, ServerSession]:
        engine = self._engine()
        session = current_session()
        if session is None:
            raise NotInitialized(
                "There is no Keepsake session here: this needs a request of an application "
                "set up with Keepsake (was app.session_interface replaced after init_app?)."
            )
        return engine, session

    @property
    def store(self) -> Store:
        """The store of the current application."""
        return self._engine().store

    @property
    def settings(self) -> Settings:
        """The validated ``KEEPSAKE_*`` settings of the current application."""
        return self._engine().settings

    def session_cookie(self, *, production: bool = False) -> SessionCookie:
        """The session cookie's name and attributes as the current request gets them.

        With ``production``, as a request over HTTPS gets them, without the plain-HTTP loopback
        exception of debug mode (``KEEPSAKE_COOKIE_SECURE = "auto"``).
        """
        from flask import has_request_context, request

        engine = self._engine()
        return engine.cookie(
            engine.app, None if production or not has_request_context() else request
        )

    # -- lifecycle -------------------------------------------------------------------------

    def login(self, user_id: str | int, *, fresh: bool = True, remember: bool = False) -> None:
        """Bind the current session to ``user_id`` after the user authenticated.

        At the end of the request the session gets a new token (the old cookie stops working,
        which defeats session fixation), keeps its data (including anything another request
        wrote meanwhile), records the authentication time (when ``fresh``) and the device, and
        starts a new lifetime. Flask-WTF's CSRF token is rotated. Flask-Login's ``login_user``
        calls this for you. User ids are stored as strings: ``login(1)`` binds the user ``"1"``.

        :param fresh: the user just proved who they are (a password, not a remember-me grant).
        :param remember: make it a persistent session ("keep me signed in on this device"):
            its cookie outlives the browser and it lasts ``PERMANENT_SESSION_LIFETIME`` without
            use, at most ``KEEPSAKE_PERMANENT_ABSOLUTE_TIMEOUT``. It is kept with the session,
            apart from ``session.permanent``, which also makes a session persistent.
        """
        engine, session = self._session()
        engine.login(session, user_id, fresh=fresh, remember=remember)

    def logout(self) -> None:
        """End the current session now: delete its record and remove the cookie.

        Anything written to ``session`` afterwards in this request (a flash message) goes into
        a new anonymous session. Remember-me grants of the user issued before now stop working.
        Flask-Login's ``logout_user`` calls this for you.
        """
        engine, session = self._session()
        engine.logout(engine.app, session)

    def regenerate(self) -> None:
        """Give the current session a new token at the end of the request, keeping its data.

        Call it on any privilege change that is not a login (for example, after sudo mode).
        """
        engine, session = self._session()
        engine.regenerate(session)

    def is_fresh(self, max_age: timedelta | float | None = None) -> bool:
        """Whether the user of the current session signed in during this sitting.

        False for a session restored from a remember-me grant, and for a persistent session
        that comes back after more than ``KEEPSAKE_IDLE_TIMEOUT`` without use, until the next
        :meth:`login`. With ``max_age``, also whether that sign-in was at most ``max_age`` ago.
        Use it to ask for the password again before sensitive actions (step-up).
        """
        engine, session = self._session()
        return engine.is_fresh(session, max_age)

    @property
    def current_user_id(self) -> str | None:
        """The user the current session is bound to (a string), or ``None``."""
        return self._session()[1].user_id

    @property
    def current_handle(self) -> str | None:
        """The public handle of the current stored session, or ``None``."""
        return self._session()[1].handle

    def current_session(self) -> SessionInfo | None:
        """The stored session of this request (anonymous or not), or ``None`` if none is stored
        yet. For "what the server keeps for you" pages; it never holds the token."""
        _, session = self._session()
        record = state_of(session).record
        return None if record is None else session_info(record, True)

    def sessions(self, user_id: str | int | None = None) -> list[SessionInfo]:
        """List the live sessions of ``user_id`` (default: the current user), oldest first."""
        engine = self._engine()
        return engine.sessions(user_id, current_session())

    def revoke(self, handle: str, *, user_id: str | int | None = None) -> bool:
        """End the session whose public handle is ``handle``; return whether one ended.

        Pass ``user_id`` (for example the current user's) so that a user can only end their own
        sessions; without it any session with that handle ends (for administrators). A
        remembered device is signed out at once; the user's remember-me grants issued before
        now stop working.
        """
        engine = self._engine()
        return engine.revoke(handle, user_id, current_session())

    def revoke_all(self, user_id: str | int | None = None, *, keep_current: bool = True) -> int:
        """End every session of ``user_id`` (default: the current user); return how many.

        With ``keep_current`` the session of this request survives (a password change). Every
        remember-me grant of the user issued before now stops working, on every device.
        """
        engine = self._engine()
        return engine.revoke_user(user_id, current_session(), keep_current=keep_current)

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
        httponly: bool = True,
        secure: bool = True,
        samesite: SameSite = "Lax",
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
        :param httponly: keep it from page scripts; pass ``False`` only if script must read it.
        :param secure: only over HTTPS; ``False`` also forbids prefix, ``SameSite=None`` and
            ``Partitioned``.
        :param samesite: ``"Lax"``, ``"Strict"`` or ``"None"`` (needs ``secure``).
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
            httponly=httponly,
            secure=secure,
            samesite=samesite,
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


def _request_failed(sender: Flask, exception: BaseException, **extra: object) -> None:
    # Flask renders its 500 page next; if that page is the first to read the session while the
    # store is down, the failure must not escape Flask (it would reach the WSGI server).
    quiet_from_now()


def _store_unavailable(exc: StoreUnavailable) -> Response:
    logger.error("Session store unavailable: %s", exc)
    engine = engine_of(current_app)
    return engine.unavailable_response(engine.app)
