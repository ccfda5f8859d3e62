"""sd_notify without a dependency: one datagram per state change to $NOTIFY_SOCKET (no-op when unset).

A socket is opened per message so that no descriptor is inherited by forked children.
"""

from __future__ import annotations

import logging
import os
import socket

logger = logging.getLogger('arq_supervise.notify')


def notify_socket_address() -> str | None:
    address = os.environ.get('NOTIFY_SOCKET')
    if not address:
        return None
    if address.startswith('@'):  # abstract namespace
        return '\0' + address[1:]
    return address


def sd_notify(*states: str) -> bool:
    """Send `STATE=value` lines (e.g. 'READY=1', 'STATUS=4/4 ready') to systemd; True if one was sent."""
    address = notify_socket_address()
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto('\n'.join(states).encode(), address)
    except OSError as e:
        logger.warning('sd_notify failed socket=%s error=%s', address, e)
        return False
    return True


def watchdog_interval_s() -> float | None:
    """Half the systemd watchdog timeout when WATCHDOG_USEC applies to this process, else None."""
    usec = os.environ.get('WATCHDOG_USEC')
    pid = os.environ.get('WATCHDOG_PID')
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2_000_000
    except ValueError:
        return None
