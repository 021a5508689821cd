"""The engine benchmark still runs: its smoke mode, a few calls per case and no timing checks."""

from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture
def bench_engine(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """``benchmarks/bench_engine.py``, imported the way the script imports ``harness``."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("bench_engine")


def test_smoke_run_reports_every_variant_and_workload(
    bench_engine: ModuleType, tmp_path: Path
) -> None:
    """A smoke run checks every request, counts store calls and fills every table cell."""
    options = dataclasses.replace(bench_engine.SMOKE, data_dir=tmp_path)
    result = bench_engine.run(options)
    variants = [bench_engine.KS_SQLITE, bench_engine.KS_MEMORY, bench_engine.FLASK]
    if not result.notes:
        variants.append(bench_engine.FLASK_SESSION)
    for variant in variants:
        for workload in bench_engine.WORKLOADS:
            assert result.overhead(variant, workload) is not None, (variant, workload)
    for op in bench_engine.FLOOR_OPS:
        assert result.overhead(bench_engine.FLOOR, op) is not None, op
    assert set(result.store_calls) == {bench_engine.KS_SQLITE, bench_engine.KS_MEMORY}
    assert "Targets on" in result.report()
    json.dumps(result.to_json())


def test_command_line_writes_json(bench_engine: ModuleType, tmp_path: Path) -> None:
    """``--smoke`` prints the tables and writes the raw results where ``--json-dir`` says."""
    out = tmp_path / "results"
    code = bench_engine.main(
        ["--smoke", "--no-flask-session", "--dir", str(tmp_path / "data"), "--json-dir", str(out)]
    )
    assert code == 0
    (path,) = out.glob("engine-*.json")
    assert json.loads(path.read_text())["benchmark"] == "engine"


def test_profile_names_the_engine(bench_engine: ModuleType) -> None:
    """``--profile`` output lists Keepsake's own functions."""
    stats = bench_engine.profile("read", requests=5, fill=2)
    assert "interface.py" in stats
