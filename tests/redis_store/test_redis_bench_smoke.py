"""The Redis benchmark still runs: its smoke mode, a few calls per case, no timing checks."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType

import pytest

from flask_keepsake.testing.servers import redis_binary

pytestmark = pytest.mark.slow

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def bench_redis(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """``benchmarks/bench_redis.py``, imported the way the script imports ``harness``."""
    redis_binary()
    pytest.importorskip("flask_session")
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("bench_redis")


def test_smoke_run_fills_every_table(bench_redis: ModuleType, tmp_path: Path) -> None:
    """A smoke run prints every table and writes its JSON, with untouched requests silent."""
    code = bench_redis.main(["--smoke", "--json-dir", str(tmp_path)])
    assert code == 0
    (path,) = tmp_path.glob("redis-*.json")
    results = json.loads(path.read_text())
    assert results["commands_per_request"]["Keepsake (Redis)"]["untouched"] == {}
    assert results["commands_per_request"]["Keepsake (Redis)"]["read"] == {"hgetall": 1.0}
    assert results["memory_bytes"]["keepsake_session_hash"] > 0
