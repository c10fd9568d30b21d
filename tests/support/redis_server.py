"""Private redis-server processes for the tests and the benchmarks (never the machine's own
Redis): started on a free port, stopped by pid."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _PortTaken(RuntimeError):
    """The server could not bind its port (or its cluster bus port)."""


def _with_new_bus_port(args: tuple[str, ...]) -> tuple[str, ...]:
    """``args`` with a newly drawn ``--cluster-port`` (a cluster node's bus), if it has one."""
    out = list(args)
    for i, arg in enumerate(out[:-1]):
        if arg == "--cluster-port":
            out[i + 1] = str(free_port())
    return tuple(out)


@dataclass
class RedisProcess:
    """One redis-server on a free port; ``stop``/``start`` keep the port for fault tests."""

    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    workdir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="redis-test-"))
    #: More redis-server options, e.g. a cluster node's (tests/support/redis_cluster.py).
    extra_args: tuple[str, ...] = ()
    _started: bool = field(default=False, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not running"
        return self.proc.pid

    def start(self) -> None:
        """Start the server; on its first start, a port that another process took between
        ``free_port`` and the server's bind (the ephemeral range is shared with every
        outgoing connection) is drawn again, with its cluster bus port, a few times."""
        first = not self._started
        for _ in range(5 if first else 1):
            try:
                self._start_once()
            except _PortTaken:
                if not first:
                    raise
                self.port = free_port()
                self.extra_args = _with_new_bus_port(self.extra_args)
                continue
            self._started = True
            return
        raise RuntimeError("redis-server found no free port in 5 tries")

    def _start_once(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not found; make test installs it (scripts/test-deps)")
        log_path = os.path.join(self.workdir, "redis-server.log")
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    binary,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    self.workdir,
                    "--daemonize",
                    "no",
                    *self.extra_args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self.proc.poll() is not None:
                code, self.proc = self.proc.returncode, None
                with open(log_path, "rb") as fh:
                    said = fh.read().decode(errors="replace")
                if "Address already in use" in said:
                    raise _PortTaken(said)
                raise RuntimeError(f"redis-server exited with {code}:\n{said[-2000:]}")
            time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        """Stop exactly the process we started, by pid."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
