"""Pause points: where long per-image work may wait for more urgent work on the same machine.

The library calls :func:`pause_point` inside its long loops (the operator's balancing, the
upsampling table, the Markov chain). It does nothing unless the calling thread has installed a
hook with :func:`set_pause_hook`: a server can let the threads preparing images wait there
while a click is being answered, so that the click has the cores and the memory bandwidth.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

_local = threading.local()


def set_pause_hook(hook: Callable[[], None] | None) -> None:
    """Install ``hook`` (called at every pause point) for the calling thread; None removes it."""
    _local.hook = hook


def current_pause_hook() -> Callable[[], None] | None:
    """The calling thread's hook (so that work it hands to another thread can keep it)."""
    return getattr(_local, "hook", None)


def pause_point() -> None:
    """Let the calling thread's hook wait, if it has one (else return at once)."""
    hook = getattr(_local, "hook", None)
    if hook is not None:
        hook()
