"""deploy/kubernetes: the manifests are valid Kubernetes objects, their numbers agree with the supervisor's, and the
Deployment's own command, probes and grace period behave as a kubelet would drive them."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from arq_supervise.config import SupervisorConfig
from tests.deploy.harness import (
    DEPLOYED_SETTINGS,
    KUBERNETES,
    DeployedSupervisor,
    arq_supervise_command,
    base_environment,
    option_value,
    rebase,
    run_quiet,
    settings_argument,
    with_option,
)
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_until

#: the oldest Kubernetes the manifests are meant for (PodDisruptionBudget's unhealthyPodEvictionPolicy: beta, on)
OLDEST_KUBERNETES = '1.27.0'
TEST_JOB_COMPLETION_WAIT_S = 2.0
PROBES = ('startupProbe', 'readinessProbe', 'livenessProbe')


def load_manifests() -> dict[str, list[dict[str, Any]]]:
    import yaml  # PyYAML comes with kubernetes-validate: use it through that fixture

    return {
        path.name: [d for d in yaml.safe_load_all(path.read_text()) if d] for path in sorted(KUBERNETES.glob('*.yaml'))
    }


def the(kind: str) -> dict[str, Any]:
    [doc] = [d for docs in load_manifests().values() for d in docs if d['kind'] == kind]
    return doc


def worker_container(deployment: dict[str, Any]) -> dict[str, Any]:
    [container] = deployment['spec']['template']['spec']['containers']
    return dict(container)


def mebibytes(quantity: str) -> float:
    match = re.fullmatch(r'(\d+(?:\.\d+)?)([A-Za-z]*)', quantity)
    assert match, quantity
    number, suffix = match.groups()
    factor = {'Ki': 2**-10, 'Mi': 1, 'Gi': 2**10, 'K': 1e3 / 2**20, 'M': 1e6 / 2**20, 'G': 1e9 / 2**20, '': 2**-20}
    return float(number) * factor[suffix]


def test_manifests_validate_against_the_kubernetes_schemas(kubernetes_validate: ModuleType) -> None:
    manifests = load_manifests()
    assert {'deployment.yaml', 'poddisruptionbudget.yaml', 'secret.example.yaml'} <= set(manifests)
    versions = (OLDEST_KUBERNETES, kubernetes_validate.latest_version())
    for name, docs in manifests.items():
        for doc in docs:
            for version in versions:
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                except kubernetes_validate.ValidationError as e:
                    pytest.fail(f'{name} {doc["kind"]} is not valid for Kubernetes {version}: {e.message}')

    # strict validation is not vacuous: a misspelt field is refused
    typo = the('Deployment')
    typo['spec']['template']['spec']['terminationGracePeriodSecond'] = 90
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, versions[-1], strict=True)


def test_deployment_agrees_with_the_supervisor(kubernetes_validate: ModuleType) -> None:
    deployment = the('Deployment')
    pod = deployment['spec']['template']['spec']
    container = worker_container(deployment)
    argv = [*container['command'], *container['args']]
    defaults = SupervisorConfig(settings_path='app.WorkerSettings')

    # exec form, no shell in between: the supervisor is PID 1 and the kubelet's SIGTERM reaches it
    assert container['command'] == ['arq-supervise']
    assert not pod.get('shareProcessNamespace', False)
    # the kubelet's SIGKILL must come after the supervisor's own deadline (the wait plus its stop margin)
    job_completion_wait = float(option_value(argv, '--job-completion-wait'))
    assert pod['terminationGracePeriodSeconds'] >= job_completion_wait + defaults.stop_margin_s + 10

    # memory: every child at its recycling limit, the supervisor, and a fresh child booting while the big one
    # drains (a rolling replacement) must fit under the limit, with room for growth during that drain
    procs = int(option_value(argv, '--procs'))
    per_child = float(option_value(argv, '--max-memory-per-child'))
    limit = mebibytes(container['resources']['limits']['memory'])
    assert procs * per_child + 64 + 64 + 64 + 2 * 32 <= limit, (procs, per_child, limit)  # + two probe processes
    assert per_child < limit / procs
    assert procs == int(container['resources']['requests']['cpu'])

    # the probes read the status file the supervisor writes, on a writable volume, without touching Redis
    status_file = option_value(argv, '--status-file')
    mounts = [m['mountPath'] for m in container['volumeMounts']]
    assert any(status_file.startswith(m.rstrip('/') + '/') for m in mounts)
    for probe in PROBES:
        command = container[probe]['exec']['command']
        assert command[:2] == ['arq-supervise', '--check'], probe
        assert option_value(command, '--status-file') == status_file, probe
    # liveness asks only about the supervisor's own loop: a child in its restart backoff, or children waiting out a
    # Redis outage, never get the pod restarted
    assert '--live' in container['livenessProbe']['exec']['command']
    assert '--live' not in container['readinessProbe']['exec']['command']
    startup = container['startupProbe']
    assert startup['periodSeconds'] * startup['failureThreshold'] > defaults.boot_timeout_s

    # the Redis URL comes from the Secret the example defines
    [redis_url] = [e for e in container['env'] if e['name'] == 'REDIS_URL']
    ref = redis_url['valueFrom']['secretKeyRef']
    secret = the('Secret')
    assert ref['name'] == secret['metadata']['name'] and ref['key'] in secret['stringData']

    # non-root, read-only root filesystem; the PDB covers exactly these pods
    assert pod['securityContext']['runAsNonRoot'] is True and pod['securityContext']['runAsUser'] != 0
    assert container['securityContext']['readOnlyRootFilesystem'] is True
    assert container['securityContext']['allowPrivilegeEscalation'] is False
    budget = the('PodDisruptionBudget')
    assert (
        budget['spec']['selector']['matchLabels'].items()
        <= deployment['spec']['template']['metadata']['labels'].items()
    )
    assert deployment['spec']['selector'] == budget['spec']['selector']


@dataclass
class Pod:
    """The Deployment's container as a kubelet would run it here: its command, its environment, its probes."""

    argv: list[str]
    env: dict[str, str]
    probes: dict[str, list[str]]
    grace_s: float
    status_file: Path
    cwd: Path

    def probe(self, kind: str) -> subprocess.CompletedProcess[str]:
        return run_quiet(self.probes[kind], cwd=self.cwd, env=self.env)


def pod_from_deployment(
    tmp_path: Path, settings: str, redis_url: str, job_completion_wait_s: float, extra_args: tuple[str, ...] = ()
) -> Pod:
    deployment = the('Deployment')
    container = worker_container(deployment)
    # each volume becomes a directory of the test's; the container's WORKDIR (where settings are imported from)
    # becomes tmp_path, which holds the test's settings module
    volumes = {m['mountPath']: tmp_path / 'volumes' / m['name'] for m in container['volumeMounts']}
    for directory in volumes.values():
        directory.mkdir(parents=True, exist_ok=True)

    def localise(command: list[str]) -> list[str]:
        assert command[0] == 'arq-supervise' and settings_argument(command)
        return [*arq_supervise_command(), *rebase(command, volumes)[1:-1], settings]

    def localise_probe(command: list[str]) -> list[str]:
        # a probe with --status-file names no settings: it imports no application code
        assert command[0] == 'arq-supervise' and '--status-file' in command
        return [*arq_supervise_command(), *rebase(command, volumes)[1:]]

    argv = localise([*container['command'], *container['args']])
    unit_wait = float(option_value(argv, '--job-completion-wait'))
    argv = with_option(argv, '--job-completion-wait', f'{job_completion_wait_s:g}')
    argv[-1:-1] = extra_args
    secret = the('Secret')
    secrets = {(secret['metadata']['name'], key): redis_url for key in secret['stringData']}
    env = base_environment()
    for variable in container['env']:
        if 'value' in variable:
            env[variable['name']] = variable['value']
        else:
            ref = variable['valueFrom']['secretKeyRef']
            env[variable['name']] = secrets[(ref['name'], ref['key'])]
    grace = deployment['spec']['template']['spec']['terminationGracePeriodSeconds']
    return Pod(
        argv=argv,
        env=env,
        probes={kind: localise_probe(container[kind]['exec']['command']) for kind in PROBES},
        # scaled with the wait: the headroom the manifest leaves beyond job-completion-wait stays the same
        grace_s=grace - unit_wait + job_completion_wait_s,
        status_file=Path(option_value(argv, '--status-file')),
        cwd=tmp_path,
    )


def start_pod(deployed: DeployedSupervisor, pod: Pod) -> None:
    deployed.launch(pod.argv, env=pod.env, cwd=pod.cwd)
    wait_until(lambda: pod.probe('startupProbe').returncode == 0, timeout=20, message=f'startup\n{deployed.log()}')
    assert pod.probe('readinessProbe').returncode == 0
    assert pod.probe('livenessProbe').returncode == 0


def kubelet_stop(deployed: DeployedSupervisor, grace_s: float) -> tuple[int, bool, float]:
    """SIGTERM to PID 1; SIGKILL to every process of the container once the grace period is over."""
    started = time.monotonic()
    os.kill(deployed.pid, signal.SIGTERM)
    try:
        return deployed.wait(timeout=grace_s), False, time.monotonic() - started
    except subprocess.TimeoutExpired:
        os.killpg(deployed.pid, signal.SIGKILL)
        return deployed.wait(timeout=10), True, time.monotonic() - started


@pytest.mark.slow
def test_pod_termination_finishes_or_requeues_every_job(
    deployed: DeployedSupervisor, redis_url: str, tmp_path: Path, kubernetes_validate: ModuleType
) -> None:
    settings = deployed.write_settings(DEPLOYED_SETTINGS)
    pod = pod_from_deployment(tmp_path, settings, redis_url, TEST_JOB_COMPLETION_WAIT_S)
    start_pod(deployed, pod)
    procs = int(option_value(pod.argv, '--procs'))
    assert len(deployed.booted()) == procs

    # in flight at SIGTERM: jobs that finish within the wait, one that gets cancelled (re-queued), and one that
    # ignores cancellation, so the supervisor has to SIGKILL its child at wait + margin and release the job
    short = [deployed.enqueue('sleeper', f'short{i}', 1.0) for i in range(2)]
    long = deployed.enqueue('sleeper', 'long', 60)
    stubborn = deployed.enqueue('stubborn', 'stubborn')
    wait_until(lambda: len(deployed.events('started')) == 4, message=f'jobs started\n{deployed.log()[-2000:]}')

    code, killed, stop_s = kubelet_stop(deployed, pod.grace_s)
    print(f'pod stopped in {stop_s:.2f}s, scaled terminationGracePeriodSeconds {pod.grace_s:.0f}s')
    assert not killed, f'the kubelet had to SIGKILL after {pod.grace_s}s\n{deployed.log()[-3000:]}'
    assert code == 0
    assert stop_s < TEST_JOB_COMPLETION_WAIT_S + SupervisorConfig(settings_path='a.B').stop_margin_s + 3
    outcomes = {job_id: deployed.job_settled(job_id) for job_id in [*short, long, stubborn]}
    expected = {**dict.fromkeys(short, 'finished'), long: 'queued', stubborn: 'queued'}
    assert outcomes == expected, deployed.log()[-3000:]
    document = json.loads(pod.status_file.read_text())
    assert document['state'] == 'stopped'
    assert pod.probe('livenessProbe').returncode == 1  # a stopped supervisor is not alive


@pytest.mark.slow
def test_sigkill_from_a_too_short_grace_period_still_loses_no_job(
    deployed: DeployedSupervisor, redis_url: str, tmp_path: Path, kubernetes_validate: ModuleType
) -> None:
    """Misconfigured: the grace period ends during the drain. The kubelet's SIGKILL leaves the running job in the
    queue, held only by its in-progress lease; when the lease lapses, another pod runs it."""
    settings = deployed.write_settings(DEPLOYED_SETTINGS)
    # the shortest lease the supervisor allows (the test's only change besides the wait: it shortens the test)
    shortest = ('--heartbeat-timeout', '3')
    lease_s = SupervisorConfig(settings_path='a.B', heartbeat_timeout_s=3).effective_lease_s
    pod = pod_from_deployment(tmp_path, settings, redis_url, job_completion_wait_s=30, extra_args=shortest)
    start_pod(deployed, pod)
    job_id = deployed.enqueue('slow_first_try', 'cut', 60)
    deployed.wait_started('cut')

    code, killed, _ = kubelet_stop(deployed, grace_s=0.5)
    assert killed and code == -signal.SIGKILL
    lease_ms = deployed.redis.pttl(f'arq:in-progress:{job_id}')
    assert 0 < lease_ms <= lease_s * 1000
    assert deployed.redis.zscore(deployed.queue, job_id) is not None
    assert deployed.result(job_id) is None

    # the next pod (a new replica, or this one restarted) runs it once the lease has lapsed
    deployed.log_file.close()
    replacement = pod_from_deployment(tmp_path, settings, redis_url, TEST_JOB_COMPLETION_WAIT_S, extra_args=shortest)
    start_pod(deployed, replacement)
    started = deployed.wait_started('cut', times=2, timeout=lease_ms / 1000 + 10)
    assert started[1][2] == 2  # its second try
    wait_until(lambda: deployed.job_settled(job_id) == 'finished', timeout=10, message='the job finished')
    code, killed, _ = kubelet_stop(deployed, replacement.grace_s)
    assert (code, killed) == (0, False)


@pytest.mark.slow
def test_liveness_probe_stays_green_through_a_redis_outage(
    tmp_path: Path, queue_name: str, kubernetes_validate: ModuleType
) -> None:
    own = RedisServer(directory=tmp_path / 'own-redis')
    own.start()
    deployed = DeployedSupervisor(tmp_path, queue_name, own.port, 0)
    try:
        settings = deployed.write_settings(DEPLOYED_SETTINGS)
        pod = pod_from_deployment(tmp_path, settings, own.url + '/0', TEST_JOB_COMPLETION_WAIT_S)
        start_pod(deployed, pod)
        pids = deployed.children()

        own.stop()

        def outage_seen() -> float | None:
            document = json.loads(pod.status_file.read_text())
            children = document['children']
            return document['updated_at'] if children and all(c['redis_error'] for c in children) else None

        seen_at = wait_until(outage_seen, timeout=15, message=f'children report the outage\n{deployed.log()[-2000:]}')

        # probe after probe, while the status file goes on being rewritten well past the outage: always alive
        def probes_pass_for_a_while() -> bool:
            for kind in ('livenessProbe', 'readinessProbe'):
                done = pod.probe(kind)
                assert done.returncode == 0, f'{kind} failed during a Redis outage: {done.stderr}'
            return bool(json.loads(pod.status_file.read_text())['updated_at'] > seen_at + 3)

        wait_until(probes_pass_for_a_while, timeout=20, message='probes during the outage')
        assert deployed.children() == pids  # nobody restarted

        own.start()  # recovery itself is tested in tests/integration; here: the pod still stops cleanly
        code, killed, _ = kubelet_stop(deployed, pod.grace_s)
        assert (code, killed) == (0, False)
    finally:
        leftovers = deployed.cleanup()
        own.stop()
    assert not leftovers, f'processes outlived the test: {leftovers}'


def test_autoscaler_scales_the_deployment_on_a_metric_the_supervisor_exports(kubernetes_validate: ModuleType) -> None:
    from arq_supervise.metrics import FleetView, JobStats, render

    hpa, deployment = the('HorizontalPodAutoscaler'), the('Deployment')
    assert hpa['apiVersion'] == 'autoscaling/v2'
    target = hpa['spec']['scaleTargetRef']
    assert (target['kind'], target['name']) == ('Deployment', deployment['metadata']['name'])
    assert hpa['spec']['minReplicas'] >= 2  # the PodDisruptionBudget keeps one pod available
    [metric] = hpa['spec']['metrics']
    name = metric['external']['metric']['name']
    exported = render(lambda: FleetView(JobStats(), 42, {}, {}, {})).decode()
    assert f'\n{name} 42.0\n' in exported, exported
