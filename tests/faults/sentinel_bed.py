"""A Redis Sentinel test bed: a master, a replica and three sentinels (`redis-server --sentinel`) on loopback.

Ports are free ones, the config files are generated in the test's directory, and the timings are short so a failover
takes about a second: `down-after-milliseconds` 1000, `failover-timeout` 5000. `stop()` stops every process.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import redis

from arq.connections import RedisSettings
from tests.support.redis_server import RedisServer, free_port, redis_server_binary
from tests.support.waiting import wait_until

MASTER_NAME = 'arqmaster'
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000


@dataclass
class SentinelBed:
    directory: Path
    #: extra config lines for both data nodes (e.g. `min-replicas-to-write 1`)
    node_config: tuple[str, ...] = ()
    #: sentinels that require this password (of their clients and of each other)
    sentinel_password: str | None = None
    nodes: list[RedisServer] = field(default_factory=list)
    sentinel_ports: list[int] = field(default_factory=list)
    sentinels: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self) -> SentinelBed:
        master_port = free_port()
        for name in ('node-a', 'node-b'):
            args = [a for line in self.node_config for a in _as_args(line)]
            if self.nodes:
                args += ['--replicaof', '127.0.0.1', str(master_port)]
            node = RedisServer(directory=self.directory / name, port=free_port() if self.nodes else master_port,
                               extra_args=tuple(args))  # fmt: skip
            self.nodes.append(node)
            node.start()
        wait_until(lambda: self._replica_in_sync(self.nodes[1].port), timeout=10, message='the replica in sync')
        for i in range(3):
            port = free_port()
            directory = self.directory / f'sentinel-{i}'
            directory.mkdir(parents=True, exist_ok=True)
            config = directory / 'sentinel.conf'
            config.write_text(
                f'port {port}\nbind 127.0.0.1\ndir {directory}\n'
                f'sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n'
                f'sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n'
                f'sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n'
                f'sentinel parallel-syncs {MASTER_NAME} 1\n'
                + (f'requirepass {self.sentinel_password}\nsentinel sentinel-pass {self.sentinel_password}\n'
                   if self.sentinel_password else '')
            )  # fmt: skip
            self.sentinel_ports.append(port)
            command = [redis_server_binary(), str(config), '--sentinel']
            self.sentinels.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_until(self._sentinels_agree, timeout=20, message='three sentinels that know each other and the replica')
        return self

    @property
    def hosts(self) -> list[tuple[str, int]]:
        return [('127.0.0.1', port) for port in self.sentinel_ports]

    def settings(self, **kwargs: object) -> RedisSettings:
        if self.sentinel_password:
            kwargs.setdefault('sentinel_kwargs', {'password': self.sentinel_password})
        return RedisSettings(host=self.hosts, sentinel=True, sentinel_master=MASTER_NAME, **kwargs)  # type: ignore[arg-type]

    def settings_source(self) -> str:
        """The RedisSettings expression for a generated jobs module."""
        return f'RedisSettings(host={self.hosts!r}, sentinel=True, sentinel_master={MASTER_NAME!r})'

    def sentinel_client(self, i: int = 0) -> redis.Redis:
        return redis.Redis(port=self.sentinel_ports[i], decode_responses=True, socket_timeout=5,
                           password=self.sentinel_password)  # fmt: skip

    def master_port(self) -> int:
        """The master's port as the sentinels' majority see it."""
        ports = []
        for i in range(len(self.sentinel_ports)):
            with contextlib.suppress(redis.RedisError), self.sentinel_client(i) as s:
                ports.append(int(s.sentinel_get_master_addr_by_name(MASTER_NAME)[1]))
        return max(set(ports), key=ports.count)

    def node(self, port: int) -> RedisServer:
        return next(n for n in self.nodes if n.port == port)

    def role(self, port: int) -> str | None:
        try:
            with redis.Redis(port=port, socket_timeout=1) as r:
                return str(r.execute_command('ROLE')[0].decode())
        except redis.RedisError:
            return None

    def failover(self) -> None:
        with self.sentinel_client() as s:
            s.execute_command('SENTINEL', 'FAILOVER', MASTER_NAME)

    def stop(self) -> None:
        for proc in self.sentinels:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.sentinels:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.stop()

    def _replica_in_sync(self, port: int) -> bool:
        with redis.Redis(port=port, socket_timeout=1, decode_responses=True) as r:
            return bool(r.info('replication').get('master_link_status') == 'up')

    def _sentinels_agree(self) -> bool:
        for i in range(len(self.sentinel_ports)):
            try:
                with self.sentinel_client(i) as s:
                    state = s.sentinel_master(MASTER_NAME)
            except redis.RedisError:
                return False
            if int(state['num-other-sentinels']) < 2 or int(state['num-slaves']) < 1:
                return False
        return True


def _as_args(line: str) -> list[str]:
    key, *values = line.split()
    return [f'--{key}', *values]
