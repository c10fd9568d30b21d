"""Settings: one typed object, built from config.yaml, then PAIRING_* env, then flags.

Every key of the contract's config.yaml is here; keys added since are marked in
``docs/configuration.md``. A bad value is a ConfigError naming the key, which the command
line turns into exit code 2.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import yaml

from pairing.store.cluster import parse_cluster_url

PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
PositiveInt = Annotated[int, msgspec.Meta(gt=0)]
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]


class ConfigError(Exception):
    """The configuration cannot be used; the message says which key and why."""


class Heartbeat(msgspec.Struct, forbid_unknown_fields=True):
    interval_s: PositiveFloat = 10.0
    timeout_s: PositiveFloat = 30.0
    ttl_s: PositiveFloat = 60.0


class PairingCode(msgspec.Struct, forbid_unknown_fields=True):
    ttl_s: PositiveFloat = 300.0


class RateLimit(msgspec.Struct, forbid_unknown_fields=True):
    pair_failures: PositiveInt = 5
    window_s: PositiveFloat = 60.0
    #: runner:register attempts (any outcome) allowed per window, per client address.
    registrations: PositiveInt = 60


class Auth(msgspec.Struct, forbid_unknown_fields=True):
    runner_secret: str | None = None
    #: Refuse runner:register without a runnerKey.
    require_runner_key: bool = False
    #: How long a runnerId stays bound to its key after its last successful registration.
    runner_key_ttl_s: PositiveFloat = 2_592_000.0


class SocketIO(msgspec.Struct, forbid_unknown_fields=True):
    ping_interval_s: PositiveFloat = 25.0
    ping_timeout_s: PositiveFloat = 20.0
    max_payload_bytes: PositiveInt = 1_000_000
    cors_allowed_origins: str | list[str] = "*"
    #: permessage-deflate: a zlib compressor and decompressor per connection (see
    #: docs/configuration.md); off, as in Node's engine.io since v4.
    websocket_compression: bool = False
    #: Outgoing data allowed to wait for one connection; past it its transport is cut.
    max_buffered_bytes: PositiveInt = 4_194_304
    #: Socket.IO's own connection state recovery (CONNECT carries a pid, events an offset);
    #: off because every event then carries one more argument (docs/protocol.md).
    connection_state_recovery: bool = False
    #: How long after a connection ended its client may still recover it.
    max_disconnection_s: PositiveFloat = 120.0


class Resume(msgspec.Struct, forbid_unknown_fields=True):
    """The hold of relayed messages per appSessionId and direction (0 messages: no hold)."""

    max_messages: Annotated[int, msgspec.Meta(ge=0)] = 1000
    max_bytes: PositiveInt = 1_048_576
    ttl_s: PositiveFloat = 120.0
    #: How long a quiet stream keeps its seq counter (at least ttl_s).
    seq_ttl_s: PositiveFloat = 604_800.0


class Relay(msgspec.Struct, forbid_unknown_fields=True):
    #: Refuse app:command / runner:output whose data is not an end-to-end encrypted frame
    #: (and app:resize, whose size E2E clients send inside records).
    require_e2e: bool = False


class History(msgspec.Struct, forbid_unknown_fields=True):
    max_len: PositiveInt = 100_000


class Console(msgspec.Struct, forbid_unknown_fields=True):
    """The operator console at ``/console``: off (404) while ``token`` is unset."""

    token: str | None = None
    #: How often each replica writes its report (health, counts, runners) for the console.
    report_interval_s: PositiveFloat = 5.0

    def __post_init__(self) -> None:
        if self.token is not None and not self.token.strip():
            self.token = None  # an empty token is no token: the console stays off


class RedisOptions(msgspec.Struct, forbid_unknown_fields=True):
    """How writes are acknowledged (the ``redis`` section)."""

    #: Replicas that must have a write before it is acknowledged (WAIT); 0: asynchronous
    #: replication, as Redis does by default.
    wait_replicas: Annotated[int, msgspec.Meta(ge=0)] = 0
    #: How long a write waits for them; then the event's ack is UNAVAILABLE.
    wait_timeout_ms: Annotated[int, msgspec.Meta(ge=1)] = 500


class Settings(msgspec.Struct, forbid_unknown_fields=True):
    host: str = "0.0.0.0"
    port: Port = 8080
    redis_url: str = "redis://127.0.0.1:6379/0"
    heartbeat: Heartbeat = msgspec.field(default_factory=Heartbeat)
    sweep_interval_s: PositiveFloat = 5.0
    pairing_code: PairingCode = msgspec.field(default_factory=PairingCode)
    rate_limit: RateLimit = msgspec.field(default_factory=RateLimit)
    auth: Auth = msgspec.field(default_factory=Auth)
    socketio: SocketIO = msgspec.field(default_factory=SocketIO)
    trusted_proxies: list[str] = msgspec.field(default_factory=list)
    history: History = msgspec.field(default_factory=History)
    resume: Resume = msgspec.field(default_factory=Resume)
    relay: Relay = msgspec.field(default_factory=Relay)
    log_format: Literal["json", "plain", "auto"] = "auto"
    # -- additions to the contract's keys --
    #: Longest a client waits for an ack while the store does not answer (then UNAVAILABLE).
    store_timeout_s: PositiveFloat = 3.0
    redis: RedisOptions = msgspec.field(default_factory=RedisOptions)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    console: Console = msgspec.field(default_factory=Console)

    def __post_init__(self) -> None:
        scheme = self.redis_url.split("://", 1)[0] if "://" in self.redis_url else ""
        if scheme in {"redis+cluster", "rediss+cluster"}:
            parse_cluster_url(self.redis_url)  # a malformed node list stops the start here
        elif scheme not in {
            "redis",
            "rediss",
            "unix",
            "memory",
            "redis+sentinel",
            "rediss+sentinel",
        }:
            raise ValueError(
                "redis_url must start with redis://, rediss://, unix://, redis+sentinel://, "
                "rediss+sentinel://, redis+cluster://, rediss+cluster:// or memory://"
            )
        if self.heartbeat.timeout_s > self.heartbeat.ttl_s:
            raise ValueError("heartbeat.timeout_s must not exceed heartbeat.ttl_s")


ENV_PREFIX = "PAIRING_"


def _env_paths() -> dict[str, tuple[str, ...]]:
    """PAIRING_<SECTION>_<KEY> (or PAIRING_<KEY> for top-level keys) -> path in Settings."""
    paths: dict[str, tuple[str, ...]] = {}
    for field in msgspec.structs.fields(Settings):
        sub = field.type
        if isinstance(sub, type) and issubclass(sub, msgspec.Struct):
            for inner in msgspec.structs.fields(sub):
                name = f"{ENV_PREFIX}{field.name}_{inner.name}".upper()
                paths[name] = (field.name, inner.name)
        else:
            paths[f"{ENV_PREFIX}{field.name}".upper()] = (field.name,)
    return paths


def _set_path(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    target = data
    for part in path[:-1]:
        existing = target.get(part)
        if not isinstance(existing, dict):
            existing = {}
            target[part] = existing
        target = existing
    target[path[-1]] = value


#: Taken as text, never parsed as YAML (a URL or a secret may look like a YAML value).
_TEXT_KEYS = {("redis_url",), ("host",), ("auth", "runner_secret"), ("console", "token")}
#: Secrets for which an empty value (or null) means "not set".
_NULLABLE_SECRETS = {("auth", "runner_secret"), ("console", "token")}


def _parse_env_value(path: tuple[str, ...], raw: str) -> Any:
    if path == ("trusted_proxies",) and not raw.lstrip().startswith("["):
        return [p.strip() for p in raw.split(",") if p.strip()]
    if path in _NULLABLE_SECRETS and raw in {"", "null", "~"}:
        return None
    if path in _TEXT_KEYS:
        return raw
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def load_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """File, then environment, then ``overrides`` (flags; None values are ignored)."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of keys")
        data = loaded
    environ = os.environ if env is None else env
    for name, key_path in _env_paths().items():
        if name in environ:
            _set_path(data, key_path, _parse_env_value(key_path, environ[name]))
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_path(data, tuple(key.split(".")), value)
    try:
        return msgspec.convert(data, Settings, strict=False)
    except (msgspec.ValidationError, ValueError) as exc:
        raise ConfigError(f"invalid configuration: {exc}") from exc
