"""The rename in Redis Cluster, whose two keys live in different slots, step by step.

The store creates the new record, then retires the old key in a script that checks the version
it read (see the module docstring of ``flask_keepsake.stores.redis``). These tests make other
requests land at exactly the moment that matters, between the read and the retirement, with a
client that runs a callback just before each script it sends to the old key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from redis.cluster import RedisCluster

from flask_keepsake.errors import StoreUnavailable
from flask_keepsake.stores import ROTATED, Outcome, SessionRecord
from flask_keepsake.stores.redis import RENAME_ATTEMPTS, RedisStore, scripts
from flask_keepsake.testing.servers import RedisClusterServers

from ..stores.store_helpers import NOW, key_for, make_record
from ..stores.test_contract import run_threads

pytestmark = pytest.mark.slow

GRACE = 60.0


class Interleaving(RedisCluster):
    """A cluster client that calls ``before(n)`` ahead of the n-th script sent to ``watched``.

    It also records the first key of every script it sends, in order.
    """

    watched: bytes | None = None
    before: Callable[[int], None] | None = None

    def watch(self, key: bytes) -> None:
        """Watch ``key`` from now on, counting only the scripts sent from now on."""
        self.watched = key
        self.scripts = []

    def evalsha(self, sha: Any, numkeys: Any, *keys_and_args: Any) -> Any:
        key = keys_and_args[0] if numkeys else None
        self.scripts = [*getattr(self, "scripts", []), key]
        if key is not None and key == self.watched and self.before is not None:
            self.before(self.scripts.count(key))
        return super().evalsha(sha, numkeys, *keys_and_args)


@pytest.fixture
def cluster(redis_cluster: RedisClusterServers) -> RedisClusterServers:
    """The run's cluster, emptied."""
    redis_cluster.flush()
    return redis_cluster


@pytest.fixture
def client(cluster: RedisClusterServers) -> Iterator[Interleaving]:
    """The interleaving client of the store under test, with the store's scripts loaded.

    A script the server does not know yet is answered ``NOSCRIPT`` and sent again by redis-py,
    which would count twice here.
    """
    instance = Interleaving.from_url(cluster.url)
    for text in (scripts.CREATE, scripts.APPLY, scripts.RETIRE, scripts.INDEX_ADD):
        instance.script_load(text)
    yield instance
    instance.close()


@pytest.fixture
def store(client: Interleaving) -> RedisStore:
    """The store under test, on the interleaving client."""
    return RedisStore(client)


@pytest.fixture
def other(cluster: RedisClusterServers) -> Iterator[RedisStore]:
    """Another process's store on the same cluster: the requests that race the rename."""
    instance = RedisStore.from_url(cluster.url, cluster=True)
    yield instance
    instance.close()


def skey(name: str) -> bytes:
    """The Redis key of ``make_record(name)``'s session."""
    return f"keepsake:s:{key_for(name)}".encode()


def node_of(store: RedisStore, key: bytes) -> str:
    """The name of the node that holds ``key``."""
    client: Any = store.client
    return str(client.nodes_manager.get_node_from_slot(client.keyslot(key)).name)


def login(store: RedisStore, **delta: Any) -> Outcome:
    """Rename ``old`` to ``new`` (bound to user ``u``) with a grace window and ``delta``."""
    new = make_record("new", user_id="u", data={})
    return store.rename(key_for("old"), new, NOW, grace=GRACE, **delta)


def loaded(store: RedisStore, name: str) -> SessionRecord:
    """The live record of ``make_record(name)``."""
    record = store.load(key_for(name), NOW)
    assert isinstance(record, SessionRecord)
    return record


def test_the_keys_of_these_tests_live_in_different_slots(store: RedisStore) -> None:
    """The old and the new key hash to different slots, so no script may touch both."""
    client: Any = store.client
    assert client.keyslot(skey("old")) != client.keyslot(skey("new"))


def test_the_tombstone_lives_in_the_old_keys_slot(
    store: RedisStore, cluster: RedisClusterServers
) -> None:
    """After the rename the old key, on its own node, holds the tombstone."""
    store.create(make_record("old"))
    assert login(store) is Outcome.DONE
    holder = next(n for n in cluster.nodes if f"127.0.0.1:{n.port}" == node_of(store, skey("old")))
    assert holder.admin().hgetall(skey("old")) == {
        b"r": key_for("new").encode(),
        b"x": repr(NOW + GRACE).encode(),
    }
    assert store.load(key_for("old"), NOW) is ROTATED


def test_a_write_between_the_read_and_the_tombstone_is_carried_over(
    store: RedisStore, client: Interleaving, other: RedisStore
) -> None:
    """Another request's write reaches the old record after the rename read it: it is kept."""
    store.create(make_record("old", data={"cart": "[1]"}))
    client.watch(skey("old"))

    def before(attempt: int) -> None:
        if attempt == 1:
            assert other.apply(key_for("old"), {"coupon": '"SAVE10"'}, (), NOW) is Outcome.DONE

    client.before = before
    assert login(store, changed={"_user_id": '"u"'}) is Outcome.DONE
    assert client.scripts.count(skey("old")) == 2  # the first retirement was refused
    assert loaded(store, "new").data == {"cart": "[1]", "coupon": '"SAVE10"', "_user_id": '"u"'}
    assert store.load(key_for("old"), NOW) is ROTATED


def test_writes_before_several_attempts_are_all_carried_over(
    store: RedisStore, client: Interleaving, other: RedisStore
) -> None:
    """Changes and deletions of three racing writes are carried; the rename's own delta wins."""
    store.create(make_record("old", data={"keep": "1", "cart": "[1]", "drop": "1"}))
    writes: dict[int, tuple[dict[str, str], list[str]]] = {
        1: ({"x": "1", "login": '"stale"'}, ["cart"]),
        2: ({"y": "2"}, ["x"]),
        3: ({"drop": '"again"', "keep": "3"}, []),
    }
    client.watch(skey("old"))

    def before(attempt: int) -> None:
        if attempt in writes:
            changed, deleted = writes[attempt]
            assert other.apply(key_for("old"), changed, deleted, NOW) is Outcome.DONE

    client.before = before
    assert login(store, changed={"login": '"u"'}, deleted=["drop"]) is Outcome.DONE
    assert client.scripts.count(skey("old")) == 4
    assert loaded(store, "new").data == {"keep": "3", "y": "2", "login": '"u"'}


def test_a_logout_between_the_read_and_the_tombstone_wins(
    store: RedisStore, client: Interleaving, other: RedisStore
) -> None:
    """The old record was deleted meanwhile: GONE, and the new record and its entries go."""
    store.create(make_record("old", user_id="u"))
    client.watch(skey("old"))

    def before(attempt: int) -> None:
        assert other.delete(key_for("old")) is True

    client.before = before
    assert login(store) is Outcome.GONE
    assert store.load(key_for("new"), NOW) is None
    assert store.load(key_for("old"), NOW) is None
    assert store.list_user("u", NOW) == []
    assert store.client.exists("keepsake:u:u", "keepsake:h:h-new") == 0
    assert store.count(NOW) == 0


def test_a_rename_that_wins_meanwhile_makes_this_one_rotated(
    store: RedisStore, client: Interleaving, other: RedisStore
) -> None:
    """Another login renamed the old key first: ROTATED, and only the winner's record exists."""
    store.create(make_record("old", data={"a": "1"}))
    rival = make_record("rival", handle="h-rival", data={})
    client.watch(skey("old"))

    def before(attempt: int) -> None:
        assert other.rename(key_for("old"), rival, NOW, grace=GRACE) is Outcome.DONE

    client.before = before
    assert login(store) is Outcome.ROTATED
    assert store.load(key_for("new"), NOW) is None
    assert loaded(store, "rival") == dataclasses.replace(rival, data={"a": "1"})
    assert store.count(NOW) == 1


def test_a_revocation_of_the_new_record_during_the_rename_ends_the_session(
    store: RedisStore, client: Interleaving, other: RedisStore
) -> None:
    """revoke_all found the new record's index entry and deleted it: the rename ends revoked."""
    store.create(make_record("old", data={"a": "1"}))
    client.watch(skey("old"))

    def before(attempt: int) -> None:
        if attempt == 1:
            assert other.apply(key_for("old"), {"b": "2"}, (), NOW) is Outcome.DONE
            assert other.delete_user("u", NOW) == 1

    client.before = before
    assert login(store) is Outcome.DONE
    assert store.load(key_for("new"), NOW) is None
    assert store.load(key_for("old"), NOW) is ROTATED
    assert store.apply(key_for("old"), {"c": "3"}, (), NOW) is Outcome.GONE
    assert store.count(NOW) == 0


def test_writes_racing_every_attempt_leave_everything_as_it_was(
    store: RedisStore, client: Interleaving, other: RedisStore
) -> None:
    """A write before every attempt: StoreUnavailable, the old record keeps every write."""
    store.create(make_record("old", user_id="v", data={}))
    client.watch(skey("old"))

    def before(attempt: int) -> None:
        assert other.apply(key_for("old"), {f"w{attempt}": "1"}, (), NOW) is Outcome.DONE

    client.before = before
    with pytest.raises(StoreUnavailable, match="changed during each"):
        login(store)
    assert client.scripts.count(skey("old")) == RENAME_ATTEMPTS
    assert loaded(store, "old").data == {f"w{n}": "1" for n in range(1, RENAME_ATTEMPTS + 1)}
    assert store.load(key_for("new"), NOW) is None
    assert store.list_user("u", NOW) == []
    assert store.count(NOW) == 1


def test_a_delta_to_an_old_key_follows_in_a_second_round_trip(
    store: RedisStore, client: Interleaving
) -> None:
    """In a cluster the script on the old key names the new one, and the client follows."""
    store.create(make_record("old", data={"a": "1"}))
    assert login(store) is Outcome.DONE
    client.scripts = []
    assert store.apply(key_for("old"), {"b": "2"}, (), NOW) is Outcome.FOLLOWED
    assert client.scripts == [skey("old"), skey("new")]
    assert loaded(store, "new").data == {"a": "1", "b": "2"}


def test_concurrent_regenerates_that_keep_the_handle_let_exactly_one_win(
    store: RedisStore,
) -> None:
    """Renames of one record to the same handle: one DONE, the others ROTATED, never a clash."""
    old = make_record("old", user_id="u")
    store.create(old)
    results: list[Outcome] = []

    def regenerate(index: int) -> None:
        new = make_record(f"new{index}", handle=old.handle, user_id="u")
        results.append(store.rename(old.key, new, NOW, grace=GRACE))

    run_threads(8, regenerate)
    assert sorted(results, key=lambda outcome: outcome.value) == (
        [Outcome.DONE] + [Outcome.ROTATED] * 7
    )
    assert store.count(NOW) == 1
    assert len(store.list_user("u", NOW)) == 1
