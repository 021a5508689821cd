"""Start and stop real ``redis-server`` and PostgreSQL processes on free loopback ports, for tests
and benchmarks.

::

    from flask_keepsake.testing.servers import RedisServer

    server = RedisServer(tmp_path / "redis").start()     # a free port on 127.0.0.1
    app.config["KEEPSAKE_STORE"] = server.url
    ...
    server.stop()

Never touches any other Redis on the machine: every server here is started on a port picked
here, with its files in the given directory, and is stopped by its own pid. Needs redis-py (the
``redis`` extra) and the ``redis-server`` binary; under pytest a missing binary skips the test
with a loud reason, or fails it when the environment variable ``CI`` is ``true``.

:class:`PostgresServer` does the same for PostgreSQL: ``initdb`` into a fresh directory and
``pg_ctl start`` on a free loopback port, its unix socket in that directory, stopped by the pid in
its ``postmaster.pid``. PostgreSQL refuses to run as root, so as root the server runs as the
unprivileged user ``nobody`` (its directory is created for it, outside the caller's directory,
which root's private temporary directories would not let it reach). Needs psycopg (the
``postgres`` extra) and ``initdb``/``pg_ctl`` from PATH or ``/usr/lib/postgresql/*/bin``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NoReturn

import redis

STARTUP_TIMEOUT = 10.0


class MissingServer(RuntimeError):
    """The server binary is not installed."""


def redis_binary(name: str = "redis-server") -> str:
    """The path of ``name``.

    If it is missing: under pytest, skip the test loudly (fail it when ``CI=true``); elsewhere
    raise :class:`MissingServer`.
    """
    path = shutil.which(name)
    if path is None:
        _missing(
            f"{name} is not on PATH: the Redis tests did NOT run. Install Redis 7 "
            "(for example `apt-get install redis-server`) to run them."
        )
    return path


def postgres_binary(name: str) -> str:
    """The path of PostgreSQL's ``name`` (``initdb``, ``pg_ctl``): on PATH, or in Debian's
    ``/usr/lib/postgresql/<version>/bin`` (newest first); missing as in :func:`redis_binary`."""
    path = shutil.which(name)
    if path is None:
        found = sorted(
            glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
            key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0,
        )
        path = found[-1] if found else None
    if path is None:
        _missing(
            f"{name} is not on PATH nor in /usr/lib/postgresql/*/bin: the PostgreSQL tests did "
            "NOT run. Install PostgreSQL (for example `apt-get install postgresql`) to run them."
        )
    return path


def _missing(message: str) -> NoReturn:
    """Skip the test loudly under pytest (fail it when ``CI=true``); else raise MissingServer."""
    if "pytest" in sys.modules:
        import pytest

        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    raise MissingServer(message)


def free_port(*, with_bus: bool = False) -> int:
    """A TCP port free on 127.0.0.1 (and, with ``with_bus``, port + 10000 free too)."""
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if not with_bus:
            return port
        if port + 10000 > 65535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free loopback port found")


def terminate(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if the process is still there after 10 seconds; wait for it."""
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


class RedisServer:
    """One ``redis-server`` process that the tests own.

    :param directory: where its files (log, AOF, cluster config) go.
    :param args: extra ``redis-server`` arguments, such as ``("--appendonly", "yes")``.
    """

    def __init__(self, directory: Path, *args: str, port: int | None = None) -> None:
        self.directory = directory
        self.args = args
        self.port = port if port is not None else free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._admin: redis.Redis | None = None

    @property
    def url(self) -> str:
        """The ``redis://`` URL of database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        """The process id of the running server."""
        assert self.process is not None
        return self.process.pid

    def start(self) -> RedisServer:
        """Start the server and wait until it answers PING."""
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [
            redis_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--logfile",
            "redis.log",
            "--save",
            "",
            "--appendonly",
            "no",
            # DEBUG SLEEP simulates a slow server; "local" allows it from loopback only.
            "--enable-debug-command",
            "local",
            *self.args,
        ]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if self.process.poll() is not None:
                log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server exited with {self.process.returncode}:\n{log}")
            try:
                if self.admin().ping():
                    return self
            except redis.RedisError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("redis-server did not answer PING in time") from None
                time.sleep(0.02)

    def admin(self) -> redis.Redis:
        """A client for test set-up and inspection, separate from any store's client."""
        if self._admin is None:
            self._admin = redis.Redis(
                host="127.0.0.1", port=self.port, socket_timeout=5, socket_connect_timeout=1
            )
        return self._admin

    def command(self, *args: Any) -> Any:
        """Run one command on a fresh connection (for use while the server misbehaves)."""
        with redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=10) as client:
            return client.execute_command(*args)

    def pause(self) -> None:
        """Freeze the process (SIGSTOP): connections stay open, nothing answers."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused process run again (SIGCONT)."""
        os.kill(self.pid, signal.SIGCONT)

    def kill(self) -> None:
        """Kill the process at once (SIGKILL), as a crash would."""
        self._close_admin()
        if self.process is not None and self.process.poll() is None:
            self.resume()
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        """Stop the process by its pid and wait for it."""
        self._close_admin()
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGCONT)
            terminate(self.process)

    def _close_admin(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None


class RedisClusterServers:
    """Three ``redis-server`` primaries joined into a cluster with ``redis-cli --cluster``."""

    def __init__(self, directory: Path) -> None:
        self.nodes = [
            RedisServer(
                directory / f"node{i}",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
                port=free_port(with_bus=True),
            )
            for i in range(3)
        ]

    @property
    def url(self) -> str:
        """A ``redis://`` URL of one node (the client discovers the others)."""
        return self.nodes[0].url

    def start(self) -> RedisClusterServers:
        """Start the nodes, join them, and wait until every node reports the cluster ok."""
        cli = redis_binary("redis-cli")
        try:
            for node in self.nodes:
                node.start()
            subprocess.run(
                [
                    cli,
                    "--cluster",
                    "create",
                    *(f"127.0.0.1:{node.port}" for node in self.nodes),
                    "--cluster-replicas",
                    "0",
                    "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=30,
            )
            deadline = time.monotonic() + STARTUP_TIMEOUT
            while not all(self._ok(node) for node in self.nodes):
                if time.monotonic() > deadline:
                    raise RuntimeError("the Redis cluster did not reach state ok in time")
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise
        return self

    @staticmethod
    def _ok(node: RedisServer) -> bool:
        info: Any = node.admin().execute_command("CLUSTER", "INFO")  # type: ignore[no-untyped-call]
        text = info.decode() if isinstance(info, bytes) else str(info)
        return "cluster_state:ok" in text

    def flush(self) -> None:
        """Empty every node."""
        for node in self.nodes:
            node.admin().flushall()

    def stop(self) -> None:
        """Stop every node."""
        for node in self.nodes:
            node.stop()


class RedisSentinel:
    """A ``redis-server --sentinel`` watching one primary as ``name``, quorum 1, fast failover."""

    def __init__(self, directory: Path, primary: RedisServer, name: str = "sessions") -> None:
        self.directory = directory
        self.primary = primary
        self.name = name
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisSentinel:
        """Write its config (the sentinel rewrites it), start it, wait until it names one."""
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "sentinel.conf"
        config.write_text(
            f"port {self.port}\n"
            "bind 127.0.0.1\n"
            f"dir {self.directory}\n"
            f"sentinel monitor {self.name} 127.0.0.1 {self.primary.port} 1\n"
            f"sentinel down-after-milliseconds {self.name} 500\n"
            f"sentinel failover-timeout {self.name} 5000\n"
        )
        self.process = subprocess.Popen(
            [redis_binary(), str(config), "--sentinel", "--logfile", "sentinel.log"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.directory,
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-sentinel exited with {self.process.returncode}")
            try:
                with redis.Redis(port=self.port, socket_timeout=1) as client:
                    if client.sentinel_get_master_addr_by_name(self.name):
                        return self
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("redis-sentinel did not start in time")
            time.sleep(0.05)

    def primary_port(self) -> int | None:
        """The port of the primary the sentinel names now."""
        with redis.Redis(port=self.port, socket_timeout=1) as client:
            address = client.sentinel_get_master_addr_by_name(self.name)
        return None if not address else int(address[1])

    def stop(self) -> None:
        """Stop the sentinel by its pid."""
        if self.process is not None and self.process.poll() is None:
            terminate(self.process)


class PostgresServer:
    """One PostgreSQL server that the tests own: ``initdb`` into a fresh directory, then
    ``pg_ctl start`` on a free loopback port, with trust authentication for its superuser
    ``postgres`` on loopback only.

    :param directory: where the log goes; the data directory is created beside it (as root, a
        new directory under the system's temporary directory owned by ``nobody``).
    :param settings: extra server settings, such as ``{"max_connections": "20"}``.
    """

    def __init__(self, directory: Path, settings: dict[str, str] | None = None) -> None:
        self.directory = directory
        self.settings = settings or {}
        self.port = free_port()
        self._user: str | None = None
        self.data: Path | None = None

    @property
    def url(self) -> str:
        """The ``postgresql://`` URL of the database ``postgres`` as the superuser."""
        return self.url_of("postgres")

    def url_of(self, dbname: str) -> str:
        """The ``postgresql://`` URL of the database ``dbname`` as the superuser."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    @property
    def pid(self) -> int:
        """The process id of the running postmaster (from ``postmaster.pid``)."""
        assert self.data is not None
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def _run(self, *command: str, timeout: float = 60) -> None:
        done = subprocess.run(
            command,
            user=self._user,
            group=None if self._user is None else pwd.getpwnam(self._user).pw_gid,
            capture_output=True,
            timeout=timeout,
            check=False,
            env={**os.environ, "LC_ALL": "C"},
        )
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode(errors="replace")[-3000:]
            raise RuntimeError(f"{command[0]} {command[1]} failed ({done.returncode}):\n{output}")

    def start(self) -> PostgresServer:
        """``initdb`` on first start, then ``pg_ctl start`` and wait until it accepts queries."""
        initdb = postgres_binary("initdb")
        pg_ctl = postgres_binary("pg_ctl")
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.data is None:
            if os.geteuid() == 0:
                self._user = "nobody"
                entry = pwd.getpwnam(self._user)
                home = Path(tempfile.mkdtemp(prefix="keepsake-pg-"))
                os.chown(home, entry.pw_uid, entry.pw_gid)
            else:
                home = self.directory
            self.data = home / "data"
            self._run(
                initdb, "-D", str(self.data), "-U", "postgres", "-A", "trust",
                "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions",
            )  # fmt: skip
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.data.parent),
            "fsync": "off",
            "full_page_writes": "off",
            "max_connections": "100",
            "shared_buffers": "32MB",
            **self.settings,
        }
        options = " ".join(f"-c {name}={value}" for name, value in settings.items())
        self._run(
            pg_ctl, "start", "-D", str(self.data), "-w", "-t", str(int(STARTUP_TIMEOUT * 3)),
            "-l", str(self.data.parent / "postgres.log"), "-o", options,
        )  # fmt: skip
        return self

    def log_text(self) -> str:
        """The server's log so far."""
        assert self.data is not None
        return (self.data.parent / "postgres.log").read_text(errors="replace")

    def execute(self, statement: str, params: Any = None, *, dbname: str = "postgres") -> Any:
        """Run one statement as the superuser on a fresh connection; return its rows, if any."""
        import psycopg

        with psycopg.connect(self.url_of(dbname), autocommit=True, connect_timeout=5) as conn:
            cursor = conn.execute(statement, params)
            return cursor.fetchall() if cursor.description is not None else None

    def stop(self, mode: str = "fast") -> None:
        """Stop the server by its pid: SIGINT for ``fast`` (ends sessions), SIGTERM for
        ``smart``, SIGQUIT for ``immediate`` (as a crash would); wait until it is gone."""
        if self.data is None or not (self.data / "postmaster.pid").exists():
            return
        pid = self.pid
        sig = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}[mode]
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, sig)
        deadline = time.monotonic() + 30
        while _alive(pid):
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                break
            time.sleep(0.02)

    def restart(self) -> None:
        """Stop (fast) and start again on the same port, keeping the data."""
        self.stop()
        self.start()

    def remove(self) -> None:
        """Stop the server and delete its data directory."""
        self.stop()
        if self.data is not None:
            shutil.rmtree(self.data.parent if self._user else self.data, ignore_errors=True)
            self.data = None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes (its parent, pg_ctl's shell, has exited).
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True
