"""Which worker holds an in-progress job, named from its lease token and the records supervisors publish.

A lease token is `<worker id>:<claim number in hex>` (arq.contract.lease_token, read back by
arq.contract.parse_lease_token). An arq-supervise child's worker id is its supervisor's `worker_id_prefix` (in the
supervisor's record) followed by the child's pid (arq_supervise.release.child_worker_id). Any other worker id is a plain
`arq` worker's, or a child's whose supervisor no longer publishes (or published before records carried the prefix): the
page shows it as it is.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from arq.contract import parse_lease_token as parse_token

from .fleet import SupervisorView

__all__ = ('Holder', 'identify', 'parse_token')


@dataclass(frozen=True)
class Holder:
    worker_id: str
    claim: int | None  # the worker's claim number in the token; None when the token is not in arq's format
    host: str | None = None  # the rest is set only when a published supervisor names the worker as its child
    supervisor_pid: int | None = None
    child_pid: int | None = None
    #: the child's slot; None when the pid is no longer among the supervisor's children (it exited and its
    #: supervisor gives its jobs back)
    slot: int | None = None
    #: seconds since the supervisor's record was written, when it is stale
    supervisor_stale_s: float | None = None

    @property
    def is_supervised(self) -> bool:
        return self.supervisor_pid is not None

    @property
    def short(self) -> str:
        """One line for a table cell."""
        if not self.is_supervised:
            return f'{self.worker_id} (not a known supervisor’s child)'
        child = f'slot {self.slot}' if self.slot is not None else 'exited child'
        return f'{self.host} · supervisor {self.supervisor_pid} · {child} (pid {self.child_pid})'


def identify(token: str, supervisors: Iterable[SupervisorView]) -> Holder:
    """The holder of a lease: a published supervisor's child when one's prefix and pid match, else the bare id."""
    worker_id, claim = parse_token(token)
    for view in supervisors:
        prefix = (view.document or {}).get('worker_id_prefix')
        if not isinstance(prefix, str) or not prefix or not worker_id.startswith(prefix):
            continue
        pid = worker_id[len(prefix) :]
        if not pid.isdigit():
            continue
        child = next((c for c in view.children if c.get('pid') == int(pid)), None)
        slot = child.get('slot') if child is not None else None
        return Holder(
            worker_id, claim, host=view.host, supervisor_pid=view.pid, child_pid=int(pid),
            slot=slot if isinstance(slot, int) else None, supervisor_stale_s=view.age_s if view.stale else None,
        )  # fmt: skip
    return Holder(worker_id, claim)
