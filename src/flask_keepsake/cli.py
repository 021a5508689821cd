"""``flask keepsake``: audit the configuration, and look at and end sessions from the command line.

``init_app`` adds the group to ``app.cli``, so every application set up with Keepsake has::

    flask keepsake check      # a security audit of the configuration, like Django's check --deploy
    flask keepsake stats      # the store, where it lives, sessions: live, expired, top users
    flask keepsake cleanup    # purge expired sessions in short batches (cron on SQLite)
    flask keepsake list --user ID
    flask keepsake revoke --user ID | --handle HANDLE | --all --yes
    flask keepsake schema     # the PostgreSQL store's DDL (and GRANTs), for a DBA to apply

Every command runs inside the application context and goes through the store contract only, so it
works the same on every store. ``docs/cli.md`` documents each command and option.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

import click
from flask import current_app
from flask.cli import AppGroup, ScriptInfo

from . import signals
from .audit import (
    DIGEST_PREFIX,
    SALT_ENV,
    SEVERITY_RANK,
    Finding,
    audit,
    check_secret_across_processes,
    seconds_text,
    secret_digest,
)
from .config import permanent_lifetime
from .errors import ConfigError, KeepsakeError, NotInitialized, StoreUnavailable
from .interface import engine_of
from .stores.base import AdminStore, admin_store

if TYPE_CHECKING:
    from flask import Flask

    from .engine import Engine, SessionInfo
    from .extension import Keepsake

security_logger = logging.getLogger("flask_keepsake.security")


keepsake_cli = AppGroup(
    "keepsake",
    help="Keepsake sessions: audit the configuration, show statistics, clean up, list, revoke.",
)


def _engine() -> Engine:
    try:
        return engine_of(current_app)
    except NotInitialized as exc:
        raise click.ClickException(
            f"{exc} Set it up in the application factory that --app names."
        ) from None


@contextmanager
def _store_errors() -> Iterator[None]:
    """Turn a store outage, or a store that cannot do what was asked, into a clear message on
    stderr and exit status 1."""
    try:
        yield
    except StoreUnavailable as exc:
        raise click.ClickException(f"The session store is unavailable: {exc}") from exc
    except KeepsakeError as exc:
        raise click.ClickException(str(exc)) from None


def _keepsake() -> Keepsake:
    _engine()
    keepsake: Keepsake = current_app.extensions["keepsake"]
    return keepsake


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat(timespec="seconds")


def _echo_findings(app: Flask, engine: Engine, findings: list[Finding]) -> None:
    s = engine.settings
    click.echo(f"Keepsake check of {app.name!r} (store {engine.store.describe()}):")
    click.echo(
        click.wrap_text(
            "KEEPSAKE_* keys as read when the app started; Flask's SESSION_COOKIE_*, "
            "PERMANENT_SESSION_LIFETIME and SESSION_REFRESH_EACH_REQUEST as they are now "
            "(requests read them when used).",
            100,
        )
    )
    try:
        lifetime = seconds_text(permanent_lifetime(app))
    except ConfigError as exc:
        lifetime = f"invalid ({exc})"
    click.echo(
        f"Browser sessions: {seconds_text(s.idle_timeout)} idle, "
        f"{seconds_text(s.absolute_timeout)} in all. Persistent sessions: {lifetime} idle, "
        f"{seconds_text(s.permanent_absolute_timeout)} in all."
    )
    if not findings:
        click.echo("No problems found.")
        return
    styles = {"error": "red", "warning": "yellow", "note": "cyan"}
    indent = " " * 16
    for f in findings:
        label = click.style(f"{f.severity.upper():<8}", fg=styles[f.severity], bold=True)
        message = click.wrap_text(f"{f.id}  {f.message}", 100, " " * 9, indent)
        click.echo(f"\n{label} {message[9:]}")
        click.echo(click.wrap_text(f"Fix: {f.fix}", 100, indent, indent))
    errors = sum(f.severity == "error" for f in findings)
    warnings = sum(f.severity == "warning" for f in findings)
    notes = sum(f.severity == "note" for f in findings)
    click.echo(
        f"\n{errors} error{'s' * (errors != 1)}, {warnings} warning{'s' * (warnings != 1)}, "
        f"{notes} note{'s' * (notes != 1)}."
    )


@keepsake_cli.command("check")
@click.option(
    "--url",
    metavar="URL",
    help="The public address of the site, such as https://example.com; checks the scheme and "
    "the cookie Domain against it.",
)
@click.option(
    "--behind-proxy",
    is_flag=True,
    help="The app runs behind a reverse proxy or load balancer; checks that ProxyFix is set up.",
)
@click.option(
    "--ignore",
    "ignored",
    multiple=True,
    metavar="ID",
    help="Leave out a finding by id (repeatable), once you have written down why.",
)
@click.option(
    "--fail-level",
    type=click.Choice(["error", "warning"]),
    default="error",
    show_default=True,
    help="The lowest severity that makes the command exit with status 1 (warning: for CI).",
)
@click.option(
    "--no-spawn",
    is_flag=True,
    help="Do not start a second process to compare SECRET_KEY across restarts.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.pass_context
def check_command(
    ctx: click.Context,
    url: str | None,
    behind_proxy: bool,
    ignored: tuple[str, ...],
    fail_level: str,
    no_spawn: bool,
    as_json: bool,
) -> None:
    """Audit the session and cookie configuration; exit 1 on errors (--fail-level warning: on
    warnings too)."""
    app = _engine().app
    engine = _engine()
    try:
        findings = audit(app, url=url, behind_proxy=behind_proxy)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--url") from None
    if not no_spawn:
        findings += check_secret_across_processes(app, ctx.ensure_object(ScriptInfo))
        findings.sort(key=lambda f: (-SEVERITY_RANK[f.severity], f.id))
    skip = {i.upper() for i in ignored}
    findings = [f for f in findings if f.id not in skip]
    if as_json:
        click.echo(json.dumps([asdict(f) for f in findings], indent=2))
    else:
        _echo_findings(app, engine, findings)
    threshold = SEVERITY_RANK[fail_level]
    if any(SEVERITY_RANK[f.severity] >= threshold for f in findings):
        ctx.exit(1)


@keepsake_cli.command("secret-digest", hidden=True)
def secret_digest_command() -> None:
    """Print an HMAC of SECRET_KEY under the salt in $KEEPSAKE_CHECK_SALT (used by check)."""
    raw = os.environ.get(SALT_ENV)
    if not raw:
        raise click.ClickException(f"{SALT_ENV} is not set; this command is used by 'check'.")
    try:
        salt = bytes.fromhex(raw)
    except ValueError:
        raise click.ClickException(f"{SALT_ENV} must be hexadecimal.") from None
    digest = secret_digest(_engine().app, salt)
    click.echo(DIGEST_PREFIX + (digest or "none"))


# -- stats -----------------------------------------------------------------------------------


@keepsake_cli.command("stats")
@click.option(
    "--user",
    "users",
    multiple=True,
    metavar="ID",
    help="Also count the live sessions of this user (repeatable).",
)
@click.option(
    "--top",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    metavar="N",
    help="How many users to show in the sessions-per-user table.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as JSON.")
def stats_command(users: tuple[str, ...], top: int, as_json: bool) -> None:
    """Show the store, where it lives, and how many sessions it holds."""
    engine = _engine()
    store = engine.store
    now = engine.clock()
    with _store_errors():
        admin = admin_store(store, "flask keepsake stats")
        live = admin.count(now)
        expired = admin.count_expired(now)
        top_users = admin.user_counts(now, top)
        per_user = {uid: len(admin.list_user(uid, now)) for uid in users}
    if as_json:
        data = {
            "store": store.name,
            "location": store.describe(),
            "live": live,
            "expired": expired,
            "top_users": [{"user_id": uid, "sessions": count} for uid, count in top_users],
            "users": per_user,
        }
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"Store:                          {store.name}")
    click.echo(f"Location:                       {store.describe()}")
    click.echo(f"Live sessions:                  {live}")
    click.echo(f"Expired, waiting for cleanup:   {expired}")
    for uid, count in per_user.items():
        click.echo(f"Sessions of user {uid}: {count}")
    click.echo(f"Sessions per user (top {top}):")
    if not top_users:
        click.echo("  no signed-in sessions")
        return
    width = max(len("USER"), *(len(uid) for uid, _ in top_users))
    click.echo(f"  {'USER':<{width}}  SESSIONS")
    for uid, count in top_users:
        click.echo(f"  {uid:<{width}}  {count:>8}")


# -- cleanup ---------------------------------------------------------------------------------

#: Expired sessions deleted per store call by ``flask keepsake cleanup``. On SQLite each call
#: holds the write lock, and a request that finds it held does not queue: SQLite's busy handler
#: polls after 1, 3, 8, 18, 33 ms... A batch of 50 takes a few milliseconds, so a write that
#: collides with it gets in at one of the first polls (500 held the lock for tens of ms, and
#: raised the write p99 during a purge of 1,000,000 sessions from 0.6 to 21 ms).
CLEANUP_BATCH_SIZE: Final = 50
#: The shortest default pause between batches, in seconds: longer than the gaps between the
#: busy handler's first polls, so a waiting write finds the lock free before the next batch.
CLEANUP_MIN_PAUSE: Final = 0.01


def cleanup_pause(took: float, pause: float | None) -> float:
    """Seconds to sleep after a full batch that took ``took`` seconds (``pause`` if given)."""
    if pause is not None:
        return pause
    return max(took, CLEANUP_MIN_PAUSE)


@keepsake_cli.command("cleanup")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=CLEANUP_BATCH_SIZE,
    show_default=True,
    help="Expired sessions deleted per store call; each call holds SQLite's write lock.",
)
@click.option(
    "--pause",
    type=click.FloatRange(min=0),
    default=None,
    metavar="SECONDS",
    help="Sleep between batches so requests can write. Default: as long as the last batch "
    f"took and at least {CLEANUP_MIN_PAUSE * 1000:g} ms, which keeps the store free at least "
    "half the time.",
)
@click.option("--quiet", "-q", is_flag=True, help="Print nothing unless something fails (cron).")
def cleanup_command(batch_size: int, pause: float | None, quiet: bool) -> None:
    """Delete expired sessions in short batches; safe while the app serves requests."""
    app = _engine().app
    engine = _engine()
    store = engine.store
    # One instant for the whole run: the work is bounded, and sessions that expire meanwhile
    # are left to the next run.
    now = engine.clock()
    total = 0
    batches = 0
    started = time.monotonic()
    try:
        with _store_errors():
            # The progress bar's length, where the store can count (the core protocol cannot).
            expected = store.count_expired(now) if isinstance(store, AdminStore) else 0
            with _progress(expected, quiet) as bar:
                while True:
                    began = time.monotonic()
                    purged = store.purge_expired(now, batch_size)
                    took = time.monotonic() - began
                    if purged == 0:
                        break
                    total += purged
                    batches += 1
                    if bar is not None:
                        bar.update(purged)
                    # The contract says to call until a batch comes back empty; a short batch
                    # usually means the next will be, so no need to wait for it.
                    if purged == batch_size:
                        time.sleep(cleanup_pause(took, pause))
    finally:
        if total:
            security_logger.info("Cleanup purged %d expired session(s).", total)
            signals.session_expired.send(app, count=total)
    if not quiet:
        elapsed = time.monotonic() - started
        click.echo(
            f"Purged {total} expired session{'s' * (total != 1)} in {batches} "
            f"batch{'es' * (batches != 1)} ({elapsed:.1f} s)."
        )


@contextmanager
def _progress(length: int, quiet: bool) -> Iterator[Any]:
    if quiet or length == 0:
        yield None
        return
    with click.progressbar(length=length, label="Purging expired sessions", file=sys.stderr) as bar:
        yield bar


# -- list and revoke -------------------------------------------------------------------------


def _session_dict(info: SessionInfo) -> dict[str, Any]:
    return {
        "handle": info.handle,
        "user_id": info.user_id,
        "created": _iso(info.created),
        "last_seen": _iso(info.last_seen),
        "expires": _iso(info.expires),
        "absolute_expires": _iso(info.absolute_expires),
        "auth_time": _iso(info.auth_time),
        "ip": info.ip,
        "user_agent": info.user_agent,
        "persistent": info.persistent,
    }


@keepsake_cli.command("list")
@click.option(
    "--user", "user_id", required=True, metavar="ID", help="The user whose sessions to list."
)
@click.option("--json", "as_json", is_flag=True, help="Print the sessions as JSON.")
def list_command(user_id: str, as_json: bool) -> None:
    """List the live sessions of one user, oldest first."""
    _engine()
    with _store_errors():
        infos = _keepsake().sessions(user_id)
    if as_json:
        click.echo(json.dumps([_session_dict(i) for i in infos], indent=2))
        return
    if not infos:
        click.echo(f"User {user_id} has no live sessions.")
        return
    click.echo(f"{len(infos)} live session{'s' * (len(infos) != 1)} of user {user_id} (UTC):")
    header = (
        f"{'HANDLE':<17} {'KIND':<10} {'CREATED':<19} {'LAST SEEN':<19} {'EXPIRES':<19} "
        f"{'IP':<15} AGENT"
    )
    click.echo(header)
    for i in infos:
        stamp = "%Y-%m-%d %H:%M:%S"
        kind = "persistent" if i.persistent else "browser"
        click.echo(
            f"{i.handle:<17} {kind:<10} {i.created.strftime(stamp):<19} "
            f"{i.last_seen.strftime(stamp):<19} {i.expires.strftime(stamp):<19} "
            f"{i.ip or '-':<15} {i.user_agent or '-'}"
        )


@keepsake_cli.command("revoke")
@click.option("--user", "user_id", metavar="ID", help="End every session of this user.")
@click.option(
    "--handle",
    metavar="HANDLE",
    help="End the session with this public handle (with --user: only if it is that user's).",
)
@click.option("--all", "everyone", is_flag=True, help="End every session of every user.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation of --all.")
def revoke_command(user_id: str | None, handle: str | None, everyone: bool, yes: bool) -> None:
    """End sessions now: one (--handle), a user's (--user), or everyone's (--all)."""
    app = _engine().app
    engine = _engine()
    if everyone and (user_id or handle):
        raise click.UsageError("--all cannot be combined with --user or --handle.")
    if not (everyone or user_id or handle):
        raise click.UsageError("Say what to revoke: --user ID, --handle HANDLE, or --all --yes.")
    keepsake = _keepsake()
    with _store_errors():
        if handle is not None:
            if not keepsake.revoke(handle, user_id=user_id):
                owner = f" of user {user_id}" if user_id else ""
                raise click.ClickException(f"No live session{owner} has the handle {handle!r}.")
            click.echo(f"Revoked session {handle}.")
        elif user_id is not None:
            count = keepsake.revoke_all(user_id, keep_current=False)
            click.echo(f"Revoked {count} session{'s' * (count != 1)} of user {user_id}.")
        else:
            _revoke_everyone(app, engine, yes)


def _revoke_everyone(app: Flask, engine: Engine, yes: bool) -> None:
    store = admin_store(engine.store, "flask keepsake revoke --all")
    live = store.count(engine.clock())
    if not yes:
        click.confirm(f"End all {live} live sessions? Every user will be logged out.", abort=True)
    # One contract call on every store: expired records and the store's indexes go too.
    deleted = store.delete_all()
    if live:
        security_logger.info("All sessions revoked from the command line: %d.", live)
        signals.session_revoked.send(app, handle=None, user_id=None, count=live)
    plural = "s" * (live != 1)
    if deleted == live:
        click.echo(f"Revoked all {live} session{plural}.")
    else:
        click.echo(
            f"Revoked all {live} live session{plural}; {deleted} record{'s' * (deleted != 1)} "
            "deleted in all (expired ones included)."
        )


# -- schema ----------------------------------------------------------------------------------


@keepsake_cli.command("schema")
@click.option(
    "--grant",
    "role",
    metavar="ROLE",
    default=None,
    help="Also print the GRANTs that let ROLE (the application's role) use the tables.",
)
def schema_command(role: str | None) -> None:
    """Print the SQL that creates the PostgreSQL store's tables, for a DBA to apply."""
    from .stores.postgres import PostgresStore

    store = _engine().store
    if not isinstance(store, PostgresStore):
        raise click.ClickException(
            f"KEEPSAKE_STORE names the {store.name} store; `schema` is for the PostgreSQL store "
            "(postgresql://...), whose tables a DBA may create."
        )
    click.echo(f"-- Keepsake session store: {store.describe()}")
    click.echo(store.schema_sql(), nl=False)
    if role is not None:
        try:
            click.echo(store.grants_sql(role), nl=False)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
