"""Run every benchmark with one command, collect their JSON into one file, and draw the plots.

Run from the repository root::

    python benchmarks/run_all.py             # full runs, about 20 minutes; plots to docs/images
    python benchmarks/run_all.py --quick     # each benchmark's --quick, about 2 minutes
    python benchmarks/run_all.py --smoke     # a few calls each, seconds (checks the plumbing)
    python benchmarks/run_all.py --reuse engine,redis   # rerun only the scale benchmark

It runs ``bench_engine.py``, ``bench_redis.py`` and ``bench_scale.py`` one after the other, each
in its own Python process (so one cannot warm or slow another), with ``--quick`` passed through
(``--smoke`` becomes ``bench_scale.py --tiny``). Their tables are printed as they run; their JSON
files land in ``benchmarks/results/`` as usual, and ``all-<timestamp>.json`` there holds all of
them under ``"engine"``, ``"redis"`` and ``"scale"``. Then ``plots.py`` draws the PNGs: into
``docs/images/`` after a full run, into ``benchmarks/results/plots/`` after a quick or smoke
run (so a quick look never replaces the published plots), or where ``--plots-dir`` says.

A benchmark that cannot run here (no ``redis-server`` for ``bench_redis.py``) is skipped with a
loud note, and the others still run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import harness as h
import plots

HERE: Final = Path(__file__).resolve().parent
#: The benchmarks, in the order they run.
BENCHMARKS: Final = ("engine", "redis", "scale")
#: Preset flags per benchmark: ``{preset: {benchmark: [flags]}}``.
PRESETS: Final[dict[str, dict[str, list[str]]]] = {
    "full": {"engine": [], "redis": [], "scale": []},
    "quick": {"engine": ["--quick"], "redis": ["--quick"], "scale": ["--quick"]},
    "smoke": {"engine": ["--smoke"], "redis": ["--smoke"], "scale": ["--tiny"]},
}


def _names(text: str | None) -> list[str]:
    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {', '.join(unknown)}: use {', '.join(BENCHMARKS)}")
    return names


def why_not(name: str) -> str | None:
    """``None`` if benchmark ``name`` can run on this machine, else why not."""
    if name == "redis" and shutil.which("redis-server") is None:
        return "redis-server is not on PATH: bench_redis.py did NOT run"
    return None


def run_one(name: str, flags: Sequence[str], json_dir: Path, markdown: bool) -> Path:
    """Run ``bench_<name>.py`` in a new process; return the JSON file it wrote.

    :raise RuntimeError: if it failed or wrote no JSON.
    """
    scratch = Path(tempfile.mkdtemp(prefix=f"run-all-{name}-"))
    command = [sys.executable, str(HERE / f"bench_{name}.py"), *flags, "--json-dir", str(scratch)]
    if markdown:
        command.append("--markdown")
    print(f"\n=== {' '.join(command[1:])}", flush=True)
    started = time.perf_counter()
    try:
        code = subprocess.run(command, cwd=HERE.parent, check=False).returncode
        written = sorted(scratch.glob(f"{name}-*.json"))
        if code != 0 or not written:
            raise RuntimeError(f"bench_{name}.py exited with {code} and wrote {len(written)} JSON")
        json_dir.mkdir(parents=True, exist_ok=True)
        target = json_dir / written[-1].name
        shutil.move(written[-1], target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"=== bench_{name}.py took {time.perf_counter() - started:.0f} s -> {target}", flush=True)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; see ``--help``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    preset = parser.add_mutually_exclusive_group()
    preset.add_argument("--quick", action="store_true", help="each benchmark's --quick")
    preset.add_argument("--smoke", action="store_true", help="smoke runs (--tiny for scale)")
    parser.add_argument("--skip", help="comma-separated benchmarks not to run")
    parser.add_argument(
        "--reuse", help="comma-separated benchmarks whose newest JSON in results/ is reused"
    )
    parser.add_argument("--json-dir", type=Path, default=h.RESULTS_DIR, help="where JSON goes")
    parser.add_argument("--plots-dir", type=Path, help="where the PNGs go (see above)")
    parser.add_argument("--no-plots", action="store_true", help="do not draw the plots")
    parser.add_argument("--markdown", action="store_true", help="Markdown tables")
    args = parser.parse_args(argv)

    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    skip, reuse = _names(args.skip), _names(args.reuse)
    started = time.perf_counter()
    files: dict[str, Path] = {}
    notes: list[str] = []
    failed: list[str] = []
    for name in BENCHMARKS:
        if name in skip:
            notes.append(f"{name}: skipped (--skip)")
            continue
        if name in reuse:
            found = plots.newest(name, args.json_dir)
            if found is None:
                raise SystemExit(f"--reuse {name}: no {name}-*.json in {args.json_dir}")
            files[name] = found
            notes.append(f"{name}: reused {found.name}")
            continue
        reason = why_not(name)
        if reason is not None:
            print(f"\n!!! {reason}", file=sys.stderr, flush=True)
            notes.append(reason)
            continue
        try:
            files[name] = run_one(name, PRESETS[mode][name], args.json_dir, args.markdown)
        except RuntimeError as exc:
            print(f"\n!!! {exc}", file=sys.stderr, flush=True)
            failed.append(name)
            notes.append(str(exc))

    combined: dict[str, Any] = {
        "mode": mode,
        "command": " ".join(sys.argv),
        "seconds": round(time.perf_counter() - started, 1),
        "notes": notes,
        "files": {name: path.name for name, path in files.items()},
    }
    for name, path in files.items():
        combined[name] = json.loads(path.read_text())
    out = h.write_results("all", combined, args.json_dir)
    print(f"\nall results: {out}")
    for note in notes:
        print(f"note: {note}")

    if not args.no_plots:
        plots_dir = args.plots_dir or (
            plots.IMAGES_DIR if mode == "full" else args.json_dir / "plots"
        )
        for path in plots.make_plots(plots.load_results([out]), plots_dir):
            print(f"plot: {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
