"""CI jobs beside the README's test command: lint, the built package, the lowest versions.

    python3 .ci/package.py lint      # ruff check, ruff format --check, mypy --strict (in .venv)
    python3 .ci/package.py wheel     # build sdist and wheel, test the installed wheel
    python3 .ci/package.py lowest    # the suite on the lowest versions pyproject.toml allows

``wheel`` builds both distributions from this checkout, checks that the wheel carries the
licence and that the sdist holds no tests (they run from a checkout, next to the demo and CI
files they check), installs the wheel with its ``test`` extra into a fresh ``.venv-wheel`` and
runs ``tests/`` there against the installed package, not ``src/``. ``lowest`` installs Keepsake
into ``.venv-lowest`` with every dependency, and the peers it integrates with, pinned to the lower
bound that ``pyproject.toml`` declares, and runs ``tests/``. Each job exits non-zero on failure.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The runtime dependencies, the Redis extra and the extensions Keepsake integrates with: pinned
#: to their declared lower bounds by ``lowest``.
LOWEST_OF = {"redis", "hiredis", "psycopg", "psycopg-pool", "flask-login", "flask-wtf"}


def run(*cmd: str | Path, cwd: Path = ROOT) -> None:
    print("+", " ".join(map(str, cmd)), flush=True)
    subprocess.run([str(c) for c in cmd], cwd=cwd, check=True)


def venv(name: str) -> Path:
    path = ROOT / name
    if path.exists():
        shutil.rmtree(path)
    run(sys.executable, "-m", "venv", path)
    return path / "bin"


def lint() -> None:
    bin_ = ROOT / ".venv" / "bin"
    run(bin_ / "pip", "install", "-q", "-e", ".[dev]")
    run(bin_ / "ruff", "check", ".")
    run(bin_ / "ruff", "format", "--check", ".")
    run(bin_ / "mypy")  # strict = true in pyproject.toml


def wheel() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        dist = Path(tmp)
        bin_ = venv(".venv-wheel")
        run(bin_ / "pip", "install", "-q", "build")
        run(bin_ / "python", "-m", "build", "--outdir", dist, ROOT)
        (whl,) = dist.glob("*.whl")
        (sdist,) = dist.glob("*.tar.gz")
        names = zipfile.ZipFile(whl).namelist()
        assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), names
        assert not any(n.startswith("tests/") for n in names), "the wheel holds tests"
        with tarfile.open(sdist) as tar:
            members = tar.getnames()
        assert any(m.endswith("/LICENSE") for m in members), members
        assert not any("/tests/" in m for m in members), "the sdist holds tests"
        run(bin_ / "pip", "install", "-q", f"{whl}[test]")
        # Outside the checkout, so that "import flask_keepsake" finds the installed wheel.
        copy = dist / "checkout"
        shutil.copytree(ROOT / "tests", copy / "tests")
        shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
        where = subprocess.run(
            [bin_ / "python", "-c", "import flask_keepsake; print(flask_keepsake.__file__)"],
            cwd=copy,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        assert "site-packages" in where, where
        # test_project checks this checkout's own files (README, .ci): not part of a package.
        run(
            bin_ / "python",
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests",
            "--ignore=tests/test_project.py",
            "--ignore=tests/test_layers.py",
            cwd=copy,
        )


def lowest() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    wanted += project["optional-dependencies"]["test"]
    pins = []
    for spec in wanted:
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)>=([0-9][^,;\s]*)", spec)
        assert match, f"no lower bound in {spec!r}"
        name, bound = match.groups()
        runtime = spec in project["dependencies"]
        if runtime or name.lower() in LOWEST_OF:
            pins.append(f"{name}=={bound}")
    print("Lowest versions:", ", ".join(pins), flush=True)
    bin_ = venv(".venv-lowest")
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as constraints:
        constraints.write("\n".join(pins) + "\n")
    run(bin_ / "pip", "install", "-q", "-c", constraints.name, "-e", ".[test]")
    run(bin_ / "pip", "list")
    run(bin_ / "python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests")


if __name__ == "__main__":
    jobs = {"lint": lint, "wheel": wheel, "lowest": lowest}
    if len(sys.argv) != 2 or sys.argv[1] not in jobs:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(jobs)}}}")
    jobs[sys.argv[1]]()
