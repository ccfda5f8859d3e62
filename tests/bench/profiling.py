"""Where our worker's time goes: py-spy and cProfile of a drain, and what the per-job log lines cost."""

from __future__ import annotations

import collections
import statistics
import time
from pathlib import Path

from tests.bench.bench import Bench
from tests.bench.impls import REPO, RESULTS_DIR, Impl
from tests.bench.runs_clients import enqueue
from tests.bench.runs_drain import DrainSpec, drain


def profile(bench: Bench, impl: Impl) -> Path:
    """
    py-spy of one drain (poll 0.01, max_jobs 10), a cProfile of another (call counts per job; its overhead inflates
    the times), the drain at INFO and at WARNING, and py-spy of the sequential enqueue client.
    """
    parts = [profile_drain_py_spy(bench, impl), profile_drain_cprofile(bench, impl), log_level_costs(bench)]
    parts.append(profile_enqueue(bench, impl))
    path = RESULTS_DIR / ('profile-native.txt' if bench.args.native else 'profile.txt')
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f'# Profiles of our arq ({bench.head_at_start}, code fingerprint {bench.code_at_start}), '
        f'{time.strftime("%Y-%m-%d %H:%M")}\n'
        f'# `{bench.command}`\n\n' + '\n\n'.join(parts)
    )
    return path


def profile_drain_py_spy(bench: Bench, impl: Impl) -> str:
    n, rate = bench.args.profile_jobs, bench.args.profile_rate
    native = ' --native' if bench.args.native else ''
    raw = bench.workdir / 'profile-drain.raw'
    m = drain(bench, impl, DrainSpec(n=n), profile_to=raw)
    return (
        f'## py-spy record --rate {rate}{native}: {impl.label} worker draining {n:,} no-op jobs '
        '(poll_delay 0.01, max_jobs 10, logging at INFO to a file)\n'
        f'under py-spy: {m["jobs_s"]:,.0f} jobs/s, worker CPU {m["worker_cpu_ms"]:.3f} ms/job. py-spy samples '
        'wall time of running threads: a thread preempted on these 2 busy cores (typically right after its '
        'socket write wakes redis-server) is charged to the line it was on, so StreamWriter.writelines looks '
        'heavier than its CPU cost; the cProfile below uses CPU time.\n\n'
        + summarize_profile(raw, top=bench.args.profile_top)
    )


def profile_drain_cprofile(bench: Bench, impl: Impl) -> str:
    n = bench.args.profile_jobs
    stats_path = bench.workdir / 'drain.pstats'
    m = drain(bench, impl, DrainSpec(n=n), cprofile_to=stats_path)
    return (
        f'## cProfile (timer: process CPU time) of the same drain ({n:,} jobs; profiled {m["jobs_s"]:,.0f} '
        f'jobs/s, {m["worker_cpu_ms"]:.3f} ms CPU/job with the profiler on): calls per job, share of CPU time\n\n'
        + summarize_cprofile(stats_path, n, top=bench.args.profile_top)
    )


def log_level_costs(bench: Bench) -> str:
    lines = ["## What the per-job log lines cost: the same drain with arq's logger at INFO and at WARNING\n"]
    lines.append('| side | logging | jobs/s | worker CPU per job (ms) |')
    lines.append('|---|---|---:|---:|')
    for side in bench.impls:
        for level in ('INFO', 'WARNING'):
            runs = [drain(bench, side, DrainSpec(n=bench.sizes.drain_n, log_level=level)) for _ in range(2)]
            jobs_s = statistics.median(r['jobs_s'] for r in runs)
            cpu_ms = statistics.median(r['worker_cpu_ms'] for r in runs)
            lines.append(f'| {side.label} | {level} | {jobs_s:,.0f} | {cpu_ms:.3f} |')
    return '\n'.join(lines) + '\n'


def profile_enqueue(bench: Bench, impl: Impl) -> str:
    raw = bench.workdir / 'profile-enqueue.raw'
    n, rate = bench.sizes.enqueue_n, bench.args.profile_rate
    native = ' --native' if bench.args.native else ''
    m = enqueue(bench, impl, n, 1, profile_to=raw)
    return (
        f'## py-spy record --rate {rate}{native}: {impl.label} client, {n:,} sequential enqueue_job\n'
        f'under py-spy: {m["jobs_s"]:,.0f} jobs/s, client CPU {m["client_cpu_ms"]:.3f} ms/job\n\n'
        + summarize_profile(raw, top=bench.args.profile_top)
    )


# --- profile summary (py-spy raw = collapsed stacks: "frame;frame;... count") ---


def summarize_profile(raw: Path, top: int = 30) -> str:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    paths: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_s = line.rpartition(' ')
        if not stack:
            continue
        count = int(count_s)
        frames = [short_frame(f) for f in stack.split(';')]
        frames = [f for f in frames if f]  # the process/thread header frames
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        ours = [f for f in frames if '(arq/' in f]
        paths[f'{ours[-1] if ours else "(outside arq)"} → {frames[-1]}'] += count
        for f in set(frames):
            inclusive[f] += count
    lines = [f'{total} samples (active threads only)\n', f'\nTop {top} by own time (the innermost frame):']
    lines += [f'  {100 * c / total:5.1f}%  {f}' for f, c in own.most_common(top)]
    lines.append(f'\nTop {top} by inclusive time (anywhere on the stack):')
    lines += [f'  {100 * c / total:5.1f}%  {f}' for f, c in inclusive.most_common(top)]
    lines.append(f'\nTop {top} paths: the innermost frame in arq/ → the innermost frame (what our code spends on):')
    lines += [f'  {100 * c / total:5.1f}%  {p}' for p, c in paths.most_common(top)]
    lines.append('\nBy area (own time, by the file of the innermost frame):')
    areas: collections.Counter[str] = collections.Counter()
    for f, c in own.items():
        areas[area_of(f)] += c
    lines += [f'  {100 * c / total:5.1f}%  {a}' for a, c in areas.most_common()]
    return '\n'.join(lines) + '\n'


def summarize_cprofile(path: Path, jobs: int, top: int = 30) -> str:
    import pstats

    stats = pstats.Stats(str(path))
    total = stats.total_tt  # type: ignore[attr-defined]
    rows = []
    for (filename, line, name), (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        where = short_frame(f'{name} ({filename}:{line})')
        rows.append((where, nc, tt, ct))
    out = [f'{total:.2f} s profiled, {jobs:,} jobs\n', f'Top {top} by own time:  calls/job  own%  cumulative%']
    for where, nc, tt, ct in sorted(rows, key=lambda r: -r[2])[:top]:
        out.append(f'  {nc / jobs:8.2f}  {100 * tt / total:5.1f}%  {100 * ct / total:5.1f}%  {where}')
    out.append(f'\nTop {top} by cumulative time:  calls/job  own%  cumulative%')
    for where, nc, tt, ct in sorted(rows, key=lambda r: -r[3])[:top]:
        out.append(f'  {nc / jobs:8.2f}  {100 * tt / total:5.1f}%  {100 * ct / total:5.1f}%  {where}')
    return '\n'.join(out) + '\n'


def short_frame(frame: str) -> str:
    """'run_job (/x/site-packages/arq/worker.py:123)' -> 'run_job (arq/worker.py)'."""
    if frame.startswith(('process ', 'thread ')):
        return ''
    name, _, where = frame.partition(' (')
    where = where.rstrip(')')
    path = where.rsplit(':', 1)[0]
    if '/arq-bench-' in path and '/code/' in path:  # our code, as snapshotted for this run
        path = path.split('/code/', 1)[1]
    for marker in ('site-packages/', 'lib/python3.11/', f'{REPO}/'):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f'{name} ({path})'


def area_of(frame: str) -> str:
    path = frame.rpartition('(')[2].rstrip(')')
    for prefix, area in (
        ('arq/', 'arq (ours)'),
        ('redis/', 'redis-py'),
        ('logging/', 'logging'),
        ('asyncio/', 'asyncio'),
        ('uvloop/', 'uvloop'),
        ('pickle', 'pickle'),
        ('tests/bench', 'the job functions'),
    ):
        if path.startswith(prefix) or prefix in path:
            return area
    return f'other: {path.split("/")[0]}'
