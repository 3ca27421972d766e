"""Heavy work (a new image, new settings, the API) on threads of lower CPU priority.

A click should answer in about a second even while other users upload images or send long API
requests. The three queues keep those jobs from waiting in front of a click, but on a small CPU
host they still share its cores with it; run at a higher nice value, they get the cores only
when the clicks leave them (Linux schedules each thread by its own nice value).
"""

from __future__ import annotations

import contextvars
import os
import threading
from concurrent.futures import ThreadPoolExecutor

NICE = 10  # CFS gives a nice-0 thread about 10x the CPU time of a nice-10 one it competes with
_WORKERS = 4  # more than the image and API queues run at once, so none waits for a thread here

_pool: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def _lower_priority() -> None:
    try:  # on Linux the nice value is a per-thread attribute; elsewhere this does nothing
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)
    except (AttributeError, OSError):
        pass


def run_heavy(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` on a low-priority thread; waits for it and returns its result.

    Exceptions propagate as they are. The caller's context variables go along (Gradio's request
    context, which ZeroGPU reads).
    """
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(_WORKERS, thread_name_prefix="m2n2-heavy", initializer=_lower_priority)
    context = contextvars.copy_context()
    return _pool.submit(context.run, fn, *args, **kwargs).result()


def thread_nice() -> int:
    """The calling thread's nice value (tests), or 0 where it cannot be read."""
    try:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    except (AttributeError, OSError):
        return 0
