"""Fault 4: Redis stalls (DEBUG SLEEP, CLIENT PAUSE) and drops every client connection (CLIENT KILL) mid-load."""

from __future__ import annotations

import contextlib
import signal
import threading

import pytest
import redis

from arq.connections import RedisSettings
from tests.faults.harness import FleetFactory, Ledger, Load, RedisFactory, report

RATE = 200
JOB_S = 0.05


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_slow_redis_and_killed_connections_lose_nothing_and_kill_no_worker(
    fleets: FleetFactory, redis_servers: RedisFactory
) -> None:
    """200 jobs/s; then, 2 s apart: `DEBUG SLEEP 2` (the server stops answering anyone), `CLIENT PAUSE 2000`
    (clients are held), and three rounds of `CLIENT KILL TYPE normal` (every connection of the workers, the parent
    and the producer is cut, some in the middle of a command). No job lost, none run twice, no worker replaced."""
    server = redis_servers('--enable-debug-command', 'local')
    admin = redis.Redis(port=server.port, socket_timeout=10)
    fleet = fleets(server.port, client=redis.Redis(port=server.port))
    fleet.start('--procs', '2', settings=fleet.write_jobs())
    pids = fleet.wait_ready(2)
    ledger = Ledger(fleet.redis, fleet.queue)
    load = Load(RedisSettings(host='127.0.0.1', port=server.port), fleet.queue, rate=RATE, args=(JOB_S,)).start()
    load.wait_count(RATE * 2)

    faults: list[str] = []

    def inject(name: str, command: tuple[str, ...]) -> object:
        faults.append(name)
        return admin.execute_command(*command)

    def in_a_while(n: int) -> None:
        load.wait_count(len(load.ids) + n, timeout=30)  # the load got through since the last fault

    inject('DEBUG SLEEP 2', ('DEBUG', 'SLEEP', '2'))
    in_a_while(RATE * 2)
    # CLIENT PAUSE returns at once; the pause holds every other client for 2 s
    inject('CLIENT PAUSE 2000', ('CLIENT', 'PAUSE', '2000', 'ALL'))
    in_a_while(RATE * 3)
    killed = 0
    for _ in range(3):
        killed += int(inject('CLIENT KILL TYPE normal', ('CLIENT', 'KILL', 'TYPE', 'normal', 'SKIPME', 'yes')))
        in_a_while(RATE)
    # and a kill racing another stall: the reconnects may meet a sleeping server
    sleeper = threading.Thread(target=_debug_sleep, args=(server.port, 1))
    sleeper.start()
    killed += int(inject('CLIENT KILL racing a DEBUG SLEEP 1', ('CLIENT', 'KILL', 'TYPE', 'normal', 'SKIPME', 'yes')))
    sleeper.join(timeout=10)
    in_a_while(RATE * 2)
    load.stop()
    ids = load.enqueued_ids(fleet.redis)

    drain_s = ledger.wait_all_done(ids, timeout=60, context=fleet)
    all_runs = ledger.all_runs(ids)
    pickup = [runs[0].at - load.enqueued_at[i] for i, runs in all_runs.items() if runs and i in load.enqueued_at]
    assert fleet.children() == pids, f'a worker was replaced\n{fleet.log()[-3000:]}'
    assert 'child exited' not in fleet.log()
    fleet.signal(signal.SIGTERM)
    assert fleet.wait(timeout=15) == 0
    result = ledger.check(ids)
    report(
        'redis_slow_and_killed',
        rate=RATE, job_s=JOB_S, faults=faults, connections_killed=killed, producer_failed_tries=load.failed_tries,
        producer_ids_already_there=load.repeated_ids, producer_longest_gap_s=round(load.longest_gap_s, 2),
        drain_after_load_s=round(drain_s, 2), slowest_pickup_s=round(max(pickup), 2), workers_replaced=0,
        **result.figures(),
    )  # fmt: skip
    result.assert_clean()
    assert result.duplicated == 0
    admin.close()


def _debug_sleep(port: int, seconds: float) -> None:
    client = redis.Redis(port=port)
    with contextlib.suppress(redis.RedisError):  # its own connection is among those killed
        client.execute_command('DEBUG', 'SLEEP', str(seconds))
    client.close()
