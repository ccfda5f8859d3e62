"""A supervisor with jobs in every state, the real `arq-supervise dashboard` command, and headless Chromium.

Each test gets its own queue and database (tests/conftest.py), its own supervisor and dashboard processes (each in
its own session, killed with their group at teardown), and the session's one browser with its cookies cleared.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any

from tests.integration.harness import Supervisor, _wait_group_gone
from tests.support.redis_server import free_port
from tests.support.waiting import wait_until

# the screenshots beside the dashboard's code are replaced only on request (ARQ_DASHBOARD_SCREENSHOTS=1), so an
# ordinary test run leaves the checkout clean; otherwise they go to the test's temporary directory
SCREENSHOTS = Path(__file__).resolve().parents[2] / 'supervisor' / 'dashboard' / 'screenshots'


def screenshot(browser: Any, name: str, tmp_path: Path) -> Path:
    directory = SCREENSHOTS if os.environ.get('ARQ_DASHBOARD_SCREENSHOTS') == '1' else tmp_path
    directory.mkdir(exist_ok=True)
    path = directory / f'{name}.png'
    assert browser.save_screenshot(str(path)), f'screenshot {name}'
    return path


#: extra jobs and a settings class for the dashboard tests, appended to the integration harness's settings module
DASH_SETTINGS = """
async def failer(ctx, name):
    await _record(ctx, 'started', name)
    raise ValueError(f'boom {name}')


async def echo(ctx, value):
    return value


class DashSettings(WorkerSettings):
    functions = [quick, sleeper, crasher, blocker, failer, echo]
    allow_abort_jobs = True
"""

CHROMIUM_PACKAGES = ('chromium', 'chromium-driver')


def chromium_paths() -> tuple[str, str] | None:
    browser = shutil.which('chromium') or shutil.which('chromium-browser')
    driver = shutil.which('chromedriver')
    return (browser, driver) if browser and driver else None


def install_chromium() -> tuple[str, str] | None:
    """Debian's chromium and chromium-driver, installed when missing (as root, like `make test` does redis-server)."""
    paths = chromium_paths()
    if paths is None and os.geteuid() == 0 and shutil.which('apt-get'):
        env = {**os.environ, 'DEBIAN_FRONTEND': 'noninteractive'}
        subprocess.run(['apt-get', 'update', '-qq'], capture_output=True, env=env, timeout=300)
        subprocess.run(['apt-get', 'install', '-y', '-qq', '--no-install-recommends', *CHROMIUM_PACKAGES],
                       capture_output=True, env=env, timeout=900)  # fmt: skip
        paths = chromium_paths()
    return paths


def start_browser(browser: str, driver: str) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ('--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--window-size=1360,1000',
                '--disable-extensions', '--no-first-run', '--force-color-profile=srgb'):  # fmt: skip
        options.add_argument(arg)
    os.environ.setdefault('SE_OFFLINE', 'true')  # selenium must not try to download a driver: we give it one
    return webdriver.Chrome(options=options, service=Service(executable_path=driver))


def text_of(browser: Any, css: str) -> str:
    """An element's visible text, read in one script run: a live update may replace the element at any moment."""
    value = browser.execute_script('const e = document.querySelector(arguments[0]); return e && e.innerText', css)
    assert value is not None, f'no element matches {css}'
    return str(value)


class Fleet:
    """The supervisor (procs 1, max_jobs 2) and the dashboard, on the test's queue and database."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.sup = supervisor
        self.settings = f'{supervisor.module}.DashSettings'
        self.port = free_port()
        self.dashboard: subprocess.Popen[bytes] | None = None
        self.log_path = supervisor.tmp_path / 'dashboard.log'

    @property
    def url(self) -> str:
        return f'http://127.0.0.1:{self.port}'

    @property
    def queue(self) -> str:
        return self.sup.queue

    def write_settings(self, max_jobs: int = 2) -> None:
        self.sup.write_settings(DASH_SETTINGS, max_jobs=max_jobs)

    def start_supervisor(self, max_jobs: int = 2) -> None:
        self.write_settings(max_jobs)
        self.sup.start('--procs', '1', '--health-interval', '0.5', settings=self.settings)
        self.sup.wait_ready(1)

    def start_dashboard(self, *args: str, env: dict[str, str] | None = None, wait: bool = True) -> None:
        command = [sys.executable, '-m', 'arq_supervise', 'dashboard', '--port', str(self.port), '--refresh', '0.5',
                   *args, self.settings]  # fmt: skip
        self.log_file = self.log_path.open('ab')
        self.dashboard = subprocess.Popen(
            command, cwd=self.sup.tmp_path, env=env or self.sup.env(), stdout=self.log_file, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        if wait:
            wait_until(lambda: self.answers(env), timeout=15, message=f'the dashboard to answer\n{self.log()}')

    def answers(self, env: dict[str, str] | None) -> bool:
        assert self.dashboard is not None
        if self.dashboard.poll() is not None:
            raise AssertionError(f'the dashboard exited with {self.dashboard.returncode}:\n{self.log()}')
        return self.status('/', headers=_any_auth(env)) in (200, 401)

    def log(self) -> str:
        return self.log_path.read_text(errors='replace') if self.log_path.exists() else ''

    def status(self, path: str, headers: dict[str, str] | None = None) -> int | None:
        request = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as e:
            return int(e.code)
        except OSError:
            return None

    def enqueue(self, function: str, *args: Any, job_id: str | None = None, defer_s: float | None = None) -> str:
        return self.enqueue_many([(function, args, job_id, defer_s)])[0]

    def enqueue_many(self, jobs: list[tuple[str, tuple[Any, ...], str | None, float | None]]) -> list[str]:
        from arq import create_pool
        from arq.connections import RedisSettings

        async def go() -> list[str]:
            pool = await create_pool(RedisSettings(port=self.sup.redis_port, database=self.sup.db))
            ids = []
            try:
                for function, args, job_id, defer_s in jobs:
                    defer = timedelta(seconds=defer_s) if defer_s else None
                    job = await pool.enqueue_job(function, *args, _job_id=job_id, _queue_name=self.queue,
                                                 _defer_by=defer)  # fmt: skip
                    assert job is not None
                    ids.append(job.job_id)
            finally:
                await pool.aclose()
            return ids

        return asyncio.run(go())

    def populate(self) -> dict[str, list[str]]:
        """Jobs in every state: 3 complete, 2 failed, 2 running (both slots), 4 queued behind them, 2 deferred."""
        r = self.sup.redis
        complete = [self.enqueue('quick', f'c{i}') for i in range(3)]
        failed = [self.enqueue('failer', f'f{i}') for i in range(2)]
        wait_until(lambda: all(r.exists(f'arq:result:{j}') for j in complete + failed), message='5 results')
        running = [self.enqueue('sleeper', f's{i}', 120) for i in range(2)]
        self.sup.wait_started('s0')
        self.sup.wait_started('s1')
        queued = [self.enqueue('quick', f'q{i}') for i in range(4)]
        deferred = [self.enqueue('quick', f'd{i}', defer_s=3600) for i in range(2)]
        return {'complete': complete, 'failed': failed, 'in_progress': running, 'queued': queued,
                'deferred': deferred}  # fmt: skip

    def cleanup(self) -> None:
        if self.dashboard is not None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(self.dashboard.pid, sig)
                except ProcessLookupError:
                    break
                if _wait_group_gone(self.dashboard.pid, timeout=5):
                    break
            self.dashboard.wait(timeout=5)
            self.log_file.close()


def _any_auth(env: dict[str, str] | None) -> dict[str, str]:
    token = (env or {}).get('ARQ_DASHBOARD_TOKEN')
    return {'authorization': f'Bearer {token}'} if token else {}
