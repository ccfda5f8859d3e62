"""The targets of issue 12 ("speed"), each read from the scenario that measures it: met or not met."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass

from tests.bench.bench import Bench
from tests.bench.render import fmt, fmt_ratio, values

WARN10 = 'poll_delay 0.01, max_jobs 10, logging WARNING'
WARN100 = 'poll_delay 0.01, max_jobs 100, logging WARNING'
INFO10 = 'poll_delay 0.01, max_jobs 10, logging INFO'
INFO100 = 'poll_delay 0.01, max_jobs 100, logging INFO'


@dataclass(frozen=True)
class TargetRow:
    metric: str
    target: str
    arq: str
    ours: str
    met: bool | None  # None: not measured in this run


def verdict(met: bool | None) -> str:
    return 'not run' if met is None else '**met**' if met else '**not met**'


def known(*xs: float) -> bool:
    return all(x == x for x in xs)


class Reader:
    """Medians of the recorded figures: nan where a scenario did not run."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench

    def __call__(self, section: str, prefix: str, impl: str, key: str) -> float:
        found = values(self.bench, section, prefix, impl, key)
        return statistics.median(found) if found else float('nan')


def check(value: float, ok: Callable[[float], bool]) -> bool | None:
    return ok(value) if known(value) else None


def supervise_rows(v: Reader) -> list[TargetRow]:
    sup, bare = v('scaling', 'P = 1', 'ours', 'proc_cpu_ms'), v('scaling', 'P = 1, bare worker', 'ours', 'proc_cpu_ms')
    sup_j, bare_j = v('scaling', 'P = 1', 'ours', 'jobs_s'), v('scaling', 'P = 1, bare worker', 'ours', 'jobs_s')
    s1, s2 = v('scaling', 'P = 1', 'ours', 'jobs_s'), v('scaling', 'P = 2', 'ours', 'jobs_s')
    a1, a2 = v('scaling', 'P = 1', 'arq', 'jobs_s'), v('scaling', 'P = 2', 'arq', 'jobs_s')
    return [
        TargetRow('1. `arq-supervise --procs 1` CPU per job (parent + child, /proc) vs our bare worker; jobs/s of both',
                  '≤ 1.1× bare', '–',
                  f'{fmt(sup)} vs {fmt(bare)} ms ({fmt_ratio(sup / bare)}); {fmt(sup_j, 0)} vs {fmt(bare_j, 0)} jobs/s',
                  check(sup / bare, lambda r: r <= 1.1)),
        TargetRow('1. jobs/s, `--procs 2` vs `--procs 1` (arq: 2 processes vs 1), 2 cores', '≥ 1.85×',
                  f'{fmt_ratio(a2 / a1)} ({fmt(a1, 0)} → {fmt(a2, 0)})',
                  f'{fmt_ratio(s2 / s1)} ({fmt(s1, 0)} → {fmt(s2, 0)})', check(s2 / s1, lambda r: r >= 1.85)),
    ]  # fmt: skip


def drain_rows(v: Reader) -> list[TargetRow]:
    rows = []
    for label, prefix, factor in (
        ('2. bare worker drain jobs/s, max_jobs 100, both at WARNING', WARN100, 10),
        ('2. bare worker drain jobs/s, max_jobs 10, both at WARNING', WARN10, 7),
        ('2. bare worker drain jobs/s, max_jobs 10, both at INFO to a file', INFO10, 5),
        ('2. bare worker drain jobs/s, max_jobs 100, both at INFO to a file', INFO100, 5),
    ):
        o, t = v('drain', prefix, 'ours', 'jobs_s'), v('drain', prefix, 'arq', 'jobs_s')
        rows.append(TargetRow(label, f'≥ {factor}× arq', fmt(t, 0), f'{fmt(o, 0)} ({fmt_ratio(o / t)})',
                              check(o / t - factor, lambda d: d >= 0)))  # fmt: skip
    cpu, cpu_t = v('drain', WARN10, 'ours', 'worker_cpu_ms'), v('drain', WARN10, 'arq', 'worker_cpu_ms')
    rows.append(TargetRow('2. worker CPU per job (ms), max_jobs 10, WARNING', '≤ 0.06', fmt(cpu_t), fmt(cpu),
                          check(cpu, lambda c: c <= 0.06)))  # fmt: skip
    return rows


def herd_rows(v: Reader) -> list[TargetRow]:
    rows = []
    for poll, note in (('5', 'no timed poll during an enqueue'), ('0.5', 'default; idle rate subtracted')):
        prefix = f'8 idle workers, poll_delay {poll},'
        o, t = v('herd', prefix, 'ours', 'claims_per_enqueue'), v('herd', prefix, 'arq', 'claims_per_enqueue')
        rows.append(TargetRow(f'3. claim calls per enqueue, 8 idle workers, poll_delay {poll} ({note})', '≤ 2',
                              fmt(t), fmt(o), check(o, lambda c: c <= 2)))  # fmt: skip
    o, t = v('idle', 'one worker', 'ours', 'idle_cmds_per_s'), v('idle', 'one worker', 'arq', 'idle_cmds_per_s')
    rows.append(TargetRow('3. idle worker Redis commands per second, allow_abort_jobs=True (top level)', '≤ 1',
                          fmt(t), fmt(o), check(o, lambda c: c <= 1)))  # fmt: skip
    return rows


def waiter_rows(bench: Bench, v: Reader) -> list[TargetRow]:
    def arq_cell(key: str, digits: int | None = None) -> str:
        value = v('waiters', '', 'arq', key)
        if known(value):
            return fmt(value, digits)
        return 'n/a' if any(k[0] == 'waiters' and k[2] == 'arq' for k in bench.not_available) else '–'

    conns, tail = v('waiters', '', 'ours', 'connections_peak'), v('waiters', '', 'ours', 'tail_s')
    n = f'{bench.sizes.waiters_n:,}'
    return [
        TargetRow(f'4. {n} concurrent job.result(): Redis connections of the client (peak)', '≤ 4',
                  arq_cell('connections_peak', 0), fmt(conns, 0), check(conns, lambda c: c <= 4)),
        TargetRow(f'4. {n} waiters: last job’s end → every waiter returned (s)', '≤ 1 s', arq_cell('tail_s'),
                  fmt(tail), check(tail, lambda t: t <= 1)),
    ]  # fmt: skip


def enqueue_memory_rows(v: Reader) -> list[TargetRow]:
    bulk, seq = v('enqueue', 'one enqueue_jobs', 'ours', 'jobs_s'), v('enqueue', 'sequential', 'ours', 'jobs_s')
    seq_t = v('enqueue', 'sequential', 'arq', 'jobs_s')
    rss, rss_same = v('idle', 'one worker', 'ours', 'idle_rss_mib'), v('idle', 'arq 0.26.3 on', 'arq', 'idle_rss_mib')
    rss_t = v('idle', 'one worker', 'arq', 'idle_rss_mib')
    uss = v('herd', '8 idle workers, poll_delay 5', 'ours', 'child_uss_mib')
    return [
        TargetRow('5. bulk enqueue_jobs of 10,000 vs sequential enqueue_job (jobs/s)', '≥ 10×',
                  f'no bulk API; sequential {fmt(seq_t, 0)}',
                  f'{fmt(bulk, 0)} vs {fmt(seq, 0)} ({fmt_ratio(bulk / seq)})', check(bulk / seq, lambda r: r >= 10)),
        TargetRow('6. idle worker RSS (MiB), arq on the same redis-py (on its own: in brackets)', '≤ arq',
                  f'{fmt(rss_same, 1)} ({fmt(rss_t, 1)})', fmt(rss, 1),
                  check(rss - rss_same, lambda d: d <= 0)),
        TargetRow('6. supervised child USS, idle (MiB; arq: a bare worker process)', '≤ 10',
                  fmt(v('herd', '8 idle workers, poll_delay 5', 'arq', 'child_uss_mib'), 1), fmt(uss, 1),
                  check(uss, lambda u: u <= 10)),
    ]  # fmt: skip


def render_targets(bench: Bench) -> str:
    v = Reader(bench)
    rows = [*supervise_rows(v), *drain_rows(v), *herd_rows(v), *waiter_rows(bench, v), *enqueue_memory_rows(v)]
    out = [
        '### Targets of issue 12 (medians; ratios ours/arq, or ours/ours, of medians from this run)\n',
        '| target | goal | arq 0.26.3 here | ours here | |',
        '|---|---:|---:|---:|---|',
    ]
    out += [f'| {r.metric} | {r.target} | {r.arq} | {r.ours} | {verdict(r.met)} |' for r in rows]
    return '\n'.join(out) + '\n'
