"""Metrics: per-function job statistics survive the pipe, sum across children, and render as Prometheus text."""

from __future__ import annotations

import select
import socket
import threading

from prometheus_client.parser import text_string_to_metric_families

from arq_supervise.metrics import DURATION_BUCKETS, LAG_BUCKETS, FleetView, JobStats, MetricsServer, render


def _stats() -> JobStats:
    stats = JobStats()
    stats.record('add', 'complete', 0.003, 2)
    stats.record('add', 'complete', 0.2, 40)
    stats.record('add', 'failed', 1.5, 1)
    stats.record('send', 'retried', 0.01, 0)
    return stats


def _samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_job_stats_round_trip_through_the_wire_format() -> None:
    stats = _stats()
    again = JobStats.from_wire(stats.to_wire())
    assert again == stats


def test_malformed_stats_from_a_child_are_dropped_not_trusted() -> None:
    assert JobStats.from_wire('garbage') == JobStats()
    assert JobStats.from_wire({'durations': {'f': [1, 2]}, 'lag': 'x'}).durations['f'].total == 0


def test_stats_of_several_children_add_up() -> None:
    total = JobStats()
    total.add(_stats())
    total.add(_stats())
    assert total.outcomes['add'] == {'complete': 4, 'failed': 2}
    assert sum(total.durations['add'].counts) == 6
    assert sum(total.lag.counts) == 8


def test_render_gives_prometheus_text_with_every_family() -> None:
    view = FleetView(_stats(), 7, {'ready': 2, 'booting': 1}, {'crash': 3}, {1: 40.0, 2: 41.5})
    samples = _samples(render(lambda: view))
    assert samples[('arq_jobs_total', (('function', 'add'), ('outcome', 'complete')))] == 2
    assert samples[('arq_jobs_total', (('function', 'add'), ('outcome', 'aborted')))] == 0
    assert samples[('arq_jobs_total', (('function', 'send'), ('outcome', 'retried')))] == 1
    assert samples[('arq_job_duration_seconds_count', (('function', 'add'),))] == 3
    assert samples[('arq_job_duration_seconds_bucket', (('function', 'add'), ('le', '0.005')))] == 1
    assert samples[('arq_queue_lag_seconds_count', ())] == 4
    assert samples[('arq_queue_depth', ())] == 7
    assert samples[('arq_supervisor_children', (('state', 'ready'),))] == 2
    assert samples[('arq_supervisor_restarts_total', (('cause', 'crash'),))] == 3
    assert samples[('arq_supervisor_child_memory_bytes', (('slot', '2'),))] == 41.5 * 1024 * 1024


def _serve_one(server: MetricsServer, stop: threading.Event) -> None:
    while not stop.is_set():
        readable, _, _ = select.select(server.filenos(), [], [], 0.05)
        server.handle(readable)


def _get(port: int, path: str) -> tuple[str, bytes]:
    with socket.create_connection(('127.0.0.1', port), timeout=5) as s:
        s.sendall(f'GET {path} HTTP/1.1\r\nHost: x\r\n\r\n'.encode())
        data = b''
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b'\r\n\r\n')
    return head.split(b'\r\n')[0].decode(), body


def test_server_answers_metrics_livez_readyz_and_404() -> None:
    view = FleetView(_stats(), None, {}, {}, {})
    ready = {'value': False}
    server = MetricsServer(0, lambda: render(lambda: view), lambda: True, lambda: ready['value'], host='127.0.0.1')
    stop = threading.Event()
    thread = threading.Thread(target=_serve_one, args=(server, stop))
    thread.start()
    try:
        status, body = _get(server.port, '/metrics')
        assert status == 'HTTP/1.0 200 OK'
        assert b'arq_jobs_total{function="add",outcome="complete"} 2.0' in body
        assert _get(server.port, '/livez')[0] == 'HTTP/1.0 200 OK'
        assert _get(server.port, '/readyz')[0] == 'HTTP/1.0 503 Service Unavailable'
        ready['value'] = True
        assert _get(server.port, '/readyz')[0] == 'HTTP/1.0 200 OK'
        assert _get(server.port, '/nope')[0] == 'HTTP/1.0 404 Not Found'
    finally:
        stop.set()
        thread.join()
        server.close()


def test_record_many_counts_each_job_once_in_its_buckets() -> None:
    finished = [
        ('a', 'complete', 0.002, 3),
        ('b', 'failed', 0.0, -5),
        ('a', 'complete', 7.0, 90_000),
        ('a', 'retried', -1.0, 0),
    ]
    stats = JobStats()
    stats.record_many(finished)
    assert stats.outcomes == {'a': {'complete': 2, 'retried': 1}, 'b': {'failed': 1}}
    a = stats.durations['a']
    assert sum(a.counts) == 3 and a.total == 7.002
    assert a.counts[DURATION_BUCKETS.index(0.005)] == 1 and a.counts[DURATION_BUCKETS.index(10.0)] == 1
    assert a.counts[0] == 1  # a negative duration counts as zero
    assert sum(stats.lag.counts) == 4 and stats.lag.total == 90.003
    assert stats.lag.counts[LAG_BUCKETS.index(300.0)] == 1
