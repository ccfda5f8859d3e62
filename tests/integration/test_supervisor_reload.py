"""HUP deploys new code: new children import the application afresh, after a check in a short-lived process."""

from __future__ import annotations

import signal

import pytest

from tests.integration.harness import Supervisor
from tests.support.waiting import wait_until


def _version_of_a_new_job(supervisor: Supervisor) -> object:
    job_id = supervisor.enqueue('version')
    result = wait_until(lambda: supervisor.result(job_id), timeout=10, message=f'result of {job_id}')
    return result['r']


@pytest.mark.timeout(90)
def test_hup_deploys_new_code_and_a_broken_deploy_keeps_the_old_children(supervisor: Supervisor) -> None:
    code = supervisor.tmp_path / f'{supervisor.module}_code.py'
    code.write_text("VERSION = 'v1'\n")
    settings = supervisor.write_settings(f"""
    import {supervisor.module}_code as code


    async def version(ctx):
        return code.VERSION


    WorkerSettings.functions = [*WorkerSettings.functions, version]
    """)
    supervisor.start('--procs', '2', settings=settings, env=supervisor.env(PYTHONDONTWRITEBYTECODE='1'))
    old = supervisor.wait_ready(2)
    assert _version_of_a_new_job(supervisor) == 'v1'

    code.write_text("VERSION = 'v2, deployed'\n")
    supervisor.signal(signal.SIGHUP)
    wait_until(lambda: not set(supervisor.children()) & set(old), timeout=30, message='old children replaced')
    new = supervisor.wait_ready(2)
    assert _version_of_a_new_job(supervisor) == 'v2, deployed'
    assert 'new settings loaded, replacing children one by one' in supervisor.log()

    code.write_text("VERSION = 'v3\n")  # a broken deploy
    supervisor.signal(signal.SIGHUP)
    log = supervisor.wait_log('reload refused, the current children keep running')
    assert 'SyntaxError' in log and f'{supervisor.module}_code.py' in log and 'line 1' in log
    assert supervisor.wait_ready(2) == new
    assert _version_of_a_new_job(supervisor) == 'v2, deployed'

    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait(timeout=15) == 0
