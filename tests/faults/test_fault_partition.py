"""Issue 10, item 3: network partitions between hosts and Redis, on a bed of network namespaces (netns.py).

Redis runs in one namespace; three "hosts", each a namespace running `arq-supervise --procs 2`, reach it over their
own veth link; the producer and the ledger run here, in the root namespace, over a link of their own. One host is
cut off from Redis for longer than the lease, either with its link down (fast failures) or with iptables dropping
its packets (silent), under steady load; or its link is made slow with a delaying proxy.

Every job (`stint`) records its run in the ledger (`SADD`, retried through the partition, stamped with the time it
started), returns that record as its result (so the result names the run that wrote it), and appends its span
(start, end) to a file of its host (no Redis needed), from which concurrent runs on two hosts are found.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from arq.connections import RedisSettings
from tests.faults.harness import Fleet, FleetFactory, Kill, Ledger, Load, report, supervise_command
from tests.faults.netns import REDIS_PORT, Host, NetBed, Refused, open_bed
from tests.integration.harness import REPO
from tests.support.waiting import wait_until

HEARTBEAT_TIMEOUT_S = 3  # the shortest lease there is (12 s): keeps a partition longer than the lease short
RATE = 40
JOB_S = 0.5
LONG_JOBS = 6
PROXY_PORT = 6380
SLOW_LINK_S = 0.2

STINT = """
import json as _json

SPANS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'spans.log')


async def stint(ctx, seconds):
    started = time.time()
    record = f'{os.getpid()}:{ctx["job_try"]}:{started:.6f}:{uuid.uuid4().hex[:8]}'
    deadline = time.monotonic() + 120
    while True:  # a partition must not fail the job: the record gets through when it heals
        try:
            await ctx['redis'].sadd(f'ledger:runs:{ctx["job_id"]}', record)
            break
        except (_RedisConnectionError, _RedisTimeoutError, OSError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)
    recorded = time.time()
    outcome = 'cancelled'
    try:
        await asyncio.sleep(seconds)
        outcome = 'ok'
    finally:
        span = {'id': ctx['job_id'], 'pid': os.getpid(), 'start': started, 'recorded': recorded,
                'end': time.time(), 'outcome': outcome}
        with open(SPANS, 'a') as f:
            f.write(_json.dumps(span) + '\\n')
    return record


WorkerSettings.functions = [*WorkerSettings.functions, stint]
"""


@pytest.fixture
def bed(tmp_path: Path) -> Iterator[NetBed]:
    """Redis and three host namespaces of this run; all of it removed afterwards, also when the test fails."""
    try:
        with open_bed(tmp_path / 'redis') as made:
            yield made
    except Refused as e:
        pytest.skip(f'network namespaces are refused here: {e}')
    assert not made.leftovers(), f'the test bed left {made.leftovers()}'


# --- the cluster ---


@dataclass
class Cluster:
    bed: NetBed
    fleets: dict[str, Fleet]  # by host name
    client: redis.Redis
    lease_s: float
    pids: dict[int, str] = field(default_factory=dict)  # child pid -> host name

    @property
    def settings(self) -> RedisSettings:
        return RedisSettings(host=self.bed.client_address, port=REDIS_PORT)

    def host(self, name: str) -> Host:
        return next(h for h in self.bed.hosts if h.name == name)

    def children_of(self, name: str) -> list[int]:
        return sorted(pid for pid, host in self.pids.items() if host == name)

    def holders(self) -> dict[str, str]:
        """In-progress job id -> the host whose child holds its lease (the token is `<prefix>.<pid>:<n>`)."""
        keys = list(self.client.scan_iter(match='arq:in-progress:*', count=1000))
        out = {}
        for key, token in zip(keys, self.client.mget(keys) if keys else [], strict=True):
            if token is None:
                continue
            pid = int(token.decode().rsplit(':', 1)[0].rsplit('.', 1)[-1])
            out[key.decode().removeprefix('arq:in-progress:')] = self.pids.get(pid, '?')
        return out

    def spans(self) -> list[dict[str, Any]]:
        out = []
        for name, fleet in self.fleets.items():
            path = fleet.tmp_path / 'spans.log'
            lines = path.read_text().splitlines() if path.exists() else []
            out += [{**json.loads(line), 'host': name} for line in lines if line.strip()]
        return out

    def status(self, host: Host) -> list[dict[str, Any]] | None:
        """`arq-supervise status --json` run on `host`: the supervisors it lists, or None if it failed."""
        fleet = self.fleets[host.name]
        done = subprocess.run(
            [*host.exec_prefix(), *supervise_command(), 'status', '--json', '--interval', '0.2',
             f'{fleet.module}.WorkerSettings'],
            cwd=fleet.tmp_path, env=fleet.env(), capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        lines = [line for line in done.stdout.splitlines() if line.startswith('{')]
        if done.returncode != 0 or not lines:
            return None
        return list(json.loads(lines[-1])['supervisors'])

    def listed(self, rows: list[dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
        """The hosts (by the supervisor pid in each row) a status listing shows."""
        by_pid = {fleet.pid: name for name, fleet in self.fleets.items()}
        return {by_pid.get(int(r.get('pid', 0)), '?'): r for r in rows or []}


def start_cluster(
    bed: NetBed,
    fleets: FleetFactory,
    *,
    endpoints: dict[str, tuple[str, int]] | None = None,
    max_jobs: int = 20,
    extra: tuple[str, ...] = (),
) -> Cluster:
    """`arq-supervise --procs 2` on every host; `endpoints` replaces a host's Redis address (a proxy's)."""
    made = {}
    for host in bed.hosts:
        address, port = (endpoints or {}).get(host.name, (host.redis_address, REDIS_PORT))
        fleet = fleets(REDIS_PORT, 0, name=host.name, client=redis.Redis(host=bed.client_address, port=REDIS_PORT))
        settings = fleet.write_jobs(
            redis_settings=f'RedisSettings(host={address!r}, port={port}, database=0)', max_jobs=max_jobs, extra=STINT
        )
        fleet.start('--procs', '2', '--heartbeat-timeout', str(HEARTBEAT_TIMEOUT_S), '--health-interval', '1',
                    *extra, settings=settings, prefix=host.exec_prefix())  # fmt: skip
        made[host.name] = fleet
    pids = {}
    for name, fleet in made.items():
        pids.update(dict.fromkeys(fleet.wait_ready(2, timeout=40), name))
    lease = re.search(r'lease=([\d.]+)s', made['h1'].wait_log('lease='))
    assert lease is not None
    client = redis.Redis(host=bed.client_address, port=REDIS_PORT)
    return Cluster(bed, made, client, float(lease.group(1)), pids)


def enqueue(settings: RedisSettings, queue: str, job_ids: list[str], seconds: float) -> None:
    from arq import create_pool

    async def go() -> None:
        pool = await create_pool(settings)
        try:
            for job_id in job_ids:
                assert await pool.enqueue_job('stint', seconds, _job_id=job_id, _queue_name=queue) is not None
        finally:
            await pool.aclose()

    asyncio.run(go())


# --- what the ledger shows ---


def _record_at(record: Any) -> float:
    return float(str(record).split(':')[2])


def overwritten_by_older(ledger: Ledger, ids: list[str]) -> list[str]:
    """Ids whose result was written by a run older than their newest run (the newest holds the lease)."""
    results = ledger.results(ids)
    runs = ledger.all_runs(ids)
    out = []
    for job_id in ids:
        result = results[job_id]
        if result is None or not result['s'] or len(runs[job_id]) < 2:
            continue
        if _record_at(result['r']) < runs[job_id][-1].at - 1e-6:
            out.append(job_id)
    return out


def concurrent_runs(spans: list[dict[str, Any]]) -> dict[str, float]:
    """Id -> the longest time two hosts ran it at once."""
    by_id: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        by_id.setdefault(span['id'], []).append(span)
    out = {}
    for job_id, runs in by_id.items():
        for i, a in enumerate(runs):
            for b in runs[i + 1 :]:
                overlap = min(a['end'], b['end']) - max(a['start'], b['start'])
                if a['host'] != b['host'] and overlap > 0:
                    out[job_id] = max(out.get(job_id, 0.0), overlap)
    return out


def status_figures(cluster: Cluster, rows: list[dict[str, Any]] | None) -> dict[str, Any]:
    listed = cluster.listed(rows)
    return {name: ('stale' if row.get('stale') else row.get('state')) for name, row in sorted(listed.items())}


def cut(bed: NetBed, host: Host, mode: str) -> None:
    if mode == 'link_down':
        bed.link_down(host)
    else:
        bed.drop(host)


def heal(bed: NetBed, host: Host, mode: str) -> None:
    if mode == 'link_down':
        bed.link_up(host)
    else:
        bed.undrop(host)


# --- the tests ---


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize('mode', ['link_down', 'drop'])
def test_partitioned_host_jobs_run_elsewhere_within_the_lease_and_its_late_settles_are_fenced(
    bed: NetBed, fleets: FleetFactory, mode: str
) -> None:
    """One host is cut off from Redis for the lease + 3 s under 40 jobs/s of 0.5 s jobs, holding some of six long
    jobs (lease + 3 s) too. Its jobs run on the other hosts within the lease + 2 s; its children are not killed;
    when the link heals its late settles are fenced (`lease lost, result dropped`) and it takes work again; nothing
    is lost and no result comes from an older run than the newest."""
    # a partitioned worker cannot tell a partition from a Redis down for everyone: only this flag makes it stop jobs
    # whose lease it could not renew, so that none runs on two hosts at once (arq/leases.py)
    if mode == 'drop':
        bed.prepare_drop()  # before the fault's clock starts
    cluster = start_cluster(bed, fleets, extra=('--stop-unleased-jobs',))
    lease_s = cluster.lease_s
    queue = cluster.fleets['h1'].queue
    ledger = Ledger(cluster.client, queue)
    status_before = cluster.status(bed.hosts[2])
    assert set(cluster.listed(status_before)) == {'h1', 'h2', 'h3'}, status_before

    long_ids = [f'long{i}' for i in range(LONG_JOBS)]
    enqueue(cluster.settings, queue, long_ids, lease_s + 3)
    load = Load(cluster.settings, queue, rate=RATE, function='stint', args=(JOB_S,)).start()
    wait_until(lambda: all(ledger.runs(i) for i in long_ids), timeout=15, message='the long jobs started')
    load.wait_count(RATE * 2)
    holders = cluster.holders()
    victim_name = max(('h1', 'h2', 'h3'), key=lambda h: sum(1 for i in long_ids if holders.get(i) == h))
    victim, victim_fleet = cluster.host(victim_name), cluster.fleets[victim_name]
    victim_pids = cluster.children_of(victim_name)
    others = [h for h in bed.hosts if h is not victim]

    partition_at = time.time()
    cut(bed, victim, mode)
    cut_at = time.time()  # a run that started before this may have reached Redis before the cut took effect
    held = sorted(job_id for job_id, host in cluster.holders().items() if host == victim_name)
    assert held, 'the partitioned host held no job'

    def reruns() -> dict[str, float]:
        runs = ledger.all_runs(held)
        return {
            job_id: min(r.at for r in runs[job_id] if r.pid not in victim_pids) - partition_at
            for job_id in held
            if any(r.pid not in victim_pids and r.at > partition_at for r in runs[job_id])
        }

    victim_fleet.wait_for(lambda: len(reruns()) == len(held), timeout=lease_s + 8,
                          message='every job the partitioned host held ran elsewhere')  # fmt: skip
    rerun_s = reruns()
    status_during = cluster.status(others[0])
    time.sleep(max(0.0, partition_at + lease_s + 3 - time.time()))  # the partition's length: pacing the fault
    assert victim_fleet.children() == victim_pids, 'a child of the partitioned host was replaced'
    assert 'child exited' not in victim_fleet.log(), victim_fleet.log()[-3000:]

    healed_at = time.time()
    heal(bed, victim, mode)
    partition_s = healed_at - partition_at
    after_heal = len(load.ids)

    def resumed() -> float | None:
        fresh = load.ids[after_heal:]
        starts = [r.at for runs in ledger.all_runs(fresh).values() for r in runs if r.pid in victim_pids]
        return min(starts) - healed_at if starts else None

    resumed_s = victim_fleet.wait_for(resumed, timeout=40, message='the healed host takes jobs again')
    load.wait_count(len(load.ids) + RATE * 2)
    load.stop()
    ids = [*load.enqueued_ids(cluster.client), *long_ids]
    ledger.wait_all_done(ids, timeout=40, context=victim_fleet)
    long_runs = LONG_JOBS + len(set(long_ids) & set(held))  # those the partitioned host held ran twice
    wait_until(lambda: sum(1 for s in cluster.spans() if s['id'] in long_ids) >= long_runs, timeout=10,
               message='every long run ended')  # fmt: skip
    status_after = wait_until(lambda: (rows := cluster.status(victim)) and len(cluster.listed(rows)) == 3 and rows,
                              timeout=20, message='status on the healed host lists all three')  # fmt: skip

    for fleet in cluster.fleets.values():
        fleet.signal(signal.SIGTERM)
    for fleet in cluster.fleets.values():
        assert fleet.wait(timeout=20) == 0, fleet.log()[-3000:]
    # every late settle has been sent by now (a drain waits for the settles under way): none may have won
    ran_on_victim = {i for i, runs in ledger.all_runs(held).items() if any(r.pid in victim_pids for r in runs)}
    results = ledger.results(held)
    late_won = sorted(
        i for i in ran_on_victim if int(str((results[i] or {}).get('r', '0:')).split(':')[0]) in victim_pids
    )
    logged = {m.group(1) for _, m in victim_fleet.log_lines(r'result dropped: job (\S+)')} & set(held)
    result = ledger.check(ids, [Kill(frozenset(victim_pids), cut_at)])
    older = overwritten_by_older(ledger, ids)
    concurrent = concurrent_runs(cluster.spans())
    runs = ledger.all_runs(ids)
    too_early = [i for i in held for r in runs[i] if r.pid not in victim_pids and r.at < partition_at + lease_s * 2 / 3]
    delays = sorted(rerun_s.values())
    figures = report(
        f'partition_{mode}',
        lease_s=lease_s, partition_s=round(partition_s, 2), cut_took_s=round(cut_at - partition_at, 3),
        rate=RATE, job_s=JOB_S,
        held_at_partition=len(held), long_jobs_held=len(set(held) & set(long_ids)),
        rerun_elsewhere_median_s=round(statistics.median(delays), 2), rerun_elsewhere_max_s=round(delays[-1], 2),
        rerun_deadline_s=lease_s + 2, reruns_before_the_lease_could_lapse=len(too_early),
        resumed_after_heal_s=round(resumed_s, 2), late_settles=len(ran_on_victim),
        late_settles_fenced=len(ran_on_victim) - len(late_won), late_settles_logged_lease_lost=len(logged),
        overwritten_by_older_run=len(older),
        concurrent_runs_on_two_hosts=len(concurrent), concurrent_long_jobs=len(set(concurrent) & set(long_ids)),
        concurrent_overlap_max_s=round(max(concurrent.values()), 2) if concurrent else 0,
        children_replaced=0, status_before=status_figures(cluster, status_before),
        status_during=status_figures(cluster, status_during), status_after=status_figures(cluster, status_after),
        **result.figures(),
    )  # fmt: skip
    result.assert_clean()
    assert delays[-1] <= lease_s + 2, figures
    assert not too_early, f'reruns before the partitioned lease could have lapsed: {too_early}'
    assert not older, f'results written by an older run than the newest: {older[:10]}'
    during = cluster.listed(status_during)
    assert {h.name for h in others} <= set(during), status_during
    if any('stale' in row for row in status_during or []):
        assert during.get(victim_name, {}).get('stale'), f'the partitioned supervisor is not shown stale: {during}'
    # only jobs the partitioned host held can overlap, and only its run with a rerun elsewhere
    assert set(concurrent) <= set(held), f'jobs ran on two hosts at once: {sorted(set(concurrent) - set(held))[:10]}'
    assert not late_won, f'late settles of the partitioned host overwrote the newer run: {late_won}'
    assert not concurrent, f'with --stop-unleased-jobs no job may run on two hosts at once: {concurrent}'
    assert ran_on_victim <= logged, f'late settles dropped without a log line: {sorted(ran_on_victim - logged)}'


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_slow_link_host_keeps_working_and_nothing_runs_twice(bed: NetBed, fleets: FleetFactory, tmp_path: Path) -> None:
    """Host h1 reaches Redis through a proxy adding 200 ms each way (every round trip >= 400 ms). Under 36 jobs/s of
    0.5 s jobs for 12 s, with 4 jobs per child, the two fast hosts cannot take them all (16 slots for ~18 in flight),
    so h1 must keep taking its share to the end; nothing is lost or run twice, no lease is lost, no child exits."""
    h1 = bed.hosts[0]
    ready = tmp_path / 'proxy.ready'
    proxy_log = (tmp_path / 'proxy.log').open('ab')
    proxy = subprocess.Popen(
        [*h1.exec_prefix(), sys.executable, '-m', 'tests.faults.netproxy', '--listen', f'127.0.0.1:{PROXY_PORT}',
         '--upstream', f'{h1.redis_address}:{REDIS_PORT}', '--delay-s', str(SLOW_LINK_S), '--ready-file', str(ready)],
        cwd=REPO, env={'PYTHONPATH': str(REPO), 'PATH': '/usr/sbin:/usr/bin:/sbin:/bin'}, start_new_session=True,
        stdout=proxy_log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    load_s, rate, job_s = 12.0, 36, 0.5
    try:
        wait_until(lambda: ready.exists() or proxy.poll() is not None, timeout=15, message='the proxy listening')
        assert proxy.poll() is None, 'the proxy exited'
        # the parent's Redis commands are bounded to 50 ms by default: over a 400 ms round trip they need more
        cluster = start_cluster(bed, fleets, endpoints={'h1': ('127.0.0.1', PROXY_PORT)}, max_jobs=4,
                                extra=('--parent-redis-timeout', '1'))  # fmt: skip
        queue = cluster.fleets['h1'].queue
        ledger = Ledger(cluster.client, queue)
        load = Load(cluster.settings, queue, rate=rate, function='stint', args=(job_s,)).start()
        load.wait_count(int(rate * load_s), timeout=load_s + 10)
        load.stop()
        ids = load.enqueued_ids(cluster.client)
        ledger.wait_all_done(ids, timeout=30, context=cluster.fleets['h1'])
        status = cluster.status(h1)
        exits = sum(len(f.log_lines(r'child exited')) for f in cluster.fleets.values())
        for fleet in cluster.fleets.values():
            fleet.signal(signal.SIGTERM)
        for fleet in cluster.fleets.values():
            assert fleet.wait(timeout=20) == 0, fleet.log()[-3000:]
    finally:
        proxy.terminate()
        proxy.wait(timeout=10)
        proxy_log.close()
    result = ledger.check(ids)
    spans = [s for s in cluster.spans() if s['id'] in set(ids)]
    by_host = {name: [s for s in spans if s['host'] == name] for name in cluster.fleets}
    round_trip = {name: round(statistics.median(s['recorded'] - s['start'] for s in runs), 3) if runs else None
                  for name, runs in by_host.items()}  # fmt: skip
    first = min(load.enqueued_at.values())
    h1_starts = sorted(s['start'] - first for s in by_host['h1'])
    lost_leases = sum(len(f.log_lines(r'lease lost')) for f in cluster.fleets.values())
    health_failures = len(cluster.fleets['h1'].log_lines(r'cannot write health keys'))
    figures = report(
        'partition_slow_link',
        delay_each_way_s=SLOW_LINK_S, lease_s=cluster.lease_s, rate=rate, job_s=job_s, load_s=load_s, max_jobs=4,
        runs_by_host={name: len(runs) for name, runs in by_host.items()},
        ledger_round_trip_median_s=round_trip, h1_first_start_s=h1_starts[0] if h1_starts else None,
        h1_last_start_s=round(h1_starts[-1], 2) if h1_starts else None, leases_lost=lost_leases,
        children_exited_before_stop=exits, overwritten_by_older_run=len(overwritten_by_older(ledger, ids)),
        concurrent_runs_on_two_hosts=len(concurrent_runs(spans)), h1_health_key_write_failures=health_failures,
        status_on_slow_host=status_figures(cluster, status), **result.figures(),
    )  # fmt: skip
    result.assert_clean()
    assert result.duplicated == 0, figures
    assert (round_trip['h1'] or 0) >= 2 * SLOW_LINK_S, f'the proxy did not slow h1 down: {round_trip}'
    assert len(h1_starts) >= 10 and h1_starts[-1] >= load_s - 3, f'h1 stopped working: {figures}'
    assert lost_leases == 0 and exits == 0, figures
    assert {'h2', 'h3'} <= set(cluster.listed(status)), status
    assert 'h1' in cluster.listed(status), status  # the slow host publishes its health too
