"""A child's claims and settles, netted per flush window: the parent ends up with the held set the child has."""

from __future__ import annotations

from arq_supervise.holdings import HeldChanges


def apply(held: set[str], changes: HeldChanges) -> set[str]:
    """What the parent does with the window's two messages (in either order: their ids are disjoint)."""
    claimed, settled = changes.take()
    assert not set(claimed) & set(settled)
    return (held | set(claimed)) - set(settled)


def test_only_each_jobs_last_change_in_a_window_reaches_the_parent() -> None:
    changes = HeldChanges()
    changes.claimed(['a', 'b', 'c'])
    changes.settled(['a'])  # claimed and settled in the same window: the parent need not hear of it
    changes.settled(['old'])  # claimed in an earlier window
    changes.claimed(['a'])  # claimed back (a retry at once): held again
    assert changes.settled_any
    assert apply({'old'}, changes) == {'a', 'b', 'c'}
    assert not changes.settled_any and changes.take() == ((), ())


def test_a_window_of_settles_alone_still_reports_them() -> None:
    changes = HeldChanges()
    changes.settled(['a', 'b'])
    assert changes.take() == ((), ('a', 'b'))
