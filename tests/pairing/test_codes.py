"""PairingCodeService on both stores: short-lived, single-use, one live code per runner."""

from __future__ import annotations

import math

import pytest

from pairing import (
    CODE_ALPHABET,
    CodeTakenError,
    PairingCodeService,
    PairingSessionService,
    RedeemResult,
    RedeemStatus,
)
from pairing.codes import GENERATED_CODE_LENGTH, generate_code
from pairing.store import Redis
from tests.support.store_state import server_now_ms, wait_gone, write_heartbeat


@pytest.fixture
def codes(store: Redis) -> PairingCodeService:
    return PairingCodeService(store)


# -- generated codes -------------------------------------------------------------------------


def test_alphabet_has_no_look_alikes_and_enough_entropy() -> None:
    assert not set("0O1IL") & set(CODE_ALPHABET)
    assert len(set(CODE_ALPHABET)) == len(CODE_ALPHABET)
    assert CODE_ALPHABET.upper() == CODE_ALPHABET
    assert set(CODE_ALPHABET) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
    assert GENERATED_CODE_LENGTH * math.log2(len(CODE_ALPHABET)) >= 40


def test_generated_codes_use_the_alphabet_and_vary() -> None:
    drawn = [generate_code() for _ in range(2000)]
    assert all(len(c) == GENERATED_CODE_LENGTH for c in drawn)
    assert set("".join(drawn)) == set(CODE_ALPHABET)  # every symbol used, nothing else
    for position in range(GENERATED_CODE_LENGTH):  # ... at every position
        assert {c[position] for c in drawn} == set(CODE_ALPHABET), position
    assert len(set(drawn)) == len(drawn)


async def test_register_without_a_code_generates_one(
    store: Redis, codes: PairingCodeService
) -> None:
    before = await server_now_ms(store)
    registered = await codes.register("runner-1")
    after = await server_now_ms(store)
    assert len(registered.code) == GENERATED_CODE_LENGTH
    assert set(registered.code) <= set(CODE_ALPHABET)
    assert before + 300_000 <= registered.expires_at <= after + 300_000
    assert await store.get(f"pairing:code:{registered.code}") == b"runner-1"
    assert await store.get("pairing:runner_code:runner-1") == registered.code.encode()
    for key in (f"pairing:code:{registered.code}", "pairing:runner_code:runner-1"):
        assert 295_000 < await store.pttl(key) <= 300_000
    others = {(await codes.register(f"runner-{i}")).code for i in range(2, 30)}
    assert registered.code not in others and len(others) == 28


# -- proposed codes --------------------------------------------------------------------------


async def test_proposed_code_is_case_insensitive(
    store: Redis, codes: PairingCodeService, sessions: PairingSessionService
) -> None:
    registered = await codes.register("runner-1", "MyCode-42")
    assert registered.code == "MYCODE-42"
    for spelling in ("mycode-42", "MYCODE-42", "MyCoDe-42"):
        assert await codes.lookup(spelling) == "runner-1"
    assert await codes.current_code("runner-1") == "MYCODE-42"
    await sessions.update_heartbeat("runner-1")
    result = await codes.redeem("myCODE-42", "app-1")
    assert result == RedeemResult(RedeemStatus.PAIRED, "runner-1", None)


async def test_code_held_by_another_runner_is_taken(
    store: Redis, codes: PairingCodeService
) -> None:
    await codes.register("runner-1", "ABCD")
    old = (await codes.register("runner-2")).code
    with pytest.raises(CodeTakenError):
        await codes.register("runner-2", "abcd")
    assert await codes.lookup("ABCD") == "runner-1"
    assert await codes.current_code("runner-1") == "ABCD"
    # the failed attempt changed nothing for runner-2 either
    assert await codes.current_code("runner-2") == old
    assert await codes.lookup(old) == "runner-2"


async def test_same_runner_may_propose_its_own_code_again(
    store: Redis, codes: PairingCodeService
) -> None:
    first = await codes.register("runner-1", "ABCD")
    await store.pexpire("pairing:code:ABCD", 10_000)
    await store.pexpire("pairing:runner_code:runner-1", 10_000)
    second = await codes.register("runner-1", "abcd")
    assert second.code == "ABCD"
    assert second.expires_at >= first.expires_at
    assert await codes.lookup("ABCD") == "runner-1"
    assert await store.pttl("pairing:code:ABCD") > 290_000  # the TTL was renewed
    assert await store.pttl("pairing:runner_code:runner-1") > 290_000


async def test_a_code_given_up_by_its_runner_is_free_for_others(
    codes: PairingCodeService,
) -> None:
    await codes.register("runner-1", "ABCD")
    await codes.register("runner-1", "WXYZ")
    assert (await codes.register("runner-2", "abcd")).code == "ABCD"
    assert await codes.lookup("ABCD") == "runner-2"
    assert await codes.lookup("WXYZ") == "runner-1"


# -- one live code per runner ----------------------------------------------------------------


async def test_new_code_revokes_the_old_one(
    store: Redis, codes: PairingCodeService, sessions: PairingSessionService
) -> None:
    old = (await codes.register("runner-1")).code
    new = (await codes.register("runner-1")).code
    assert new != old
    assert await codes.lookup(old) is None
    assert await store.exists(f"pairing:code:{old}") == 0
    assert await codes.current_code("runner-1") == new
    await sessions.update_heartbeat("runner-1")
    assert (await codes.redeem(old, "app-1")).status is RedeemStatus.INVALID_CODE
    assert (await codes.redeem(new, "app-1")).status is RedeemStatus.PAIRED


async def test_proposed_code_replaces_a_generated_one(codes: PairingCodeService) -> None:
    old = (await codes.register("runner-1")).code
    await codes.register("runner-1", "ABCD")
    assert await codes.lookup(old) is None
    assert await codes.current_code("runner-1") == "ABCD"


# -- expiry and single use -------------------------------------------------------------------


async def test_codes_expire(store: Redis) -> None:
    codes = PairingCodeService(store, ttl_s=0.2)
    before = await server_now_ms(store)
    registered = await codes.register("runner-1", "ABCD")
    after = await server_now_ms(store)
    assert before + 200 <= registered.expires_at <= after + 200
    for key in ("pairing:code:ABCD", "pairing:runner_code:runner-1"):
        pttl = await store.pttl(key)
        assert pttl <= 200 and pttl != -1  # expiring (-2: already gone on a slow machine)
    await wait_gone(store, "pairing:code:ABCD")
    await wait_gone(store, "pairing:runner_code:runner-1")
    assert await codes.lookup("ABCD") is None
    assert await codes.current_code("runner-1") is None
    assert await codes.consume("ABCD") is None
    await PairingSessionService(store).update_heartbeat("runner-1")
    assert (await codes.redeem("ABCD", "app-1")).status is RedeemStatus.INVALID_CODE
    # and an expired code can be taken by someone else
    assert (await codes.register("runner-2", "ABCD")).code == "ABCD"


async def test_consume_is_single_use(store: Redis, codes: PairingCodeService) -> None:
    await codes.register("runner-1", "ABCD")
    assert await codes.consume("abcd") == "runner-1"
    assert await codes.consume("ABCD") is None
    assert await codes.lookup("ABCD") is None
    assert await codes.current_code("runner-1") is None
    assert await store.exists("pairing:code:ABCD", "pairing:runner_code:runner-1") == 0


async def test_consume_of_unknown_code(codes: PairingCodeService) -> None:
    assert await codes.consume("NOPE") is None


async def test_redeem_is_single_use(
    codes: PairingCodeService, sessions: PairingSessionService
) -> None:
    await sessions.update_heartbeat("runner-1")
    code = (await codes.register("runner-1")).code
    assert (await codes.redeem(code, "app-1")).status is RedeemStatus.PAIRED
    second = await codes.redeem(code, "app-2")
    assert second == RedeemResult(RedeemStatus.INVALID_CODE)
    assert await sessions.get_session("app-2") is None
    assert await codes.current_code("runner-1") is None


async def test_lookup_does_not_spend(codes: PairingCodeService) -> None:
    await codes.register("runner-1", "ABCD")
    assert await codes.lookup("ABCD") == "runner-1"
    assert await codes.lookup("ABCD") == "runner-1"
    assert await codes.consume("ABCD") == "runner-1"


# -- redeem ----------------------------------------------------------------------------------


async def test_redeem_pairs_the_app(
    store: Redis, codes: PairingCodeService, sessions: PairingSessionService
) -> None:
    await sessions.update_heartbeat("runner-1")
    code = (await codes.register("runner-1")).code
    before = await server_now_ms(store)
    result = await codes.redeem(code, "app-1")
    assert result == RedeemResult(RedeemStatus.PAIRED, "runner-1", None)
    session = await sessions.get_session("app-1")
    assert session is not None and session.runner_id == "runner-1" and session.is_active
    assert session.paired_at >= before
    assert await sessions.get_apps_by_runner_id("runner-1") == ["app-1"]


async def test_redeem_with_offline_runner_does_not_spend_the_code(
    store: Redis, codes: PairingCodeService, sessions: PairingSessionService
) -> None:
    code = (await codes.register("runner-1")).code
    # never beat
    assert await codes.redeem(code, "app-1") == RedeemResult(
        RedeemStatus.RUNNER_OFFLINE, "runner-1"
    )
    # beat 31 s ago by the server's clock
    await write_heartbeat(store, "runner-1", await server_now_ms(store) - 31_000)
    assert (await codes.redeem(code, "app-1")).status is RedeemStatus.RUNNER_OFFLINE
    assert await codes.lookup(code) == "runner-1"
    assert await codes.current_code("runner-1") == code
    assert await sessions.get_session("app-1") is None
    assert await sessions.get_apps_by_runner_id("runner-1") == []
    # the runner comes back: the same code works
    await write_heartbeat(store, "runner-1", await server_now_ms(store) - 29_000)
    assert (await codes.redeem(code, "app-1")).status is RedeemStatus.PAIRED


async def test_redeem_uses_the_configured_heartbeat_timeout(
    store: Redis, sessions: PairingSessionService
) -> None:
    strict = PairingCodeService(store, heartbeat_timeout_s=5)
    code = (await strict.register("runner-1")).code
    await write_heartbeat(store, "runner-1", await server_now_ms(store) - 6_000)
    assert (await strict.redeem(code, "app-1")).status is RedeemStatus.RUNNER_OFFLINE
    assert (await PairingCodeService(store).redeem(code, "app-1")).status is RedeemStatus.PAIRED


async def test_redeem_moves_an_app_from_its_old_runner(
    store: Redis, codes: PairingCodeService, sessions: PairingSessionService
) -> None:
    await sessions.create_session("app-1", "runner-old")
    await sessions.create_session("app-2", "runner-old")
    await sessions.update_heartbeat("runner-new")
    code = (await codes.register("runner-new")).code
    result = await codes.redeem(code, "app-1")
    assert result == RedeemResult(RedeemStatus.PAIRED, "runner-new", "runner-old")
    assert await sessions.get_apps_by_runner_id("runner-old") == ["app-2"]
    assert await sessions.get_apps_by_runner_id("runner-new") == ["app-1"]
    session = await sessions.get_session("app-1")
    assert session is not None and session.runner_id == "runner-new"


async def test_redeem_unknown_code(
    codes: PairingCodeService, sessions: PairingSessionService
) -> None:
    await sessions.create_session("app-1", "runner-1")
    assert await codes.redeem("NOPE-NOPE", "app-1") == RedeemResult(RedeemStatus.INVALID_CODE)
    session = await sessions.get_session("app-1")
    assert session is not None and session.runner_id == "runner-1"  # untouched


# -- revoke ----------------------------------------------------------------------------------


async def test_revoke(store: Redis, codes: PairingCodeService) -> None:
    await codes.register("runner-1", "ABCD")
    assert await codes.revoke("runner-1") is True
    assert await codes.lookup("ABCD") is None
    assert await codes.current_code("runner-1") is None
    assert await codes.revoke("runner-1") is False
    assert await codes.revoke("nobody") is False


async def test_revoke_leaves_a_code_now_held_by_another_runner(
    store: Redis, codes: PairingCodeService
) -> None:
    """Stale pointer: runner-1 still names ABCD, but ABCD belongs to runner-2 now."""
    await codes.register("runner-2", "ABCD")
    await store.set("pairing:runner_code:runner-1", "ABCD")
    assert await codes.revoke("runner-1") is True
    assert await codes.lookup("ABCD") == "runner-2"
    assert await codes.current_code("runner-2") == "ABCD"
