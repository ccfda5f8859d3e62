"""The lease keeper alone (no Redis): a lost lease stops its job; with stop_unleased, so does one it cannot renew."""

from __future__ import annotations

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from arq.leases import LeaseKeeper


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_a_lease_held_by_another_worker_is_given_up() -> None:
    lost: list[tuple[str, str]] = []

    async def refresh(held: dict[str, str]) -> tuple[int, list[str]]:
        return 0, ['b']

    keeper = LeaseKeeper(refresh, 6.0, lambda job_id, why: lost.append((job_id, why)))
    keeper.hold('a', 'w:1')
    keeper.hold('b', 'w:1')
    await keeper.renew()
    assert keeper.held == {'a': 'w:1'}
    assert lost == [('b', 'held by another worker now')]


@pytest.mark.parametrize(('stop_unleased', 'expect_lost'), [(False, []), (True, ['a'])])
async def test_unrenewable_leases_are_kept_by_default_and_given_up_with_stop_unleased(
    stop_unleased: bool, expect_lost: list[str]
) -> None:
    async def refresh(held: dict[str, str]) -> tuple[int, list[str]]:
        raise RedisConnectionError('partitioned')

    clock, lost = Clock(), list[str]()
    keeper = LeaseKeeper(refresh, 6.0, lambda job_id, why: lost.append(job_id), stop_unleased=stop_unleased,
                         clock=clock)  # fmt: skip
    keeper.hold('a', 'w:1')
    clock.now += 4.0  # short of three quarters of the lease: kept either way
    await keeper.renew()
    assert lost == []
    clock.now += 0.5
    await keeper.renew()
    assert lost == expect_lost
    assert ('a' in keeper.held) is not stop_unleased


async def test_a_renewal_resets_the_clock_of_every_lease() -> None:
    fail = False

    async def refresh(held: dict[str, str]) -> tuple[int, list[str]]:
        if fail:
            raise RedisConnectionError('down')
        return 0, []

    clock, lost = Clock(), list[str]()
    keeper = LeaseKeeper(refresh, 6.0, lambda job_id, why: lost.append(job_id), stop_unleased=True, clock=clock)
    keeper.hold('a', 'w:1')
    clock.now += 4.0
    await keeper.renew()  # renewed at 104
    fail = True
    clock.now += 4.0
    await keeper.renew()  # 4 s since the renewal: kept
    assert lost == []


def test_a_drop_with_a_token_leaves_a_newer_lease_of_the_same_job() -> None:
    async def refresh(held: dict[str, str]) -> tuple[int, list[str]]:
        return 0, []

    keeper = LeaseKeeper(refresh, 6.0, lambda job_id, why: None)
    keeper.hold('a', 'w:2')  # claimed again before the settle of its claim w:1 was handled
    assert keeper.drop('a', 'w:1') is False and keeper.held == {'a': 'w:2'}
    assert keeper.drop('a', 'w:2') is True and keeper.held == {}
