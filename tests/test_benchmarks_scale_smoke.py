"""The scale benchmark, run_all and the plots still run: tiny sizes, no timing checks."""

from __future__ import annotations

import dataclasses
import importlib
import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from flask_keepsake.testing.servers import redis_binary

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def benchmarks() -> Iterator[dict[str, ModuleType]]:
    """``bench_scale``, ``run_all`` and ``plots``, imported the way the scripts import them."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(BENCHMARKS))
        modules = {"bench_scale": importlib.import_module("bench_scale")}
        yield modules


@pytest.fixture(scope="module")
def sqlite_result(
    benchmarks: dict[str, ModuleType], tmp_path_factory: pytest.TempPathFactory
) -> Any:
    """One tiny SQLite-only run, shared by the tests that read it."""
    bench = benchmarks["bench_scale"]
    options = dataclasses.replace(
        bench.TINY, redis=False, data_dir=tmp_path_factory.mktemp("scale")
    )
    return bench.run(options)


def test_tiny_sqlite_run_fills_every_size_and_op(
    benchmarks: dict[str, ModuleType], sqlite_result: Any
) -> None:
    """Every size is filled, timed on every operation, and the ratio row is computed."""
    bench = benchmarks["bench_scale"]
    sizes = sqlite_result.sizes(bench.SQLITE)
    assert [s.size for s in sizes] == list(bench.TINY.sizes)
    for sized in sizes:
        assert sized.facts["bytes_per_session"] > 0
        for op in bench.OPS:
            assert sqlite_result.latency(sized, op).n == bench.TINY.repetitions
    for op in bench.OPS:
        assert sqlite_result.ratio(bench.SQLITE, op) is not None
    assert "Largest over smallest size" in bench.report(sqlite_result)


def test_tiny_purge_removes_every_expired_session(sqlite_result: Any) -> None:
    """The purge phase deletes every expired session it added and leaves the live ones."""
    purge = sqlite_result.purge
    assert purge["finished"]
    assert purge["deleted"] == purge["expired_added"]
    assert purge["expired_left"] == 0
    assert purge["live_after"] == max(dataclasses.asdict(sqlite_result.options)["sizes"])


def test_tiny_store_call_counts_meet_the_targets(sqlite_result: Any) -> None:
    """Untouched 0, read 1, write at most 2, touch at most once per interval: all pass."""
    for store, calls in sqlite_result.store_calls.items():
        failed = [c["what"] for c in calls["checks"] if not c["pass"]]
        assert not failed, (store, failed)


def test_json_and_plots_from_a_tiny_run(
    benchmarks: dict[str, ModuleType], sqlite_result: Any, tmp_path: Path
) -> None:
    """The JSON round-trips, and run_all --reuse combines it and draws the scale plots."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(BENCHMARKS))
        run_all = importlib.import_module("run_all")
    results = tmp_path / "results"
    results.mkdir()
    payload = json.loads(json.dumps(sqlite_result.to_json()))
    (results / "scale-20000101T000000Z.json").write_text(json.dumps(payload))
    code = run_all.main(
        ["--skip", "engine,redis", "--reuse", "scale", "--json-dir", str(results),
         "--plots-dir", str(tmp_path / "plots")]
    )  # fmt: skip
    assert code == 0
    (combined,) = results.glob("all-*.json")
    assert json.loads(combined.read_text())["scale"]["benchmark"] == "scale"
    assert sorted(p.name for p in (tmp_path / "plots").glob("*.png")) == [
        "perf-purge.png",
        "perf-scale.png",
    ]


def test_tiny_redis_run(benchmarks: dict[str, ModuleType], tmp_path: Path) -> None:
    """With redis-server present: Redis rows, memory figures and native expiry are measured."""
    redis_binary()
    pytest.importorskip("redis", reason="redis-py (the redis extra) is not installed")
    bench = benchmarks["bench_scale"]
    options = dataclasses.replace(bench.TINY, purge=0, data_dir=tmp_path)
    result = bench.run(options)
    (largest, *_) = reversed(result.sizes(bench.REDIS))
    assert largest.facts["memory_usage_one_session"]["total"] > 0
    assert result.ratio(bench.REDIS, "read") is not None
    assert result.expiry is not None
    assert result.expiry["keys_added"] == 3 * options.expiry
    assert not [c for c in result.store_calls[bench.REDIS]["checks"] if not c["pass"]]
    json.dumps(result.to_json())
