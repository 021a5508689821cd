"""A store that implements only the core protocol serves every request; administration says
clearly that it needs the administration protocol."""

from __future__ import annotations

from collections.abc import Collection, Mapping

import pytest
from flask import Flask

from flask_keepsake import Keepsake, KeepsakeError
from flask_keepsake.cli import keepsake_cli
from flask_keepsake.stores import AdminStore, MemoryStore, Store
from flask_keepsake.stores.base import Outcome, Rotated, SessionRecord, Touch

from .conftest import add_routes

#: The core protocol: what a new store must implement to serve requests.
CORE = {
    "create",
    "load",
    "apply",
    "touch",
    "rename",
    "delete",
    "purge_expired",
    "put_marker",
    "get_marker",
}
ADMIN = {
    "list_user",
    "delete_user",
    "delete_handle",
    "count",
    "count_expired",
    "user_counts",
    "delete_all",
}


class CoreOnly(Store):
    """The core protocol and nothing else, in front of a real MemoryStore."""

    name = "core-only"

    def __init__(self) -> None:
        self.inner = MemoryStore()

    def create(self, record: SessionRecord) -> None:
        self.inner.create(record)

    def load(self, key: str, now: float) -> SessionRecord | Rotated | None:
        return self.inner.load(key, now)

    def apply(
        self,
        key: str,
        changed: Mapping[str, str],
        deleted: Collection[str],
        now: float,
        touch: Touch | None = None,
    ) -> Outcome:
        return self.inner.apply(key, changed, deleted, now, touch)

    def touch(self, key: str, touch: Touch, now: float) -> Outcome:
        return self.inner.touch(key, touch, now)

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
        return self.inner.rename(
            old_key, record, now, changed=changed, deleted=deleted, grace=grace
        )

    def delete(self, key: str) -> bool:
        return self.inner.delete(key)

    def purge_expired(self, now: float, batch_size: int = 1000) -> int:
        return self.inner.purge_expired(now, batch_size)

    def put_marker(
        self, name: str, value: str, expires_at: float, now: float, *, replace: bool = True
    ) -> bool:
        return self.inner.put_marker(name, value, expires_at, now, replace=replace)

    def get_marker(self, name: str, now: float) -> str | None:
        return self.inner.get_marker(name, now)


def test_the_core_protocol_is_what_serving_needs() -> None:
    assert Store.__abstractmethods__ == CORE
    assert AdminStore.__abstractmethods__ == CORE | ADMIN


def test_every_shipped_store_implements_administration() -> None:
    from flask_keepsake.stores import RedisStore, SQLiteStore

    for cls in (MemoryStore, SQLiteStore, RedisStore):
        assert issubclass(cls, AdminStore), cls


@pytest.fixture
def app() -> Flask:
    app = Flask(__name__)
    app.config.update(
        TESTING=True, SECRET_KEY="core-secret-0123456789abcdef0123", KEEPSAKE_COOKIE_SECURE=False
    )
    keepsake = Keepsake(app, store=CoreOnly())
    add_routes(app, keepsake)

    @app.get("/sessions")
    def sessions() -> str:
        return str(len(keepsake.sessions()))

    @app.post("/revoke-all")
    def revoke_all() -> str:
        return str(keepsake.revoke_all())

    @app.errorhandler(KeepsakeError)
    def refused(exc: KeepsakeError) -> tuple[str, int]:
        return str(exc), 501

    return app


def test_requests_logins_and_logouts_work(app: Flask) -> None:
    client = app.test_client()
    client.post("/set/cart", data="3 apples")
    client.post("/login/ada")
    assert client.get("/whoami").text == "ada"
    assert client.get("/get/cart").text == "'3 apples'"
    client.post("/logout")
    assert client.get("/whoami").text == "anonymous"
    assert client.get("/get/cart").text == "None"


def test_listing_and_revoking_name_the_missing_protocol(app: Flask) -> None:
    client = app.test_client()
    client.post("/login/ada")
    for path, method in (("/sessions", client.get), ("/revoke-all", client.post)):
        reply = method(path)
        assert reply.status_code == 501
        assert "AdminStore" in reply.text
        assert "KEEPSAKE_STORE" in reply.text
        assert "core-only" in reply.text
    assert client.get("/whoami").text == "ada"  # nothing was revoked


def test_cli_says_so_and_cleanup_still_runs(app: Flask) -> None:
    runner = app.test_cli_runner()
    for args in (["stats"], ["list", "--user", "ada"], ["revoke", "--all", "--yes"]):
        result = runner.invoke(keepsake_cli, args)
        assert result.exit_code == 1, (args, result.output)
        assert "AdminStore" in result.output
        assert "Traceback" not in result.output
    result = runner.invoke(keepsake_cli, ["cleanup"])
    assert result.exit_code == 0, result.output
    assert "Purged 0 expired sessions" in result.output
