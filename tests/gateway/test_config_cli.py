"""Settings precedence (flags > env > file), validation, and the command line's exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gateway.config import ConfigError, Settings, load_settings
from pairing import keys
from tests.support.paths import ROOT


def test_shipped_config_has_every_contract_key_and_defaults() -> None:
    settings = load_settings(ROOT / "config.yaml", env={})
    assert settings == Settings()  # the file documents the defaults, it does not change them
    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    for key in [
        "host",
        "port",
        "redis_url",
        "heartbeat",
        "sweep_interval_s",
        "pairing_code",
        "rate_limit",
        "auth",
        "socketio",
        "trusted_proxies",
        "history",
        "log_format",
    ]:
        assert key in raw, key
    assert set(raw["heartbeat"]) == {"interval_s", "timeout_s", "ttl_s"}
    assert set(raw["socketio"]) == {
        "ping_interval_s",
        "ping_timeout_s",
        "max_payload_bytes",
        "cors_allowed_origins",
        "websocket_compression",
        "max_buffered_bytes",
        "connection_state_recovery",
        "max_disconnection_s",
    }
    assert set(raw["resume"]) == {"max_messages", "max_bytes", "ttl_s", "seq_ttl_s"}


def test_connection_state_recovery_is_off_by_default_and_set_by_file_or_env(
    tmp_path: Path,
) -> None:
    assert Settings().socketio.connection_state_recovery is False
    assert Settings().socketio.max_disconnection_s == 120
    path = tmp_path / "c.yaml"
    path.write_text("socketio:\n  connection_state_recovery: true\n  max_disconnection_s: 30\n")
    s = load_settings(path, env={})
    assert s.socketio.connection_state_recovery is True
    assert s.socketio.max_disconnection_s == 30
    env = {
        "PAIRING_SOCKETIO_CONNECTION_STATE_RECOVERY": "false",
        "PAIRING_SOCKETIO_MAX_DISCONNECTION_S": "2.5",
    }
    s = load_settings(path, env=env)
    assert s.socketio.connection_state_recovery is False
    assert s.socketio.max_disconnection_s == 2.5
    for bad in ("0", "-1", "soon"):
        with pytest.raises(ConfigError, match="max_disconnection_s"):
            load_settings(None, env={"PAIRING_SOCKETIO_MAX_DISCONNECTION_S": bad})


def test_env_overrides_file_and_flags_override_env(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("port: 1111\nheartbeat:\n  timeout_s: 12\nredis_url: memory://\n")
    env = {
        "PAIRING_PORT": "2222",
        "PAIRING_HEARTBEAT_TIMEOUT_S": "7",
        "PAIRING_SWEEP_INTERVAL_S": "0.5",
        "PAIRING_TRUSTED_PROXIES": "10.0.0.1, 192.168.0.0/16",
        "PAIRING_AUTH_RUNNER_SECRET": "s3",
        "PAIRING_SOCKETIO_CORS_ALLOWED_ORIGINS": "https://a.example",
    }
    s = load_settings(path, env=env)
    assert s.port == 2222
    assert s.heartbeat.timeout_s == 7
    assert s.heartbeat.ttl_s == 60  # untouched keys keep their defaults
    assert s.sweep_interval_s == 0.5
    assert s.trusted_proxies == ["10.0.0.1", "192.168.0.0/16"]
    assert s.auth.runner_secret == "s3"
    assert s.socketio.cors_allowed_origins == "https://a.example"
    s = load_settings(path, env=env, overrides={"port": 3333, "redis_url": None})
    assert s.port == 3333
    assert s.redis_url == "memory://"


@pytest.mark.parametrize(
    "url", ["redis+cluster://10.0.0.1:7000,10.0.0.2:7000", "rediss+cluster://u:p@h:7000/0"]
)
def test_cluster_urls_are_accepted(tmp_path: Path, url: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"redis_url: {url}\n")
    s = load_settings(path, env={})
    assert s.redis_url == url
    assert keys.layout_for(s.redis_url).cluster
    assert load_settings(None, env={"PAIRING_REDIS_URL": url}).redis_url == url


@pytest.mark.parametrize(
    ("content", "env", "needle"),
    [
        ("port: 70000\n", {}, "port"),
        ("port: [1]\n", {}, "port"),
        ("heartbeat:\n  timeout_s: -1\n", {}, "timeout_s"),
        ("heartbeat:\n  timeout_s: 90\n", {}, "ttl_s"),
        ("bogus_key: 1\n", {}, "bogus_key"),
        ("redis_url: http://x\n", {}, "redis_url"),
        ("redis_url: redis+cluster://h\n", {}, "cluster node 'h' must be host:port"),
        ("", {"PAIRING_REDIS_URL": "rediss+cluster://h:7000/3"}, "only database 0"),
        ("log_format: xml\n", {}, "log_format"),
        ("- a list\n", {}, "mapping"),
        ("port: [\n", {}, "YAML"),
        ("", {"PAIRING_PORT": "eighty"}, "port"),
    ],
)
def test_bad_config_is_a_clear_error(
    tmp_path: Path, content: str, env: dict[str, str], needle: str
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError) as info:
        load_settings(path, env=env)
    assert needle in str(info.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "absent.yaml", env={})


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        env=env,
    )


def test_cli_exits_2_with_a_message_on_bad_config(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("port: not-a-port\n")
    result = _run("--config", str(path))
    assert result.returncode == 2
    assert "port" in result.stderr
    result = _run("--redis-url", "ftp://nowhere")
    assert result.returncode == 2
    assert "redis_url" in result.stderr
    result = _run("--port", "abc")
    assert result.returncode == 2  # argparse's own usage error


def test_cli_help_names_every_flag() -> None:
    result = _run("--help")
    assert result.returncode == 0
    for flag in ("--config", "--host", "--port", "--redis-url"):
        assert flag in result.stdout


async def test_embedded_store_process_says_so_first_and_serves() -> None:
    import json

    import aiohttp

    from tests.support.gateways import Client, GatewayProcess

    proc = GatewayProcess("memory://")
    proc.start()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(proc.url + "/healthz") as resp:
                assert resp.status == 200
            async with http.get(proc.url + "/readyz") as resp:
                assert resp.status == 200
        first = json.loads(proc.log().splitlines()[0])
        assert "memory://" in first["msg"]
        runner = await Client(reconnection=False).connect(proc.url)
        try:
            ack = await runner.call("runner:register", {"runnerId": "solo"})
            assert ack["success"] is True
        finally:
            await runner.close()
    finally:
        assert proc.terminate() == 0


def test_tune_gc_collects_less_often_and_sets_the_start_up_objects_aside() -> None:
    import gc

    from gateway.cli import GC_THRESHOLDS, tune_gc

    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert GC_THRESHOLDS[0] > before[0]
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_relay_require_e2e_from_file_and_env(tmp_path: Path) -> None:
    assert load_settings(None, env={}).relay.require_e2e is False
    path = tmp_path / "c.yaml"
    path.write_text("relay:\n  require_e2e: true\n")
    assert load_settings(path, env={}).relay.require_e2e is True
    s = load_settings(path, env={"PAIRING_RELAY_REQUIRE_E2E": "false"})
    assert s.relay.require_e2e is False
    path.write_text("relay:\n  require_e2e: maybe\n")
    with pytest.raises(ConfigError, match="require_e2e"):
        load_settings(path, env={})


def test_wait_replicas_reaches_the_store_client(tmp_path: Path) -> None:
    """``redis.wait_replicas`` (file or env) is the durability the store's links use."""
    from gateway.app import STORE, create_app

    settings = load_settings(env={"PAIRING_REDIS_WAIT_REPLICAS": "1"})
    assert (settings.redis.wait_replicas, settings.redis.wait_timeout_ms) == (1, 500)
    app = create_app(settings)
    durability = app[STORE].durability  # type: ignore[attr-defined]
    assert (durability.replicas, durability.timeout_ms) == (1, 500)
    with pytest.raises(ConfigError):
        load_settings(env={"PAIRING_REDIS_WAIT_REPLICAS": "-1"})
