"""The supervisor's one frozen configuration, validated once, with units in every name."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from arq.constants import lease_renewals

LogFormat = Literal['text', 'json']

#: the children's lease under arq-supervise: the parent renews it every second while a child lives (leases.py), so it
#: need not outlive a child's stall, only a few missed renewals; a host lost whole gives its jobs back this soon
SUPERVISED_LEASE_S = 6.0
#: how often the parent renews its children's leases (leases.py)
RENEW_INTERVAL_S = 1.0
#: a lease spans at least as many of the parent's renewals as a worker makes per lease
MIN_LEASE_S = lease_renewals * RENEW_INTERVAL_S


class ConfigError(ValueError):
    """An invalid combination of options: reported as a usage error."""


def available_cpus() -> int:
    """CPUs this process may use: affinity mask, capped by a cgroup v2 `cpu.max` quota, at least 1."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        count = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        count = min(count, max(1, int(quota + 0.999)))
    return max(1, count)


def own_cgroup_dir(proc_cgroup: Path = Path('/proc/self/cgroup'), root: Path = Path('/sys/fs/cgroup')) -> Path:
    """
    This process's cgroup v2 directory: the root inside a container, but under systemd the unit's own
    (`system.slice/arq-supervise.service`), where `CPUQuota=` and `MemoryMax=` apply.
    """
    try:
        for line in proc_cgroup.read_text().splitlines():
            if line.startswith('0::'):
                candidate = root / line[3:].strip().lstrip('/')
                if candidate.is_dir():
                    return candidate
    except OSError:
        pass
    return root


def _cgroup_cpu_quota(path: Path | None = None) -> float | None:
    path = path or own_cgroup_dir() / 'cpu.max'
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == 'max':
        return None
    try:
        return int(quota) / int(period)
    except (ValueError, ZeroDivisionError):
        return None


@dataclass(frozen=True)
class SupervisorConfig:
    """Everything the arbiter needs besides the worker settings class, which stays arq's.

    Durations are seconds (`_s`), memory is MiB (`_mib`). Build it with keyword arguments; `__post_init__` validates.
    """

    settings_path: str
    procs: int = field(default_factory=available_cpus)
    burst: bool = False
    fail_on_job_failure: bool = False
    #: children stop a job whose lease they could not renew for most of it (arq.leases): never two runs at once
    stop_unleased_jobs: bool = False
    #: the longest one Redis command of the parent may hold its loop (parent_redis); raise it for a distant Redis
    parent_redis_timeout_s: float = 0.05
    #: overrides the settings' job_completion_wait when given
    job_completion_wait_s: float | None = None
    max_jobs_per_child: int | None = None
    max_memory_per_child_mib: float | None = None
    #: max-jobs-per-child is raised by up to this fraction, per child, so children do not all recycle together
    recycle_jitter: float = 0.1
    heartbeat_interval_s: float = 1.0
    heartbeat_timeout_s: float = 10.0
    boot_timeout_s: float = 60.0
    #: the lease the workers keep on their in-progress keys (the parent renews it too); None is SUPERVISED_LEASE_S
    lease_s: float | None = None
    #: job_completion_wait for children drained to be replaced (recycle, reload, scale-down), if larger
    replace_wait_s: float = 30.0
    #: time given to a draining child beyond job_completion_wait (cancel, re-queue, on_shutdown, close)
    stop_margin_s: float = 5.0
    #: after a second SIGTERM/SIGINT, children get this long to cancel and re-queue before SIGKILL
    quick_stop_s: float = 3.0
    #: time between the stack dump of a hung child and its SIGKILL
    dump_wait_s: float = 0.5
    tick_s: float = 0.5
    health_interval_s: float = 5.0
    status_interval_s: float = 1.0
    max_boot_failures: int = 3
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    stable_s: float = 30.0
    status_file: Path | None = None
    pid_file: Path | None = None
    metrics_port: int | None = None
    #: the address /metrics listens on; loopback unless a scraper elsewhere needs it
    metrics_host: str = '127.0.0.1'
    watch_path: Path | None = None
    log_format: LogFormat = 'text'
    verbose: bool = False

    def __post_init__(self) -> None:
        if not self.settings_path:
            raise ConfigError('a settings path (module.WorkerSettings) is required')
        if self.procs < 1:
            raise ConfigError(f'--procs must be at least 1, not {self.procs}')
        for name in ('heartbeat_interval_s', 'heartbeat_timeout_s', 'boot_timeout_s', 'tick_s', 'health_interval_s',
                     'status_interval_s', 'backoff_base_s', 'backoff_max_s'):  # fmt: skip
            if getattr(self, name) <= 0:
                raise ConfigError(f'{name} must be positive, not {getattr(self, name)}')
        if self.job_completion_wait_s is not None and self.job_completion_wait_s < 0:
            raise ConfigError('--job-completion-wait must not be negative')
        if self.max_jobs_per_child is not None and self.max_jobs_per_child < 1:
            raise ConfigError('--max-jobs-per-child must be at least 1')
        if self.max_memory_per_child_mib is not None and self.max_memory_per_child_mib <= 0:
            raise ConfigError('--max-memory-per-child must be positive')
        if self.heartbeat_timeout_s <= 2 * self.heartbeat_interval_s:
            raise ConfigError('--heartbeat-timeout must exceed two heartbeat intervals')
        if self.max_boot_failures < 1:
            raise ConfigError('max_boot_failures must be at least 1')
        if not 0 < self.parent_redis_timeout_s <= 5:
            raise ConfigError(
                f'--parent-redis-timeout must be above 0 and at most 5 s, not {self.parent_redis_timeout_s}'
            )
        if self.effective_lease_s < MIN_LEASE_S:
            # the parent renews its children's leases every second: a shorter lease could lapse between two renewals
            raise ConfigError(f'the lease must be at least {MIN_LEASE_S:g}s, not {self.effective_lease_s:g}s')

    @property
    def effective_lease_s(self) -> float:
        return self.lease_s if self.lease_s is not None else SUPERVISED_LEASE_S
