"""Tables and plots from the pyperf JSON that ``bench.py`` writes.

Every figure is a median of pyperf's values; an overhead is a variant's median minus the
``baseline`` median of the same workload, and a ratio divides two overheads (or an overhead by a
floor). ``bench.py`` prints these tables at the end of a run; this script prints them again from
the JSON, and draws the plots with ``--plots DIR`` (matplotlib, in the ``bench`` extra)::

    python benchmarks/report.py bench.json --plots docs/images
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import pyperf

WORKLOADS = ("read", "write", "new", "untouched")
PEERS = {
    "flask-cookie": "Flask cookie session",
    "fs-redis": "Flask-Session (Redis)",
    "fs-sqlalchemy": "Flask-Session (SQLAlchemy)",
}
STORES = {
    "memory": "Keepsake (memory)",
    "sqlite": "Keepsake (SQLite)",
    "redis": "Keepsake (Redis)",
    "redis-cache": "Keepsake (Redis, local cache)",
    "postgres": "Keepsake (PostgreSQL)",
}
#: The floors each row is compared with: (read floor, write floor).
FLOORS = {
    "sqlite": ("sqlite-read", "sqlite-write"),
    "redis": ("redis-read", "redis-write"),
    "redis-cache": ("redis-read", "redis-write"),
    "fs-redis": ("redis-read", "redis-write"),
    "postgres": ("postgres-read", "postgres-write"),
    "fs-sqlalchemy": ("postgres-read", "postgres-write"),
}


class Results:
    """Medians in µs by benchmark name, and overheads over the baseline."""

    def __init__(self, suite: pyperf.BenchmarkSuite) -> None:
        self.suite = suite
        self.us = {b.get_name(): b.median() * 1e6 for b in suite.get_benchmarks()}

    def overhead(self, variant: str, workload: str) -> float | None:
        value = self.us.get(f"{variant}/{workload}")
        base = self.us.get(f"baseline/{'login' if workload.startswith('login') else workload}")
        return None if value is None or base is None else value - base

    def ratio(self, variant: str, workload: str, peer: str = "flask-cookie") -> float | None:
        mine, theirs = self.overhead(variant, workload), self.overhead(peer, workload)
        return None if mine is None or not theirs else mine / theirs


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines[1] = "| --- |" + " ---: |" * (len(header) - 1)
    return "\n".join([*lines, *("| " + " | ".join(r) + " |" for r in rows)])


def tables(res: Results) -> str:
    """Every table, in Markdown."""
    out = []
    meta = res.suite.get_metadata()
    facts = ", ".join(
        f"{k.removeprefix('keepsake_')} {v}" for k, v in sorted(meta.items()) if "keepsake_" in k
    )
    first = res.suite.get_benchmarks()[0].get_metadata()
    runs = [r.get_metadata() for b in res.suite.get_benchmarks() for r in b.get_runs()]
    loads = sorted(float(m["load_avg_1min"]) for m in runs if "load_avg_1min" in m)
    start, end = res.suite.get_dates() or (None, None)
    out.append(
        f"Run: {start:%Y-%m-%d %H:%M} to {end:%H:%M} (UTC). Machine: "
        f"{first.get('cpu_count', '?')} CPUs ({first.get('cpu_model_name', '?')}), load "
        f"average (1 min) {loads[0]:.1f} to {loads[-1]:.1f}, median {statistics.median(loads):.1f}"
        f"; Python {first.get('python_version', '?')}; {facts}."
        if loads and start and end
        else f"Python {first.get('python_version', '?')}; {facts}."
    )
    out.append("Baseline (Flask, no session), µs per request:")
    out.append(_table(list(WORKLOADS), [[_us(res.us.get(f"baseline/{w}")) for w in WORKLOADS]]))
    out.append(
        "Overhead over the baseline, µs per request (ratio to Flask's cookie session's overhead):"
    )
    rows = []
    for variant, label in {**PEERS, **STORES}.items():
        cells = [label]
        for w in WORKLOADS:
            ratio = res.ratio(variant, w) if variant != "flask-cookie" else None
            extra = f" ({_x(ratio)})" if ratio is not None else ""
            cells.append(_us(res.overhead(variant, w)) + extra)
        rows.append(cells)
    out.append(_table(["variant", *WORKLOADS], rows))
    out.append("Store floors, µs per operation (tight loop), and overhead / floor:")
    names = {"sqlite-read": "SQLite SELECT by key", "sqlite-write": "SQLite SELECT + UPDATE"}
    names.update({"redis-read": "Redis GET", "redis-write": "Redis GET, then SET"})
    names.update(
        {"postgres-read": "PostgreSQL SELECT", "postgres-write": "PostgreSQL SELECT + UPDATE"}
    )
    floors = {f: res.us.get(f"floor/{f}") for f in names}
    shown = [[names[f], _us(v)] for f, v in floors.items() if v is not None]
    out.append(_table(["floor", "µs"], shown))
    rows = []
    for variant, (read, write) in FLOORS.items():
        if floors[read] is None or res.overhead(variant, "read") is None:
            continue
        ro, wo = res.overhead(variant, "read"), res.overhead(variant, "write")
        fr, fw = floors[read], floors[write]
        rows.append(
            [
                {**PEERS, **STORES}[variant],
                f"{_us(ro)} / {names[read]}: {_x(ro / fr if ro and fr else None)}",
                f"{_us(wo)} / {names[write]}: {_x(wo / fw if wo and fw else None)}",
            ]
        )
    out.append(_table(["variant", "read / floor", "write / floor"], rows))
    out.append("Keepsake on Redis against Flask-Session on the same server, overhead µs (ratio):")
    rows = []
    for w in WORKLOADS:
        fs = res.overhead("fs-redis", w)
        cells = [w, _us(fs)]
        for variant in ("redis", "redis-cache"):
            cells.append(
                f"{_us(res.overhead(variant, w))} ({_x(res.ratio(variant, w, 'fs-redis'))})"
            )
        rows.append(cells)
    out.append(_table(["workload", "Flask-Session", "Keepsake", "Keepsake, local cache"], rows))
    if res.overhead("postgres", "read") is not None:
        out.append(
            "Keepsake on PostgreSQL against Flask-Session's SQLAlchemy backend (on the database "
            "--sqlalchemy names), overhead µs (ratio):"
        )
        rows = [
            [
                w,
                _us(res.overhead("fs-sqlalchemy", w)),
                f"{_us(res.overhead('postgres', w))} "
                f"({_x(res.ratio('postgres', w, 'fs-sqlalchemy'))})",
            ]
            for w in WORKLOADS
        ]
        out.append(_table(["workload", "Flask-Session", "Keepsake"], rows))
    out.append("Login (a rename to a new token), overhead µs, rotation grace 60 s against 0:")
    rows = []
    for variant, label in STORES.items():
        on, off = res.overhead(variant, "login"), res.overhead(variant, "login-grace-0")
        rows.append([label, _us(on), _us(off), _x(on / off if on and off else None)])
    out.append(_table(["store", "grace 60 s", "grace 0", "ratio"], rows))
    out.append(
        "Untouched request with a session cookie, overhead µs: plain app, and an app with "
        "Flask-Login (over a baseline with Flask-Login):"
    )
    rows = []
    for variant, label in STORES.items():
        plain, login = res.overhead(variant, "untouched"), res.overhead(variant, "flask-login")
        diff = None if plain is None or login is None else login - plain
        rows.append([label, _us(plain), _us(login), _us(diff)])
    out.append(_table(["store", "plain", "with Flask-Login", "difference"], rows))
    out.append("Keepsake on Redis, overhead µs, with hiredis (the default) and without:")
    rows = []
    for w in ("read", "write"):
        on, off = res.overhead("redis", w), res.overhead("redis-nohiredis", w)
        rows.append([w, _us(on), _us(off), _us(None if on is None or off is None else off - on)])
    out.append(_table(["workload", "hiredis", "pure Python", "difference"], rows))
    spreads = [
        b.stdev() / b.median() for b in res.suite.get_benchmarks() if len(b.get_values()) > 1
    ]
    if spreads:
        out.append(
            f"{len(spreads)} benchmarks; median relative standard deviation of their values: "
            f"{statistics.median(spreads):.1%}."
        )
    return "\n\n".join(out)


def plots(res: Results, directory: Path) -> list[Path]:
    """Draw the overhead of every variant per workload (log scale) into ``directory``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    labels = {v: k for v, k in {**PEERS, **STORES}.items() if res.overhead(v, "read") is not None}
    fig, ax = plt.subplots(figsize=(10, 6))
    width = 0.8 / len(labels)
    for i, (variant, label) in enumerate(labels.items()):
        values = [max(res.overhead(variant, w) or 0.0, 0.5) for w in WORKLOADS]
        xs = [n + (i - len(labels) / 2 + 0.5) * width for n in range(len(WORKLOADS))]
        ax.bar(xs, values, width, label=label)
    for floor, style in (("redis-read", ":"), ("sqlite-write", "--")):
        value = res.us.get(f"floor/{floor}")
        if value:
            ax.axhline(value, color="grey", linestyle=style, linewidth=1, label=f"floor: {floor}")
    ax.set_xticks(range(len(WORKLOADS)), WORKLOADS)
    ax.set_yscale("log")
    ax.set_ylabel("overhead over a request without a session (µs, median)")
    ax.set_title("What a session costs per request (in-process WSGI, pyperf medians)")
    ax.legend(fontsize=8, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.07))
    fig.tight_layout()
    path = directory / "perf-overhead.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def report(suite: pyperf.BenchmarkSuite, plot_dir: Path | None = None) -> None:
    """Print every table; draw the plots into ``plot_dir`` if given."""
    res = Results(suite)
    print()
    print(tables(res))
    if plot_dir is not None:
        for path in plots(res, plot_dir):
            print(f"Plot: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json", type=Path, help="the file of bench.py -o")
    parser.add_argument("--plots", type=Path, metavar="DIR", help="draw the plots into DIR")
    args = parser.parse_args()
    report(pyperf.BenchmarkSuite.load(str(args.json)), args.plots)


if __name__ == "__main__":
    main()
