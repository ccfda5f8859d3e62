"""What each page shows, gathered from Redis into a template context; the pages and their live updates share these."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .charts import build_series, svg_chart
from .detail import job_detail
from .fleet import read_fleet, read_records
from .holders import identify
from .model import QueueSource, RedisClient, State
from .reading import list_jobs, now_ms, queue_counts

PAGE_SIZE = 50


@dataclass(frozen=True)
class JobsQuery:
    """The jobs page's parameters, parsed once and validated (unknown values fall back to defaults)."""

    queue: str
    state: State
    function: str = ''
    id_part: str = ''
    cursor: str = ''

    @classmethod
    def parse(cls, params: Any, sources: list[QueueSource]) -> JobsQuery:
        names = [s.name for s in sources]
        queue = params.get('queue') if params.get('queue') in names else names[0]
        try:
            state = State(params.get('state') or 'queued')
        except ValueError:
            state = State.queued
        cursor = params.get('cursor') or ''
        return cls(queue, state, (params.get('function') or '').strip()[:200], (params.get('id') or '').strip()[:200],
                   cursor if cursor.isdigit() else '')  # fmt: skip

    def params(self, **changes: str) -> dict[str, str]:
        out = {'queue': self.queue, 'state': self.state.value, 'function': self.function, 'id': self.id_part}
        out.update(changes)
        return {k: v for k, v in out.items() if v}


async def overview(redis: RedisClient, sources: list[QueueSource]) -> dict[str, Any]:
    now = now_ms()
    queues = []
    for source in sources:
        counts = await queue_counts(redis, source.name)
        fleet = await read_fleet(redis, source.name, now)
        series = build_series([v.samples for v in fleet], now)
        live = [v for v in fleet if not v.stale]
        charts = [
            svg_chart(series.jobs_per_s, title='jobs/s', unit='jobs/s', bucket_ms=series.bucket_ms, css_class='c1'),
            svg_chart(series.failures_per_s, title='failures/s', unit='/s', bucket_ms=series.bucket_ms,
                      css_class='c2'),
            svg_chart(series.depth, title='queue depth (due jobs)', unit='jobs', bucket_ms=series.bucket_ms,
                      css_class='c3'),
            svg_chart(series.lag_s, title='pickup lag', unit='s', bucket_ms=series.bucket_ms, css_class='c4'),
        ]  # fmt: skip
        queues.append({
            'name': source.name, 'counts': counts, 'charts': charts, 'supervisors': len(live),
            'stale': len(fleet) - len(live), 'children': sum(len(v.children) for v in live),
            'jobs_per_s': sum(v.jobs_per_s or 0 for v in live) if live else None,
        })  # fmt: skip
    return {'queues': queues, 'now_ms': now}


async def fleet(redis: RedisClient, sources: list[QueueSource]) -> dict[str, Any]:
    now = now_ms()
    return {'fleets': [(s.name, await read_fleet(redis, s.name, now)) for s in sources], 'now_ms': now}


async def jobs(redis: RedisClient, sources: list[QueueSource], query: JobsQuery) -> dict[str, Any]:
    source = next(s for s in sources if s.name == query.queue)
    now = now_ms()
    page = await list_jobs(redis, source, query.state, function=query.function, id_part=query.id_part,
                           cursor=query.cursor, page_size=PAGE_SIZE)  # fmt: skip
    counts = await queue_counts(redis, source.name)
    holders = {}
    if query.state is State.in_progress and page.rows:  # one read of the supervisors' records for the whole page
        supervisors = await read_records(redis, source.name, now)
        holders = {r.job_id: identify(r.lease_token, supervisors) for r in page.rows if r.lease_token is not None}
    return {'query': query, 'listing': page, 'counts': counts, 'states': list(State), 'now_ms': now,
            'queue_names': [s.name for s in sources], 'holders': holders}  # fmt: skip


async def job(redis: RedisClient, sources: list[QueueSource], job_id: str) -> dict[str, Any]:
    detail = await job_detail(redis, sources, job_id)
    now = now_ms()
    holder = None
    if detail.status == 'in progress' and detail.lease_token is not None and detail.queue is not None:
        holder = identify(detail.lease_token, await read_records(redis, detail.queue, now))
    return {'job': detail, 'holder': holder, 'now_ms': now}
