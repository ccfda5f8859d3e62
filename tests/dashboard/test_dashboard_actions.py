"""Abort, retry and delete from the browser do what they say, behind a confirm step, CSRF and a log line."""

from __future__ import annotations

import pickle
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import pytest
import redis
from selenium.webdriver.common.by import By

from tests.dashboard.harness import Fleet, text_of
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(900)  # the first test may install Chromium; every wait below has its own deadline


def click_link(browser: Any, text: str) -> None:
    """Click in one script run: the live region may be replaced between finding an element and clicking it."""
    script = "const a = [...document.querySelectorAll('a')].find(a => a.textContent === arguments[0]); a.click();"
    browser.execute_script(script, text)


def confirm(browser: Any, fleet: Fleet, job_id: str, link: str) -> None:
    browser.get(f'{fleet.url}/job?id={urllib.parse.quote(job_id)}')
    click_link(browser, link)
    assert 'confirm' in browser.find_element(By.ID, 'confirm').get_attribute('id')
    browser.find_element(By.ID, 'confirm').click()
    wait_until(lambda: 'done=' in browser.current_url, message='the job page after the action')


def result(fleet: Fleet, job_id: str) -> dict[str, Any] | None:
    value = redis.Redis(port=fleet.sup.redis_port, db=fleet.sup.db).get(f'arq:result:{job_id}')
    return None if value is None else dict(pickle.loads(value))


def status_text(browser: Any) -> str:
    return str(browser.execute_script("const e = document.getElementById('job-status'); return e && e.textContent"))


def test_abort_running_and_queued_jobs_and_retry_and_delete(fleet: Fleet, browser: Any) -> None:
    fleet.start_supervisor()
    jobs = fleet.populate()
    fleet.start_dashboard('--allow-actions')

    running = jobs['in_progress'][0]
    confirm(browser, fleet, running, 'Abort…')
    assert 'abort requested' in text_of(browser, '.flash')
    wait_until(lambda: result(fleet, running), timeout=10, message='the aborted job has a result')
    outcome = result(fleet, running)
    assert outcome is not None and not outcome['s'] and type(outcome['r']).__name__ == 'CancelledError'
    wait_until(lambda: status_text(browser) == 'failed', timeout=10, message='the page shows the abort, live')

    deferred = jobs['deferred'][0]
    confirm(browser, fleet, deferred, 'Abort…')
    wait_until(lambda: result(fleet, deferred), timeout=10, message='the deferred job aborted before it started')
    assert type(result(fleet, deferred)['r']).__name__ == 'CancelledError'  # type: ignore[index]
    assert 'dashboard action=abort job_id=' + deferred in fleet.log()

    failed = jobs['failed'][0]
    confirm(browser, fleet, failed, 'Retry…')  # under a new id (the default choice)
    new_id = urllib.parse.parse_qs(urllib.parse.urlsplit(browser.current_url).query)['id'][0]
    assert new_id != failed
    assert 'enqueued again as' in text_of(browser, '.flash')
    wait_until(lambda: result(fleet, new_id), timeout=10, message='the retried job ran')
    assert str(result(fleet, new_id)['r']) == 'boom f0'  # type: ignore[index]
    assert fleet.sup.started('f0')[-1][0] == 'f0' and len(fleet.sup.started('f0')) == 2

    other = jobs['failed'][1]
    browser.get(f'{fleet.url}/job?id={other}')
    click_link(browser, 'Retry…')
    browser.find_element(By.CSS_SELECTOR, 'input[name=same_id][value="1"]').click()
    browser.find_element(By.ID, 'confirm').click()
    wait_until(lambda: 'done=' in browser.current_url, message='the job page after the action')
    wait_until(lambda: len(fleet.sup.started('f1')) == 2, timeout=10, message='f1 ran again under its own id')

    done = jobs['complete'][0]
    confirm(browser, fleet, done, 'Delete result…')
    assert result(fleet, done) is None
    assert status_text(browser) == 'not found'


def test_post_without_csrf_token_or_in_read_only_mode_is_refused(fleet: Fleet, browser: Any) -> None:
    fleet.start_supervisor()
    job_id = fleet.enqueue('quick', 'x', defer_s=3600)
    fleet.start_dashboard('--allow-actions')
    browser.get(f'{fleet.url}/job?id={job_id}')
    cookie = browser.get_cookie('arq_dashboard_csrf')['value']

    def post(body: dict[str, str], cookie_value: str | None) -> int:
        headers = {'content-type': 'application/x-www-form-urlencoded'}
        if cookie_value:
            headers['cookie'] = f'arq_dashboard_csrf={cookie_value}'
        request = urllib.request.Request(f'{fleet.url}/job/abort', urllib.parse.urlencode(body).encode(), headers)
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as e:
            return int(e.code)

    assert post({'id': job_id}, cookie) == 403  # no token in the form
    assert post({'id': job_id, 'csrf': 'x' * 43}, cookie) == 403  # a wrong one
    assert post({'id': job_id, 'csrf': cookie}, None) == 403  # no cookie: a cross-site form cannot send it
    assert fleet.sup.redis.zscore('arq:abort', job_id) is None
    assert 'bad CSRF token' in fleet.log()
    fleet.cleanup()

    fleet.start_dashboard()  # read-only
    browser.get(f'{fleet.url}/job?id={job_id}')
    assert browser.find_elements(By.LINK_TEXT, 'Abort…') == []
    assert post({'id': job_id, 'csrf': cookie}, cookie) == 403
    assert fleet.status(f'/job/abort?id={job_id}') == 403
    assert fleet.sup.redis.zscore('arq:abort', job_id) is None
