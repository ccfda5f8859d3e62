from __future__ import annotations

import pytest

from arq_supervise import protocol
from arq_supervise.health import Counters
from arq_supervise.metrics import JobStats
from arq_supervise.protocol import BootError, Claimed, Drain, Heartbeat, ProtocolError, Ready, Settled, Stop


def _round_trip(message: protocol.Message) -> protocol.Message:
    line = protocol.encode(message)
    assert line.endswith(b'\n') and line.count(b'\n') == 1
    return protocol.decode(line.strip())


@pytest.mark.parametrize(
    'message',
    [
        Ready(),
        Claimed(('a', 'b')),
        Settled(('a',), Counters(3, 1, 2, 0)),
        Heartbeat(Counters(1, 0, 0, 2), ('x', 'y'), 'ConnectionError: down'),
        Heartbeat(Counters()),
        BootError('RuntimeError: no redis'),
        Drain(2.5),
        Drain(),
        Stop(),
    ],
)
def test_every_message_round_trips(message: protocol.Message) -> None:
    assert _round_trip(message) == message


def test_heartbeat_carries_the_job_statistics() -> None:
    stats = JobStats()
    stats.record('resize', 'complete', 0.02, 5)
    decoded = _round_trip(Heartbeat(Counters(complete=1), stats=stats))
    assert isinstance(decoded, Heartbeat) and decoded.stats is not None
    assert decoded.stats.outcomes == {'resize': {'complete': 1}}


@pytest.mark.parametrize(
    ('line', 'why'),
    [
        (b'{nope', 'not JSON'),
        (b'[1]', 'not an object'),
        (b'{"type": "gossip"}', 'unknown message type'),
        (b'{}', 'unknown message type'),
        (b'{"type": "claimed", "ids": "abc"}', 'malformed claimed'),
        (b'{"type": "claimed", "ids": [1]}', 'malformed claimed'),
        (b'{"type": "settled", "ids": [], "complete": "many"}', 'malformed settled'),
        (b'{"type": "heartbeat", "complete": true}', 'malformed heartbeat'),
        (b'{"type": "heartbeat", "stats": {"outcomes": {"f": {"complete": "x"}}}}', 'malformed heartbeat'),
        (b'{"type": "drain", "wait_s": -1}', 'malformed drain'),
    ],
)
def test_garbage_raises_protocol_error_with_the_reason(line: bytes, why: str) -> None:
    with pytest.raises(ProtocolError, match=why):
        protocol.decode(line)


def test_missing_counters_read_as_zero() -> None:
    assert protocol.decode(b'{"type": "heartbeat"}') == Heartbeat(Counters())


def test_the_parent_logs_and_skips_what_it_cannot_read(caplog: pytest.LogCaptureFixture) -> None:
    import socket

    from arq_supervise.process import SocketChannel

    parent, child = socket.socketpair()
    parent.setblocking(False)
    channel = SocketChannel(4242, parent)
    child.sendall(b'{nope\n{"type": "gossip"}\n' + protocol.encode(Ready()) + b'{"type": "stop"}\n' + b'{"type": "cl')
    assert channel.receive() == [Ready()]
    child.sendall(b'aimed", "ids": ["a"]}\n')
    child.close()
    assert channel.receive() == [Claimed(('a',))]
    assert channel.eof
    warnings = [r.getMessage() for r in caplog.records]
    assert any('not JSON' in w for w in warnings) and any("unknown message type 'gossip'" in w for w in warnings)
    assert any('ignored a command sent by a child' in w for w in warnings)
    channel.close()
