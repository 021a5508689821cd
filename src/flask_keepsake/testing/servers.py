"""Start and stop real ``redis-server`` processes on free loopback ports, for tests and benchmarks.

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
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

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
        message = (
            f"{name} is not on PATH: the Redis tests did NOT run. Install Redis 7 "
            "(for example `apt-get install redis-server`) to run them."
        )
        if "pytest" in sys.modules:
            import pytest

            if os.environ.get("CI") == "true":
                pytest.fail(message)
            pytest.skip(message)
        raise MissingServer(message)
    return path


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
