"""Redis Cluster: a real three-primary cluster on loopback ports.

The whole store contract suite and the engine tests already run against this cluster (the
``redis-cluster`` entry of ``tests/store_registry.py``); these tests pin what is specific to it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from flask_keepsake.stores import Outcome, Touch
from flask_keepsake.stores.redis import RedisStore
from flask_keepsake.testing.servers import RedisClusterServers

from ..stores.store_helpers import NOW, key_for, make_record
from .conftest import AppOnStore

pytestmark = pytest.mark.slow


@pytest.fixture
def store(redis_cluster: RedisClusterServers) -> Iterator[RedisStore]:
    """A store on the emptied cluster, through redis.cluster.RedisCluster."""
    redis_cluster.flush()
    instance = RedisStore.from_url(redis_cluster.url, cluster=True)
    yield instance
    instance.close()


def node_of(store: RedisStore, name: str) -> str:
    """The name of the node that holds the session record of ``make_record(name)``."""
    client = store.client
    slot = client.keyslot(f"{store.prefix}s:{key_for(name)}")
    return str(client.nodes_manager.get_node_from_slot(slot).name)


def test_sessions_spread_over_every_node(
    store: RedisStore, redis_cluster: RedisClusterServers
) -> None:
    """Session keys hash to slots on all three primaries."""
    for index in range(30):
        store.create(make_record(f"s{index}", user_id="u"))
    assert all(node.admin().dbsize() > 0 for node in redis_cluster.nodes)
    assert store.count(NOW) == 30


def test_rename_across_nodes_moves_the_record(store: RedisStore) -> None:
    """A rename whose old and new keys live on different nodes still leaves exactly the new one."""
    old = "old"
    new = next(f"new{i}" for i in range(100) if node_of(store, f"new{i}") != node_of(store, old))
    store.create(make_record(old, user_id="u", data={"a": "1"}))
    renamed = make_record(new, handle="h-old", user_id="u", data={})
    assert store.rename(key_for(old), renamed, NOW, changed={"b": "2"}) is Outcome.DONE
    assert store.load(key_for(old), NOW) is None
    expected = dataclasses.replace(renamed, data={"a": "1", "b": "2"})
    assert store.load(key_for(new), NOW) == expected
    assert store.list_user("u", NOW) == [expected]
    assert store.delete_handle("h-old", NOW) == (key_for(new), "u")


def test_delete_user_reaches_sessions_on_every_node(store: RedisStore) -> None:
    """revoke_all's store call deletes a user's sessions wherever they live."""
    for index in range(12):
        store.create(make_record(f"d{index}", user_id="u"))
    assert len({node_of(store, f"d{index}") for index in range(12)}) == 3
    assert store.delete_user("u", NOW, except_key=key_for("d0")) == 11
    assert [record.key for record in store.list_user("u", NOW)] == [key_for("d0")]


def test_flask_app_runs_on_the_cluster(store: RedisStore, make_app: AppOnStore) -> None:
    """Login, writes, regenerate and logout work through RedisCluster."""
    client = make_app(store).test_client()
    client.post("/set/cart", data="apple")
    client.post("/login/7")
    client.post("/regenerate")
    assert client.get("/whoami").data == b"7"
    assert client.get("/get/cart").data == b"'apple'"
    client.post("/logout")
    assert client.get("/whoami").data == b"anonymous"
    assert store.count(NOW) == 0


def test_user_counts_and_delete_all_reach_every_node(
    store: RedisStore, redis_cluster: RedisClusterServers
) -> None:
    """SCAN runs on every primary: users and records on all three nodes are seen and deleted."""
    for index in range(30):
        store.create(make_record(f"s{index}", user_id=f"user{index % 6}"))
    assert all(node.admin().dbsize() > 0 for node in redis_cluster.nodes)
    assert store.user_counts(NOW, 10) == [(f"user{i}", 5) for i in range(6)]
    assert store.delete_all() == 30
    assert all(node.admin().dbsize() == 0 for node in redis_cluster.nodes)


def test_a_touch_that_moves_the_absolute_expiry_extends_the_indexes_on_their_nodes(
    store: RedisStore,
) -> None:
    """The indexes, wherever they live, outlast a session that became persistent."""
    store.create(make_record("a", user_id="u", absolute_expires_at=NOW + 7200))
    touch = Touch(NOW, NOW + 3600, absolute_expires_at=NOW + 90_000)
    assert store.touch(key_for("a"), touch, NOW) is Outcome.DONE
    for index in (b"keepsake:u:u", b"keepsake:h:h-a"):
        assert 89_000_000 < store.client.pttl(index) <= 90_000_000
