"""
Benchmark our arq against the published arq 0.26.3, side by side, on one redis-server this script starts.

    make bench                                   # = python -m tests.bench.run   (full run, ~30 min on 2 cores)
    python -m tests.bench.run --quick            # short run (~6 min), written to results/quick.md
    python -m tests.bench.run --scenarios drain,herd --repeat 5
    python -m tests.bench.run --profile-only     # py-spy + cProfile of our worker draining (results/profile.txt)

Every measured run is a fresh subprocess executing tests/bench/driver.py with either interpreter: this one (our
arq, installed from this repository) or the one in a separate virtual environment with `arq==0.26.3` from the
package index (created on first use under .cache/, or given with --ref-python). Both sides run on uvloop and log
as the `arq` command configures it. Runs alternate ours/theirs, repeated --repeat times; the tables show
medians with min–max and the ratio ours/theirs of the medians, all from the same invocation.

Modules: impls (the two sides and their venvs), procs (/proc, Redis counters, MONITOR, subprocesses), bench (one
invocation's state), runs_* (one measured run each), scenarios (the repetitions), profiling, render/targets/report
(the markdown).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from tests.bench.bench import FULL, QUICK, Bench, Sizes
from tests.bench.impls import (
    RESULTS_DIR,
    Impl,
    ensure_ours_python,
    ensure_ref_python,
    ensure_ref_same_redis_python,
    ours_redis_py,
    snapshot_code,
)
from tests.bench.procs import log
from tests.bench.profiling import profile
from tests.bench.report import render
from tests.bench.scenarios import MEMORY_SCENARIOS, SCENARIOS


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog='python -m tests.bench.run', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument('--quick', action='store_true', help='small sizes, one repetition')
    parser.add_argument('--scenarios', default=','.join(SCENARIOS),
                        help=f'comma-separated subset of {",".join(SCENARIOS)}; memory = '
                        f'{",".join(MEMORY_SCENARIOS)}')  # fmt: skip
    parser.add_argument('--repeat', type=int, help='repetitions per configuration and side (default 3, quick 1)')
    parser.add_argument('--ref-python', help='interpreter with arq==0.26.3 and uvloop (default: a venv in .cache)')
    parser.add_argument('--ours-python', help='interpreter that imports our arq (default: a bare venv in .cache)')
    parser.add_argument('--no-same-redis', action='store_true',
                        help='skip the idle run of arq 0.26.3 on our redis-py (a third venv in .cache)')  # fmt: skip
    parser.add_argument(
        '--output', type=Path, help='markdown file (default results/latest.md, quick: results/quick.md)'
    )
    profile_help = 'also profile our worker draining (py-spy, cProfile) and enqueuing: results/profile.txt'
    parser.add_argument('--profile', action='store_true', help=profile_help)
    parser.add_argument('--profile-only', action='store_true', help='only the profiles, no tables')
    parser.add_argument('--profile-rate', type=int, default=500, help='py-spy samples per second')
    parser.add_argument('--profile-top', type=int, default=30)
    parser.add_argument('--profile-jobs', type=int, default=30_000, help='jobs drained under py-spy')
    parser.add_argument('--native', action='store_true', help='py-spy --native: C frames too (uvloop, hiredis)')
    parser.add_argument('--keep', action='store_true', help='keep the work directory (logs of every run)')
    args = parser.parse_args()
    args.scenario_list = chosen_scenarios(parser, args)
    return args


def chosen_scenarios(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    wanted = {s.strip() for s in args.scenarios.split(',') if s.strip()}
    unknown = wanted - set(SCENARIOS) - {'memory'}
    if unknown:
        parser.error(f'unknown scenarios: {", ".join(sorted(unknown))}')
    if 'memory' in wanted:
        wanted |= set(MEMORY_SCENARIOS)
    return [] if args.profile_only else [s for s in SCENARIOS if s in wanted]


def make_bench(args: argparse.Namespace, workdir: Path, command: str) -> Bench:
    sizes = QUICK if args.quick else FULL
    if args.repeat:
        sizes = Sizes(**{**sizes.__dict__, 'repeat': args.repeat})
    ours_python = ensure_ours_python(args.ours_python)
    impls = [
        Impl('ours', 'ours', ours_python, snapshot_code(workdir / 'code')),
        Impl('arq', 'arq 0.26.3', ensure_ref_python(args.ref_python)),
    ]
    same = None
    if 'idle' in args.scenario_list and not args.no_same_redis:
        label = f'arq 0.26.3 on redis-py {ours_redis_py(ours_python)}'
        same = Impl('arq', label, ensure_ref_same_redis_python(ours_python))
    return Bench(args, sizes, impls, workdir, command, ref_same_redis=same)


def main() -> None:
    args = parse_args()
    output = args.output or RESULTS_DIR / ('quick.md' if args.quick else 'latest.md')
    command = 'python -m tests.bench.run' + ''.join(f' {a}' for a in sys.argv[1:])
    workdir = Path(tempfile.mkdtemp(prefix='arq-bench-'))
    started = time.monotonic()
    bench = make_bench(args, workdir, command)
    try:
        for scenario in args.scenario_list:
            log(f'--- {scenario} ---')
            SCENARIOS[scenario](bench)
        if args.profile or args.profile_only:
            log(f'profile written to {profile(bench, bench.ours)}')
        if args.scenario_list:
            report = render(bench, command, time.monotonic() - started)
            print(report)
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(report)
            log(f'written to {output} in {(time.monotonic() - started) / 60:.1f} min')
    finally:
        bench.close()
        if args.keep or bench.failures:
            log(f'work directory kept: {workdir}')
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == '__main__':
    main()
