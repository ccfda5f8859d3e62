"""The scenarios: each repeats its measured runs (alternating ours/theirs) and records the figures under a config."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from tests.bench.bench import Bench
from tests.bench.impls import Impl, claim_script_sha
from tests.bench.procs import log
from tests.bench.runs_clients import enqueue, latency, waiters_or_reason
from tests.bench.runs_drain import DrainSpec, drain
from tests.bench.runs_idle import herd, idle

HERD_POLL_DELAYS = (
    5.0,
    0.5,
)  # 5: no timed poll during an enqueue (a clean count); 0.5: the default, idle rate subtracted


def scenario_enqueue(bench: Bench) -> None:
    n = bench.sizes.enqueue_n
    sequential, bulk = f'sequential enqueue_job, {n:,} jobs', f'one enqueue_jobs call (ours), {n:,} jobs'
    for rep, impl in bench.alternating():
        _measure(bench, 'enqueue', sequential, impl, rep, partial(enqueue, bench, impl, n, 1), 'jobs_s', 'jobs/s')
        if impl.key == 'ours':  # the bulk call right after its sequential figure, for the ratio
            _measure(bench, 'enqueue', bulk, impl, rep, partial(enqueue, bench, impl, n, 1, True), 'jobs_s', 'jobs/s')
    bench.not_available[('enqueue', bulk, 'arq')] = 'arq 0.26.3 has no bulk enqueue'
    gathered = f'gather, batches of 100, {n:,} jobs'
    for rep, impl in bench.alternating():
        _measure(bench, 'enqueue', gathered, impl, rep, partial(enqueue, bench, impl, n, 100), 'jobs_s', 'jobs/s')


def drain_configs(bench: Bench) -> list[tuple[str, DrainSpec]]:
    n, n_default = bench.sizes.drain_n, bench.sizes.drain_default_n
    configs = []
    for level in ('WARNING', 'INFO'):
        for max_jobs in (10, 100):
            spec = DrainSpec(n=n, max_jobs=max_jobs, log_level=None if level == 'INFO' else level)
            configs.append((f'poll_delay 0.01, max_jobs {max_jobs}, logging {level}, {n:,} jobs', spec))
    default = DrainSpec(n=n_default, poll_delay=0.5, max_jobs=10)
    configs.append((f'default (poll_delay 0.5, max_jobs 10), logging INFO, {n_default:,} jobs', default))
    return configs


def scenario_drain(bench: Bench) -> None:
    for config, spec in drain_configs(bench):
        for rep, impl in bench.alternating():
            _measure(bench, 'drain', config, impl, rep, partial(drain, bench, impl, spec), 'jobs_s', 'jobs/s')


def scenario_io(bench: Bench) -> None:
    n = bench.sizes.io_n
    for max_jobs in (100, 500):
        config = f'asyncio.sleep(0.05), max_jobs {max_jobs}, poll_delay 0.5, {n:,} jobs'
        spec = DrainSpec(n=n, function='sleep50', poll_delay=0.5, max_jobs=max_jobs)
        for rep, impl in bench.alternating():
            _measure(bench, 'io', config, impl, rep, partial(drain, bench, impl, spec), 'jobs_s', 'jobs/s')


def scenario_scaling(bench: Bench) -> None:
    """`arq-supervise --procs P` (ours) against P arq processes; at P = 1 our bare worker too, run by run."""
    n = bench.sizes.scaling_n
    for procs in bench.sizes.scaling_procs:
        for rep, impl in bench.alternating():
            spec = DrainSpec(n=n, procs=procs, supervised=impl.key == 'ours')
            run = partial(drain, bench, impl, spec)
            _measure(bench, 'scaling', f'P = {procs}', impl, rep, run, 'jobs_s', 'jobs/s')
            if impl.key == 'ours' and procs == 1:
                run = partial(drain, bench, impl, DrainSpec(n=n))
                _measure(bench, 'scaling', 'P = 1, bare worker', impl, rep, run, 'jobs_s', 'jobs/s')
    bench.not_available[('scaling', 'P = 1, bare worker', 'arq')] = 'its P = 1 column is a bare worker already'


def scenario_latency(bench: Bench) -> None:
    config = f'{bench.sizes.latency_n} enqueues 20 ms apart, idle worker, default settings'
    for rep, impl in bench.alternating():
        _measure(bench, 'latency', config, impl, rep, partial(latency, bench, impl), 'pickup_p50_ms', 'ms pickup p50')


def scenario_idle(bench: Bench) -> None:
    sha = claim_script_sha(bench.ours)
    config = f'one worker, default settings, allow_abort_jobs=True, {bench.sizes.idle_s:g} s'
    for rep, impl in bench.alternating():
        _measure(bench, 'idle', config, impl, rep, partial(idle, bench, impl, sha), 'idle_cmds_per_s', 'commands/s')
    same = bench.ref_same_redis
    if same is not None:
        config_same = f'arq 0.26.3 on our redis-py: {config}'
        for rep in range(bench.sizes.repeat):
            _measure(bench, 'idle', config_same, same, rep, partial(idle, bench, same, sha), 'idle_rss_mib', 'MiB')


def scenario_herd(bench: Bench) -> None:
    sha = claim_script_sha(bench.ours)
    procs = bench.sizes.herd_procs
    for poll_delay in HERD_POLL_DELAYS:
        config = f'{procs} idle workers, poll_delay {poll_delay:g}, {bench.sizes.herd_n} single enqueues'
        for rep, impl in bench.alternating():
            run = partial(herd, bench, impl, sha, poll_delay)
            _measure(bench, 'herd', config, impl, rep, run, 'claims_per_enqueue', 'claims/enqueue')


def scenario_waiters(bench: Bench) -> None:
    config = f'{bench.sizes.waiters_n:,} concurrent job.result() in one client, then one worker drains'
    for rep, impl in bench.alternating():
        if (config_key := ('waiters', config, impl.key)) in bench.not_available:
            continue  # it could not, once: no need to wait out its timeout again
        result = waiters_or_reason(bench, impl)
        if isinstance(result, str):
            bench.not_available[config_key] = result
            log(f'waiters {impl.label} #{rep + 1}: n/a: {result}')
            continue
        bench.record('waiters', config, impl, result)
        conns, tail = result['connections_peak'], result['tail_s']
        log(f'waiters {impl.label} #{rep + 1}: {conns:.0f} connections, tail {tail:.2f} s')


def _measure(
    bench: Bench,
    section: str,
    config: str,
    impl: Impl,
    rep: int,
    run: Callable[[], dict[str, float]],
    headline: str,
    unit: str,
) -> None:
    m = bench.attempt(run)
    if m is None:
        return
    bench.record(section, config, impl, m)
    log(f'{section} {config} {impl.label} #{rep + 1}: {m[headline]:,.2f} {unit}')


SCENARIOS: dict[str, Callable[[Bench], None]] = {
    'enqueue': scenario_enqueue,
    'drain': scenario_drain,
    'io': scenario_io,
    'latency': scenario_latency,
    'idle': scenario_idle,
    'herd': scenario_herd,
    'waiters': scenario_waiters,
    'scaling': scenario_scaling,  # last: the longest, and it needs the supervisor
}
#: `--scenarios memory` runs the scenarios that read memory
MEMORY_SCENARIOS = ('drain', 'idle', 'herd', 'scaling')
