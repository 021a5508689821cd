"""Fixtures for the store contract suite, parametrized over ``tests/store_registry.STORES``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from flask_keepsake.stores import Store

from ..store_registry import STORES, StoreSpec


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
