"""The markdown tables of a run: one per scenario, commands by name, memory."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from tests.bench.bench import Bench


@dataclass(frozen=True)
class Row:
    metric: str
    unit: str
    higher_is_better: bool
    digits: int | None = None  # None: automatic


_DRAIN = [
    ('jobs_s', Row('jobs/s', '', True, 0)),
    ('worker_cpu_ms', Row('worker CPU per job (getrusage)', 'ms', False)),
    ('proc_cpu_ms', Row('CPU per job, every process of the side, from /proc', 'ms', False)),
    ('worker_sys_ms', Row('… of which in the kernel', 'ms', False)),
    ('worker_preempted', Row('worker involuntary context switches per job', '', False)),
    ('redis_cpu_ms', Row('Redis CPU per job', 'ms', False)),
    ('commands', Row('Redis commands per job', '', False)),
    ('round_trips', Row('round trips per job', '', False)),
    ('end_rss_mib', Row('worker RSS at the end', 'MiB', False, 1)),
    ('foreign_cores', Row('other load on the machine during the run', 'cores', False)),
]
ROWS: dict[str, list[tuple[str, Row]]] = {
    'enqueue': [
        ('jobs_s', Row('enqueue jobs/s', '', True, 0)),
        ('client_cpu_ms', Row('client CPU per job', 'ms', False)),
        ('redis_cpu_ms', Row('Redis CPU per job', 'ms', False)),
        ('commands', Row('Redis commands per job', '', False)),
        ('round_trips', Row('round trips per job', '', False)),
        ('foreign_cores', Row('other load on the machine during the run', 'cores', False)),
    ],
    'drain': _DRAIN,
    'io': [row for row in _DRAIN if row[0] in ('jobs_s', 'worker_cpu_ms', 'commands', 'round_trips', 'foreign_cores')],
    'latency': [
        ('pickup_p50_ms', Row('enqueue→start p50', 'ms', False)),
        ('pickup_p95_ms', Row('enqueue→start p95', 'ms', False)),
        ('pickup_p99_ms', Row('enqueue→start p99', 'ms', False)),
        ('rtt_p50_ms', Row('enqueue→job.result() p50', 'ms', False)),
        ('rtt_p99_ms', Row('enqueue→job.result() p99', 'ms', False)),
    ],
    'idle': [
        ('idle_cmds_per_s', Row('commands per second sent (top level, MONITOR)', '', False)),
        ('idle_calls_per_s', Row('commands per second run (commandstats: with those inside scripts)', '', False)),
        ('idle_rss_mib', Row('RSS', 'MiB', False, 1)),
        ('idle_uss_mib', Row('USS', 'MiB', False, 1)),
    ],
    'herd': [
        ('claims_per_enqueue', Row('claim calls per enqueue, less the idle rate', '', False)),
        ('claims_per_enqueue_gross', Row('claim calls per enqueue, as counted', '', False)),
        ('idle_claims_per_s', Row('idle claim calls per second (all workers)', '', False)),
        ('idle_cmds_per_s', Row('idle commands per second sent (all workers, MONITOR)', '', False)),
        ('child_uss_mib', Row('USS per worker process, idle (median)', 'MiB', False, 1)),
        ('parent_uss_mib', Row('USS of the supervisor parent, idle', 'MiB', False, 1)),
    ],
    'waiters': [
        ('connections_peak', Row('Redis connections of the client, peak', '', False, 0)),
        ('connections_waiting', Row('… while every waiter waits, before the worker starts', '', False, 0)),
        ('tail_s', Row('last job’s end → last waiter returned', 's', False)),
        ('first_return_s', Row('worker released → first waiter returned', 's', False)),
        ('client_cpu_ms', Row('client CPU per waiter, from the release', 'ms', False)),
    ],
    'scaling': [
        ('jobs_s', Row('total jobs/s', '', True, 0)),
        ('proc_cpu_ms', Row('CPU per job: parent + children (ours), the processes (arq), from /proc', 'ms', False)),
        ('worker_cpu_ms', Row('workers CPU per job (getrusage, all children)', 'ms', False)),
        ('parent_cpu_ms', Row('supervisor parent CPU per job', 'ms', False)),
        ('redis_cpu_ms', Row('Redis CPU per job', 'ms', False)),
        ('commands', Row('Redis commands per job', '', False)),
        ('round_trips', Row('round trips per job', '', False)),
        ('idle_uss_mib', Row('USS per worker process, idle', 'MiB', False, 1)),
        ('end_uss_mib', Row('USS per worker process, after the drain', 'MiB', False, 1)),
        ('foreign_cores', Row('other load on the machine during the run', 'cores', False)),
    ],
}
TITLES = {
    'enqueue': 'enqueue (one client process)',
    'drain': 'drain: pre-enqueued no-op jobs, one worker process, burst',
    'scaling': 'scaling: ours = `arq-supervise --procs P --burst` (and our bare worker at P = 1), arq 0.26.3 = P '
    'separate worker processes; poll_delay 0.01, max_jobs 10 per process, logging INFO',
    'herd': 'herd: idle workers on one queue (ours: `arq-supervise --procs 8`; arq: 8 processes), single enqueues',
    'idle': 'idle worker: Redis commands and memory',
    'waiters': 'result waiters: concurrent `await job.result()` in one client process',
    'io': 'IO-bound: one worker process, burst',
    'latency': 'latency',
}
SECTION_ORDER = ('drain', 'scaling', 'herd', 'idle', 'waiters', 'enqueue', 'io', 'latency')


def fmt(value: float, digits: int | None = None) -> str:
    if value != value:  # nan
        return '–'
    if digits is None:
        a = abs(value)
        digits = 0 if a >= 100 else 1 if a >= 10 else 2 if a >= 1 else 3 if a >= 0.01 else 4
    return f'{value:,.{digits}f}'


def spread(values: list[float], digits: int | None) -> str:
    med = statistics.median(values)
    if len(values) == 1:
        return fmt(med, digits)
    return f'{fmt(med, digits)} ({fmt(min(values), digits)}–{fmt(max(values), digits)})'


def ratio(ours: list[float], theirs: list[float]) -> float:
    t = statistics.median(theirs)
    return statistics.median(ours) / t if t else float('nan')


def fmt_ratio(r: float) -> str:
    if r != r:
        return '–'
    return f'{r:.1f}×' if r >= 10 else f'{r:.2f}×' if r >= 0.1 else f'{r:.3f}×'


def values(bench: Bench, section: str, config_prefix: str, impl: str, key: str) -> list[float]:
    """A metric's figures over the runs of the first config of the section that starts with config_prefix."""
    for (sec, config), by_impl in bench.results.items():
        if sec == section and config.startswith(config_prefix):
            return [m[key] for m in by_impl.get(impl, []) if key in m and m[key] == m[key]]
    return []


def render_tables(bench: Bench) -> str:
    out: list[str] = []
    sections = [s for s in SECTION_ORDER if any(k[0] == s for k in bench.results)]
    for number, section in enumerate(sections, 1):
        out += [f'### {number}. {TITLES[section]}\n', *section_table(bench, section), '']
    out.append(render_commands(bench))
    out.append(render_memory(bench))
    notes = [
        f'- {section}, {config}, {impl}: n/a: {why}' for (section, config, impl), why in bench.not_available.items()
    ]
    if notes:
        out.append('### Not measured\n\n' + '\n'.join(notes) + '\n')
    return '\n'.join(out)


def section_table(bench: Bench, section: str) -> list[str]:
    ours, theirs = bench.impls[0], bench.impls[1]
    out = [f'| configuration | metric | {ours.label} | {theirs.label} | ours/arq |', '|---|---|---:|---:|---:|']
    for (sec, config), by_impl in bench.results.items():
        if sec != section:
            continue
        for key, row in ROWS[section]:
            a = [m[key] for m in by_impl.get('ours', []) if key in m and m[key] == m[key]]
            b = [m[key] for m in by_impl.get('arq', []) if key in m and m[key] == m[key]]
            if not a and not b:
                continue
            unit = f' ({row.unit})' if row.unit else ''
            cells = [spread(v, row.digits) if v else '–' for v in (a, b)]
            for i, impl in enumerate(('ours', 'arq')):
                if not (a, b)[i] and (section, config, impl) in bench.not_available:
                    cells[i] = 'n/a'
            r = fmt_ratio(ratio(a, b)) if a and b else '–'
            out.append(f'| {config} | {row.metric}{unit} | {cells[0]} | {cells[1]} | {r} |')
    return out


COMMAND_COLUMNS = [
    ('enqueue', 'sequential'),
    ('drain', 'poll_delay 0.01, max_jobs 10, logging WARNING'),
    ('drain', 'poll_delay 0.01, max_jobs 100, logging WARNING'),
    ('scaling', 'P = 4'),
]


def render_commands(bench: Bench) -> str:
    """Redis commands per job by name (INFO commandstats), and per second of an idle worker (MONITOR)."""
    per_job = command_table(bench, COMMAND_COLUMNS, ('info', 'lpush', 'blpop', 'rpush'))
    idle = command_table(bench, [('idle', 'one worker')], ())
    out = []
    if per_job:
        out += ['### Redis commands per job, by command (INFO commandstats; includes those run inside Lua scripts)\n']
        out += per_job
    if idle:
        out += ['\n### Idle worker: commands sent per second, by command (MONITOR: top level only)\n', *idle]
    return '\n'.join(out) + '\n' if out else ''


def command_table(bench: Bench, wanted: list[tuple[str, str]], skip: tuple[str, ...]) -> list[str]:
    columns: list[tuple[str, str, dict[str, float]]] = []
    for section, prefix in wanted:
        for (sec, config), by_impl in bench.results.items():
            if sec == section and config.startswith(prefix):
                for impl in bench.impls:
                    runs = by_impl.get(impl.key, [])
                    keys = {k for m in runs for k in m if k.startswith('cmd:')}
                    medians = {k[4:]: statistics.median(m.get(k, 0.0) for m in runs) for k in keys}
                    columns.append((f'{section} {prefix}', impl.label, medians))
                break
    if not columns:
        return []
    commands = sorted({c for _, _, m in columns for c, v in m.items() if c not in skip and v >= 0.0005})
    commands.sort(key=lambda c: -max(m.get(c, 0.0) for _, _, m in columns))
    lines = ['| command | ' + ' | '.join(f'{cfg}: {label}' for cfg, label, _ in columns) + ' |']
    lines.append('|---|' + '---:|' * len(columns))
    for c in commands:
        lines.append(f'| {c} | ' + ' | '.join(fmt(m[c]) if m.get(c) else '' for _, _, m in columns) + ' |')
    return lines


def memory_rows(bench: Bench) -> list[tuple[str, str, str, str]]:
    rows = [
        ('idle worker RSS, each on its own venv’s redis-py', 'idle', 'one worker', 'idle_rss_mib'),
        ('idle worker USS (same)', 'idle', 'one worker', 'idle_uss_mib'),
        ('worker RSS after the drain (poll 0.01, max_jobs 10)', 'drain', 'poll_delay 0.01, max_jobs 10, logging INFO',
         'end_rss_mib'),
        ('worker peak RSS during it', 'drain', 'poll_delay 0.01, max_jobs 10, logging INFO', 'peak_rss_mib'),
        ('USS per idle worker process, 8 on a queue (ours: supervised children)', 'herd', '', 'child_uss_mib'),
        ('USS of the supervisor parent, 8 children, idle', 'herd', '', 'parent_uss_mib'),
    ]  # fmt: skip
    for procs in bench.sizes.scaling_procs:
        rows.append((f'USS per worker process, P = {procs}, idle', 'scaling', f'P = {procs}', 'idle_uss_mib'))
        rows.append((f'USS per worker process, P = {procs}, after the drain', 'scaling', f'P = {procs}', 'end_uss_mib'))
    return rows


def render_memory(bench: Bench) -> str:
    lines = []
    for label, section, prefix, key in memory_rows(bench):
        a, b = values(bench, section, prefix, 'ours', key), values(bench, section, prefix, 'arq', key)
        if a or b:
            cells = [spread(v, 1) if v else '–' for v in (a, b)]
            lines.append(f'| {label} | {cells[0]} | {cells[1]} | {fmt_ratio(ratio(a, b)) if a and b else "–"} |')
    same = values(bench, 'idle', 'arq 0.26.3 on', 'arq', 'idle_rss_mib')
    ours = values(bench, 'idle', 'one worker', 'ours', 'idle_rss_mib')
    if same and bench.ref_same_redis is not None:
        label = f'idle worker RSS, arq 0.26.3 on our redis-py ({bench.ref_same_redis.label})'
        lines.append(f'| {label} | {spread(ours, 1) if ours else "–"} | {spread(same, 1)} | '
                     f'{fmt_ratio(ratio(ours, same)) if ours else "–"} |')  # fmt: skip
    if not lines:
        return ''
    head = [
        '### Memory (MiB; RSS from /proc/<pid>/status, USS = private pages from /proc/<pid>/smaps_rollup)\n',
        f'| | {bench.impls[0].label} | {bench.impls[1].label} | ours/arq |',
        '|---|---:|---:|---:|',
    ]
    return '\n'.join(head + lines) + '\n'
