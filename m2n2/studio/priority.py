"""Heavy work (a new image, new settings, the API) yields to clicks.

A click should answer in about a second even while other users upload images or send long API
requests. The three queues keep those jobs from waiting in front of a click, but on a small CPU
host they still share its cores and memory bandwidth with it. So heavy work runs on threads
of a higher nice value (Linux schedules each thread by its own), and waits at the library's
pause points (:mod:`m2n2.pausing`) while a click is being computed, though never for longer in
total than it has worked, so that it still finishes.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from ..pausing import set_pause_hook

NICE = 10  # CFS gives a nice-0 thread about 10x the CPU time of a nice-10 one it competes with
GRACE_S = 2.0  # a job may always wait this long for clicks (about one click's time on a CPU)
_WORKERS = 4  # more than the image and API queues run at once, so none waits for a thread here

_pool: ThreadPoolExecutor | None = None
_lock = threading.Lock()
_clicks = 0  # clicks being computed now
_changed = threading.Condition()
_job = threading.local()  # this heavy thread's job: when it started and how long it has waited


@contextlib.contextmanager
def click_running():
    """Mark a click's computation: heavy work waits at its pause points meanwhile."""
    global _clicks
    with _changed:
        _clicks += 1
    try:
        yield
    finally:
        with _changed:
            _clicks -= 1
            _changed.notify_all()


def wait_for_clicks() -> None:
    """The heavy threads' pause hook: wait while clicks run; a job's waits add up to at most
    :data:`GRACE_S` more than it has worked, so it is never more than about twice as slow."""
    start, waited = getattr(_job, "start", None), getattr(_job, "waited", 0.0)
    if start is None or not _clicks:
        return
    allowed = (time.monotonic() - start - waited) + GRACE_S - waited
    if allowed <= 0:
        return
    began = time.monotonic()
    with _changed:
        while _clicks and time.monotonic() - began < allowed:
            _changed.wait(allowed - (time.monotonic() - began))
    _job.waited = waited + time.monotonic() - began


def _heavy_thread() -> None:
    try:  # on Linux the nice value is a per-thread attribute; elsewhere this does nothing
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)
    except (AttributeError, OSError):
        pass
    set_pause_hook(wait_for_clicks)


def _as_job(fn, *args, **kwargs):
    _job.start, _job.waited = time.monotonic(), 0.0
    try:
        return fn(*args, **kwargs)
    finally:
        _job.start = None


def run_heavy(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` on a low-priority thread that yields to clicks; returns its result.

    Exceptions propagate as they are. The caller's context variables go along (Gradio's request
    context, which ZeroGPU reads).
    """
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(_WORKERS, thread_name_prefix="m2n2-heavy", initializer=_heavy_thread)
    context = contextvars.copy_context()
    return _pool.submit(context.run, _as_job, fn, *args, **kwargs).result()


def thread_nice() -> int:
    """The calling thread's nice value (tests), or 0 where it cannot be read."""
    try:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    except (AttributeError, OSError):
        return 0
