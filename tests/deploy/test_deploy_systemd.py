"""deploy/systemd/arq-supervise.service: systemd accepts it, its numbers agree with the supervisor's, and its own
ExecStart= behaves under a stand-in for systemd (notify socket, watchdog, reload, stop) as the unit promises."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import struct
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from arq_supervise.config import SupervisorConfig
from arq_supervise.exits import ExitCode
from tests.deploy.harness import (
    DEPLOYED_SETTINGS,
    UNIT,
    DeployedSupervisor,
    arq_supervise_command,
    base_environment,
    expand_specifiers,
    expand_variables,
    option_value,
    parse_unit,
    read_environment_file,
    run_quiet,
    settings_argument,
    timespan_s,
    unit_environment,
    unit_value,
    with_option,
)
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_until

#: the drain wait the running test uses instead of the unit's, with the unit's headroom kept on top of it
TEST_JOB_COMPLETION_WAIT_S = 2.0
TEST_WATCHDOG_USEC = 2_000_000
PROCS = 2


def exec_start(unit: dict[str, dict[str, list[str]]]) -> list[str]:
    [line] = unit['Service']['ExecStart']
    return shlex.split(line.lstrip('-@+!:'))


def unit_with_real_binary(tmp_path: Path) -> Path:
    """The unit with its ExecStart= binary pointed at this machine's arq-supervise (verify checks it exists)."""
    argv = exec_start(parse_unit(UNIT))
    text = UNIT.read_text().replace(argv[0], shlex.join(arq_supervise_command()), 1)
    copy = tmp_path / UNIT.name
    copy.write_text(text)
    return copy


def verify(systemd_analyze: str, unit: Path) -> str:
    done = run_quiet([systemd_analyze, 'verify', '--man=no', str(unit)], cwd=unit.parent)
    return f'exit {done.returncode}\n{done.stdout}{done.stderr}'.strip()


def test_systemd_analyze_verify_passes(systemd_analyze: str, tmp_path: Path) -> None:
    unit = unit_with_real_binary(tmp_path)
    assert verify(systemd_analyze, unit) == 'exit 0'  # systemd-analyze exits 0 even on warnings: no output at all

    # the check is not vacuous: a typo in a key or a value is reported
    broken = tmp_path / 'broken' / UNIT.name
    broken.parent.mkdir()
    broken.write_text(unit.read_text().replace('KillMode=mixed', 'KillMode=mixd\nKillSignl=SIGTERM'))
    report = verify(systemd_analyze, broken)
    assert 'mixd' in report and 'KillSignl' in report


def test_hardening_keeps_the_exposure_low(systemd_analyze: str, tmp_path: Path) -> None:
    unit = unit_with_real_binary(tmp_path)
    done = run_quiet([systemd_analyze, 'security', '--offline=true', '--threshold=20', '--no-pager', str(unit)])
    assert done.returncode == 0, done.stdout[-1500:] + done.stderr


def test_unit_numbers_agree_with_the_supervisor() -> None:
    unit = parse_unit(UNIT)
    service = unit['Service']
    argv = exec_start(unit)
    defaults = SupervisorConfig(settings_path='app.WorkerSettings')

    assert unit_value(unit, 'Service', 'Type') == 'notify'
    assert unit_value(unit, 'Service', 'NotifyAccess') == 'main'  # children never speak for the service
    assert unit_value(unit, 'Service', 'KillMode') == 'mixed'  # SIGTERM to the supervisor alone; it drains
    assert shlex.split(unit_value(unit, 'Service', 'ExecReload')) == ['/bin/kill', '-HUP', '$MAINPID']
    assert unit_value(unit, 'Service', 'Restart') == 'on-failure'
    no_restart = {int(code) for code in ' '.join(service['RestartPreventExitStatus']).split()}
    assert {ExitCode.CONFIG_ERROR, ExitCode.USAGE} <= no_restart  # a restart cannot fix these
    assert ExitCode.BOOT_ERROR not in no_restart  # Redis unreachable at boot does fix itself: retried, rate-limited
    assert 'StartLimitBurst' in unit['Unit']

    # stop: systemd must not SIGKILL before the supervisor's own deadline (the wait plus its margin), with slack for
    # on_shutdown hooks and Redis round trips; it then never needs the extension the supervisor asks for
    job_completion_wait = float(option_value(argv, '--job-completion-wait'))
    stop_timeout = timespan_s(unit_value(unit, 'Service', 'TimeoutStopSec'))
    assert stop_timeout >= job_completion_wait + defaults.stop_margin_s + 10
    # start: READY=1 waits for every child, each of which may take --boot-timeout
    boot_timeout = float(option_value(argv, '--boot-timeout')) if '--boot-timeout' in argv else defaults.boot_timeout_s
    assert timespan_s(unit_value(unit, 'Service', 'TimeoutStartSec')) > boot_timeout
    # the watchdog is fed from the loop every WatchdogSec/2; the loop turns every tick
    assert timespan_s(unit_value(unit, 'Service', 'WatchdogSec')) >= 10 * defaults.tick_s

    user = unit_value(unit, 'Service', 'User')
    assert user not in ('root', '0') or unit_value(unit, 'Service', 'DynamicUser') == 'yes'
    runtime = unit_value(unit, 'Service', 'RuntimeDirectory')
    assert option_value(argv, '--status-file').startswith(f'%t/{runtime}/')
    assert option_value(argv, '--pid-file').startswith(f'%t/{runtime}/')
    families = set(unit_value(unit, 'Service', 'RestrictAddressFamilies').split())
    assert {'AF_UNIX', 'AF_INET', 'AF_INET6'} <= families  # Redis over TCP and unix sockets, the notify socket

    example = read_environment_file(UNIT.parent / 'arq-supervise.env.example')
    assert example['REDIS_URL'].startswith('redis://')
    assert unit_value(unit, 'Service', 'EnvironmentFile').lstrip('-').endswith('arq-supervise.env')


@dataclass
class NotifySocket:
    """What systemd listens on: a datagram socket, with the sender's credentials on every message."""

    path: str
    sock: socket.socket
    messages: list[tuple[int, str]] = field(default_factory=list)

    @classmethod
    def bind(cls, directory: Path) -> NotifySocket:
        path = str(directory / 'notify.sock')
        if len(path) > 100:  # sun_path is 108 bytes: fall back to the abstract namespace, as systemd allows
            path = f'@arq-test-notify-{uuid.uuid4().hex}'
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind('\0' + path[1:] if path.startswith('@') else path)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        return cls(path, sock)

    def receive_until(self, field_: str, timeout: float) -> str:
        """Collect messages until one carries `field_` (e.g. 'READY=1'); return that one."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f'no {field_} within {timeout}s; got {self.messages}')
            self.sock.settimeout(remaining)
            try:
                data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except TimeoutError:
                continue
            sender = 0
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    sender = struct.unpack('iII', payload[:12])[0]
            text = data.decode()
            self.messages.append((sender, text))
            if field_ in text.split('\n'):
                return text

    def close(self) -> None:
        self.sock.close()


def _session_alive(pgid: int) -> list[int]:
    alive = []
    for process in psutil.process_iter(['pid', 'status']):
        try:
            if os.getpgid(process.pid) == pgid and process.info['status'] != psutil.STATUS_ZOMBIE:
                alive.append(process.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    return alive


@pytest.mark.slow
def test_execstart_under_a_stand_in_for_systemd(
    deployed: DeployedSupervisor, redis_server: RedisServer, redis_db: int, tmp_path: Path
) -> None:
    unit = parse_unit(UNIT)
    argv = exec_start(unit)
    unit_wait = float(option_value(argv, '--job-completion-wait'))
    # the unit's stop timeout, scaled down with the wait: the headroom the unit leaves stays the same
    stop_timeout = timespan_s(unit_value(unit, 'Service', 'TimeoutStopSec')) - unit_wait + TEST_JOB_COMPLETION_WAIT_S

    # what systemd prepares: the runtime directory, the environment file (here: Redis over its unix socket),
    # the working directory holding the application, the notify socket and the watchdog
    runtime_root = tmp_path / 'run'
    runtime_dir = runtime_root / unit_value(unit, 'Service', 'RuntimeDirectory')
    runtime_dir.mkdir(parents=True, mode=int(unit_value(unit, 'Service', 'RuntimeDirectoryMode'), 8))
    env_file = tmp_path / 'arq-supervise.env'
    env_file.write_text(f'REDIS_URL=unix://{redis_server.unix_socket}?db={redis_db}\nARQ_SUPERVISE_PROCS={PROCS}\n')
    settings = deployed.write_settings(DEPLOYED_SETTINGS, job_completion_wait=0)
    notify = NotifySocket.bind(tmp_path)
    env = base_environment(
        **unit_environment(unit),
        **read_environment_file(env_file),
        RUNTIME_DIRECTORY=str(runtime_dir),
        NOTIFY_SOCKET=notify.path,
        WATCHDOG_USEC=str(TEST_WATCHDOG_USEC),
    )
    command = expand_variables([expand_specifiers(w, runtime_root, UNIT.name) for w in argv], env)
    command = with_option(command, '--job-completion-wait', f'{TEST_JOB_COMPLETION_WAIT_S:g}')
    command = [*arq_supervise_command(), *command[1:-1], settings]
    assert settings_argument(argv) != settings
    # systemd sets WATCHDOG_PID to the pid it execs: the shell's pid is the one exec keeps
    wrapper = ['/bin/sh', '-c', 'export WATCHDOG_PID=$$; exec "$@"', 'sh']
    status_file = Path(option_value(command, '--status-file'))
    pid_file = Path(option_value(command, '--pid-file'))

    try:
        started = time.monotonic()
        deployed.launch([*wrapper, *command], env=env, cwd=tmp_path)  # cwd: WorkingDirectory=
        pid = deployed.pid

        # READY=1 only once every child has run its startup hook and answered
        start_timeout = min(timespan_s(unit_value(unit, 'Service', 'TimeoutStartSec')), 30)
        ready = notify.receive_until('READY=1', timeout=start_timeout)
        assert len(deployed.booted()) == PROCS, f'READY=1 before every child booted: {deployed.booted()}'
        assert f'MAINPID={pid}' in ready.split('\n')
        assert f'STATUS={PROCS}/{PROCS} children ready' in ready
        assert sorted(deployed.children()) == sorted(deployed.booted())
        document = json.loads(status_file.read_text())
        assert (document['state'], document['ready'], document['pid']) == ('running', PROCS, pid)
        assert pid_file.read_text().strip() == str(pid)
        print(f'READY=1 after {time.monotonic() - started:.2f}s')

        notify.receive_until('WATCHDOG=1', timeout=TEST_WATCHDOG_USEC / 1e6 + 1)

        # ExecReload=, as systemd runs it: RELOADING=1, then READY=1 once every child was replaced
        reload = shlex.split(unit_value(unit, 'Service', 'ExecReload').replace('$MAINPID', str(pid)))
        assert run_quiet(reload).returncode == 0
        notify.receive_until('RELOADING=1', timeout=5)
        notify.receive_until('READY=1', timeout=20)
        assert len(deployed.booted()) == 2 * PROCS

        # jobs in flight at stop: three that fit in the wait, one that does not
        short = [deployed.enqueue('sleeper', f'short{i}', 1.0) for i in range(3)]
        long = deployed.enqueue('sleeper', 'long', 60)
        wait_until(lambda: len(deployed.events('started')) == 4, message=f'jobs started\n{deployed.log()[-2000:]}')

        # systemctl stop with KillMode=mixed: SIGTERM to the main process only
        stop_at = time.monotonic()
        os.kill(pid, signal.SIGTERM)
        stopping = notify.receive_until('STOPPING=1', timeout=5)
        extend = [int(f.split('=')[1]) for f in stopping.split('\n') if f.startswith('EXTEND_TIMEOUT_USEC=')]
        assert extend and extend[0] / 1e6 < stop_timeout  # what it asks for fits in the unit's timeout
        try:
            code = deployed.wait(timeout=stop_timeout)
        except Exception:
            os.killpg(pid, signal.SIGKILL)  # TimeoutStopSec passed: systemd SIGKILLs the whole cgroup
            raise
        stop_s = time.monotonic() - stop_at
        print(f'stopped in {stop_s:.2f}s (scaled TimeoutStopSec {stop_timeout:.0f}s)')

        assert code == 0
        assert stop_s < TEST_JOB_COMPLETION_WAIT_S + SupervisorConfig(settings_path='a.B').stop_margin_s
        assert stop_s < stop_timeout / 2  # well inside the timeout: systemd's SIGKILL never comes into play
        assert not _session_alive(pid), 'KillMode=mixed would have had to SIGKILL leftovers'
        outcomes = {job_id: deployed.job_settled(job_id) for job_id in [*short, long]}
        assert outcomes == {**dict.fromkeys(short, 'finished'), long: 'queued'}, deployed.log()[-3000:]
        assert not pid_file.exists()
        senders = {sender for sender, _ in notify.messages}
        assert senders == {pid}, f'NotifyAccess=main would drop messages from {senders - {pid}}'
    finally:
        notify.close()
