"""PNG plots of the benchmark results, with matplotlib (Agg backend, no display needed).

Run from the repository root::

    python benchmarks/plots.py                          # newest results of each benchmark
    python benchmarks/plots.py benchmarks/results/all-20261126T080000Z.json
    python benchmarks/plots.py engine.json redis.json scale.json --out /tmp/plots

Inputs are the JSON files the benchmarks write (``engine-*``, ``redis-*``, ``scale-*``) or the
combined file of ``run_all.py`` (``all-*``). Outputs, in ``docs/images/`` by default:

``perf-overhead.png``
    Overhead per request over the no-session baseline, per workload, for every variant:
    Keepsake on SQLite, memory and Redis, Flask's cookie session, Flask-Session on SQLAlchemy
    and on Redis (log scale: Flask-Session is ten to thirty times the others).
``perf-scale.png``
    Latency against stored sessions (log x) on SQLite and Redis: store ``load`` and ``apply``,
    engine ``read`` and ``write`` requests, medians with quartiles.
``perf-purge.png``
    Engine request latency (median and p99) with the SQLite purge running and paused, and
    before, during and after Redis's native expiry.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.axes import Axes

_REPO: Final = Path(__file__).resolve().parent.parent
#: Where the benchmarks write JSON.
RESULTS_DIR: Final = _REPO / "benchmarks" / "results"
#: Where the plots go by default (the docs link them).
IMAGES_DIR: Final = _REPO / "docs" / "images"

#: Bars of the overhead plot: (label, benchmark, variant name in that benchmark's JSON).
VARIANTS: Final = (
    ("Keepsake (SQLite)", "engine", "Keepsake (SQLite)"),
    ("Keepsake (memory)", "engine", "Keepsake (memory)"),
    ("Keepsake (Redis)", "redis", "Keepsake (Redis)"),
    ("Keepsake (Redis, local cache)", "redis", "Keepsake (Redis, local cache)"),
    ("Flask cookie session", "engine", "Flask cookie session"),
    ("Flask-Session (SQLAlchemy)", "engine", "Flask-Session (SQLAlchemy)"),
    ("Flask-Session (Redis)", "redis", "Flask-Session (Redis)"),
)
#: Bar colours: Keepsake in blues, Flask in grey, Flask-Session in oranges.
COLOURS: Final = ("#1f5fa8", "#6fa8dc", "#0b3d73", "#3d85c6", "#8c8c8c", "#e69138", "#b45f06")
#: The workloads shown first, in this order; others found in the results follow.
WORKLOAD_ORDER: Final = ("read", "write", "new", "untouched", "login")
#: Lines of the scale plot: (operation, label, colour, marker).
SCALE_OPS: Final = (
    ("load", "store load", "#6fa8dc", "o"),
    ("apply", "store apply (1 key)", "#e69138", "s"),
    ("read", "read request", "#1f5fa8", "^"),
    ("write", "write request", "#b45f06", "v"),
)


# ---------------------------------------------------------------------------------------------
# Inputs


def newest(kind: str, directory: Path = RESULTS_DIR) -> Path | None:
    """The newest ``<kind>-*.json`` in ``directory``, or ``None``."""
    found = sorted(directory.glob(f"{kind}-*.json"))
    return found[-1] if found else None


def load_results(paths: Sequence[Path]) -> dict[str, Any]:
    """``{"engine": ..., "redis": ..., "scale": ...}`` from benchmark or combined JSON files.

    A later file wins over an earlier one for the same benchmark.
    """
    results: dict[str, Any] = {}
    for path in paths:
        data = json.loads(path.read_text())
        if "benchmark" in data:
            results[str(data["benchmark"])] = data
        else:
            results.update({k: v for k, v in data.items() if isinstance(v, dict)})
    return results


def overheads(results: Mapping[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    """``{label: {workload: {"median", "q1", "q3"}}}`` in µs, for every variant found."""
    found: dict[str, dict[str, dict[str, float]]] = {}
    for label, benchmark, variant in VARIANTS:
        data = results.get(benchmark)
        if not data:
            continue
        cells: dict[str, dict[str, float]] = {}
        if benchmark == "engine":
            for case in data.get("cases", {}).values():
                if case["variant"] == variant:
                    cells[case["workload"]] = case["overhead_us"]
        else:
            for key, summary in data.get("overheads_us", {}).items():
                name, _, workload = key.rpartition("/")
                if name == variant:
                    cells[workload] = summary
        if cells:
            found[label] = cells
    return found


# ---------------------------------------------------------------------------------------------
# Plots


def _workloads(cells: Mapping[str, Mapping[str, Any]]) -> list[str]:
    seen = {w for by_workload in cells.values() for w in by_workload}
    ordered = [w for w in WORKLOAD_ORDER if w in seen]
    return ordered + sorted(seen - set(ordered))


def plot_overhead(results: Mapping[str, Any], path: Path) -> Path | None:
    """Grouped bars: overhead per workload for every variant (log y). ``None`` if no data."""
    cells = overheads(results)
    if not cells:
        return None
    workloads = _workloads(cells)
    labels = [label for label, _, _ in VARIANTS if label in cells]
    fig, ax = plt.subplots(figsize=(11, 5.6), dpi=110)
    width = 0.8 / len(labels)
    for i, label in enumerate(labels):
        colour = COLOURS[[v[0] for v in VARIANTS].index(label)]
        xs, ys, lows, highs, tops = [], [], [], [], []
        for j, workload in enumerate(workloads):
            cell = cells[label].get(workload)
            if cell is None:
                continue
            median = max(float(cell["median"]), 0.5)
            xs.append(j - 0.4 + width * (i + 0.5))
            ys.append(median)
            tops.append(max(median, float(cell["q3"])))
            lows.append(max(median - max(float(cell["q1"]), 0.5), 0))
            highs.append(max(float(cell["q3"]) - median, 0))
        ax.bar(xs, ys, width * 0.92, label=label, color=colour, yerr=[lows, highs], capsize=2,
               error_kw={"elinewidth": 0.8, "ecolor": "#333333"})  # fmt: skip
        for x, y, top in zip(xs, ys, tops, strict=True):
            ax.annotate(f"{y:.0f}", (x, top), textcoords="offset points", xytext=(0, 3),
                        ha="center", va="bottom", fontsize=7, rotation=90)  # fmt: skip
    ax.set_yscale("log")
    ax.set_xticks(range(len(workloads)), workloads)
    ax.set_ylabel("overhead over a no-session request, µs (log scale)")
    ax.set_ylim(1, max(float(c["q3"]) for v in cells.values() for c in v.values()) * 5)
    ax.set_title("What a session costs per request (median, q1-q3 whiskers; lower is better)")
    ax.grid(axis="y", which="major", alpha=0.3)
    ax.legend(ncols=3, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08))
    _footnote(fig, results, ("engine", "redis"))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _footnote(fig: Any, results: Mapping[str, Any], benchmarks: Sequence[str]) -> None:
    parts = []
    for name in benchmarks:
        data = results.get(name)
        if not data:
            continue
        machine = data.get("machine", {})
        parts.append(
            f"{name}: {str(machine.get('date', '?'))[:16]}, {machine.get('cpu', '?')}, "
            f"{machine.get('cores', '?')} cores, Keepsake {machine.get('revision', '?')}"
        )
    if len(parts) > 1:
        parts.append("separate runs, each against its own no-session baseline")
    if parts:
        fig.text(0.01, 0.005, "; ".join(parts), fontsize=6.5, color="#555555")


def plot_scale(results: Mapping[str, Any], path: Path) -> Path | None:
    """Latency against stored sessions (log x), one panel per store. ``None`` if no data."""
    scale = results.get("scale")
    if not scale or not scale.get("backends"):
        return None
    backends = scale["backends"]
    fig, axes = plt.subplots(1, len(backends), figsize=(5.6 * len(backends), 4.8), dpi=110,
                             squeeze=False)  # fmt: skip
    for ax, (backend, data) in zip(axes[0], backends.items(), strict=True):
        _scale_panel(ax, backend, data, float(scale.get("target_ratio", 1.3)))
    fig.suptitle("Latency by number of stored sessions (median, q1-q3)", fontsize=11)
    _footnote(fig, results, ("scale",))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _scale_panel(ax: Axes, backend: str, data: Mapping[str, Any], target: float) -> None:
    sizes = sorted(data["sizes"], key=int)
    xs = [int(s) for s in sizes]
    top = 0.0
    for op, label, colour, marker in SCALE_OPS:
        cells = [data["sizes"][s]["latency_us"][op] for s in sizes]
        ys = [float(c["median"]) for c in cells]
        errors = [
            [y - float(c["q1"]) for y, c in zip(ys, cells, strict=True)],
            [float(c["q3"]) - y for y, c in zip(ys, cells, strict=True)],
        ]
        ratio = data.get("ratio_largest_to_smallest", {}).get(op)
        suffix = f"  ({ratio['median']:.2f}x)" if ratio else ""
        ax.errorbar(xs, ys, yerr=errors, label=label + suffix, color=colour, marker=marker,
                    capsize=3, linewidth=1.6)  # fmt: skip
        top = max(top, *(y + e for y, e in zip(ys, errors[1], strict=True)))
    ax.set_xscale("log")
    ax.set_xticks(xs, [f"{x:,}" for x in xs])
    ax.set_ylim(0, top * 1.25)
    ax.set_xlabel("stored sessions (log scale)")
    ax.set_ylabel("µs per call")
    ax.set_title(f"{backend}: largest/smallest in legend, target ≤ {target:g}x", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")


def plot_purge(results: Mapping[str, Any], path: Path) -> Path | None:
    """Request latency with and without the SQLite purge and Redis expiry. ``None`` if none."""
    scale = results.get("scale") or {}
    purge, expiry = scale.get("purge_sqlite"), scale.get("expiry_redis")
    groups: list[tuple[str, dict[str, Any]]] = []
    if purge:
        groups.append(("SQLite read", purge["read_us"]))
        groups.append(("SQLite write", purge["write_us"]))
    if expiry:
        groups.append(("Redis read", expiry["read_us"]))
    if not groups:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 5), dpi=110)
    for ax, stat in zip(axes, ("median", "p99"), strict=True):
        labels, values, colours = [], [], []
        for name, states in groups:
            for state, d in states.items():
                if d.get("n"):
                    labels.append(f"{name.replace(' ', chr(10))}\n{state.replace('_', ' ')}")
                    values.append(float(d[stat]))
                    busy = state in ("purge_running", "during")
                    colours.append("#b45f06" if busy else "#6fa8dc")
        ax.bar(range(len(values)), values, color=colours)
        for x, y in enumerate(values):
            ax.annotate(f"{y:,.0f}", (x, y), textcoords="offset points", xytext=(0, 3),
                        ha="center", fontsize=7)  # fmt: skip
        ax.set_xticks(range(len(labels)), labels, fontsize=7)
        ax.set_ylabel(f"{stat} µs per request" + (" (log scale)" if stat == "p99" else ""))
        ax.set_title(f"{stat} request latency", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        if stat == "p99":
            # One slow tail can be a hundred times the others; a log axis keeps all readable.
            ax.set_yscale("log")
            ax.set_ylim(min(values) / 2, max(values) * 3)
        else:
            ax.set_ylim(0, max(values) * 1.15)
    title = "Requests while expired sessions are removed (orange: removal running)"
    if purge:
        title += (
            f"\nSQLite: {purge['deleted']:,} purged in batches of {purge['batch_size']} by "
            f"another process, {purge['busy_seconds']:.0f} s in purge calls"
        )
    if expiry and expiry.get("reclaim_seconds") is not None:
        title += (
            f"; Redis: {expiry['sessions']:,} expired natively in {expiry['reclaim_seconds']:.0f} s"
        )
    fig.suptitle(title, fontsize=10)
    _footnote(fig, results, ("scale",))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def make_plots(results: Mapping[str, Any], out: Path = IMAGES_DIR) -> list[Path]:
    """Write every plot the results allow into ``out``; return the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written = [
        plot_overhead(results, out / "perf-overhead.png"),
        plot_scale(results, out / "perf-scale.png"),
        plot_purge(results, out / "perf-purge.png"),
    ]
    return [p for p in written if p is not None]


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; see ``--help``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path, help="result JSON files (default: newest)")
    parser.add_argument("--out", type=Path, default=IMAGES_DIR, help="where the PNGs go")
    args = parser.parse_args(argv)
    paths: list[Path] = list(args.files)
    if not paths:
        paths = [p for p in (newest(k) for k in ("engine", "redis", "scale")) if p is not None]
    if not paths:
        print(f"no results in {RESULTS_DIR}: run benchmarks/run_all.py first", file=sys.stderr)
        return 1
    written = make_plots(load_results(paths), args.out)
    for path in written:
        print(f"wrote {path}")
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
