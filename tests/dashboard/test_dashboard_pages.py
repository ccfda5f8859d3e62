"""Every page in headless Chromium against a live supervisor: the numbers on the page are the ones in Redis."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from selenium.webdriver.common.by import By

from tests.dashboard.harness import Fleet, screenshot, text_of
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(900)  # the first test may install Chromium; every wait below has its own deadline


# live updates replace the DOM under a test's feet: each read is one script run, never a held element
COUNTS_JS = """
const section = [...document.querySelectorAll('section.queue')].find(s => s.dataset.queue === arguments[0]);
if (!section) return null;
return Object.fromEntries([...section.querySelectorAll('[data-count]')].map(e => [e.dataset.count, e.textContent]));
"""


def counts_on_page(browser: Any, queue: str) -> dict[str, str]:
    return dict(browser.execute_script(COUNTS_JS, queue) or {})


def expected_counts(fleet: Fleet) -> dict[str, str]:
    r, queue = fleet.sup.redis, fleet.queue
    now = int(time.time() * 1000)
    due = r.zrangebyscore(queue, '-inf', now)
    running = sum(1 for job_id in due if r.exists(f'arq:in-progress:{job_id}'))
    out = {'queued': str(len(due) - running), 'deferred': str(r.zcount(queue, f'({now}', '+inf')),
           'in_progress': str(running)}  # fmt: skip
    for outcome in ('complete', 'failed'):
        key = f'arq:recent:{queue}:{outcome}'
        indexed = r.exists(f'arq:recent:{queue}:complete') or r.exists(f'arq:recent:{queue}:failed')
        out[f'{outcome}_1m'] = str(r.zcount(key, now - 60_000, '+inf')) if indexed else 'n/a'
        out[f'{outcome}_1h'] = str(r.zcount(key, now - 3_600_000, '+inf')) if indexed else 'n/a'
    return out


def row_ids(browser: Any) -> set[str]:
    return set(
        browser.execute_script("return [...document.querySelectorAll('tr[data-job-id]')].map(e => e.dataset.jobId)")
    )


def test_every_page_shows_what_redis_holds(fleet: Fleet, browser: Any, tmp_path: Path) -> None:
    fleet.start_supervisor()
    jobs = fleet.populate()
    fleet.start_dashboard()

    browser.get(fleet.url + '/')
    assert browser.title.startswith('Overview')
    wait_until(lambda: counts_on_page(browser, fleet.queue) == expected_counts(fleet), timeout=10,
               message='overview counts equal to Redis')  # fmt: skip
    assert counts_on_page(browser, fleet.queue)['in_progress'] == '2'
    assert counts_on_page(browser, fleet.queue)['queued'] == '4'
    assert len(browser.find_elements(By.CSS_SELECTOR, 'svg.chart')) == 4
    screenshot(browser, 'overview', tmp_path)

    browser.get(fleet.url + '/fleet')
    child = fleet.sup.children()[0]
    wait_until(lambda: _child_cell(browser, fleet.sup.pid, 'ongoing') == '2', timeout=10,
               message='the fleet page shows the child running 2 jobs')  # fmt: skip
    assert _child_cell(browser, fleet.sup.pid, 'pid') == str(child)
    screenshot(browser, 'fleet', tmp_path)

    for state in ('queued', 'deferred', 'in_progress', 'complete', 'failed'):
        browser.get(f'{fleet.url}/jobs?queue={fleet.queue}&state={state}')
        assert row_ids(browser) == set(jobs[state]), state
        if state == 'failed':
            screenshot(browser, 'jobs', tmp_path)

    browser.get(f'{fleet.url}/job?id={jobs["failed"][0]}')
    assert text_of(browser, '#job-status') == 'failed'
    assert "ValueError('boom f0')" in text_of(browser, 'pre.result')
    assert browser.find_elements(By.LINK_TEXT, 'Retry…') == []  # read-only: no action buttons
    screenshot(browser, 'job', tmp_path)

    browser.get(f'{fleet.url}/job?id={jobs["in_progress"][0]}')
    assert text_of(browser, '#job-status') == 'in progress'
    slot, pid, host = holder_of(fleet, jobs['in_progress'][0])
    held_by = text_of(browser, 'dd[data-field="holder"]')
    assert f'worker slot {slot} (pid {pid}) of the arq-supervise on {host} (pid {fleet.sup.pid})' in held_by, held_by
    browser.get(f'{fleet.url}/jobs?queue={fleet.queue}&state=in_progress')
    cell = text_of(browser, f'tr[data-job-id="{jobs["in_progress"][1]}"] td.holder')
    assert cell == f'{host} · supervisor {fleet.sup.pid} · slot {slot} (pid {pid})', cell


def holder_of(fleet: Fleet, job_id: str) -> tuple[int, int, str]:
    """(slot, pid, host) of the child whose lease is on the job, checked against the supervisor's own record."""
    [child] = fleet.sup.status()['children']
    host = socket.gethostname()
    document = json.loads(fleet.sup.redis.get(f'arq:supervisor:{fleet.queue}:{host}:{fleet.sup.pid}'))
    token = fleet.sup.redis.get(f'arq:in-progress:{job_id}')
    assert token.startswith(f'{document["worker_id_prefix"]}{child["pid"]}:'), (token, document['worker_id_prefix'])
    return child['slot'], child['pid'], host


def _child_cell(browser: Any, supervisor_pid: int, field: str) -> str | None:
    script = """
    const article = document.querySelector(`article.supervisor[data-pid="${arguments[0]}"]`);
    const cell = article && article.querySelector(`td[data-field="${arguments[1]}"]`);
    return cell ? cell.textContent : null;
    """
    value = browser.execute_script(script, str(supervisor_pid), field)
    return None if value is None else str(value)


def test_pages_update_live_without_a_reload(fleet: Fleet, browser: Any) -> None:
    fleet.start_supervisor()
    fleet.populate()
    fleet.start_dashboard()
    browser.get(f'{fleet.url}/jobs?queue={fleet.queue}&state=deferred')
    browser.execute_script('window.__marker = "same page"')
    assert len(row_ids(browser)) == 2
    extra = fleet.enqueue('quick', 'later', defer_s=3600)
    wait_until(lambda: extra in row_ids(browser), timeout=10, message='the new deferred job on the page, live')
    assert browser.execute_script('return window.__marker') == 'same page', 'the page was not reloaded'
    browser.get(fleet.url + '/')
    wait_until(lambda: counts_on_page(browser, fleet.queue)['deferred'] == '3', timeout=10, message='3 deferred')
    fleet.enqueue('quick', 'later2', defer_s=3600)
    wait_until(lambda: counts_on_page(browser, fleet.queue)['deferred'] == '4', timeout=10,
               message='the overview count rises live')  # fmt: skip
    assert int(browser.find_element(By.ID, 'live').get_attribute('data-updates') or 0) >= 1


def seed_stopped_supervisor(fleet: Fleet, minutes: int = 60, stopped_ago_s: int = 300) -> None:
    """An hour of history (in history.py's format) from a supervisor on another host that stopped 5 minutes ago."""
    import json
    import math

    from arq_supervise.history import history_key

    now_ms = int(time.time() * 1000)
    complete = failed = 0
    samples = {}
    for i in range(minutes * 6 - stopped_ago_s // 10):
        rate = 40 + 25 * math.sin(i / 40) + 8 * math.sin(i / 7)
        complete += int(rate * 10)
        failed += int(rate * 10 * (0.02 + 0.02 * math.sin(i / 23)) + 0.5)
        depth = max(int(300 + 280 * math.sin(i / 30 + 1)), 0)
        sample = {'t': now_ms - minutes * 60_000 + i * 10_000, 'c': complete, 'f': failed, 'r': 0, 'o': 3,
                  'q': depth + 3, 'd': depth, 'lag': int(depth * 25), 'ready': 4, 'procs': 4}  # fmt: skip
        samples[json.dumps(sample)] = sample['t']
    client = redis.Redis(port=fleet.sup.redis_port, db=fleet.sup.db)
    client.zadd(history_key(fleet.queue, 'worker-b', 31337), samples)
    client.close()


def test_overview_plots_the_last_hour_and_fleet_marks_a_stopped_supervisor(
    fleet: Fleet, browser: Any, tmp_path: Path
) -> None:
    seed_stopped_supervisor(fleet)
    fleet.start_supervisor()
    fleet.populate()
    fleet.start_dashboard('--allow-actions')
    browser.get(fleet.url + '/')
    wait_until(lambda: browser.execute_script("return document.querySelectorAll('svg.chart polyline').length") >= 2,
               message='lines on the jobs/s and failures/s charts')  # fmt: skip
    assert '60 min' in browser.execute_script("return document.querySelector('svg.chart').textContent")
    screenshot(browser, 'overview', tmp_path)
    browser.get(fleet.url + '/fleet')
    script = 'const a = document.querySelector(arguments[0]); return [a.innerText, a.className]'
    text, classes = browser.execute_script(script, 'article.supervisor[data-pid="31337"]')
    assert 'gone' in text and 'last seen' in text and 'stale' in classes
    wait_until(lambda: _child_cell(browser, fleet.sup.pid, 'ongoing') == '2', message='the live child on the page')
    screenshot(browser, 'fleet', tmp_path)
    browser.get(f'{fleet.url}/jobs?queue={fleet.queue}&state=queued')
    browser.find_element(By.ID, 'theme').click()
    assert browser.execute_script('return document.documentElement.dataset.theme') == 'dark'
    screenshot(browser, 'jobs-dark', tmp_path)


def test_fleet_page_shows_crashes_among_the_supervisors_restarts_by_cause(fleet: Fleet, browser: Any) -> None:
    fleet.start_supervisor()
    job_id = fleet.enqueue('crasher', 'c0', 13)  # kills its child at least twice, then is failed as poison
    wait_until(lambda: fleet.sup.result(job_id), timeout=30, message='the poison job failed')
    fleet.start_dashboard()
    browser.get(fleet.url + '/fleet')
    script = """
    const a = document.querySelector(`article.supervisor[data-pid="${arguments[0]}"]`);
    const cell = a && a.querySelector('td[data-field="restarts"]');
    const causes = a && a.querySelector('[data-field="restarts-by-cause"]');
    return cell && [cell.textContent, causes ? causes.textContent : ''];
    """  # one script run: a live update replaces the whole article
    crashes, causes = wait_until(lambda: (read := browser.execute_script(script, str(fleet.sup.pid))) and
                                 int(read[0]) >= 2 and read, timeout=10, message='the crashes on the page')  # fmt: skip
    assert ' '.join(causes.split()) == f'restarts by cause: crash {crashes}'
