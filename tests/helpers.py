"""Shared test helpers: a fake clock, a call-counting store wrapper, cookie parsing."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping
from http.cookies import SimpleCookie
from typing import Any

from flask_keepsake.errors import StoreUnavailable
from flask_keepsake.stores.base import Outcome, Rotated, SessionRecord, Store, Touch

START = 1_800_000_000.0


class FakeClock:
    """A clock that only moves when a test says so."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class SpyStore(Store):
    """Wraps a real store: counts calls per method and can be switched off to simulate outages."""

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
        return getattr(self.inner, method)(*args, **kwargs)

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


def set_cookie_headers(response: Any) -> list[str]:
    """All Set-Cookie header values of a test response."""
    return list(response.headers.getlist("Set-Cookie"))


def parse_set_cookie(header: str) -> tuple[str, str, dict[str, str]]:
    """Split a Set-Cookie header into name, value and lower-cased attributes."""
    first, *rest = header.split(";")
    name, _, value = first.strip().partition("=")
    attrs: dict[str, str] = {}
    for part in rest:
        key, _, val = part.strip().partition("=")
        attrs[key.lower()] = val
    return name, value, attrs


def simple_cookie(header: str) -> SimpleCookie:
    """Parse with the standard library, as a second opinion."""
    cookie: SimpleCookie = SimpleCookie()
    cookie.load(header)
    return cookie
