"""Fixtures for the store contract suite.

Every store under test is an entry of :data:`STORES`. To add a backend, add an entry whose
factory builds a fresh, empty store (it may ask ``request`` for other fixtures, such as a server
the tests start, and register extra cleanup with ``request.addfinalizer``); every contract test
then runs against it unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from flask_keepsake.stores import MemoryStore, SQLiteStore, Store


@dataclass(frozen=True)
class StoreSpec:
    """How to build one kind of store for the contract suite.

    :param factory: builds a fresh, empty store; the ``store`` fixture closes it after the test.
    :param native_expiry: the backend drops expired records by itself (Redis TTLs), so
        :meth:`Store.count_expired` and :meth:`Store.purge_expired` always return 0.
    """

    factory: Callable[[pytest.FixtureRequest], Store]
    native_expiry: bool = False


def _memory(request: pytest.FixtureRequest) -> Store:
    return MemoryStore()


def _sqlite(request: pytest.FixtureRequest) -> Store:
    tmp_path: Path = request.getfixturevalue("tmp_path")
    return SQLiteStore(tmp_path / "sessions.sqlite3")


STORES: dict[str, StoreSpec] = {
    "memory": StoreSpec(_memory),
    "sqlite": StoreSpec(_sqlite),
}


@pytest.fixture(params=list(STORES))
def store_spec(request: pytest.FixtureRequest) -> StoreSpec:
    """The :class:`StoreSpec` of the store under test, one run per entry of ``STORES``."""
    spec: StoreSpec = STORES[request.param]
    return spec


@pytest.fixture
def store(store_spec: StoreSpec, request: pytest.FixtureRequest) -> Iterator[Store]:
    """A fresh, empty store of each registered kind, closed after the test."""
    instance = store_spec.factory(request)
    yield instance
    instance.close()


@pytest.fixture
def native_expiry(store_spec: StoreSpec) -> bool:
    """Whether the store under test drops expired records by itself."""
    return store_spec.native_expiry
