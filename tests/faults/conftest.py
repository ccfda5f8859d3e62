"""Fixtures of the fault suite: fleets that cannot outlive their test, and private redis-servers to break."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.faults.harness import Fleet, FleetFactory, RedisFactory
from tests.support.redis_server import RedisServer


@pytest.fixture
def fleets(tmp_path: Path, queue_name: str) -> Iterator[FleetFactory]:
    """`fleets(port, db, name='a', client=None)` makes a Fleet in its own directory; teardown kills every group
    and fails the test if a process outlived it."""
    made: list[Fleet] = []

    def make(port: int, db: int = 0, *, name: str = 'a', client: redis.Redis | None = None) -> Fleet:
        fleet = Fleet(tmp_path / f'fleet-{name}', queue_name, port, db, client=client)
        made.append(fleet)
        return fleet

    yield make
    leftovers = []
    for fleet in made:
        leftovers += fleet.cleanup()
    assert not leftovers, f'processes outlived the test: {leftovers}'


@pytest.fixture
def redis_servers(tmp_path: Path) -> Iterator[RedisFactory]:
    """`redis_servers(*extra_args)` starts a redis-server of the test's own (to restart, slow down or lock)."""
    started: list[RedisServer] = []

    def make(*extra_args: str, name: str = 'redis', start: bool = True) -> RedisServer:
        server = RedisServer(directory=tmp_path / name, extra_args=extra_args)
        started.append(server)
        if start:
            server.start()
        return server

    yield make
    for server in started:
        with contextlib.suppress(Exception):
            server.stop()
