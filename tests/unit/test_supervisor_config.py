from __future__ import annotations

from pathlib import Path

import pytest

from arq_supervise.config import ConfigError, SupervisorConfig, _cgroup_cpu_quota, available_cpus


def test_defaults_are_valid_and_the_lease_is_short_whatever_the_heartbeat_timeout() -> None:
    """The parent renews its children's leases, so a lost host's jobs come back within 10 s at defaults."""
    config = SupervisorConfig(settings_path='app.WorkerSettings', procs=2)
    assert config.heartbeat_timeout_s == 10.0
    assert config.effective_lease_s == 6.0
    assert SupervisorConfig(settings_path='a.B', procs=1, heartbeat_timeout_s=60).effective_lease_s == 6.0
    assert SupervisorConfig(settings_path='a.B', procs=1, lease_s=4).effective_lease_s == 4.0


def test_a_lease_shorter_than_three_renewals_is_rejected() -> None:
    with pytest.raises(ConfigError, match='lease'):
        SupervisorConfig(settings_path='a.B', procs=1, lease_s=2)


@pytest.mark.parametrize(
    'kwargs',
    [
        {'procs': 0},
        {'heartbeat_timeout_s': 1.5},
        {'tick_s': 0},
        {'max_jobs_per_child': 0},
        {'max_memory_per_child_mib': -1},
        {'job_completion_wait_s': -1},
        {'settings_path': ''},
    ],
)
def test_invalid_values_are_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        SupervisorConfig(**{'settings_path': 'a.B', 'procs': 1, **kwargs})  # type: ignore[arg-type]


def test_cpu_count_respects_cgroup_quota(tmp_path: Path) -> None:
    cpu_max = tmp_path / 'cpu.max'
    cpu_max.write_text('150000 100000\n')
    assert _cgroup_cpu_quota(cpu_max) == 1.5
    cpu_max.write_text('max 100000\n')
    assert _cgroup_cpu_quota(cpu_max) is None
    assert _cgroup_cpu_quota(tmp_path / 'missing') is None
    assert available_cpus() >= 1


def test_own_cgroup_dir_follows_proc_self_cgroup(tmp_path: Path) -> None:
    from arq_supervise.config import own_cgroup_dir

    root = tmp_path / 'cgroup'
    unit = root / 'system.slice' / 'arq-supervise.service'
    unit.mkdir(parents=True)
    proc = tmp_path / 'proc-cgroup'
    proc.write_text('0::/system.slice/arq-supervise.service\n')
    assert own_cgroup_dir(proc, root) == unit
    proc.write_text('0::/\n')
    assert own_cgroup_dir(proc, root) == root
    proc.write_text('0::/gone.slice\n')
    assert own_cgroup_dir(proc, root) == root, 'a directory we cannot see falls back to the root'
