"""``flask keepsake``: check, stats, cleanup, list and revoke, run through Flask's CLI runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from flask_keepsake import Keepsake, cli, signals
from flask_keepsake.audit import audit
from flask_keepsake.cli import CLEANUP_BATCH_SIZE, CLEANUP_MIN_PAUSE, cleanup_pause
from flask_keepsake.interface import engine_of
from flask_keepsake.stores import MemoryStore
from flask_keepsake.testing import login_client

from .conftest import AppFactory, spy
from .helpers import FakeClock

#: What these tests check goes through each store's own code: run them on every store.
pytestmark = pytest.mark.every_store

IDLE = 30 * 60


def run(app: Flask, *args: str, input: str | None = None) -> Result:
    """Run ``flask keepsake ARGS`` against ``app``."""
    return app.test_cli_runner().invoke(args=["keepsake", *args], input=input)


def ids(result: Result) -> list[str]:
    """The finding ids of a ``check --json`` run."""
    return [f["id"] for f in json.loads(result.stdout)]


def check(app: Flask, *args: str) -> Result:
    """``check --no-spawn --json`` with extra arguments."""
    return run(app, "check", "--no-spawn", "--json", *args)


def _sessions(app: Flask, count: int, user_id: str | int = 1) -> list[str]:
    return [login_client(app.test_client(), user_id) for _ in range(count)]


def _store(app: Flask) -> Any:
    return engine_of(app).store


# -- the group -------------------------------------------------------------------------------


def test_init_app_registers_the_group(app: Flask) -> None:
    """init_app adds 'flask keepsake' and its commands to the app's CLI."""
    result = run(app, "--help")
    assert result.exit_code == 0
    for command in ("check", "stats", "cleanup", "list", "revoke"):
        assert command in result.output
    assert "secret-digest" not in result.output


def test_commands_need_keepsake() -> None:
    """On an app without Keepsake the commands say so and exit 1."""
    app = Flask(__name__)
    from flask_keepsake.cli import keepsake_cli

    app.cli.add_command(keepsake_cli)
    result = run(app, "stats")
    assert result.exit_code == 1
    assert "Keepsake is not set up" in result.output


# -- check -----------------------------------------------------------------------------------


def test_check_passes_on_secure_defaults(app: Flask) -> None:
    """The defaults plus a good SECRET_KEY pass with exit status 0."""
    result = run(app, "check", "--no-spawn")
    assert result.exit_code == 0, result.output
    assert "0 errors, 0 warnings" in result.output or "No problems found." in result.output


def test_check_insecure_cookie_is_an_error(make_app: AppFactory) -> None:
    """A cookie that is not Secure is an error, with a fix."""
    result = check(make_app(KEEPSAKE_COOKIE_SECURE=False))
    assert result.exit_code == 1
    finding = next(f for f in json.loads(result.stdout) if f["id"] == "KS101")
    assert finding["severity"] == "error"
    assert "HTTPS" in finding["fix"]


def test_check_text_output_names_id_severity_and_fix(make_app: AppFactory) -> None:
    """The text report shows each finding's severity, id, message and fix."""
    result = run(make_app(KEEPSAKE_COOKIE_SECURE=False), "check", "--no-spawn")
    assert result.exit_code == 1
    assert "ERROR" in result.output
    assert "KS101" in result.output
    assert "Fix: " in result.output
    assert "1 error" in result.output


def test_check_auto_secure_is_a_warning(make_app: AppFactory) -> None:
    """An app set up in debug mode has the 'auto' loopback exception: a warning."""
    app = make_app(DEBUG=True)
    result = check(app)
    assert "KS102" in ids(result)
    assert result.exit_code == 0
    assert check(app, "--fail-level", "warning").exit_code == 1


def test_check_debug_flag_is_a_warning(app: Flask) -> None:
    """Running with --debug or FLASK_DEBUG=1 is a warning."""
    runner = app.test_cli_runner()
    args = ["keepsake", "check", "--no-spawn", "--json"]
    result = runner.invoke(args=args, env={"FLASK_DEBUG": "1"})
    assert "KS100" in ids(result)


def test_check_httponly_off(make_app: AppFactory) -> None:
    """A session cookie readable by page script is reported."""
    assert "KS103" in ids(check(make_app(SESSION_COOKIE_HTTPONLY=False)))


@pytest.mark.parametrize(
    ("config", "flags"),
    [
        ({}, ["Secure"]),
        ({"REMEMBER_COOKIE_SECURE": True, "REMEMBER_COOKIE_HTTPONLY": False}, ["HttpOnly"]),
        ({"REMEMBER_COOKIE_HTTPONLY": False}, ["Secure", "HttpOnly"]),
    ],
)
def test_check_flask_logins_remember_cookie(config: dict[str, bool], flags: list[str]) -> None:
    """Flask-Login's remember cookie is not Secure by default: check says so in production."""
    flask_login = pytest.importorskip("flask_login")
    app = Flask(__name__)
    app.config.update(SECRET_KEY="remember-secret-0123456789abcdef0123", **config)
    flask_login.LoginManager(app)
    Keepsake(app, store=MemoryStore())
    (finding,) = [f for f in json.loads(check(app).stdout) if f["id"] == "KS110"]
    assert finding["severity"] == "warning"
    assert f"set without {' and '.join(flags)}:" in finding["message"]
    app.config.update(REMEMBER_COOKIE_SECURE=True, REMEMBER_COOKIE_HTTPONLY=True)
    assert "KS110" not in ids(check(app))


def test_check_remember_cookie_only_with_flask_login() -> None:
    app = Flask(__name__)
    app.config.update(SECRET_KEY="remember-secret-0123456789abcdef0123")
    Keepsake(app, store=MemoryStore())
    assert "KS110" not in ids(check(app))


def test_check_missing_secret_key_is_a_warning(make_app: AppFactory) -> None:
    """No SECRET_KEY is a warning: sessions work, CSRF and signed cookies would not."""
    app = make_app(SECRET_KEY=None)
    result = check(app)
    assert "KS201" in ids(result)
    assert result.exit_code == 0
    assert check(app, "--fail-level", "warning").exit_code == 1


def test_check_of_the_quickstart_app_passes() -> None:
    """The quick start's minimal app (no SECRET_KEY: sessions need none) passes check."""
    app = Flask(__name__)
    Keepsake(app, store=MemoryStore())
    result = app.test_cli_runner().invoke(args=["keepsake", "check", "--no-spawn"])
    assert result.exit_code == 0, result.output


def test_check_missing_secret_key_with_csrf_is_an_error() -> None:
    """No SECRET_KEY while CSRFProtect is in use is an error."""
    app = Flask(__name__)
    app.config.update(TESTING=True, KEEPSAKE_STORE="memory://")
    Keepsake(app)
    app.extensions["csrf"] = object()  # what CSRFProtect(app) leaves behind
    findings = {f.id: f for f in audit(app)}
    assert findings["KS201"].severity == "error"


@pytest.mark.parametrize("key", ["dev", "changeme", "Secret"])
def test_check_placeholder_secret_key(make_app: AppFactory, key: str) -> None:
    """A tutorial placeholder SECRET_KEY is an error."""
    result = check(make_app(SECRET_KEY=key))
    assert "KS203" in ids(result)
    assert result.exit_code == 1


@pytest.mark.parametrize("key", ["short-key-123", "a" * 64, b"0123456789"])
def test_check_short_or_repetitive_secret_key(make_app: AppFactory, key: str | bytes) -> None:
    """A short or repetitive SECRET_KEY is a warning."""
    assert "KS202" in ids(check(make_app(SECRET_KEY=key)))


def test_check_random_bytes_secret_key_passes(make_app: AppFactory) -> None:
    """Thirty-two random bytes are a good SECRET_KEY."""
    result = check(make_app(SECRET_KEY=os.urandom(32)))
    assert not {"KS201", "KS202", "KS203"} & set(ids(result))


def test_check_samesite_none(make_app: AppFactory) -> None:
    """SameSite=None (with Secure) is a warning about cross-site requests."""
    result = check(make_app(SESSION_COOKIE_SAMESITE="None"))
    assert "KS105" in ids(result)
    assert "KS104" not in ids(result)


def test_check_samesite_none_without_secure(make_app: AppFactory) -> None:
    """SameSite=None on a cookie that is not always Secure is an error.

    Start-up refuses this combination; check reads the configuration as it is now.
    """
    app = make_app(KEEPSAKE_COOKIE_SECURE=False)
    app.config["SESSION_COOKIE_SAMESITE"] = "None"
    result = check(app)
    assert "KS104" in ids(result)
    assert result.exit_code == 1


def test_check_cookie_name_without_prefix(make_app: AppFactory) -> None:
    """A Secure cookie name without __Host-/__Secure- is a warning."""
    assert "KS106" in ids(check(make_app(SESSION_COOKIE_NAME="sid")))


@pytest.mark.parametrize("domain", ["localhost", "127.0.0.1", "app.localhost", "[::1]"])
def test_check_cookie_domain_on_localhost_or_ip(make_app: AppFactory, domain: str) -> None:
    """A cookie Domain that is a loopback name or an IP address is a warning."""
    result = check(make_app(SESSION_COOKIE_DOMAIN=domain))
    assert "KS108" in ids(result)
    assert "KS107" not in ids(result)


def test_check_shared_cookie_domain(make_app: AppFactory) -> None:
    """A cookie Domain shares the session with subdomains: a warning."""
    result = check(make_app(SESSION_COOKIE_DOMAIN="example.com"))
    assert "KS107" in ids(result)
    assert "KS109" not in ids(
        check(make_app(SESSION_COOKIE_DOMAIN="example.com"), "--url", "https://www.example.com")
    )


def test_check_cookie_domain_not_matching_url(make_app: AppFactory) -> None:
    """A cookie Domain the site's host does not match is an error."""
    result = check(make_app(SESSION_COOKIE_DOMAIN="example.com"), "--url", "https://example.org")
    assert "KS109" in ids(result)


def test_check_plain_http_url(app: Flask) -> None:
    """A public site on plain HTTP is an error; loopback development is not."""
    assert "KS501" in ids(check(app, "--url", "http://example.com"))
    assert "KS501" not in ids(check(app, "--url", "http://localhost:5000"))
    assert "KS501" not in ids(check(app, "--url", "https://example.com"))


def test_check_rejects_a_url_that_is_not_http(app: Flask) -> None:
    """--url must be an http(s) URL."""
    result = run(app, "check", "--no-spawn", "--url", "example.com")
    assert result.exit_code == 2
    assert "--url" in result.output


def test_check_preferred_url_scheme_http(make_app: AppFactory) -> None:
    """SERVER_NAME with PREFERRED_URL_SCHEME 'http' is a warning; 'https' passes."""
    assert "KS502" in ids(check(make_app(SERVER_NAME="example.com")))
    fixed = make_app(SERVER_NAME="example.com", PREFERRED_URL_SCHEME="https")
    assert "KS502" not in ids(check(fixed))


def test_check_behind_proxy_without_proxyfix(app: Flask) -> None:
    """--behind-proxy without ProxyFix is a warning; with ProxyFix it passes."""
    assert "KS503" in ids(check(app, "--behind-proxy"))
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1)  # type: ignore[method-assign]
    assert not {"KS503", "KS504"} & set(ids(check(app, "--behind-proxy")))


def test_check_proxyfix_that_trusts_nothing(app: Flask) -> None:
    """ProxyFix with x_for=0 does not fix the client address: a warning."""
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=0, x_proto=1)  # type: ignore[method-assign]
    assert "KS504" in ids(check(app, "--behind-proxy"))


def test_check_unreachable_store(app: Flask) -> None:
    """A store that does not answer is an error."""
    spy(app).down = True
    result = check(app)
    assert "KS401" in ids(result)
    assert result.exit_code == 1


def test_check_memory_store_in_production() -> None:
    """The memory store outside debug and testing is a warning."""
    app = Flask(__name__)
    app.config["SECRET_KEY"] = os.urandom(32)
    Keepsake(app, store=MemoryStore())
    assert "KS402" in [f.id for f in audit(app)]


def test_check_long_timeouts(make_app: AppFactory) -> None:
    """Timeouts beyond AAL2 are a note; an absolute timeout beyond 30 days is a warning."""
    relaxed = make_app(
        KEEPSAKE_IDLE_TIMEOUT=timedelta(hours=2), KEEPSAKE_ABSOLUTE_TIMEOUT=timedelta(days=1)
    )
    result = check(relaxed)
    assert "KS301" in ids(result)
    assert result.exit_code == 0
    assert "KS302" in ids(check(make_app(KEEPSAKE_ABSOLUTE_TIMEOUT=timedelta(days=60))))


def test_check_touch_interval_close_to_idle_timeout(make_app: AppFactory) -> None:
    """A touch interval over half the idle timeout is a warning."""
    app = make_app(KEEPSAKE_IDLE_TIMEOUT=600, KEEPSAKE_TOUCH_INTERVAL=400)
    assert "KS303" in ids(check(app))


def test_check_ignore(make_app: AppFactory) -> None:
    """--ignore leaves a finding out, and with it its exit status."""
    result = check(make_app(KEEPSAKE_COOKIE_SECURE=False), "--ignore", "ks101")
    assert "KS101" not in ids(result)
    assert result.exit_code == 0


def test_check_notes_when_secret_cannot_be_compared(app: Flask) -> None:
    """Without an import path to start a second process, check says it did not compare keys."""
    result = run(app, "check", "--json")
    assert "KS205" in ids(result)
    assert result.exit_code == 0


def test_audit_is_callable_from_code(app: Flask) -> None:
    """audit() returns findings for use in an application's own tests."""
    with app.app_context():
        assert [f for f in audit(app) if f.severity == "error"] == []


def test_secret_digest_hides_the_key(make_app: AppFactory) -> None:
    """The hidden secret-digest command prints an HMAC of SECRET_KEY, never the key."""
    app = make_app(SECRET_KEY="a-very-secret-key-that-must-never-be-printed")
    runner = app.test_cli_runner()
    result = runner.invoke(
        args=["keepsake", "secret-digest"], env={"KEEPSAKE_CHECK_SALT": "00ff" * 8}
    )
    assert result.exit_code == 0
    assert "never-be-printed" not in result.output
    assert result.output.startswith("keepsake-secret-digest:")


def _write_app(path: Path, secret: str) -> None:
    path.write_text(
        textwrap.dedent(
            f"""
            import os
            from flask import Flask
            from flask_keepsake import Keepsake

            app = Flask(__name__)
            app.config["SECRET_KEY"] = {secret}
            app.config["KEEPSAKE_STORE"] = "sqlite:///sessions.sqlite3"
            Keepsake(app)
            """
        )
    )


def _flask(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLASK_")}
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "ksapp", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.slow
def test_check_detects_secret_key_generated_at_import(tmp_path: Path) -> None:
    """A SECRET_KEY made at import time differs in a second process: an error."""
    _write_app(tmp_path / "ksapp.py", "os.urandom(32)")
    done = _flask(tmp_path, "keepsake", "check")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "KS204" in done.stdout


@pytest.mark.slow
def test_check_accepts_secret_key_fixed_across_processes(tmp_path: Path) -> None:
    """A SECRET_KEY read from configuration is the same in a second process."""
    _write_app(tmp_path / "ksapp.py", "'3f1c0a9e7b5d4c2a8e6f0b1d3c5a7e9f'")
    done = _flask(tmp_path, "keepsake", "check", "--json")
    assert "KS204" not in done.stdout, done.stderr
    assert "KS205" not in done.stdout, done.stderr


# -- stats -----------------------------------------------------------------------------------


def test_stats_shows_store_location_and_counts(app: Flask, clock: FakeClock) -> None:
    """stats prints the store, where it lives, live and expired counts."""
    _sessions(app, 2)
    clock.advance(IDLE + 1)
    _sessions(app, 3)
    store = _store(app)
    result = run(app, "stats")
    assert result.exit_code == 0
    assert f"Store:                          {store.name}" in result.output
    assert f"Location:                       {store.describe()}" in result.output
    assert f"Live sessions:                  {store.count(clock())}" in result.output
    assert f"Expired, waiting for cleanup:   {store.count_expired(clock())}" in result.output


def test_stats_counts_sessions_of_named_users(app: Flask) -> None:
    """stats --user counts the live sessions of each named user."""
    _sessions(app, 2, user_id=5)
    _sessions(app, 1, user_id=6)
    result = run(app, "stats", "--user", "5", "--user", "6", "--user", "7")
    assert "Sessions of user 5: 2" in result.output
    assert "Sessions of user 6: 1" in result.output
    assert "Sessions of user 7: 0" in result.output


def test_stats_json(app: Flask, clock: FakeClock) -> None:
    """stats --json prints the numbers for monitoring."""
    _sessions(app, 2, user_id=5)
    data = json.loads(run(app, "stats", "--json", "--user", "5").stdout)
    assert data["live"] == 2
    assert data["users"] == {"5": 2}
    assert data["top_users"] == [{"user_id": "5", "sessions": 2}]
    assert data["location"] == _store(app).describe()


def test_stats_shows_sessions_per_user_top_n(app: Flask, clock: FakeClock) -> None:
    """stats lists the users with the most live sessions, most first, at most --top of them."""

    def table(result: Result) -> list[list[str]]:
        lines = result.output.splitlines()
        start = lines.index("Sessions per user (top 3):")
        assert lines[start + 1].split() == ["USER", "SESSIONS"]
        return [line.split() for line in lines[start + 2 :]]

    _sessions(app, 3, user_id=7)
    _sessions(app, 1, user_id=5)
    _sessions(app, 2, user_id=8)
    _sessions(app, 2, user_id=6)
    assert app.test_client().post("/set/x", data="1").status_code == 200  # anonymous: not counted
    result = run(app, "stats", "--top", "3")
    assert result.exit_code == 0, result.output
    assert table(result) == [["7", "3"], ["6", "2"], ["8", "2"]]
    clock.advance(IDLE + 1)
    _sessions(app, 1, user_id=5)  # every earlier session has expired
    assert table(run(app, "stats", "--top", "3")) == [["5", "1"]]


def test_stats_top_defaults_to_ten_and_must_be_positive(app: Flask) -> None:
    """Without --top the table holds ten users; --top 0 is a usage error."""
    for user_id in range(12):
        _sessions(app, 1, user_id=user_id)
    data = json.loads(run(app, "stats", "--json").stdout)
    assert len(data["top_users"]) == 10
    assert "Sessions per user (top 10):" in run(app, "stats").output
    assert run(app, "stats", "--top", "0").exit_code == 2


def test_stats_without_signed_in_sessions(app: Flask) -> None:
    """An empty table says so."""
    result = run(app, "stats")
    assert "Sessions per user (top 10):\n  no signed-in sessions" in result.output


def test_stats_store_down(app: Flask) -> None:
    """stats reports a store outage and exits 1, without a traceback."""
    spy(app).down = True
    result = run(app, "stats")
    assert result.exit_code == 1
    assert "The session store is unavailable" in result.output
    assert "Traceback" not in result.output


# -- cleanup ---------------------------------------------------------------------------------


def test_cleanup_purges_in_batches_and_prints_a_count(app: Flask, clock: FakeClock) -> None:
    """cleanup deletes every expired session, batch by batch, and keeps the live ones."""
    _sessions(app, 7)
    clock.advance(IDLE + 1)
    live = _sessions(app, 2)
    store = _store(app)
    expired = store.count_expired(clock())
    result = run(app, "cleanup", "--batch-size", "3", "--pause", "0")
    assert result.exit_code == 0
    assert f"Purged {expired} expired session" in result.stdout
    assert store.count_expired(clock()) == 0
    assert store.count(clock()) == len(live)
    if expired:
        assert spy(app).calls["purge_expired"] == 4  # 3 + 3 + 1, then an empty batch


def test_cleanup_shows_a_progress_bar_on_stderr(app: Flask, clock: FakeClock) -> None:
    """The progress bar goes to stderr, the final count to stdout."""
    _sessions(app, 3)
    clock.advance(IDLE + 1)
    result = run(app, "cleanup", "--pause", "0")
    if _store(app).name.startswith("redis"):
        assert result.stderr == ""
    else:
        assert "Purging expired sessions" in result.stderr
    assert "Purging" not in result.stdout


def test_cleanup_quiet_prints_nothing(app: Flask, clock: FakeClock) -> None:
    """cleanup --quiet is silent on success (for cron)."""
    _sessions(app, 3)
    clock.advance(IDLE + 1)
    result = run(app, "cleanup", "--quiet")
    assert result.exit_code == 0
    assert result.output == ""


def test_cleanup_sends_session_expired(app: Flask, clock: FakeClock) -> None:
    """cleanup sends session_expired once, with the number purged."""
    _sessions(app, 4)
    clock.advance(IDLE + 1)
    expired = _store(app).count_expired(clock())
    seen: list[dict[str, Any]] = []

    def receiver(sender: Flask, **kwargs: Any) -> None:
        assert sender is app
        seen.append(kwargs)

    signals.session_expired.connect(receiver, sender=app)
    try:
        run(app, "cleanup", "--quiet")
    finally:
        signals.session_expired.disconnect(receiver, sender=app)
    assert seen == ([{"count": expired}] if expired else [])


def test_cleanup_store_down_exits_1(app: Flask) -> None:
    """A store outage during cleanup exits 1 with a message on stderr, even with --quiet."""
    spy(app).down = True
    result = run(app, "cleanup", "--quiet")
    assert result.exit_code == 1
    assert "The session store is unavailable" in result.stderr


def test_cleanup_batch_size_must_be_positive(app: Flask) -> None:
    """--batch-size 0 is a usage error."""
    assert run(app, "cleanup", "--batch-size", "0").exit_code == 2


def test_cleanup_defaults_to_small_batches_with_a_pause(
    app: Flask, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """By default cleanup deletes 50 sessions per store call and sleeps after each full batch."""
    _sessions(app, 2 * CLEANUP_BATCH_SIZE + 1)
    clock.advance(IDLE + 1)
    store = spy(app)
    sizes: list[int] = []
    purge = store.purge_expired

    def recording_purge(now: float, batch_size: int = 1000) -> int:
        sizes.append(batch_size)
        return purge(now, batch_size)

    pauses: list[float | None] = []

    def no_pause(took: float, pause: float | None) -> float:
        pauses.append(pause)
        return 0.0

    monkeypatch.setattr(store, "purge_expired", recording_purge)
    monkeypatch.setattr(cli, "cleanup_pause", no_pause)
    result = run(app, "cleanup", "--quiet")
    assert result.exit_code == 0
    assert set(sizes) == {CLEANUP_BATCH_SIZE}
    if len(sizes) > 1:  # Redis expires sessions by itself and may have nothing to purge
        # After each full batch, not after the short or the empty one; no --pause given.
        assert pauses == [None, None]


def test_cleanup_pause_is_at_least_10_ms_unless_given() -> None:
    """The default pause is as long as the last batch and at least 10 ms; --pause overrides."""
    assert cleanup_pause(0.002, None) == CLEANUP_MIN_PAUSE == 0.01
    assert cleanup_pause(0.05, None) == 0.05
    assert cleanup_pause(0.05, 0.0) == 0.0
    assert cleanup_pause(0.0, 2.5) == 2.5


def test_cleanup_while_serving_requests(app: Flask, clock: FakeClock) -> None:
    """Requests keep working while cleanup purges many expired sessions."""
    _sessions(app, 300)
    clock.advance(IDLE + 1)
    client = app.test_client()
    client.post("/set/n", data="0")
    statuses: list[int] = []

    def serve() -> None:
        for i in range(40):
            statuses.append(client.post("/set/n", data=str(i)).status_code)

    worker = threading.Thread(target=serve)
    worker.start()
    result = run(app, "cleanup", "--batch-size", "20")
    worker.join()
    assert result.exit_code == 0
    assert set(statuses) == {200}
    assert client.get("/get/n").data == b"'39'"


# -- list ------------------------------------------------------------------------------------


def test_list_shows_a_users_sessions(app: Flask) -> None:
    """list --user prints one line per live session of the user, with its handle."""
    handles = _sessions(app, 2, user_id=8)
    _sessions(app, 1, user_id=9)
    result = run(app, "list", "--user", "8")
    assert result.exit_code == 0
    assert "2 live sessions of user 8" in result.output
    for handle in handles:
        assert handle in result.output
    assert "127.0.0.1" in result.output


def test_list_shows_which_sessions_are_persistent(app: Flask) -> None:
    """list marks a remembered session persistent, in the table and in --json."""
    keepsake = app.config["TEST_KEEPSAKE"]

    @app.post("/remember")
    def remember() -> str:
        keepsake.login(8, remember=True)
        return "ok"

    app.test_client().post("/remember")
    _sessions(app, 1, user_id=8)
    table = run(app, "list", "--user", "8").output
    assert "persistent" in table
    assert "browser" in table
    rows = json.loads(run(app, "list", "--user", "8", "--json").stdout)
    assert sorted(row["persistent"] for row in rows) == [False, True]


def test_check_says_which_keys_it_read_at_start_up(app: Flask) -> None:
    """check's report says KEEPSAKE_* keys were read at start-up, and prints both policies."""
    output = run(app, "check", "--no-spawn").output
    assert "KEEPSAKE_* keys as read when the app started" in output
    assert "Browser sessions: 30 minutes idle, 12 hours in all." in output
    assert "Persistent sessions: 31 days idle, 90 days in all." in output


def test_list_json(app: Flask) -> None:
    """list --json prints the sessions with ISO dates, never a token or key."""
    handle = _sessions(app, 1, user_id=8)[0]
    rows = json.loads(run(app, "list", "--user", "8", "--json").stdout)
    assert [r["handle"] for r in rows] == [handle]
    assert rows[0]["user_id"] == "8"
    assert rows[0]["created"].endswith("+00:00")
    assert "key" not in rows[0]
    assert "token" not in rows[0]


def test_list_without_sessions(app: Flask) -> None:
    """list for a user without sessions says so."""
    result = run(app, "list", "--user", "nobody")
    assert result.exit_code == 0
    assert "has no live sessions" in result.output


def test_list_needs_a_user(app: Flask) -> None:
    """list without --user is a usage error."""
    assert run(app, "list").exit_code == 2


# -- revoke ----------------------------------------------------------------------------------


def test_revoke_user_logs_out_every_device(app: Flask) -> None:
    """revoke --user ends every session of that user and no other."""
    laptop, phone, other = app.test_client(), app.test_client(), app.test_client()
    login_client(laptop, 4)
    login_client(phone, 4)
    login_client(other, 5)
    result = run(app, "revoke", "--user", "4")
    assert result.exit_code == 0
    assert "Revoked 2 sessions of user 4." in result.output
    assert laptop.get("/whoami").data == b"anonymous"
    assert phone.get("/whoami").data == b"anonymous"
    assert other.get("/whoami").data == b"5"


def test_revoke_handle(app: Flask) -> None:
    """revoke --handle ends that one session."""
    laptop, phone = app.test_client(), app.test_client()
    handle = login_client(laptop, 4)
    login_client(phone, 4)
    result = run(app, "revoke", "--handle", handle)
    assert result.exit_code == 0
    assert laptop.get("/whoami").data == b"anonymous"
    assert phone.get("/whoami").data == b"4"


def test_revoke_handle_scoped_to_user(app: Flask) -> None:
    """revoke --handle --user does not end another user's session."""
    client = app.test_client()
    handle = login_client(client, 4)
    result = run(app, "revoke", "--handle", handle, "--user", "5")
    assert result.exit_code == 1
    assert "No live session of user 5" in result.output
    assert client.get("/whoami").data == b"4"


def test_revoke_unknown_handle_exits_1(app: Flask) -> None:
    """revoke --handle of no live session exits 1."""
    assert run(app, "revoke", "--handle", "no-such-handle").exit_code == 1


def test_revoke_sends_session_revoked(app: Flask) -> None:
    """revoke from the command line sends session_revoked."""
    _sessions(app, 2, user_id=4)
    seen: list[dict[str, Any]] = []

    def receiver(sender: Flask, **kwargs: Any) -> None:
        seen.append(kwargs)

    signals.session_revoked.connect(receiver, sender=app)
    try:
        run(app, "revoke", "--user", "4")
    finally:
        signals.session_revoked.disconnect(receiver, sender=app)
    assert seen == [{"handle": None, "user_id": "4", "count": 2}]


def test_revoke_all_asks_for_confirmation(app: Flask) -> None:
    """revoke --all without --yes asks, and 'no' leaves every session alone."""
    client = app.test_client()
    login_client(client, 4)
    result = run(app, "revoke", "--all", input="n\n")
    assert result.exit_code == 1
    assert "Every user will be logged out" in result.output
    assert client.get("/whoami").data == b"4"


def test_revoke_all_with_yes(app: Flask, clock: FakeClock) -> None:
    """revoke --all --yes ends every session with one delete_all call, on every store."""
    clients = [app.test_client() for _ in range(5)]
    for i, client in enumerate(clients):
        login_client(client, i)
    received: list[dict[str, Any]] = []

    def receiver(sender: Flask, **kwargs: Any) -> None:
        received.append(kwargs)

    signals.session_revoked.connect(receiver, sender=app)
    try:
        result = run(app, "revoke", "--all", "--yes")
    finally:
        signals.session_revoked.disconnect(receiver, sender=app)
    assert result.exit_code == 0, result.output
    assert "Revoked all 5 sessions." in result.output
    assert spy(app).calls["delete_all"] == 1
    assert spy(app).calls["purge_expired"] == 0
    assert received == [{"handle": None, "user_id": None, "count": 5}]
    assert all(c.get("/whoami").data == b"anonymous" for c in clients)
    assert _store(app).count(clock()) == 0
    assert _store(app).user_counts(clock(), 10) == []
    # Signing in again works as usual afterwards.
    login_client(clients[0], 3)
    assert clients[0].get("/whoami").data == b"3"
    assert [uid for uid, _ in _store(app).user_counts(clock(), 10)] == ["3"]


def test_revoke_all_deletes_expired_records_too(app: Flask, clock: FakeClock) -> None:
    """Expired records go as well; only the live ones count as revoked."""
    _sessions(app, 2, user_id=1)
    clock.advance(IDLE + 1)
    _sessions(app, 1, user_id=2)
    store = _store(app)
    result = run(app, "revoke", "--all", "--yes")
    assert result.exit_code == 0, result.output
    # Redis still holds the two expired records too: its TTLs run on real time, not the clock.
    assert "Revoked all 1 live session; 3 records deleted in all" in result.output
    assert store.count(clock() - IDLE - 1) == 0
    assert store.count_expired(clock()) == 0


def test_revoke_batch_size_is_gone(app: Flask) -> None:
    """--batch-size belonged to the old --all loop; it is no longer an option of revoke."""
    assert run(app, "revoke", "--all", "--yes", "--batch-size", "2").exit_code == 2


def test_revoke_needs_a_target(app: Flask) -> None:
    """revoke without --user, --handle or --all is a usage error."""
    result = run(app, "revoke")
    assert result.exit_code == 2
    assert "--user ID, --handle HANDLE, or --all --yes" in result.output


def test_revoke_all_cannot_be_combined(app: Flask) -> None:
    """--all with --user is a usage error."""
    assert run(app, "revoke", "--all", "--user", "4", "--yes").exit_code == 2


def test_revoke_store_down(app: Flask) -> None:
    """revoke during a store outage exits 1 with a clear message."""
    spy(app).down = True
    result = run(app, "revoke", "--user", "4")
    assert result.exit_code == 1
    assert "The session store is unavailable" in result.output


def test_lifecycle_api_revokes_without_a_request(app: Flask) -> None:
    """Keepsake.revoke and revoke_all with a user id work in an app context alone."""
    laptop, phone, tablet = app.test_client(), app.test_client(), app.test_client()
    handle = login_client(laptop, 4)
    login_client(phone, 4)
    login_client(tablet, 4)
    keepsake = Keepsake()
    with app.app_context():
        assert handle in [s.handle for s in keepsake.sessions(4)]
        assert keepsake.revoke(handle) is True
        assert keepsake.revoke_all(4) == 2
        assert keepsake.sessions(4) == []
    assert tablet.get("/whoami").data == b"anonymous"
