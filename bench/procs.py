"""Processes the benchmark starts: pinned with taskset, recorded by pid, stopped by pid.

Every process goes through ``Procs.spawn``, which pins it to a CPU (``taskset -c``, which
execs the program, so the pid is the program's), asks the kernel to kill it if this process
dies (``PR_SET_PDEATHSIG``), and records it. ``Procs.stop_all`` stops exactly those pids:
SIGTERM, then SIGKILL after a grace period. Nothing here looks processes up by name.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
LOGS = RESULTS / "logs"

_PR_SET_PDEATHSIG = 1
_libc_name = ctypes.util.find_library("c")
_libc = ctypes.CDLL(_libc_name, use_errno=True) if _libc_name else None
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _die_with_parent() -> None:  # runs in the child between fork and exec: no Python locks
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def raise_nofile_limit() -> tuple[int, int]:
    """Raise this process's open-file limit to the hard limit; children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as fh:
        stat = fh.read()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)


def rss_kib(pid: int) -> int:
    """VmRSS of ``pid`` in KiB, from /proc/<pid>/status."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


@dataclass
class Managed:
    name: str
    proc: subprocess.Popen[bytes]
    cpu: int | None
    log_path: Path | None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None:
            return ""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class Procs:
    """The registry of everything this benchmark started."""

    def __init__(self) -> None:
        self.running: list[Managed] = []
        LOGS.mkdir(parents=True, exist_ok=True)

    def spawn(
        self,
        name: str,
        argv: list[str],
        *,
        cpu: int | None,
        pipes: bool = False,
        env: dict[str, str] | None = None,
    ) -> Managed:
        """Start ``argv`` pinned to ``cpu``; stdout/stderr to a log file unless ``pipes``."""
        full = (["taskset", "-c", str(cpu)] if cpu is not None else []) + argv
        log_path = LOGS / f"{name}.log"
        log: IO[bytes] = open(log_path, "wb")  # noqa: SIM115 (handed to the child)
        try:
            proc = subprocess.Popen(
                full,
                stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
                stdout=subprocess.PIPE if pipes else log,
                stderr=log,
                cwd=ROOT,
                env={**os.environ, **(env or {})},
                preexec_fn=_die_with_parent,
                start_new_session=True,  # Ctrl-C reaches only us; we stop children by pid
            )
        finally:
            log.close()
        managed = Managed(name, proc, cpu, log_path)
        self.running.append(managed)
        return managed

    def stop(self, managed: Managed, grace: float = 5.0) -> int | None:
        """SIGTERM ``managed`` by pid, SIGKILL after ``grace`` seconds; return its exit code."""
        proc = managed.proc
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        if managed in self.running:
            self.running.remove(managed)
        return proc.returncode

    def stop_all(self) -> None:
        for managed in reversed(list(self.running)):
            try:
                self.stop(managed, grace=3.0)
            except Exception as exc:  # keep stopping the others
                print(
                    f"bench: could not stop {managed.name} ({managed.pid}): {exc}", file=sys.stderr
                )


# -- redis-server ---------------------------------------------------------------------------


@dataclass
class RedisServer:
    procs: Procs
    cpu: int
    port: int = field(default_factory=free_port)
    managed: Managed | None = None
    workdir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="bench-redis-"))

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self.managed is not None
        return self.managed.pid

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not on the PATH (apt-get install redis-server)")
        argv = [
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
            "--maxclients",
            "20000",
            "--loglevel",
            "warning",
        ]
        self.managed = self.procs.spawn("redis", argv, cpu=self.cpu)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if not self.managed.alive():
                raise RuntimeError(f"redis-server exited:\n{self.managed.log_tail()}")
            try:
                if self.command("PING") == "PONG":
                    return
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def command(self, *args: str) -> str:
        """Send one command in RESP and return the first reply line (no client library)."""
        payload = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(payload.encode())
            reply = s.makefile("rb").readline().decode().rstrip("\r\n")
        if reply.startswith("-"):
            raise RuntimeError(f"redis: {reply[1:]}")
        return reply[1:]

    def flush(self) -> None:
        self.command("FLUSHALL")
        self.command("SCRIPT", "FLUSH")

    def stop(self) -> None:
        if self.managed is not None:
            self.procs.stop(self.managed)
            self.managed = None
        shutil.rmtree(self.workdir, ignore_errors=True)


# -- servers under test -----------------------------------------------------------------------


#: Production settings (the contract's defaults) with quiet logs; scenarios override keys.
GATEWAY_CONFIG: dict[str, Any] = {
    "host": "127.0.0.1",
    "heartbeat": {"interval_s": 10, "timeout_s": 30, "ttl_s": 60},
    "sweep_interval_s": 5,
    "pairing_code": {"ttl_s": 300},
    # The load generator registers thousands of runners from one address.
    "rate_limit": {"pair_failures": 5, "window_s": 60, "registrations": 1_000_000_000},
    "socketio": {"ping_interval_s": 25, "ping_timeout_s": 20},
    "log_format": "json",
    "log_level": "warning",
}


def _wait_http_ok(managed: Managed, url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if not managed.alive():
            raise RuntimeError(f"{managed.name} exited early:\n{managed.log_tail()}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except Exception as exc:
            last = exc
        time.sleep(0.05)
    raise RuntimeError(f"{managed.name} not ready at {url}: {last!r}\n{managed.log_tail()}")


@dataclass
class Server:
    """A gateway (``python -m gateway``) or the bare python-socketio server, one process."""

    managed: Managed
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.managed.pid


def start_gateway(
    procs: Procs,
    name: str,
    redis_url: str,
    *,
    cpu: int,
    overrides: dict[str, Any] | None = None,
) -> Server:
    port = free_port()
    cfg = _merged(GATEWAY_CONFIG, overrides or {})
    cfg["redis_url"] = redis_url
    cfg["port"] = port
    cfg_path = LOGS / f"{name}.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    managed = procs.spawn(
        name, [sys.executable, "-m", "gateway", "--config", str(cfg_path)], cpu=cpu
    )
    server = Server(managed, port)
    _wait_http_ok(managed, f"{server.url}/readyz", timeout=30)
    return server


def start_bare(
    procs: Procs,
    name: str,
    *,
    cpu: int,
    redis_url: str | None = None,
    extra: list[str] | None = None,
) -> Server:
    port = free_port()
    argv = [sys.executable, "-m", "bench.bare_server", "--port", str(port)]
    if redis_url is not None:
        argv += ["--redis-manager", redis_url]
    managed = procs.spawn(name, argv + (extra or []), cpu=cpu)
    server = Server(managed, port)
    _wait_http_ok(managed, f"{server.url}/healthz", timeout=30)
    return server


def _merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


# -- line protocol with child processes (no threads: select on their stdout) ----------------


class LineChannel:
    """Reads whole lines from a child's stdout with a timeout; writes lines to its stdin."""

    def __init__(self, managed: Managed) -> None:
        self.managed = managed
        assert managed.proc.stdout is not None
        self._fd = managed.proc.stdout.fileno()
        os.set_blocking(self._fd, False)
        self._buf = b""
        self._eof = False

    def send(self, line: str) -> None:
        stdin = self.managed.proc.stdin
        assert stdin is not None
        stdin.write(line.encode() + b"\n")
        stdin.flush()

    def expect(self, prefix: str, timeout: float) -> str:
        """The rest of the next line starting with ``prefix`` (other lines are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self._buf:
                raw, self._buf = self._buf.split(b"\n", 1)
                line = raw.decode(errors="replace")
                if line.startswith(prefix):
                    return line[len(prefix) :].strip()
            if self._eof:
                raise RuntimeError(
                    f"{self.managed.name} ended before {prefix!r}:\n{self.managed.log_tail()}"
                )
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"{self.managed.name}: no {prefix!r} within {timeout:.0f}s:\n"
                    f"{self.managed.log_tail()}"
                )
            ready, _, _ = select.select([self._fd], [], [], min(left, 0.5))
            if ready:
                try:
                    chunk = os.read(self._fd, 1 << 20)
                except BlockingIOError:
                    continue
                if not chunk:
                    self._eof = True
                self._buf += chunk
