"""One benchmark invocation's state: its sizes, the two implementations, its redis-server and the figures recorded."""

from __future__ import annotations

import argparse
import json
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.bench.impls import DRIVER, REPO, Impl, code_fingerprint, driver_env, git_head
from tests.bench.procs import RedisProbe, log
from tests.support.redis_server import RedisServer


@dataclass(frozen=True)
class Sizes:
    repeat: int
    enqueue_n: int
    drain_n: int
    drain_default_n: int  # the published arq drains ~200 jobs/s at poll_delay 0.5: fewer jobs keep the run short
    io_n: int
    latency_n: int
    scaling_n: int
    scaling_procs: tuple[int, ...]
    herd_n: int = 10  # single enqueues against 8 idle workers (arq at poll_delay 5: ~5 s each)
    herd_procs: int = 8
    idle_s: float = 20.0  # how long an idle worker's Redis commands are counted
    waiters_n: int = 10_000
    waiters_timeout_s: float = 180.0  # past this the side is reported as unable to (n/a)


FULL = Sizes(
    repeat=3,
    enqueue_n=10_000,
    drain_n=20_000,
    drain_default_n=5_000,
    io_n=5_000,
    latency_n=200,
    scaling_n=20_000,
    scaling_procs=(1, 2, 4),
)
QUICK = Sizes(
    repeat=1,
    enqueue_n=3_000,
    drain_n=4_000,
    drain_default_n=1_000,
    io_n=2_000,
    latency_n=60,
    scaling_n=4_000,
    scaling_procs=(1, 2, 4),
    herd_n=5,
    idle_s=5.0,
    waiters_n=2_000,
    waiters_timeout_s=60.0,
)


@dataclass
class Bench:
    args: argparse.Namespace
    sizes: Sizes
    impls: list[Impl]  # [ours, arq 0.26.3]
    workdir: Path
    command: str
    #: the published arq on our side's redis-py (for the memory comparison), if it could be built
    ref_same_redis: Impl | None = None
    # results[(section, config)][impl.key] = list of per-run metric dicts
    results: dict[tuple[str, str], dict[str, list[dict[str, float]]]] = field(default_factory=dict)
    #: (section, config, impl key) -> why that cell has no figures
    not_available: dict[tuple[str, str, str], str] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    checked: set[str] = field(default_factory=set)
    run_counter: int = 0

    def __post_init__(self) -> None:
        self.server = RedisServer(directory=self.workdir / 'redis')
        self.server.start()
        self.probe = RedisProbe(self.server)
        self.head_at_start = git_head()
        self.code_at_start = code_fingerprint(self.impls[0].code or REPO)

    @property
    def ours(self) -> Impl:
        return self.impls[0]

    def close(self) -> None:
        self.server.stop()

    def record(self, section: str, config: str, impl: Impl, metrics: dict[str, float]) -> None:
        self.results.setdefault((section, config), {}).setdefault(impl.key, []).append(metrics)

    def check_impl(self, impl: Impl, report: dict[str, Any]) -> None:
        """Every report: the right arq (ours: the snapshot; theirs: the venv's), on uvloop."""
        ours_path = str((impl.code or REPO) / 'arq') if impl.key == 'ours' else str(REPO / 'arq')
        arq_file = report['arq_file']
        if (impl.key == 'ours') != arq_file.startswith(ours_path) or (impl.key != 'ours' and '/arq-bench-' in arq_file):
            raise RuntimeError(f'{impl.label} imported the wrong arq: {arq_file}')
        if report.get('loop') != 'uvloop':
            raise RuntimeError(f'{impl.label} is not running on uvloop: {report.get("loop")}')
        if impl.label in self.checked:
            return
        self.checked.add(impl.label)
        log(f'{impl.label}: arq {report["arq_version"]} from {arq_file}, redis-py {report["redis_py"]}, uvloop')

    def out_dir(self) -> Path:
        self.run_counter += 1
        d = self.workdir / f'run-{self.run_counter:03d}'
        d.mkdir()
        return d

    def attempt(self, run: Callable[[], dict[str, float]]) -> dict[str, float] | None:
        """One measured run; a failure is logged (with the run's logs) and retried once, then the run is skipped."""
        for attempt in (1, 2):
            try:
                return run()
            except Exception as e:
                self.failures.append(f'{e.__class__.__name__}: {e}')
                log(f'run failed (attempt {attempt}): {e.__class__.__name__}: {e}')
                for path in sorted((self.workdir / f'run-{self.run_counter:03d}').glob('*.log')):
                    tail = path.read_text(errors='replace').splitlines()[-15:]
                    log(f'last lines of {path}:\n    ' + '\n    '.join(tail))
        return None

    def alternating(self) -> Iterator[tuple[int, Impl]]:
        for rep in range(self.sizes.repeat):
            order = self.impls if rep % 2 == 0 else list(reversed(self.impls))
            for impl in order:
                yield rep, impl

    def client(self, impl: Impl, out: Path, mode: str, *options: str) -> subprocess.Popen[str]:
        """A driver client process (enqueue, latency, herd, waiters) talking JSON lines over stdin/stdout."""
        logfile = open(out / f'{mode}-client.log', 'wb')  # noqa: SIM115 (the child holds it; closed when we return)
        try:
            return subprocess.Popen(
                [impl.python, str(DRIVER), mode, '--port', str(self.server.port), *options],
                cwd=out, env=driver_env(impl, self.server.port), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=logfile, start_new_session=True, text=True,
            )  # fmt: skip
        finally:
            logfile.close()


def read_line(proc: subprocess.Popen[str], what: str) -> dict[str, Any]:
    """The next JSON line a driver client prints; its exit before that is an error."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f'{what}: the client exited (code {proc.wait(timeout=10)}) without a report')
    return dict(json.loads(line))


def send_line(proc: subprocess.Popen[str], text: str = 'go') -> None:
    assert proc.stdin is not None
    proc.stdin.write(text + '\n')
    proc.stdin.flush()
