"""m2n2.threads.SharedRows: blocks of rows that an owner and waiting threads take in turn.

Each test forces who takes which block with events, not by sleeping.
"""

import threading

import pytest
import torch

from m2n2.numerics import denormals_flushed, flushing_denormals
from m2n2.threads import SharedRows


def _helping(shared: SharedRows) -> threading.Thread:
    thread = threading.Thread(target=shared.help, name="waiting-click")
    thread.start()
    return thread


def _each_takes_one_at_first(work, taken):
    """rows(first, stop) that records who took which block; the owner's and the helper's first
    blocks each wait until the other has one, so that both take blocks whoever starts first."""
    took = {"MainThread": threading.Event(), "waiting-click": threading.Event()}

    def rows(first, stop):
        name = threading.current_thread().name
        taken.append((name, first, stop))
        if not took[name].is_set():
            took[name].set()
            assert took["waiting-click" if name == "MainThread" else "MainThread"].wait(10)
        work(first, stop)

    return rows


def test_a_waiting_thread_takes_blocks_and_every_row_is_computed_once():
    shared = SharedRows()
    helper = _helping(shared)
    out = torch.zeros(10, dtype=torch.int64)
    taken = []
    rows = _each_takes_one_at_first(lambda first, stop: out[first:stop].add_(1), taken)

    shared.run(rows, 10, 3)
    shared.close()  # the owner's last work is done: the helper returns
    helper.join(10)
    assert not helper.is_alive()
    assert torch.equal(out, torch.ones(10, dtype=torch.int64))  # every row once
    assert sorted((first, stop) for _, first, stop in taken) == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert {name for name, *_ in taken} == {"MainThread", "waiting-click"}
    # The next work: the same helper would take blocks again; without one the owner does them all
    taken.clear()
    shared.run(lambda first, stop: taken.append(first), 4, 1)
    assert taken == [0, 1, 2, 3]


def test_a_helpers_failure_is_raised_by_the_owner_and_no_block_starts_after_it():
    shared, owner_started = SharedRows(), threading.Event()
    helper = _helping(shared)
    started = []

    def rows(first, stop):
        started.append(first)
        if threading.current_thread().name == "waiting-click":
            assert owner_started.wait(10)
            raise MemoryError("no room")
        owner_started.set()
        with shared._cond:  # the owner's first block ends once the helper's failure is recorded
            assert shared._cond.wait_for(lambda: shared._error is not None, 10)

    with pytest.raises(MemoryError, match="no room"):
        shared.run(rows, 100, 10)
    assert len(started) == 2  # the helper's failure stopped the work: 8 blocks never ran
    shared.close()  # no more work: the helper returns
    helper.join(10)
    assert not helper.is_alive()


def test_blocks_run_with_the_owners_subnormal_mode_on_every_thread():
    shared = SharedRows()
    modes = {}
    helper_mode_after = []

    def help_then_report():
        shared.help()
        helper_mode_after.append(flushing_denormals())

    helper = threading.Thread(target=help_then_report, name="waiting-click")
    helper.start()

    rows = _each_takes_one_at_first(
        lambda first, stop: modes.setdefault(threading.current_thread().name, set()).add(flushing_denormals()), [])

    with denormals_flushed(True):
        if not flushing_denormals():
            pytest.skip("this CPU cannot flush subnormals")
        shared.run(rows, 6, 2)
    shared.close()
    helper.join(10)
    assert modes == {"MainThread": {True}, "waiting-click": {True}}
    assert helper_mode_after == [False]  # the helper's own mode is back after its blocks
