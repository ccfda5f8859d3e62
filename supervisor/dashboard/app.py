"""The ASGI application: pages, their live updates (server-sent events) and the confirmed, CSRF-checked actions."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from arq.connections import RedisSettings, create_pool

from . import actions, views
from .model import QueueSource, RedisClient
from .rendering import Renderer
from .security import CSRF_FIELD, Auth, Guard, csrf_ok, csrf_token, remember_csrf

logger = logging.getLogger('arq_supervise.dashboard')
HERE = Path(__file__).parent
STREAM_LIFETIME_S = 300.0  # a stream ends now and then; the browser's EventSource reconnects by itself
ACTIONS = {'abort': 'Abort', 'retry': 'Retry', 'delete': 'Delete the result of'}


class RedisHandle:
    """The pool the app reads with: the caller's, or one made from RedisSettings on first use (a mounted app gets
    no lifespan events, so nothing may depend on startup)."""

    def __init__(self, redis: RedisSettings | RedisClient) -> None:
        self._settings = redis if isinstance(redis, RedisSettings) else None
        self._client: RedisClient | None = None if self._settings is not None else redis
        self._lock = asyncio.Lock()

    async def get(self) -> RedisClient:
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    self._client = await create_pool(self._settings)
        return self._client

    async def close(self) -> None:
        if self._settings is not None and self._client is not None:
            await self._client.aclose()
            self._client = None


class Dashboard:
    def __init__(self, redis: RedisHandle, sources: list[QueueSource], allow_actions: bool, refresh_s: float) -> None:
        self.redis = redis
        self.sources = sources
        self.allow_actions = allow_actions
        self.refresh_s = refresh_s
        self.renderer = Renderer(HERE / 'templates', allow_actions=allow_actions)

    # --- pages ---

    async def overview(self, request: Request) -> Response:
        return await self._page(request, 'overview.html', views.overview(await self.redis.get(), self.sources))

    async def fleet(self, request: Request) -> Response:
        return await self._page(request, 'fleet.html', views.fleet(await self.redis.get(), self.sources))

    async def jobs(self, request: Request) -> Response:
        query = views.JobsQuery.parse(request.query_params, self.sources)
        return await self._page(request, 'jobs.html', views.jobs(await self.redis.get(), self.sources, query))

    async def job(self, request: Request) -> Response:
        job_id = request.query_params.get('id', '')
        return await self._page(request, 'job.html', views.job(await self.redis.get(), self.sources, job_id))

    async def _page(self, request: Request, template: str, gather: Awaitable[dict[str, Any]]) -> Response:
        context = await gather
        html = self.renderer.render(request, template, {**context, 'csrf': csrf_token(request)})
        return remember_csrf(request, HTMLResponse(html))

    # --- live updates ---

    async def stream(self, request: Request) -> Response:
        view = request.query_params.get('view', '')
        gather = self._live_source(request, view)
        if gather is None:
            return Response('unknown view', 404)
        return StreamingResponse(self._events(request, view, gather), media_type='text/event-stream',
                                 headers={'cache-control': 'no-store', 'x-accel-buffering': 'no'})  # fmt: skip

    def _live_source(self, request: Request, view: str) -> Callable[[], Awaitable[dict[str, Any]]] | None:
        sources, params = self.sources, request.query_params

        async def overview() -> dict[str, Any]:
            return await views.overview(await self.redis.get(), sources)

        async def fleet() -> dict[str, Any]:
            return await views.fleet(await self.redis.get(), sources)

        async def jobs() -> dict[str, Any]:
            return await views.jobs(await self.redis.get(), sources, views.JobsQuery.parse(params, sources))

        async def job() -> dict[str, Any]:
            return await views.job(await self.redis.get(), sources, params.get('id', ''))

        return {'overview': overview, 'fleet': fleet, 'jobs': jobs, 'job': job}.get(view)

    async def _events(
        self, request: Request, view: str, gather: Callable[[], Awaitable[dict[str, Any]]]
    ) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STREAM_LIFETIME_S
        yield f'retry: {int(self.refresh_s * 1000)}\n\n'
        while loop.time() < deadline and not await request.is_disconnected():
            html = self.renderer.render(request, f'live_{view}.html', {**await gather(), 'csrf': ''})
            yield f'event: update\ndata: {json.dumps(html)}\n\n'
            await asyncio.sleep(self.refresh_s)  # the refresh period of a live page, not a synchronisation

    # --- actions: GET shows the confirm step, POST (with the CSRF token) does it ---

    async def confirm(self, request: Request) -> Response:
        action = request.path_params['action']
        if not self.allow_actions or action not in ACTIONS:
            return Response('actions are disabled (start the dashboard with --allow-actions)', 403)
        job_id = request.query_params.get('id', '')
        context = await views.job(await self.redis.get(), self.sources, job_id)
        context.update(action=action, verb=ACTIONS[action], csrf=csrf_token(request))
        return remember_csrf(request, HTMLResponse(self.renderer.render(request, 'confirm.html', context)))

    async def act(self, request: Request) -> Response:
        action = request.path_params['action']
        if not self.allow_actions or action not in ACTIONS:
            return Response('actions are disabled (start the dashboard with --allow-actions)', 403)
        form = await _form(request)
        if not csrf_ok(request, form.get(CSRF_FIELD)):
            logger.warning('dashboard action refused: bad CSRF token action=%s client=%s', action, _who(request))
            return Response('CSRF check failed: reload the page and try again', 403)
        outcome = await self._do(action, form.get('id', ''), form.get('same_id') == '1', _who(request))
        target = request.url_for('job').include_query_params(id=outcome.job_id, done=outcome.message)
        return RedirectResponse(str(target.path) + '?' + str(target.query), status_code=303)

    async def _do(self, action: str, job_id: str, same_id: bool, who: str) -> actions.Outcome:
        redis = await self.redis.get()
        if action == 'abort':
            return await actions.abort(redis, self.sources, job_id, who)
        if action == 'retry':
            return await actions.retry(redis, self.sources, job_id, same_id, who)
        return await actions.delete_result(redis, self.sources, job_id, who)


async def _form(request: Request) -> dict[str, str]:
    """A urlencoded form body, at most 64 KiB (no multipart: our forms send none)."""
    body = b''
    async for chunk in request.stream():
        body += chunk
        if len(body) > 65536:
            break
    return {k: v[0] for k, v in parse_qs(body.decode(errors='replace')[:65536]).items()}


def _who(request: Request) -> str:
    client = request.client.host if request.client else '?'
    return f'{client}'


def create_app(
    redis: RedisSettings | RedisClient,
    queues: Sequence[str | QueueSource],
    *,
    allow_actions: bool = False,
    auth: Auth | None = None,
    refresh_s: float = 2.0,
) -> Starlette:
    """
    The dashboard as an ASGI app, to run alone or mount in your own service (`app.mount('/arq', create_app(...))`).

    :param redis: arq's RedisSettings (a pool is made on first use) or a redis.asyncio client / ArqRedis pool
    :param queues: queue names, or `QueueSource`s that also name a data-only deserializer for the payloads
    :param allow_actions: offer abort, retry and delete (off: the dashboard only reads)
    :param auth: require a bearer token or basic auth (see `Auth.from_env`); None: no authentication of its own
    :param refresh_s: seconds between live updates
    """
    if not queues:
        raise ValueError('give at least one queue name')
    sources = [q if isinstance(q, QueueSource) else QueueSource(q) for q in queues]
    handle = RedisHandle(redis)
    dashboard = Dashboard(handle, sources, allow_actions, refresh_s)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await handle.close()

    routes = [
        Route('/', dashboard.overview, name='overview'),
        Route('/fleet', dashboard.fleet, name='fleet'),
        Route('/jobs', dashboard.jobs, name='jobs'),
        Route('/job', dashboard.job, name='job'),
        Route('/job/{action}', dashboard.confirm, methods=['GET'], name='confirm'),
        Route('/job/{action}', dashboard.act, methods=['POST'], name='act'),
        Route('/stream', dashboard.stream, name='stream'),
        Mount('/static', StaticFiles(directory=HERE / 'static'), name='static'),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(Guard, auth=auth)], lifespan=lifespan)
    app.state.dashboard = dashboard
    return app
