"""A multi-host test bed on one machine: Linux network namespaces joined by veth pairs, with Redis in one of them.

```
root namespace (pytest: producer, ledger)            <prefix>-redis                  <prefix>-h1 / -h2 / -h3
  <prefix> 198.18.B.2/30 ─────── veth ─────── c0 198.18.B.1/30
                                              h1 198.18.B.5/30 ─────── veth ─────── up0 198.18.B.6/30
                                              h2 198.18.B.9/30 ─────── veth ─────── up0 198.18.B.10/30
                                              h3 198.18.B.13/30 ────── veth ─────── up0 198.18.B.14/30
```

Every address is in 198.18.0.0/15 (RFC 2544, benchmarking), one /24 per run chosen so it overlaps nothing the root
namespace routes. No namespace has a default route, and each link is a /30 that reaches only its peer, so nothing
sent here can leave the namespaces the test made: a host reaches Redis and nothing else, Redis reaches its peers and
nothing else, and the root namespace reaches Redis through its own veth. IPv6 is switched off on every link.

Names carry a per-run prefix, `aqn<pytest pid>x<n>`: `cleanup_leftovers()` removes the namespaces and links of runs
whose process is gone (a crashed or SIGKILLed run), and `NetBed.close()` removes this run's, also on failure.

Partitions: `link_down(host)` (fast failures: the host's route to Redis vanishes, connects fail with ENETUNREACH)
and `drop(host)` (silent: iptables DROPs everything arriving over that link, on both ends, so nobody gets an error;
TCP just retransmits), each undone by `link_up` / `undrop`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from tests.support.redis_server import redis_server_binary

NETWORK = ipaddress.ip_network('198.18.0.0/15')
REDIS_PORT = 6379
HOST_LINK = 'up0'  # the host's end of its link, inside its namespace
_PREFIX = re.compile(r'^aqn(\d+)x\d+')
_beds = itertools.count()


class Refused(RuntimeError):
    """The kernel (or the lack of privileges) refuses network namespaces: the tests skip with this reason."""


def ip(*args: str, netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    command = ['ip', *(['-n', netns] if netns else []), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=15)
    if check and done.returncode != 0:
        raise RuntimeError(f'{" ".join(command)} failed: {done.stderr.strip()}')
    return done


def in_netns(netns: str, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run_checked(['ip', 'netns', 'exec', netns, *command], check=check)


def run_checked(command: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f'{" ".join(command)} failed ({done.returncode}): {done.stderr.strip()}')
    return done


def namespaces() -> list[str]:
    return [line.split()[0] for line in ip('netns', 'list').stdout.splitlines() if line.strip()]


def _pids_in(netns: str) -> list[int]:
    return [int(p) for p in ip('netns', 'pids', netns, check=False).stdout.split() if p.isdigit()]


def _kill_all_in(netns: str) -> None:
    """SIGKILL whatever still runs in one of our namespaces (we started everything in it) and wait for it."""
    pids = _pids_in(netns)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    procs = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            procs.append(psutil.Process(pid))
    psutil.wait_procs(procs, timeout=5)


def _run_is_gone(name: str) -> bool:
    found = _PREFIX.match(name)
    return found is not None and not psutil.pid_exists(int(found.group(1)))


def cleanup_leftovers() -> list[str]:
    """Remove the namespaces and root links of earlier runs whose pytest is gone; returns what was removed."""
    removed = []
    for netns in namespaces():
        if _run_is_gone(netns):
            _kill_all_in(netns)
            ip('netns', 'del', netns, check=False)
            removed.append(netns)
    for line in ip('-o', 'link', 'show').stdout.splitlines():
        name = line.split(':')[1].strip().split('@')[0]
        if _run_is_gone(name):
            ip('link', 'del', name, check=False)
            removed.append(name)
    return removed


def which(command: str) -> str | None:
    """`shutil.which`, also in the sbin directories: a user's plain PATH (/usr/local/bin:/usr/bin:/bin) has none."""
    path = os.pathsep.join([os.environ.get('PATH', ''), '/usr/local/sbin', '/usr/sbin', '/sbin'])
    return shutil.which(command, path=path)


def probe_namespaces() -> None:
    """Raise Refused (with the reason) unless this process may create a namespace and a veth pair."""
    if os.geteuid() != 0:
        raise Refused('network namespaces need root (ip netns add)')
    if which('ip') is None:
        raise Refused('the ip command (iproute2) is not installed')
    name = f'aqn{os.getpid()}xprobe'
    try:
        done = ip('netns', 'add', name, check=False)
        if done.returncode != 0:
            raise Refused(f'ip netns add is refused here: {done.stderr.strip()}')
        done = ip('link', 'add', 'a0', 'type', 'veth', 'peer', 'name', 'b0', netns=name, check=False)
        if done.returncode != 0:
            raise Refused(f'veth pairs are refused here: {done.stderr.strip()}')
    finally:
        ip('netns', 'del', name, check=False)


def iptables_command() -> list[str]:
    """An iptables that works in a fresh namespace, installed from the Debian package if missing (as root)."""
    if not (which('iptables') or which('iptables-legacy')) and shutil.which('apt-get'):
        env = {**os.environ, 'DEBIAN_FRONTEND': 'noninteractive'}
        subprocess.run(['apt-get', 'update', '-qq'], capture_output=True, env=env, timeout=300)
        subprocess.run(['apt-get', 'install', '-y', '-qq', '--no-install-recommends', 'iptables'],
                       capture_output=True, env=env, timeout=600)  # fmt: skip
    name = f'aqn{os.getpid()}xipt'
    ip('netns', 'add', name, check=False)
    try:
        for candidate in ('iptables', 'iptables-legacy'):
            path = which(candidate)
            if path and in_netns(name, path, '-w', '-S', check=False).returncode == 0:
                return [path, '-w']
    finally:
        ip('netns', 'del', name, check=False)
    raise RuntimeError('no working iptables (Debian package iptables) in a network namespace')


def _free_block() -> ipaddress.IPv4Network:
    """A /24 of 198.18.0.0/15 that nothing in the root namespace uses (another run may hold one next door)."""
    used = ip('-4', '-o', 'addr', 'show').stdout + ip('-4', 'route', 'show', 'table', 'all').stdout
    taken = [
        ipaddress.ip_network(text if '/' in text else f'{text}/32', strict=False)
        for text in re.findall(r'198\.1[89]\.\d+\.\d+(?:/\d+)?', used)
    ]
    blocks = list(NETWORK.subnets(new_prefix=24))
    random.shuffle(blocks)
    for block in blocks:
        if not any(block.overlaps(t) for t in taken):
            return block
    raise RuntimeError('no free /24 left in 198.18.0.0/15')


@dataclass(frozen=True)
class Host:
    name: str  # h1, h2, h3
    netns: str
    address: str  # its end of its link
    redis_address: str  # Redis's end of the same link: the only address this host can reach

    def exec_prefix(self) -> tuple[str, ...]:
        return ('ip', 'netns', 'exec', self.netns)


@dataclass
class NetBed:
    """The namespaces, links and Redis of one run; `close()` removes all of it."""

    prefix: str
    block: ipaddress.IPv4Network
    directory: Path
    redis_netns: str = ''
    root_link: str = ''
    client_address: str = ''  # Redis's address on the root namespace's link
    hosts: list[Host] = field(default_factory=list)
    redis_process: subprocess.Popen[bytes] | None = None
    iptables: list[str] = field(default_factory=list)
    _dropped: set[str] = field(default_factory=set)

    # --- building ---

    def _address(self, link: int, end: int) -> str:
        """Link k is the /30 at .4k: Redis's end is .4k+1, the other end .4k+2."""
        return str(self.block.network_address + 4 * link + end)

    def build(self, hosts: int) -> NetBed:
        self.redis_netns = f'{self.prefix}-redis'
        self._namespace(self.redis_netns)
        self.root_link = self.prefix
        ip('link', 'add', self.root_link, 'type', 'veth', 'peer', 'name', 'c0', 'netns', self.redis_netns)
        _no_ipv6(self.root_link)
        self.client_address = self._address(0, 1)
        self._configure(None, self.root_link, self._address(0, 2))
        self._configure(self.redis_netns, 'c0', self.client_address)
        for n in range(1, hosts + 1):
            name = f'h{n}'
            host = Host(name, f'{self.prefix}-{name}', self._address(n, 2), self._address(n, 1))
            self._namespace(host.netns)
            ip('link', 'add', name, 'netns', self.redis_netns, 'type', 'veth', 'peer', 'name', HOST_LINK,
               'netns', host.netns)  # fmt: skip
            self._configure(self.redis_netns, name, host.redis_address)
            self._configure(host.netns, HOST_LINK, host.address)
            self.hosts.append(host)
        return self

    def _namespace(self, netns: str) -> None:
        ip('netns', 'add', netns)
        # before any link exists, so that none of them gets an IPv6 address: nothing but our IPv4 on the wire
        for key in ('all', 'default'):
            in_netns(netns, 'sysctl', '-qw', f'net.ipv6.conf.{key}.disable_ipv6=1', check=False)
        ip('link', 'set', 'lo', 'up', netns=netns)

    def _configure(self, netns: str | None, link: str, address: str) -> None:
        ip('addr', 'add', f'{address}/30', 'dev', link, netns=netns)
        ip('link', 'set', link, 'up', netns=netns)

    def start_redis(self, *extra_args: str, timeout_s: float = 10) -> None:
        """redis-server inside the Redis namespace, on every link (no password there: hence protected mode off)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [
            'ip', 'netns', 'exec', self.redis_netns, redis_server_binary(),
            '--port', str(REDIS_PORT), '--bind', '0.0.0.0', '--protected-mode', 'no',
            '--dir', str(self.directory), '--save', '', '--appendonly', 'no', *extra_args,
        ]  # fmt: skip
        self.redis_process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                              start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while True:
            if self.redis_process.poll() is not None:
                raise RuntimeError(f'redis-server in {self.redis_netns} exited with {self.redis_process.returncode}')
            with contextlib.suppress(OSError), socket.create_connection((self.client_address, REDIS_PORT), 0.5) as s:
                s.sendall(b'PING\r\n')
                if s.recv(64).startswith(b'+PONG'):
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f'redis-server in {self.redis_netns} did not answer within {timeout_s}s')
            time.sleep(0.05)  # poll interval of a condition wait

    # --- faults ---

    def link_down(self, host: Host) -> None:
        """Fast failures: the host's link goes down, its route to Redis with it (ENETUNREACH, at once)."""
        ip('link', 'set', HOST_LINK, 'down', netns=host.netns)

    def link_up(self, host: Host) -> None:
        ip('link', 'set', HOST_LINK, 'up', netns=host.netns)

    def prepare_drop(self) -> None:
        """Find (or install) iptables now: on a fresh machine that takes seconds, which must not fall inside a fault's
        timing (CI saw a cut take 5.2 s of a 6 s lease)."""
        if not self.iptables:
            self.iptables = iptables_command()

    def drop(self, host: Host) -> None:
        """Silent drops: whatever arrives over the host's link is dropped at both ends; nobody sees an error."""
        self._rules('-A', host)
        self._dropped.add(host.name)

    def undrop(self, host: Host) -> None:
        self._rules('-D', host)
        self._dropped.discard(host.name)

    def _rules(self, action: str, host: Host) -> None:
        self.prepare_drop()
        in_netns(host.netns, *self.iptables, action, 'INPUT', '-i', HOST_LINK, '-j', 'DROP')
        in_netns(self.redis_netns, *self.iptables, action, 'INPUT', '-i', host.name, '-j', 'DROP')

    # --- teardown ---

    def close(self) -> None:
        """Stop Redis, kill what is left in our namespaces, delete them and the root link. Never raises."""
        if self.redis_process is not None and self.redis_process.poll() is None:
            self.redis_process.terminate()
            try:
                self.redis_process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.redis_process.kill()
                self.redis_process.wait(timeout=5)
        for netns in [h.netns for h in self.hosts] + [self.redis_netns]:
            if netns:
                with contextlib.suppress(Exception):
                    _kill_all_in(netns)
                ip('netns', 'del', netns, check=False)
        if self.root_link:
            ip('link', 'del', self.root_link, check=False)  # gone with its peer already, normally

    def leftovers(self) -> list[str]:
        """Anything of this run that close() did not remove."""
        mine = [n for n in namespaces() if n.startswith(f'{self.prefix}-')]
        if self.root_link and ip('link', 'show', self.root_link, check=False).returncode == 0:
            mine.append(self.root_link)
        return mine


def _no_ipv6(link: str) -> None:
    with contextlib.suppress(OSError):
        Path(f'/proc/sys/net/ipv6/conf/{link}/disable_ipv6').write_text('1')


@contextlib.contextmanager
def open_bed(directory: Path, hosts: int = 3) -> Iterator[NetBed]:
    """Build a bed of `hosts` hosts and Redis; remove everything afterwards, also when the build or the test fails.

    Raises Refused when namespaces are refused here.
    """
    probe_namespaces()
    cleanup_leftovers()
    bed = NetBed(prefix=f'aqn{os.getpid()}x{next(_beds)}', block=_free_block(), directory=directory)
    try:
        bed.build(hosts)
        bed.start_redis()
        yield bed
    finally:
        bed.close()
