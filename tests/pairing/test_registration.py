"""RunnerRegistration on the real server and on memory://: key binding, limits, refusals.

Every refusal must leave the store as it was (apart from the attempt counter and, for
UNAUTHORIZED, one history entry): the snapshot comparisons below read every key the runner
has.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pairing import (
    PairingHistoryService,
    PairingSessionService,
    RefusalReason,
    RegistrationStatus,
    RunnerRegistration,
    keys,
)
from pairing.history import HistoryEvent
from pairing.registration import _REGISTER
from pairing.store import Redis

KEY_A = "a" * 22
KEY_B = "B" * 43
ADDR = "203.0.113.7"


def service(store: Redis, **options: Any) -> RunnerRegistration:
    return RunnerRegistration(store, **options)


async def snapshot(store: Redis, runner_id: str, code: str = "CODE-1") -> dict[str, Any]:
    """Everything the store holds about ``runner_id`` (values, and whether TTLs were reset)."""
    out: dict[str, Any] = {}
    for key in (
        keys.owner(runner_id),
        keys.heartbeat(runner_id),
        keys.runner_code(runner_id),
        keys.code(code),
        keys.runner_key(runner_id),
        keys.runner_apps(runner_id),
    ):
        kind = await store.type(key)
        kind = kind.decode() if isinstance(kind, bytes) else kind
        value = sorted(await store.smembers(key)) if kind == "set" else await store.get(key)
        out[key] = (kind, value)
    out["last_seen"] = await store.zscore(keys.RUNNER_LAST_SEEN, runner_id)
    return out


async def test_keyless_registration_works_as_before(store: Redis) -> None:
    reg = service(store)
    result = await reg.register("r1", "c1", address=ADDR, code="code-1")
    assert result.status is RegistrationStatus.REGISTERED
    assert result.code == "CODE-1" and result.previous_owner is None
    assert await store.get(keys.owner("r1")) == b"c1"
    assert await store.get(keys.code("CODE-1")) == b"r1"
    assert await store.zscore(keys.RUNNER_LAST_SEEN, "r1") is not None
    assert not await reg.is_bound("r1")
    # and a keyless takeover still works for an unbound id
    again = await reg.register("r1", "c2", address=ADDR)
    assert again.status is RegistrationStatus.REGISTERED and again.previous_owner == "c1"
    assert await store.get(keys.code("CODE-1")) is None  # the old code was revoked


async def test_first_key_binds_storing_only_its_sha256(store: Redis) -> None:
    reg = service(store, key_ttl_s=1000)
    await reg.register("r1", "c1", address=ADDR, runner_key=KEY_A)
    stored = await store.get(keys.runner_key("r1"))
    assert stored == hashlib.sha256(KEY_A.encode()).hexdigest().encode()
    assert 900_000 < await store.pttl(keys.runner_key("r1")) <= 1_000_000
    everything = b"".join(
        [k + (await store.dump(k) or b"") for k in await store.keys("*")]  # type: ignore[operator]
    )
    assert KEY_A.encode() not in everything


@pytest.mark.parametrize(
    ("key", "reason"),
    [(None, RefusalReason.KEY_MISSING), (KEY_B, RefusalReason.KEY_MISMATCH)],
)
async def test_a_bound_id_refuses_other_keys_and_changes_nothing(
    store: Redis, key: str | None, reason: RefusalReason
) -> None:
    reg = service(store, key_ttl_s=1000)
    sessions = PairingSessionService(store)
    await reg.register("r1", "owner", address="198.51.100.1", code="CODE-1", runner_key=KEY_A)
    await sessions.create_session("app-0123456789abcdef", "r1")
    await store.pexpire(keys.runner_key("r1"), 500_000)  # to see that no refresh happens
    before = await snapshot(store, "r1")

    for code in ("CODE-1", "OTHER-2", None):  # its own code, a fresh one, a generated one
        result = await reg.register("r1", "thief", address=ADDR, code=code, runner_key=key)
        assert result.status is RegistrationStatus.UNAUTHORIZED
        assert result.reason is reason
    assert await snapshot(store, "r1") == before
    assert await store.get(keys.code("OTHER-2")) is None
    assert await store.pttl(keys.runner_key("r1")) <= 500_000

    history = await PairingHistoryService(store).recent(10, runner_id="r1")
    refused = [e for e in history if e.event == HistoryEvent.REGISTER_REFUSED]
    assert len(refused) == 3
    assert {(e.reason, e.address) for e in refused} == {(reason.value, ADDR)}


async def test_the_owner_key_takes_over_and_refreshes_the_binding(store: Redis) -> None:
    reg = service(store, key_ttl_s=1000)
    await reg.register("r1", "c1", address=ADDR, runner_key=KEY_A)
    await store.pexpire(keys.runner_key("r1"), 5_000)
    result = await reg.register("r1", "c2", address=ADDR, runner_key=KEY_A)
    assert result.status is RegistrationStatus.REGISTERED and result.previous_owner == "c1"
    assert await store.get(keys.owner("r1")) == b"c2"
    assert await store.pttl(keys.runner_key("r1")) > 900_000


async def test_require_key_refuses_keyless_registration(store: Redis) -> None:
    reg = service(store, require_key=True)
    before = await snapshot(store, "r1")
    refused = await reg.register("r1", "c1", address=ADDR, code="CODE-1")
    assert refused.status is RegistrationStatus.UNAUTHORIZED
    assert refused.reason is RefusalReason.KEY_REQUIRED
    assert await snapshot(store, "r1") == before
    assert await store.get(keys.owner("r1")) is None
    ok = await reg.register("r1", "c1", address=ADDR, runner_key=KEY_A)
    assert ok.status is RegistrationStatus.REGISTERED


async def test_a_bad_token_is_refused_even_with_the_right_key(store: Redis) -> None:
    reg = service(store)
    await reg.register("r1", "c1", address=ADDR, runner_key=KEY_A)
    result = await reg.register("r1", "c2", address=ADDR, runner_key=KEY_A, token_ok=False)
    assert result.status is RegistrationStatus.UNAUTHORIZED
    assert result.reason is RefusalReason.BAD_TOKEN
    assert await store.get(keys.owner("r1")) == b"c1"


async def test_code_taken_binds_nothing_and_changes_nothing(store: Redis) -> None:
    reg = service(store)
    await reg.register("other", "c0", address=ADDR, code="CODE-1")
    await reg.register("r1", "c1", address=ADDR, code="MINE-1")
    before = await snapshot(store, "r1", "MINE-1")
    result = await reg.register("r1", "c2", address=ADDR, code="code-1", runner_key=KEY_A)
    assert result.status is RegistrationStatus.CODE_TAKEN
    assert await snapshot(store, "r1", "MINE-1") == before
    assert not await reg.is_bound("r1")  # the refused registration bound no key


async def test_every_attempt_counts_against_the_address(store: Redis) -> None:
    reg = service(store, limit=4, window_s=30)
    await reg.register("r1", "c1", address=ADDR, runner_key=KEY_A)
    statuses = [
        (await reg.register("r1", "x", address=ADDR, runner_key=KEY_B)).status,  # wrong key
        (await reg.register("r2", "x", address=ADDR, code="CODE-9")).status,
        (await reg.register("r3", "x", address=ADDR, code="code-9")).status,  # taken
    ]
    assert statuses == [
        RegistrationStatus.UNAUTHORIZED,
        RegistrationStatus.REGISTERED,
        RegistrationStatus.CODE_TAKEN,
    ]
    # the 5th attempt, even with the right key, is refused before any check
    limited = await reg.register("r1", "c9", address=ADDR, runner_key=KEY_A)
    assert limited.status is RegistrationStatus.RATE_LIMITED
    assert await store.get(keys.owner("r1")) == b"c1"
    # another address is not affected
    other = await reg.register("r1", "c9", address="192.0.2.1", runner_key=KEY_A)
    assert other.status is RegistrationStatus.REGISTERED
    counter = reg.attempts_key(ADDR)
    assert 25_000 < await store.pttl(counter) <= 30_000


async def test_400_distinct_runners_from_one_address_stay_bounded(store: Redis) -> None:
    limit = 60
    reg = service(store, limit=limit)
    statuses = []
    for i in range(400):
        key = secrets.token_urlsafe(16) if i % 2 else None
        result = await reg.register(f"flood-{i}", f"c{i}", address=ADDR, runner_key=key)
        statuses.append(result.status)
    assert statuses[:limit] == [RegistrationStatus.REGISTERED] * limit
    assert statuses[limit:] == [RegistrationStatus.RATE_LIMITED] * (400 - limit)
    # per registered runner: owner, heartbeat, code, runner code (+ binding for half), plus
    # the shared last_seen zset and the address's counter
    n_keys = len(await store.keys("*"))
    assert n_keys == limit * 4 + limit // 2 + 2
    assert await store.zcard(keys.RUNNER_LAST_SEEN) == limit


async def test_a_binding_expires_key_ttl_after_the_last_registration(store: Redis) -> None:
    reg = service(store, key_ttl_s=0.3)
    await reg.register("r1", "c1", address=ADDR, runner_key=KEY_A)
    ttl_ms = await store.pttl(keys.runner_key("r1"))
    assert 0 < ttl_ms <= 300
    await asyncio.sleep(ttl_ms / 1000 + 0.05)  # a TTL is time: nothing to await but the clock
    assert not await reg.is_bound("r1")
    result = await reg.register("r1", "c2", address=ADDR, runner_key=KEY_B)
    assert result.status is RegistrationStatus.REGISTERED
    refused = await reg.register("r1", "c3", address=ADDR, runner_key=KEY_A)
    assert refused.reason is RefusalReason.KEY_MISMATCH


async def test_release_frees_the_id_for_a_new_key(store: Redis) -> None:
    reg = service(store)
    await reg.register("r1", "c1", address=ADDR, runner_key=KEY_A)
    assert await reg.release_key("r1") is True
    assert await reg.release_key("r1") is False
    assert await store.get(keys.owner("r1")) == b"c1"  # the connection is left alone
    result = await reg.register("r1", "c2", address=ADDR, runner_key=KEY_B)
    assert result.status is RegistrationStatus.REGISTERED
    assert (await reg.register("r1", "c3", address=ADDR, runner_key=KEY_A)).status is (
        RegistrationStatus.UNAUTHORIZED
    )
    history = await PairingHistoryService(store).recent(10, runner_id="r1")
    assert [e.event for e in history].count(HistoryEvent.RUNNER_KEY_RELEASED) == 1


def test_the_script_writes_the_history_event_name() -> None:
    assert f"'{HistoryEvent.REGISTER_REFUSED.value}'" in _REGISTER


_ATTEMPTS = st.lists(
    st.tuples(
        st.sampled_from(["r1", "r2"]),
        st.sampled_from([None, KEY_A, KEY_B, "c" * 30]),
        st.sampled_from(["c1", "c2", "c3"]),
        st.booleans(),  # release the binding first (an operator)
    ),
    min_size=1,
    max_size=25,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(attempts=_ATTEMPTS)
async def test_only_the_binding_keys_holder_ever_owns_the_runner(
    redis: Redis, attempts: list[tuple[str, str | None, str, bool]]
) -> None:
    """Any interleaving of concurrent register attempts with random keys: every registration
    that succeeded on a bound id presented the binding key; a refused one changed no owner."""
    await redis.flushdb()
    reg = service(redis)

    async def attempt(runner: str, key: str | None, conn: str, release: bool) -> Any:
        if release:
            await reg.release_key(runner)
        return await reg.register(runner, f"{conn}:{key}", address=ADDR, runner_key=key)

    # Concurrent callers: the service's scripts run atomically in some order; the owners
    # and bindings must tell a story in which every owner change was authorized.
    results = await asyncio.gather(*(attempt(*a) for a in attempts))
    for runner in ("r1", "r2"):
        owner = await redis.get(keys.owner(runner))
        bound = await redis.get(keys.runner_key(runner))
        if owner is not None and bound is not None:
            owner_key = owner.decode().split(":", 1)[1]
            assert owner_key != "None"
            assert hashlib.sha256(owner_key.encode()).hexdigest().encode() == bound
    for result in results:
        if result.status is RegistrationStatus.UNAUTHORIZED:  # only bound ids refuse
            assert result.reason in (RefusalReason.KEY_MISSING, RefusalReason.KEY_MISMATCH)
        else:
            assert result.status is RegistrationStatus.REGISTERED


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(attempts=_ATTEMPTS)
async def test_sequential_attempts_follow_the_binding_model(
    redis: Redis, attempts: list[tuple[str, str | None, str, bool]]
) -> None:
    """One at a time, each outcome is what a model of bindings predicts, and owners only
    change on an authorized registration."""
    await redis.flushdb()
    reg = service(redis)
    bound: dict[str, str] = {}
    owner: dict[str, str] = {}
    for runner, key, conn, release in attempts:
        if release:
            assert await reg.release_key(runner) is (runner in bound)
            bound.pop(runner, None)
        result = await reg.register(runner, conn, address=ADDR, runner_key=key)
        held = bound.get(runner)
        if held is not None and key != held:
            assert result.status is RegistrationStatus.UNAUTHORIZED
            want = RefusalReason.KEY_MISSING if key is None else RefusalReason.KEY_MISMATCH
            assert result.reason is want
        else:
            assert result.status is RegistrationStatus.REGISTERED
            assert result.previous_owner == owner.get(runner)
            owner[runner] = conn
            if key is not None:
                bound[runner] = key
        for r in ("r1", "r2"):
            stored = await redis.get(keys.owner(r))
            assert (stored.decode() if stored else None) == owner.get(r)
