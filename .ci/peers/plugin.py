"""A pytest plugin that sets Keepsake up on every Flask app a peer's own test suite creates.

Loaded by ``.ci/peers/run.py`` with ``-p plugin`` (this folder on ``PYTHONPATH``) while Flask's,
Flask-Login's and Flask-WTF's tests run. ``KEEPSAKE_PEERS_MODE`` chooses when:

- ``init``: right after ``Flask.__init__`` returns, so everything the test configures afterwards
  (config keys, hooks, extensions) comes after Keepsake and must still be honoured;
- ``first-request``: just before the app's first request context is made (``wsgi_app``,
  ``test_request_context`` and ``session_transaction`` all go through ``Flask.request_context``),
  after the test has set the app up, and before Flask forbids new hooks.

Every app gets its own ``MemoryStore``, so nothing is written to the peers' trees. Keepsake's
intended differences from Flask's cookie session are strict expected failures, listed by node id
in ``INTENDED`` with the line where each must fail: a test that passes, or fails anywhere else,
is reported as failed. With ``KEEPSAKE_PEERS_REPORT`` set to a path, the outcome counts (and how
many apps and requests Keepsake served) are written there as JSON for the runner's table.

Patching Flask here is the harness's business, not the library's: Keepsake itself must work
through Flask's public API.
"""

from __future__ import annotations

import functools
import json
import linecache
import os
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest
from flask import Flask

from flask_keepsake import Keepsake
from flask_keepsake.stores import MemoryStore

if TYPE_CHECKING:
    from collections.abc import Callable, Generator

    from _pytest.terminal import TerminalReporter

MODES = ("init", "first-request")
MODE = os.environ.get("KEEPSAKE_PEERS_MODE", "init")
if MODE not in MODES:
    raise pytest.UsageError(f"KEEPSAKE_PEERS_MODE must be one of {MODES}, not {MODE!r}.")
BOTH = frozenset(MODES)

# The only kinds of intended difference (DESIGN.md; docs/architecture.md, "Compatibility with
# the peers' test suites"). Any other failure is a harness problem or a Keepsake bug.
SECURE_COOKIE = "secure cookie default"
NO_SECRET_KEY = "no SECRET_KEY needed"
LAZY = "lazy session"
TOKEN = "random-token cookie"
KINDS = (SECURE_COOKIE, NO_SECRET_KEY, LAZY, TOKEN)


@dataclass(frozen=True)
class Intended:
    """An intended difference: the test must fail, exactly where the difference shows."""

    kind: str
    detail: str
    #: Lines of the test file on the failure's traceback, outermost first (a helper defined in
    #: the test adds its own line).
    at: tuple[int, ...]
    #: A piece of the innermost of those lines, checked against the file at collection.
    text: str
    modes: frozenset[str] = BOTH

    @property
    def reason(self) -> str:
        """The one-line reason pytest shows."""
        return f"{self.kind}: {self.detail}"


#: Node id (relative to the peer's source folder) -> its intended difference. Flask-Login's and
#: Flask-WTF's suites have none: they must pass whole.
INTENDED: dict[str, Intended] = {
    "tests/test_basic.py::test_session_using_samesite_attribute": Intended(
        SECURE_COOKIE,
        "SESSION_COOKIE_SAMESITE = None gives SameSite=Lax, not a cookie without SameSite",
        (369,),
        'assert "samesite" not in cookie',
    ),
    "tests/test_basic.py::test_missing_session": Intended(
        NO_SECRET_KEY,
        "without SECRET_KEY the session works instead of raising 'session is unavailable'",
        (391, 386),
        "pytest.raises(RuntimeError, f, *args, **kwargs)",
    ),
    "tests/test_basic.py::test_session_secret_key_fallbacks": Intended(
        TOKEN,
        "the cookie is not signed, so changing SECRET_KEY does not void the session",
        (414,),
        "assert client.get().json == {}",
    ),
    "tests/test_basic.py::test_session_refresh_vary": Intended(
        LAZY,
        "a request that does not use the session does not re-send its cookie, so needs no Vary",
        (616,),
        'assert rv.headers["Vary"] == "Cookie"',
    ),
}

#: apps: apps Keepsake was set up on; requests: request contexts whose app used Keepsake's
#: session interface; other: those whose app used another (a test replaced it).
SERVED: Counter[str] = Counter()


def _keepsake(app: Flask) -> None:
    Keepsake(app, store=MemoryStore())
    SERVED["apps"] += 1


def _install() -> None:
    original_init = Flask.__init__
    original_request_context = Flask.request_context

    @functools.wraps(original_init)
    def __init__(self: Flask, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        _keepsake(self)

    @functools.wraps(original_request_context)
    def request_context(self: Flask, environ: Any) -> Any:
        # A flag on the app, not a set of apps: a registry would keep every app alive.
        if MODE == "first-request" and not getattr(self, "_keepsake_peers_done", False):
            # Set only once it worked: an app whose config Keepsake refused tries again on its
            # next request, as a restarted server would.
            _keepsake(self)
            self._keepsake_peers_done = True  # type: ignore[attr-defined]
        ours = type(self.session_interface).__module__.startswith("flask_keepsake.")
        SERVED["requests" if ours else "other"] += 1
        return original_request_context(self, environ)

    if MODE == "init":
        Flask.__init__ = __init__  # type: ignore[method-assign]
    Flask.request_context = request_context  # type: ignore[method-assign]


_install()


def pytest_report_header() -> str:
    """Say in the header which mode this run uses."""
    return f"keepsake peers: Keepsake(app, store=MemoryStore()) in mode {MODE!r}"


def _fails_at(path: str, at: tuple[int, ...]) -> Callable[[BaseException], bool]:
    def check(exc: BaseException) -> bool:
        lines = []
        tb = exc.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == path:
                lines.append(tb.tb_lineno)
            tb = tb.tb_next
        return tuple(lines) == at

    return check


_intended_key = pytest.StashKey[Intended]()


# First, before -k or -m deselect anything, so that a stale entry is noticed in any case.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the intended differences as strict expected failures; refuse a stale table."""
    collected = {item.nodeid: item for item in items}
    files = {nodeid.partition("::")[0] for nodeid in collected}
    problems = []
    for nodeid, intended in INTENDED.items():
        if nodeid.partition("::")[0] not in files:
            continue  # another suite's test, or a file not run this time
        item = collected.get(nodeid)
        if item is None:
            problems.append(f"{nodeid}: not collected")
            continue
        path = str(item.path)
        line = linecache.getline(path, intended.at[-1])
        if intended.text not in line:
            problems.append(f"{nodeid}: line {intended.at[-1]} is {line.strip()!r}")
        if intended.kind not in KINDS:
            problems.append(f"{nodeid}: {intended.kind!r} is not one of {KINDS}")
        if MODE in intended.modes:
            raises = pytest.RaisesExc(BaseException, check=_fails_at(path, intended.at))
            item.add_marker(pytest.mark.xfail(strict=True, reason=intended.reason, raises=raises))
            item.stash[_intended_key] = intended
    if problems:
        raise pytest.UsageError("INTENDED does not match the tests:\n" + "\n".join(problems))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Say so when a test with an intended difference passed or failed somewhere else."""
    report = yield
    intended = item.stash.get(_intended_key, None)
    if intended is not None and report.failed and call.when == "call":
        where = " > ".join(f"line {n}" for n in intended.at)
        report.sections.append(
            (
                "keepsake peers",
                f"Expected to fail at {where} ({intended.reason}), but it passed or failed "
                "elsewhere: a Keepsake bug, or INTENDED in .ci/peers/plugin.py is out of date.",
            )
        )
    return report


def pytest_terminal_summary(terminalreporter: TerminalReporter) -> None:
    """Print what Keepsake served; write the counts to ``KEEPSAKE_PEERS_REPORT``."""
    terminalreporter.write_line(
        f"keepsake peers ({MODE}): Keepsake set up on {SERVED['apps']} apps, "
        f"{SERVED['requests']} request contexts with its session interface, "
        f"{SERVED['other']} with another"
    )
    path = os.environ.get("KEEPSAKE_PEERS_REPORT")
    if not path:
        return
    counts: dict[str, int] = dict(SERVED)
    for outcome in ("passed", "xfailed", "skipped", "failed", "error", "xpassed"):
        reports = terminalreporter.stats.get(outcome, [])
        counts[outcome] = len({getattr(r, "nodeid", "") for r in reports})
    with open(path, "w") as f:
        json.dump(counts, f)
