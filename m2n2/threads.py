"""A computation's second thread: how many threads it may use, and the helper that takes half.

Some of a click's heaviest work runs on one thread whatever torch's thread count: FBGEMM's fp16
product (the fast preset's Markov step) and the compiled per-pixel kernels (the dense upsampling
filter, the table's upsampling). One thread streams memory at about half of what two cores reach
together, so where two threads are allowed (:func:`using_threads`; else torch's thread count
decides) such work gives a half to a helper thread (:func:`beside`), does the other half itself,
and takes the helper's half back if it has not started by then (:func:`joined`). Each half is
computed exactly as it would be alone, so the results are the same bits on one thread or two.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from .numerics import denormals_flushed, flushing_denormals

_threads: contextvars.ContextVar[int | None] = contextvars.ContextVar("m2n2_threads", default=None)
_group: contextvars.ContextVar[str | None] = contextvars.ContextVar("m2n2_helper_group", default=None)


def allowed_threads() -> int:
    """Threads the work here may use: :func:`using_threads`'s, else torch's thread count."""
    threads = _threads.get()
    return torch.get_num_threads() if threads is None else threads


@contextlib.contextmanager
def using_threads(threads: int, group: str | None = None):
    """Let the work in this block use ``threads`` threads (1 or 2 are used), whatever torch's
    thread count: a server whose jobs run on one thread each can give a click two.

    ``group`` names work that runs beside other work of the same thread priority (an image's
    background preparation beside its first click): it gets a helper of its own, so that it never
    holds the helper the other work's halves need.
    """
    tokens = _threads.set(max(1, int(threads))), _group.set(group)
    try:
        yield
    finally:
        _group.reset(tokens[1])
        _threads.reset(tokens[0])


def beside(fn, *args) -> Future | None:
    """``fn(*args)`` on this thread's helper, when two threads are allowed here and the helper is
    free; else None, and the caller does that part itself."""
    return _helper().try_submit(fn, *args) if allowed_threads() >= 2 else None


def joined(pending: Future | None, fn, *args):
    """The result of ``fn(*args)`` handed to :func:`beside` as ``pending``: the helper's, or, where
    it has not started it yet (None, or its thread still waiting for a core), computed here.

    On a busy host the helper's thread can wait for a core longer than its half takes; taking the
    half back then costs at most the one-thread time, never more. The same bits either way.
    """
    if pending is None or pending.cancel():
        return fn(*args)
    return pending.result()


def split_rows(rows, middle: int, height: int) -> None:
    """``rows(first, stop)`` over output rows ``0`` to ``height``: the helper takes ``middle`` to
    ``height`` where two threads are allowed and it is free (:func:`beside`), else the caller does
    all of them in one call. Each output row is its own, so the result is the same bits either way."""
    lower = beside(rows, middle, height)
    try:
        rows(0, middle if lower is not None else height)
    except BaseException:
        abandoned(lower)
        raise
    if lower is not None:
        joined(lower, rows, middle, height)


def abandoned(pending: Future | None) -> None:
    """Stop waiting for ``pending`` (the caller failed): cancel it, or wait until it ends."""
    if pending is not None and not pending.cancel():
        pending.exception()


class SharedRows:
    """Work over output rows, in blocks that several threads take in turn: the owner runs it
    (:meth:`run`, with its helper where two threads are allowed), and a thread that would
    otherwise only wait for the result takes blocks too (:meth:`help`): a click waiting for its
    image's leap computes part of it instead of idling.

    Each block is computed as it would be alone, so the result is the same bits whoever computes
    which block. A block runs with the owner's subnormal mode (:mod:`m2n2.numerics`), on any thread.
    """

    def __init__(self):
        self._cond = threading.Condition()
        self._rows = None  # rows(first, stop) of the work in progress, or None between works
        self._height = self._block = self._next = self._done = self._active = 0
        self._flush = False
        self._error: BaseException | None = None
        self._closed = False

    def run(self, rows, height: int, block: int) -> None:
        """``rows(first, stop)`` over output rows ``0`` to ``height`` in blocks of ``block``
        (the last one shorter); returns when every block is done, raising what a block raised."""
        with self._cond:
            self._rows, self._height, self._block = rows, height, block
            self._next = self._done = 0
            self._error = None
            self._flush = flushing_denormals()
            self._cond.notify_all()
        pending = beside(self._take)
        self._take()
        if pending is not None and not pending.cancel():
            pending.result()
        with self._cond:
            while self._active or (self._done < self._height and self._error is None):
                self._cond.wait()
            error, self._rows = self._error, None
        if error is not None:
            raise error

    def help(self) -> None:
        """Take blocks of the works in progress until :meth:`close` is called (a block's error is
        left to the owner)."""
        while True:
            with self._cond:
                while not self._closed and (self._rows is None or self._next >= self._height):
                    self._cond.wait()  # a new work or close() wakes this
                if self._closed:
                    return
            self._take()

    def close(self) -> None:
        """No more work: the threads in :meth:`help` return."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _take(self) -> None:
        while True:
            with self._cond:
                if self._rows is None or self._next >= self._height:
                    return
                rows, first, flush = self._rows, self._next, self._flush
                stop = self._next = min(first + self._block, self._height)
                self._active += 1
            failed = None
            try:
                with denormals_flushed(flush):
                    rows(first, stop)
            except BaseException as error:  # the owner raises it
                failed = error
            with self._cond:
                self._active -= 1
                if failed is None:
                    self._done += stop - first
                elif self._error is None:
                    self._error, self._next = failed, self._height  # no more blocks
                self._cond.notify_all()


class _Helper:
    """One thread that takes the second half of a computation; refuses work while it has some."""

    def __init__(self, nice: int, group: str | None = None):
        self._free = threading.Lock()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"m2n2-helper-nice{nice}" + (f"-{group}" if group else ""))

    def try_submit(self, fn, *args) -> Future | None:
        """``fn(*args)`` on the helper thread, or None when it is busy with another caller's."""
        if not self._free.acquire(blocking=False):
            return None

        def run():
            try:
                return fn(*args)
            finally:  # before the result is set, so that the caller's next half finds it free
                self._free.release()

        try:
            future = self._pool.submit(run)
        except BaseException:
            self._free.release()
            raise
        # Cancelled before it ran (joined() took it back), ``run`` never frees the helper: this does.
        future.add_done_callback(lambda done: self._free.release() if done.cancelled() else None)
        return future


# One helper per nice value of the threads that use them (and per group, see using_threads): a
# new thread inherits its creator's nice value on Linux, so a click's half never runs at a
# background job's lower priority.
_helpers: dict[tuple[int, str | None], _Helper] = {}
_helpers_lock = threading.Lock()


def _helper() -> _Helper:
    try:
        nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    except (AttributeError, OSError):
        nice = 0
    key = (nice, _group.get())
    with _helpers_lock:
        if key not in _helpers:
            _helpers[key] = _Helper(*key)
        return _helpers[key]


def _forget_helpers() -> None:
    global _helpers_lock
    _helpers.clear()  # a forked child has none of the parent's threads
    _helpers_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_helpers)
