"""The jobs page over 100,000 queued jobs: bounded work per request, so it renders in milliseconds, not seconds."""

from __future__ import annotations

import pickle
import statistics
import time
import urllib.request

import pytest
import redis

from tests.dashboard.harness import Fleet

JOBS = 100_000


def fill_queue(client: redis.Redis, queue: str, count: int) -> None:
    """`count` due jobs written as arq writes them (a pickled payload and a score), in pipelined batches."""
    now = int(time.time() * 1000)
    for start in range(0, count, 5000):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(start + 5000, count)):
            job_id = f'bulk-{i:06d}'
            payload = {'t': None, 'f': 'quick', 'a': (f'item {i}',), 'k': {}, 'et': now - count + i}
            pipe.set(f'arq:job:{job_id}', pickle.dumps(payload), px=3_600_000)
            pipe.zadd(queue, {job_id: now - count + i})
        pipe.execute()


def fetch_ms(url: str) -> tuple[float, str]:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as response:
        body = response.read().decode()
    return (time.perf_counter() - started) * 1000, body


@pytest.mark.timeout(120)
def test_jobs_page_with_100000_queued_jobs_renders_fast(fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    fleet.write_settings()
    client = redis.Redis(port=fleet.sup.redis_port, db=fleet.sup.db)
    fill_queue(client, fleet.queue, JOBS)
    client.close()
    fleet.start_dashboard()
    base = f'{fleet.url}/jobs?queue={fleet.queue}&state=queued'
    fetch_ms(base)  # warm up: the first request opens the pool
    timings = {
        'jobs page 1': [fetch_ms(base)[0] for _ in range(5)],
        'jobs page at 90,000': [fetch_ms(base + '&cursor=90000')[0] for _ in range(5)],
        'jobs filtered by id (capped)': [fetch_ms(base + '&id=nothing-matches')[0] for _ in range(3)],
        'overview': [fetch_ms(fleet.url + '/')[0] for _ in range(5)],
    }
    _, body = fetch_ms(base)
    assert body.count('data-job-id="bulk-') == 50 and 'data-job-id="bulk-000000"' in body
    assert '100,000' in fetch_ms(fleet.url + '/')[1]
    medians = {name: statistics.median(values) for name, values in timings.items()}
    with capsys.disabled():
        print('\n' + ', '.join(f'{name}: {ms:.0f} ms' for name, ms in medians.items()))
    assert medians['jobs page 1'] < 1000, medians
    assert medians['jobs page at 90,000'] < 1000, medians
