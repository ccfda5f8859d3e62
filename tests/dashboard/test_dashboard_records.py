"""What the dashboard reads from the records supervisors publish: which worker holds a running job, and each
supervisor's restarts by cause.

These build the records and leases in Redis as a supervisor and its children write them (a live supervisor's own
record is checked in test_dashboard_pages.py) and read the pages from the app in this process.
"""

from __future__ import annotations

import html
import json
import pickle
import re
import time
from collections import Counter
from typing import Any

import httpx
import redis

from arq.constants import in_progress_key_prefix, job_key_prefix
from arq_supervise import health
from arq_supervise.dashboard.holders import identify, parse_token
from arq_supervise.health import Counters
from arq_supervise.reporting import Snapshot

PREFIX = '0a1b2c3d4e.'


def record(pid: int, children: list[tuple[int, int]], *, prefix: str | None = PREFIX, age_s: float = 0.0,
           **extra: Any) -> dict[str, Any]:  # fmt: skip
    """A supervisor's record as Reporter.document writes it, with its children as (slot, pid)."""
    document: dict[str, Any] = {
        'pid': pid, 'host': 'host-a', 'state': 'running', 'procs': len(children), 'ready': len(children),
        'updated_at': time.time() - age_s, 'health_interval_s': 1.0,
        'totals': {'complete': 5, 'failed': 1, 'retried': 0, 'ongoing': 1},
        'children': [{'slot': slot, 'pid': child, 'state': 'ready', 'complete': 0, 'failed': 0, 'retried': 0,
                      'ongoing': 1, 'held': 1, 'memory_mib': 30.5, 'heartbeat_age_s': 0.2, 'redis_error': None,
                      'restarts': 0, 'last_exit': None} for slot, child in children],
        **extra,
    }  # fmt: skip
    if prefix is not None:
        document['worker_id_prefix'] = prefix
    return document


def publish(client: redis.Redis, queue: str, host: str, document: dict[str, Any]) -> None:
    client.set(health.supervisor_key(queue, host, document['pid']), json.dumps(document), px=3_600_000)


def hold(client: redis.Redis, queue: str, job_id: str, token: str) -> None:
    """A due job with a lease on it, as a worker's claim leaves it."""
    now_ms = int(time.time() * 1000)
    client.set(job_key_prefix + job_id, pickle.dumps({'t': 1, 'f': 'sleeper', 'a': ('x',), 'k': {}, 'et': now_ms}))
    client.zadd(queue, {job_id: now_ms - 1000})
    client.set(in_progress_key_prefix + job_id, token, px=30_000)


def text(page: str, field: str) -> str:
    """The visible text of the element with `data-field=field`, whitespace collapsed."""
    match = re.search(rf'<(\w+)[^>]*data-field="{field}"[^>]*>(.*?)</\1>', page, re.S)
    assert match, f'no data-field={field} on the page'
    inline = re.sub(r'<br>', ' ', match.group(2))
    return ' '.join(html.unescape(re.sub(r'<[^>]+>', '', inline)).split())


def holder_cell(page: str, job_id: str) -> str:
    match = re.search(rf'<tr data-job-id="{re.escape(job_id)}">.*?<td class="holder[^"]*"[^>]*>(.*?)</td>', page, re.S)
    assert match, f'no holder cell for {job_id}'
    return html.unescape(match.group(1))


def test_lease_tokens_parse_into_worker_id_and_claim() -> None:
    assert parse_token('0a1b2c3d4e.4321:1f') == ('0a1b2c3d4e.4321', 31)
    assert parse_token('my:worker:a') == ('my:worker', 10)  # a worker id may hold a colon; the claim is the last part
    assert parse_token('no-claim') == ('no-claim', None)
    assert parse_token('worker:zz') == ('worker:zz', None)
    assert identify('0a1b2c3d4e.4321:1', []).is_supervised is False


async def test_job_page_names_the_supervisor_child_that_holds_the_job(
    pages: httpx.AsyncClient, sync_redis: redis.Redis, queue_name: str
) -> None:
    publish(sync_redis, queue_name, 'host-a', record(900, [(0, 4321), (1, 4322)]))
    publish(sync_redis, queue_name, 'host-b', record(901, [(0, 4321)], prefix='ffffffffff.'))  # same child pid
    hold(sync_redis, queue_name, 'held', f'{PREFIX}4322:1f')
    page = (await pages.get('/job', params={'id': 'held'})).text
    held_by = text(page, 'holder')
    assert 'worker slot 1 (pid 4322) of the arq-supervise on host-a (pid 900)' in held_by, held_by
    assert f'worker id {PREFIX}4322' in held_by and 'claim no. 31' in held_by
    assert 'has not published' not in held_by
    listing = (await pages.get('/jobs', params={'queue': queue_name, 'state': 'in_progress'})).text
    assert holder_cell(listing, 'held') == 'host-a · supervisor 900 · slot 1 (pid 4322)'


async def test_job_page_gives_the_worker_id_when_no_supervisor_names_it(
    pages: httpx.AsyncClient, sync_redis: redis.Redis, queue_name: str
) -> None:
    publish(sync_redis, queue_name, 'host-a', record(900, [(0, 4321)]))
    publish(sync_redis, queue_name, 'host-old', record(902, [(0, 5555)], prefix=None))  # an older supervisor
    hold(sync_redis, queue_name, 'plain', '5f3c9a0e1d2b4c6a:3')  # a plain arq worker's token
    hold(sync_redis, queue_name, 'old', '9999999999.5555:2')
    for job_id, worker_id in (('plain', '5f3c9a0e1d2b4c6a'), ('old', '9999999999.5555')):
        held_by = text((await pages.get('/job', params={'id': job_id})).text, 'holder')
        assert held_by.startswith(f"worker {worker_id}: not a known supervisor's child"), held_by
        assert 'host-' not in held_by
    listing = (await pages.get('/jobs', params={'queue': queue_name, 'state': 'in_progress'})).text
    assert holder_cell(listing, 'plain') == '5f3c9a0e1d2b4c6a (not a known supervisor’s child)'


async def test_job_page_says_when_the_holder_exited_or_its_supervisor_went_quiet(
    pages: httpx.AsyncClient, sync_redis: redis.Redis, queue_name: str
) -> None:
    publish(sync_redis, queue_name, 'host-a', record(900, [(0, 4400)]))  # 4321 exited; 4400 replaced it
    publish(sync_redis, queue_name, 'host-c', record(903, [(2, 7000)], prefix='cccccccccc.', age_s=120))
    hold(sync_redis, queue_name, 'orphan', f'{PREFIX}4321:5')
    hold(sync_redis, queue_name, 'quiet', 'cccccccccc.7000:1')
    orphan = text((await pages.get('/job', params={'id': 'orphan'})).text, 'holder')
    assert 'pid 4321, a child that has exited' in orphan and 'on host-a (pid 900)' in orphan, orphan
    quiet = text((await pages.get('/job', params={'id': 'quiet'})).text, 'holder')
    assert 'worker slot 2 (pid 7000) of the arq-supervise on host-c (pid 903)' in quiet, quiet
    assert 'its supervisor has not published for 2 min' in quiet, quiet


def test_the_record_carries_restarts_by_cause_only_when_told_them() -> None:
    base = {'pid': 900, 'host': 'host-a', 'queue_name': 'q', 'state': 'running', 'procs': 2,
            'totals': Counters(), 'children': []}  # fmt: skip
    causes = Counter({'crash': 2, 'recycle': 3, 'hang': 1, 'memory': 0})
    document = Snapshot(**base, restarts_by_cause=causes).document()  # type: ignore[arg-type]
    assert document['restarts_by_cause'] == {'crash': 2, 'hang': 1, 'recycle': 3}
    assert json.loads(json.dumps(document))['restarts_by_cause'] == {'crash': 2, 'hang': 1, 'recycle': 3}
    assert 'restarts_by_cause' not in Snapshot(**base).document()  # type: ignore[arg-type]


def supervisor_text(page: str, pid: int) -> str:
    match = re.search(rf'<article class="supervisor[^"]*"[^>]*data-pid="{pid}">(.*?)</article>', page, re.S)
    assert match, f'no supervisor {pid} on the page'
    return ' '.join(html.unescape(re.sub(r'<[^>]+>', '', match.group(1))).split())


async def test_fleet_page_shows_each_supervisors_restarts_by_cause(
    pages: httpx.AsyncClient, sync_redis: redis.Redis, queue_name: str
) -> None:
    publish(sync_redis, queue_name, 'host-a', record(900, [(0, 4321)], restarts_by_cause={'crash': 2, 'hang': 1}))
    publish(sync_redis, queue_name, 'host-b', record(901, [(0, 5000)], restarts_by_cause={}))
    publish(sync_redis, queue_name, 'host-c', record(902, [(0, 6000)]))  # an older supervisor: no such field
    page = (await pages.get('/fleet')).text
    assert 'restarts by cause: crash 2 hang 1' in supervisor_text(page, 900), supervisor_text(page, 900)
    assert 'no child has exited since this supervisor started' in supervisor_text(page, 901)
    assert 'restarts by cause' not in supervisor_text(page, 902) and 'exited' not in supervisor_text(page, 902)


async def test_fleet_page_judges_staleness_by_each_supervisors_own_interval(
    pages: httpx.AsyncClient, sync_redis: redis.Redis, queue_name: str
) -> None:
    publish(sync_redis, queue_name, 'host-a', record(900, [(0, 4321)], age_s=20, health_interval_s=30.0))
    publish(sync_redis, queue_name, 'host-b', record(901, [(0, 5000)], age_s=5, health_interval_s=1.0))
    page = (await pages.get('/fleet')).text
    assert 'stale' not in supervisor_text(page, 900)  # 20 s into a 30 s interval: as `arq-supervise status` says
    assert 'stale · updated 5 s ago' in supervisor_text(page, 901)
    assert '1 supervisor,' in (await pages.get('/')).text


async def test_fleet_page_shows_a_record_that_lacks_newer_fields(
    pages: httpx.AsyncClient, sync_redis: redis.Redis, queue_name: str
) -> None:
    document = {'pid': 904, 'host': 'host-old', 'state': 'running', 'updated_at': time.time(),
                'children': [{'slot': 0, 'pid': 8000, 'state': 'ready'}]}  # fmt: skip
    publish(sync_redis, queue_name, 'host-old', document)
    response = await pages.get('/fleet')
    assert response.status_code == 200
    assert 'n/a complete' in supervisor_text(response.text, 904) and '8000' in supervisor_text(response.text, 904)
