"""Run Flask's, Flask-Login's and Flask-WTF's own test suites with Keepsake on every app.

    python3 .ci/peers/run.py                  # every suite in both modes
    python3 .ci/peers/run.py --suite flask-login --mode init -- -x -vv

Creates ``.venv-peers`` (pytest 8: Flask 3.1.3's conftest does not run on pytest 9), installs
Keepsake from this checkout with the pinned peers and their test requirements, downloads the
peers' sdists into a temporary folder, and runs each suite in each mode of ``plugin.py``. Prints
a table of outcomes; exits non-zero if any test failed or errored, or an intended difference
(a strict xfail) passed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
VENV = ROOT / ".venv-peers"

#: Suite -> (the pinned release whose sdist holds the tests, the tests to run). The same pins as
#: the main test environment.
SUITES: dict[str, tuple[str, list[str]]] = {
    "flask": ("flask==3.1.3", ["tests/test_basic.py"]),
    "flask-login": ("flask-login==0.6.3", ["tests"]),
    "flask-wtf": ("flask-wtf==1.3.0", ["tests"]),
}
MODES = ("init", "first-request")
#: Each suite takes a few seconds; a hang must not hold CI for long.
SUITE_TIMEOUT = 300

#: What the suites import beyond the peers themselves, from each sdist's test requirements:
#: Flask's "tests" dependency group, Flask-Login's requirements/tests.in, Flask-WTF's "test" and
#: "test-babel" groups (without the last two, its i18n and upload tests skip).
TEST_REQUIREMENTS = [
    "pytest>=8.4,<9",
    "asgiref",
    "greenlet",
    "python-dotenv",
    "blinker",
    "semantic-version",
    "flask-babel",
    "flask-reuploaded",
]

OUTCOMES = ("passed", "xfailed", "skipped", "failed", "error", "xpassed")
#: Reported by the plugin: apps Keepsake was set up on, request contexts it served.
SERVED = ("apps", "requests")


def run(*cmd: str | Path) -> None:
    """Run a command, echoing it; stop the job if it fails."""
    print("+", " ".join(map(str, cmd)), flush=True)
    subprocess.run(cmd, check=True)


def prepare_venv() -> Path:
    """Create or update ``.venv-peers`` with Keepsake, the peers and their test requirements."""
    python = VENV / "bin" / "python"
    if not python.exists():
        run(sys.executable, "-m", "venv", VENV)
    pins = [pin for pin, _ in SUITES.values()]
    pip = (python, "-m", "pip", "--disable-pip-version-check")
    run(*pip, "install", "-q", "-e", ROOT, *pins, *TEST_REQUIREMENTS)
    return python


def fetch_sources(python: Path, workdir: Path, suites: list[str]) -> dict[str, Path]:
    """Download and extract each peer's sdist; return the source folder of each suite."""
    sources: dict[str, Path] = {}
    for suite in suites:
        pin = SUITES[suite][0]
        dest = workdir / suite
        pip = (python, "-m", "pip", "--disable-pip-version-check")
        run(*pip, "download", "-q", "--no-deps", "--no-binary", ":all:", "-d", dest, pin)
        (archive,) = dest.glob("*.tar.gz")
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter="data")
        (source,) = (p for p in dest.iterdir() if p.is_dir())
        sources[suite] = source
    return sources


def run_suite(
    python: Path, suite: str, source: Path, mode: str, workdir: Path, extra: list[str]
) -> dict[str, int]:
    """Run one suite in one mode; return its outcome counts."""
    report = workdir / f"report-{suite}-{mode}.json"
    report.unlink(missing_ok=True)
    env = {
        **os.environ,
        "PYTHONPATH": str(HERE),
        "PYTHONDONTWRITEBYTECODE": "1",
        "KEEPSAKE_PEERS_MODE": mode,
        "KEEPSAKE_PEERS_REPORT": str(report),
    }
    cmd = [
        str(python),
        "-m",
        "pytest",
        "-p",
        "plugin",
        "-p",
        "no:cacheprovider",
        f"--basetemp={workdir / f'tmp-{suite}-{mode}'}",
        "-q",
        "-rfEX",
        "--tb=short",
        *SUITES[suite][1],
        *extra,
    ]
    print(f"\n=== {suite}, mode {mode} ===", flush=True)
    try:
        rc = subprocess.run(cmd, cwd=source, env=env, check=False, timeout=SUITE_TIMEOUT).returncode
    except subprocess.TimeoutExpired:
        print(f"{suite}, mode {mode}: stopped after {SUITE_TIMEOUT} s", flush=True)
        rc = -1
    counts: dict[str, int] = json.loads(report.read_text()) if report.exists() else {}
    if rc != 0 and not counts.get("failed") and not counts.get("error"):
        # pytest itself failed (usage error, crash, no test, timeout): count it as an error.
        counts["error"] = counts.get("error", 0) + 1
    return counts


def print_table(results: dict[tuple[str, str], dict[str, int]]) -> None:
    """The suite x mode table of outcomes."""
    header = ["suite", "mode", *OUTCOMES, *SERVED]
    rows = [
        [suite, mode, *(str(counts.get(o, 0)) for o in (*OUTCOMES, *SERVED))]
        for (suite, mode), counts in results.items()
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    print()
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def main() -> int:
    """Prepare, run the chosen suites and modes, print the table; 1 if anything failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", choices=SUITES, action="append", help="default: all")
    parser.add_argument("--mode", choices=MODES, action="append", help="default: both")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    args = parser.parse_args()
    started = time.monotonic()
    suites = args.suite or list(SUITES)
    python = prepare_venv()
    results: dict[tuple[str, str], dict[str, int]] = {}
    with tempfile.TemporaryDirectory(prefix="keepsake-peers-") as tmp:
        workdir = Path(tmp)
        sources = fetch_sources(python, workdir, suites)
        for suite in suites:
            for mode in args.mode or MODES:
                results[suite, mode] = run_suite(
                    python, suite, sources[suite], mode, workdir, args.pytest_args
                )
    print_table(results)
    total = {o: sum(c.get(o, 0) for c in results.values()) for o in OUTCOMES}
    bad = total["failed"] + total["error"] + total["xpassed"]
    print(f"\n({time.monotonic() - started:.0f} s; xfailed are Keepsake's intended differences)")
    # The plain closing line CI reads; an XPASS(strict) is reported by pytest as failed.
    print(f"peers: {total['passed']} passed, {bad} failed, {total['skipped']} skipped")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
