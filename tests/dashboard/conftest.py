"""Fixtures for the dashboard tests: see harness.py."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from arq.connections import RedisSettings
from arq_supervise.dashboard import create_app
from tests.dashboard.harness import Fleet, install_chromium, start_browser
from tests.integration.harness import Supervisor
from tests.support.redis_server import RedisServer


@pytest.fixture(scope='session')
def chromium() -> tuple[str, str]:
    paths = install_chromium()
    if paths is None:
        pytest.skip('chromium and chromedriver are not installed and cannot be (needs root and apt-get)')
    return paths


@pytest.fixture(scope='session')
def browser_session(chromium: tuple[str, str]) -> Iterator[Any]:
    driver = start_browser(*chromium)
    yield driver
    driver.quit()


@pytest.fixture
def browser(browser_session: Any) -> Iterator[Any]:
    browser_session.execute_cdp_cmd('Network.enable', {})
    browser_session.execute_cdp_cmd('Network.setExtraHTTPHeaders', {'headers': {}})
    browser_session.get('about:blank')
    browser_session.delete_all_cookies()
    yield browser_session
    browser_session.get('about:blank')  # closes the page's event stream before its dashboard goes away


@pytest.fixture
def fleet(tmp_path: Path, queue_name: str, redis_server: RedisServer, redis_db: int) -> Iterator[Fleet]:
    sup = Supervisor(tmp_path, queue_name, redis_server.port, redis_db)
    fleet = Fleet(sup)
    yield fleet
    fleet.cleanup()
    leftovers = sup.cleanup()
    assert not leftovers, f'processes outlived the test: {leftovers}'


@pytest.fixture
async def pages(redis_server: RedisServer, redis_db: int, queue_name: str) -> AsyncIterator[httpx.AsyncClient]:
    """The dashboard app for the test's queue and database, read in this process (no server, no browser)."""
    app = create_app(RedisSettings(port=redis_server.port, database=redis_db), [queue_name])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url='http://testserver') as client:
        yield client
    await app.state.dashboard.redis.close()
