"""KEEPSAKE_STORE URLs for Redis: schemes, options, and the mistakes refused at start-up."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from flask import Flask

from flask_keepsake.errors import ConfigError
from flask_keepsake.store_url import store_from_url
from flask_keepsake.stores.redis import DEFAULT_SOCKET_TIMEOUT, RedisStore


@pytest.fixture
def opened() -> Iterator[list[RedisStore]]:
    """Stores built by a test, closed after it."""
    stores: list[RedisStore] = []
    yield stores
    for store in stores:
        store.close()


def build(url: str, opened: list[RedisStore]) -> RedisStore:
    """The store ``url`` names (no connection is made)."""
    store = store_from_url(url, Flask(__name__))
    assert isinstance(store, RedisStore)
    opened.append(store)
    return store


def connection_kwargs(store: RedisStore) -> dict[str, object]:
    """What the store's client will connect with."""
    client = store.client
    assert isinstance(client, redis.Redis)
    kwargs: dict[str, object] = client.connection_pool.connection_kwargs
    return kwargs


def test_redis_url_gives_a_redis_store(opened: list[RedisStore]) -> None:
    """redis://host:port/db names the server and database."""
    store = build("redis://127.0.0.1:6390/2", opened)
    kwargs = connection_kwargs(store)
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("127.0.0.1", 6390, 2)
    assert store.prefix == "keepsake:"


def test_default_timeouts_are_short_and_there_are_no_retries(opened: list[RedisStore]) -> None:
    """Without options the client gives up after half a second and does not retry."""
    kwargs = connection_kwargs(build("redis://127.0.0.1:6390", opened))
    assert kwargs["socket_timeout"] == DEFAULT_SOCKET_TIMEOUT == 0.5
    assert kwargs["socket_connect_timeout"] == DEFAULT_SOCKET_TIMEOUT
    retry = kwargs["retry"]
    assert isinstance(retry, redis.retry.Retry)
    tries: list[int] = []

    def attempt() -> None:
        tries.append(1)
        raise redis.ConnectionError("down")

    # Retry.get_retries() is newer than the lowest redis-py supported: count the tries instead.
    with pytest.raises(redis.ConnectionError):
        retry.call_with_retry(attempt, lambda error: None)
    assert len(tries) == 1


def test_url_options_are_applied(opened: list[RedisStore]) -> None:
    """socket_timeout, socket_connect_timeout, prefix and max_connections come from the URL."""
    store = build(
        "redis://h:1/0?socket_timeout=0.1&socket_connect_timeout=2&prefix=shop:&max_connections=9",
        opened,
    )
    kwargs = connection_kwargs(store)
    assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (0.1, 2.0)
    assert store.prefix == "shop:"
    assert store.client.connection_pool.max_connections == 9


def test_rediss_url_uses_tls(opened: list[RedisStore]) -> None:
    """rediss:// connects over TLS and accepts the ssl_* options."""
    store = build("rediss://h:6380/0?ssl_cert_reqs=required&ssl_ca_certs=/etc/ca.pem", opened)
    pool = store.client.connection_pool
    assert pool.connection_class is redis.SSLConnection
    assert pool.connection_kwargs["ssl_ca_certs"] == "/etc/ca.pem"
    assert store.describe().startswith("rediss://h:6380/0")


@pytest.mark.parametrize(("scheme", "tls"), [("valkey", False), ("valkeys", True)])
def test_valkey_schemes_are_accepted(scheme: str, tls: bool, opened: list[RedisStore]) -> None:
    """valkey:// and valkeys:// work like redis:// and rediss://."""
    store = build(f"{scheme}://h:6379/0", opened)
    is_tls = store.client.connection_pool.connection_class is redis.SSLConnection
    assert is_tls is tls


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://h/0?timeout=1", "unknown Redis option 'timeout'"),
        ("redis://h/0?socket_timeout=soon", "socket_timeout='soon'"),
        ("redis://h/0?cluster=maybe", "cluster must be true or false"),
        ("redis://h/0?ssl_ca_certs=/ca.pem", "use rediss://"),
        ("redis://h/3?cluster=true", "only database 0"),
        ("redis://:pw@h:port/0", "Port could not be cast"),
    ],
)
def test_url_mistakes_are_refused_naming_the_key(url: str, message: str) -> None:
    """A wrong Redis URL raises ConfigError naming KEEPSAKE_STORE and the problem."""
    with pytest.raises(ConfigError, match="KEEPSAKE_STORE") as info:
        store_from_url(url, Flask(__name__))
    assert message in str(info.value)
    assert ":pw@" not in str(info.value)
