"""Helpers for an application's own tests (and Keepsake's): a signed-in client, a fake clock, a
store spy, and real servers to test against (:mod:`flask_keepsake.testing.servers`).

::

    from flask_keepsake.testing import login_client

    def test_profile(app):
        client = app.test_client()
        login_client(client, user_id=42)
        assert client.get("/profile").status_code == 200
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any, Final

from .. import serialize
from ..errors import NotInitialized, StoreUnavailable
from ..interface import engine_of
from ..stores.base import AdminStore, Outcome, Rotated, SessionRecord, Store, Touch, admin_store
from ..tokens import new_token, storage_key

if TYPE_CHECKING:
    from flask.testing import FlaskClient


def login_client(
    client: FlaskClient,
    user_id: str | int,
    *,
    data: dict[str, Any] | None = None,
    fresh: bool = True,
) -> str:
    """Sign ``client`` in as ``user_id`` without going through the login form.

    Stores a session bound to the user (with ``data`` in it) and gives the client its cookie. If
    the application uses Flask-Login, the session also holds Flask-Login's ``_user_id`` and
    ``_fresh`` keys, so ``current_user`` is that user. Returns the session's public handle.
    """
    app = client.application
    try:
        engine = engine_of(app)
    except NotInitialized as exc:
        raise RuntimeError(
            f"login_client needs an application set up with Keepsake: {exc}"
        ) from None
    values = dict(data or {})
    if hasattr(app, "login_manager"):
        values.setdefault("_user_id", str(user_id))
        values.setdefault("_fresh", fresh)
    token = new_token()
    now = engine.clock()
    record = engine.new_record(
        app,
        storage_key(token),
        {k: serialize.dumps(v, k) for k, v in values.items()},
        now,
        None,
        str(user_id),
        now if fresh else None,
    )
    record.ip = "127.0.0.1"
    record.user_agent = "flask_keepsake.testing"
    engine.store.create(record)
    with app.test_request_context("/"):
        from flask import request

        cookie = engine.cookie(app, request)
    client.set_cookie(cookie.name, token, path=cookie.path, domain=cookie.domain or "localhost")
    return record.handle


#: Where :class:`FakeClock` starts: far from the real time, so code that reads the system clock
#: instead of the injected one shows.
START = 1_800_000_000.0


class FakeClock:
    """A clock that only moves when a test says so: ``Keepsake(app, clock=FakeClock())``."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


#: The methods of the core store protocol.
_CORE: Final = frozenset(Store.__abstractmethods__) | {"close", "describe", "log_unreadable"}


class StoreSpy(AdminStore):
    """Wraps a real store: counts calls per method and can be switched off to simulate outages.

    For tests that check how many store calls a request makes, or what happens when the
    store fails::

        spy = StoreSpy(MemoryStore())
        Keepsake(app, store=spy)
        client.get("/")
        assert spy.calls == {"load": 1}
        spy.down = True          # every call now raises StoreUnavailable
    """

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.name = inner.name
        self.calls: Counter[str] = Counter()
        self.down = False
        #: Methods that fail as if the store went down just for them.
        self.fail_on: set[str] = set()

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        self.calls[method] += 1
        if self.down or method in self.fail_on:
            raise StoreUnavailable(f"{self.name} is down (simulated)")
        # The administration calls need them of the wrapped store too (a spy on a store that
        # implements only the core protocol answers them as that store would be answered).
        inner = self.inner if method in _CORE else admin_store(self.inner, f"Store.{method}()")
        return getattr(inner, method)(*args, **kwargs)

    @property
    def writes(self) -> int:
        """Number of calls that may write."""
        reads = {"load", "list_user", "count", "user_counts", "get_marker", "count_expired"}
        return sum(n for m, n in self.calls.items() if m not in reads)

    def reset(self) -> None:
        self.calls.clear()

    def create(self, record: SessionRecord) -> None:
        self._call("create", record)

    def load(self, key: str, now: float) -> SessionRecord | Rotated | None:
        result: SessionRecord | Rotated | None = self._call("load", key, now)
        return result

    def apply(
        self,
        key: str,
        changed: Mapping[str, str],
        deleted: Collection[str],
        now: float,
        touch: Touch | None = None,
    ) -> Outcome:
        result: Outcome = self._call("apply", key, changed, deleted, now, touch)
        return result

    def touch(self, key: str, touch: Touch, now: float) -> Outcome:
        result: Outcome = self._call("touch", key, touch, now)
        return result

    def rename(
        self,
        old_key: str,
        record: SessionRecord,
        now: float,
        *,
        changed: Mapping[str, str] | None = None,
        deleted: Collection[str] = (),
        grace: float = 0.0,
    ) -> Outcome:
        result: Outcome = self._call(
            "rename", old_key, record, now, changed=changed, deleted=deleted, grace=grace
        )
        return result

    def delete(self, key: str) -> bool:
        return bool(self._call("delete", key))

    def list_user(self, user_id: str, now: float) -> list[SessionRecord]:
        result: list[SessionRecord] = self._call("list_user", user_id, now)
        return result

    def delete_user(self, user_id: str, now: float, *, except_key: str | None = None) -> int:
        return int(self._call("delete_user", user_id, now, except_key=except_key))

    def delete_handle(
        self, handle: str, now: float, *, user_id: str | None = None
    ) -> tuple[str, str | None] | None:
        result: tuple[str, str | None] | None = self._call(
            "delete_handle", handle, now, user_id=user_id
        )
        return result

    def purge_expired(self, now: float, batch_size: int = 1000) -> int:
        return int(self._call("purge_expired", now, batch_size))

    def put_marker(
        self, name: str, value: str, expires_at: float, now: float, *, replace: bool = True
    ) -> bool:
        return bool(self._call("put_marker", name, value, expires_at, now, replace=replace))

    def get_marker(self, name: str, now: float) -> str | None:
        result: str | None = self._call("get_marker", name, now)
        return result

    def count(self, now: float) -> int:
        return int(self._call("count", now))

    def count_expired(self, now: float) -> int:
        return int(self._call("count_expired", now))

    def user_counts(self, now: float, limit: int) -> list[tuple[str, int]]:
        result: list[tuple[str, int]] = self._call("user_counts", now, limit)
        return result

    def delete_all(self) -> int:
        return int(self._call("delete_all"))

    def close(self) -> None:
        self.inner.close()
