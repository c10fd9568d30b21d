"""Run nginx for tests with a configuration derived from deploy/nginx.conf.

The shipped file is used as it is except for what must differ on a test machine: the replica
addresses, the listen address, the log/pid/temp paths (under a temp prefix), ``daemon off``
and ``master_process off`` (one process, the one we started, stopped by its pid), and
``proxy_bind`` so that nginx reaches the replicas from its own address (127.0.0.2), as it
would from its own host in production; without it the gateway could not tell nginx from the
clients, which all live on 127.0.0.1 here.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.paths import ROOT
from tests.support.redis_server import free_port

DEPLOY_CONF = ROOT / "deploy" / "nginx.conf"
#: The address nginx connects to the replicas from (see the module docstring).
NGINX_PEER = "127.0.0.2"


def nginx_binary() -> str:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if found is None:
        pytest.fail(
            "nginx is not installed: the load-balancer test needs it "
            "(make test installs Debian's nginx when it is missing: scripts/test-deps)",
            pytrace=False,
        )
    return found


def nginx_version() -> str:
    done = subprocess.run([nginx_binary(), "-v"], capture_output=True, text=True, check=False)
    return (done.stderr or done.stdout).strip()


def derive_config(
    source: str, *, prefix: str, port: int, upstreams: list[str], sticky: bool = True
) -> str:
    """deploy/nginx.conf with test addresses and paths; ``sticky=False`` drops ip_hash."""
    conf = source
    conf, n = re.subn(r"^worker_processes .*;$", "worker_processes 1;", conf, flags=re.M)
    assert n == 1, "deploy/nginx.conf: worker_processes line not found"
    head = (
        "daemon off;\n"
        "master_process off;\n"
        f"pid {prefix}/nginx.pid;\n"
        f"error_log {prefix}/error.log info;\n"
    )
    conf = head + conf

    servers = "".join(f"        server {u} max_fails=1 fail_timeout=10s;\n" for u in upstreams)
    conf, n = re.subn(
        r"(?:^\s*server gateway-\d+\.internal:\d+[^;]*;\n)+", servers, conf, flags=re.M
    )
    assert n == 1, "deploy/nginx.conf: the upstream server lines were not found"
    if not sticky:
        conf, n = re.subn(r"^\s*ip_hash;\n", "", conf, flags=re.M)
        assert n == 1
    conf, n = re.subn(r"^(\s*)listen 80;$", rf"\1listen 127.0.0.1:{port};", conf, flags=re.M)
    assert n == 1, "deploy/nginx.conf: listen 80 not found"
    conf, n = re.subn(
        r"access_log /var/log/nginx/\S+ gateway;", f"access_log {prefix}/access.log gateway;", conf
    )
    assert n == 1, "deploy/nginx.conf: access_log line not found"
    paths = "".join(
        f"    {kind}_temp_path {prefix}/{kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf, n = re.subn(
        r"^http \{\n", "http {\n" + paths + f"    proxy_bind {NGINX_PEER};\n", conf, flags=re.M
    )
    assert n == 1
    return conf


@dataclass
class NginxProcess:
    """nginx in the foreground, one process, stopped by pid."""

    upstreams: list[str]
    sticky: bool = True
    port: int = field(default_factory=free_port)
    prefix: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="nginx-test-"))
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def access_log(self) -> Path:
        return Path(self.prefix) / "access.log"

    def start(self) -> None:
        conf = derive_config(
            DEPLOY_CONF.read_text(),
            prefix=self.prefix,
            port=self.port,
            upstreams=self.upstreams,
            sticky=self.sticky,
        )
        conf_path = Path(self.prefix) / "nginx.conf"
        conf_path.write_text(conf)
        self.proc = subprocess.Popen(
            [
                nginx_binary(),
                "-p",
                self.prefix + "/",
                "-c",
                str(conf_path),
                "-e",
                f"{self.prefix}/error.log",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.proc.returncode}:\n{self.errors()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"nginx did not start:\n{self.errors()}")

    def errors(self) -> str:
        try:
            return (Path(self.prefix) / "error.log").read_text()[-4000:]
        except OSError:
            return ""

    def log_lines(self) -> list[str]:
        try:
            return self.access_log.read_text().splitlines()
        except OSError:
            return []

    def stop(self) -> None:
        """Stop exactly the process we started, by pid (SIGTERM: fast shutdown, then SIGKILL)."""
        if self.proc is not None:
            if self.proc.poll() is None:
                os.kill(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    os.kill(self.proc.pid, signal.SIGKILL)
                    self.proc.wait()
            self.proc = None
        shutil.rmtree(self.prefix, ignore_errors=True)
