"""The project keeps its promises about itself: the two commands, CI, packaging."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```sh\n(.+?)\n```", text)


def test_readme_starts_with_two_commands() -> None:
    """The README opens with the demo command and then the test command, each in its own venv."""
    text = (ROOT / "README.md").read_text()
    first_lines = text.split("\n\n")[1:3]
    assert all(block.startswith("```sh\n") for block in first_lines)
    demo, tests = _readme_commands()[:2]
    assert demo.startswith("python3 -m venv .venv && ")
    assert "keepsake-demo" in demo
    assert tests.startswith("python3 -m venv .venv && ")
    assert "pytest" in tests


def test_ci_runs_the_readme_test_command() -> None:
    """.ci/run runs the README's test command, verbatim, then lint, the peers' test suites, the
    built wheel and the lowest versions."""
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    readme = ci.index(_readme_commands()[1])
    jobs = [
        "python3 .ci/package.py lint",
        "python3 .ci/peers/run.py",
        "python3 .ci/package.py wheel",
        "python3 .ci/package.py lowest",
    ]
    assert [ci.index(job) for job in jobs] == sorted(ci.index(job) for job in jobs)
    assert readme < ci.index(jobs[0])


def test_licence_is_declared_the_modern_way() -> None:
    """PEP 639: an SPDX expression and the licence file, which the wheel then carries."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "BSD-3-Clause"
    assert project["license-files"] == ["LICENSE"]
    assert "BSD 3-Clause License" in (ROOT / "LICENSE").read_text()


def test_no_registry_host_names() -> None:
    """Packages are referred to by name only; no registry host names in the project files."""
    hosts = ("pypi.org", "files.pythonhosted", "deb.debian.org", "registry.npmjs")
    peers = sorted(p for p in (ROOT / ".ci" / "peers").iterdir() if p.is_file())
    for path in [ROOT / ".ci" / "run", ROOT / "README.md", ROOT / "pyproject.toml", *peers]:
        text = path.read_text()
        assert not any(host in text for host in hosts), path


def test_dependencies_have_lower_bounds() -> None:
    """Every runtime dependency pins a lower bound."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"]:
        assert ">=" in requirement, requirement


def test_package_is_typed() -> None:
    """The package ships py.typed."""
    assert (ROOT / "src" / "flask_keepsake" / "py.typed").exists()
