"""What the dashboard shows is inert (XSS payloads, malicious pickles) and who may see it is enforced."""

from __future__ import annotations

import base64
import os
import pickle
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import redis
from selenium.webdriver.common.by import By

from tests.dashboard.harness import Fleet, screenshot, text_of
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(900)  # the first test may install Chromium; every wait below has its own deadline

XSS = [
    '<script>window.__xss = "script"</script>',
    '<img src=x onerror="window.__xss = \'img\'">',
    '"><svg onload="window.__xss = \'svg\'">',
    "javascript:window.__xss='href'",
]


class Boom:
    """Unpickling this runs a shell command: what anyone with write access to Redis could plant."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (f'touch {self.marker}',)


def assert_inert(browser: Any) -> None:
    assert browser.execute_script('return window.__xss === undefined'), browser.execute_script('return window.__xss')


def test_xss_payloads_in_args_ids_and_results_render_as_text(fleet: Fleet, browser: Any, tmp_path: Path) -> None:
    fleet.start_supervisor()
    done = fleet.enqueue('echo', XSS[0], job_id=XSS[1])  # the result is the payload, the id another
    wait_until(lambda: fleet.sup.redis.exists(f'arq:result:{done}'), message='the echo job finished')
    waiting = fleet.enqueue(XSS[2], XSS[3], {'k': XSS[0]}, job_id=XSS[0], defer_s=3600)  # function name too
    fleet.start_dashboard('--allow-actions')

    for path in ('/', '/fleet', f'/jobs?queue={urllib.parse.quote(fleet.queue)}&state=deferred',
                 f'/jobs?queue={urllib.parse.quote(fleet.queue)}&state=complete',
                 f'/job?id={urllib.parse.quote(done)}', f'/job?id={urllib.parse.quote(waiting)}',
                 f'/job/abort?id={urllib.parse.quote(waiting)}', f'/jobs?id={urllib.parse.quote(XSS[1])}'):  # fmt: skip
        browser.get(fleet.url + path)
        wait_until(lambda: browser.execute_script('return document.readyState') == 'complete', message='page load')
        assert_inert(browser)
    browser.get(f'{fleet.url}/job?id={urllib.parse.quote(done)}')
    assert text_of(browser, 'code.job-id') == XSS[1]
    assert text_of(browser, 'pre.result') == repr(XSS[0])
    browser.get(f'{fleet.url}/job?id={urllib.parse.quote(waiting)}')
    assert XSS[3] in text_of(browser, 'ol.args')
    wait_until(lambda: int(browser.execute_script("return document.getElementById('live').dataset.updates || 0")) >= 2,
               message='two live updates of the job page')  # fmt: skip
    assert_inert(browser)  # the live fragments are escaped as well
    screenshot(browser, 'xss', tmp_path)


def test_a_malicious_pickle_is_shown_not_run(fleet: Fleet, browser: Any, tmp_path: Path) -> None:
    marker = tmp_path / 'pwned'
    assert not marker.exists()
    fleet.write_settings()  # for the dashboard's queue; no worker: nothing else reads these payloads
    r = fleet.sup.redis
    client = redis.Redis(port=fleet.sup.redis_port, db=fleet.sup.db)  # raw bytes: the harness's client decodes
    now_ms = int(time.time() * 1000)
    job = {'t': None, 'f': 'quick', 'a': (Boom(marker), 'fine'), 'k': {'x': Boom(marker)}, 'et': now_ms}
    client.set('arq:job:evil-job', pickle.dumps(job))
    client.zadd(fleet.queue, {'evil-job': now_ms + 3_600_000})  # deferred: no worker will read it meanwhile
    result = {**job, 't': 1, 's': False, 'r': Boom(marker), 'st': now_ms, 'ft': now_ms, 'q': fleet.queue,
              'id': 'evil-result'}  # fmt: skip
    client.set('arq:result:evil-result', pickle.dumps(result))
    client.close()
    fleet.start_dashboard('--allow-actions')

    browser.get(f'{fleet.url}/job?id=evil-job')
    args = text_of(browser, 'ol.args')
    assert '<not displayable: posix.system>' in args and "'fine'" in args
    browser.get(f'{fleet.url}/jobs?queue={urllib.parse.quote(fleet.queue)}&state=deferred')
    assert 'not displayable' in text_of(browser, 'tr[data-job-id="evil-job"]')
    browser.get(f'{fleet.url}/job?id=evil-result')
    assert 'not displayable' in text_of(browser, 'pre.result')
    assert 'retry unavailable' in text_of(browser, '.job-head')  # never rebuilt to enqueue
    assert not marker.exists(), 'the dashboard ran code from a pickle'
    assert r.exists('arq:job:evil-job')


def test_auth_is_enforced_on_pages_streams_and_actions(fleet: Fleet, browser: Any) -> None:
    fleet.start_supervisor()
    env = fleet.sup.env(ARQ_DASHBOARD_USERNAME='ops', ARQ_DASHBOARD_PASSWORD='s3cret pass', ARQ_DASHBOARD_TOKEN='t0k')
    fleet.start_dashboard('--allow-actions', env=env)
    basic = 'Basic ' + base64.b64encode(b'ops:s3cret pass').decode()
    for path in ('/', '/fleet', '/jobs', '/job?id=x', '/stream?view=overview', '/static/dashboard.css'):
        assert fleet.status(path) == 401, path
        assert fleet.status(path, {'authorization': 'Basic ' + base64.b64encode(b'ops:wrong').decode()}) == 401
        assert fleet.status(path, {'authorization': 'Bearer nope'}) == 401
    assert fleet.status('/', {'authorization': basic}) == 200
    assert fleet.status('/', {'authorization': 'Bearer t0k'}) == 200

    browser.get(fleet.url + '/')
    assert not browser.title.startswith('Overview') and browser.find_elements(By.ID, 'live') == []
    browser.execute_cdp_cmd('Network.setExtraHTTPHeaders', {'headers': {'Authorization': basic}})
    browser.get(fleet.url + '/')
    assert browser.title.startswith('Overview')
    wait_until(lambda: browser.execute_script("return document.getElementById('live').dataset.updates"),
               message='the live stream authenticates too')  # fmt: skip


def test_refuses_actions_on_a_public_address_without_auth(fleet: Fleet) -> None:
    fleet.sup.write_settings()
    command = [sys.executable, '-m', 'arq_supervise', 'dashboard', '--host', '0.0.0.0', '--port', '0',
               '--allow-actions', f'{fleet.sup.module}.WorkerSettings']  # fmt: skip
    out = subprocess.run(command, cwd=fleet.sup.tmp_path, env=fleet.sup.env(), capture_output=True, text=True,
                         timeout=30)  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert 'refusing to serve actions on 0.0.0.0 without authentication' in out.stderr
