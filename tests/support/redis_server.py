"""A real, throwaway redis-server for tests: started on a free port, stopped (and its files removed) at the end."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return int(s.getsockname()[1])


def redis_server_binary() -> str:
    path = shutil.which('redis-server') or '/usr/bin/redis-server'
    if not os.path.exists(path):
        raise RuntimeError(
            'redis-server is not installed: run `make test`, which installs it (apt-get install redis-server)'
        )
    return path


@dataclass
class RedisServer:
    """One redis-server process. `extra_args` lets fault tests turn on appendonly, TLS or ACLs."""

    directory: Path
    port: int = field(default_factory=free_port)
    extra_args: tuple[str, ...] = ()
    #: its own session, so a terminal's Ctrl+C reaches only whoever started it (the demo), who stops it in order
    start_new_session: bool = False
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f'redis://127.0.0.1:{self.port}'

    @property
    def unix_socket(self) -> str:
        return str(self.directory / 'redis.sock')

    def start(self, timeout_s: float = 10.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [
            redis_server_binary(),
            '--port', str(self.port),
            '--bind', '127.0.0.1',
            '--unixsocket', self.unix_socket,
            '--unixsocketperm', '700',
            '--dir', str(self.directory),
            '--save', '',
            '--appendonly', 'no',
            '--databases', '64',
            *self.extra_args,
        ]  # fmt: skip
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=self.start_new_session
        )
        self.wait_until_up(timeout_s)

    def wait_until_up(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f'redis-server exited with code {self.process.returncode}')
            try:
                with socket.create_connection(('127.0.0.1', self.port), timeout=0.5) as s:
                    s.sendall(b'PING\r\n')
                    if s.recv(64).startswith((b'+PONG', b'-NOAUTH')):
                        return
            except OSError:
                pass
            time.sleep(0.02)  # poll interval of a condition wait
        raise RuntimeError(f'redis-server did not answer on port {self.port} within {timeout_s}s')

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
