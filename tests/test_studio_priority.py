"""Heavy work yields to clicks: lower priority, the caller's context, waits at pause points (bounded).

No sleeps and no wall-clock bounds: threads are ordered by events, and the bound on waiting is
checked against a fake clock.
"""

import contextvars
import sys
import threading

import pytest

from m2n2.pausing import pause_point
from m2n2.studio import priority
from m2n2.studio.priority import GRACE_S, NICE, run_heavy, thread_nice

WHO = contextvars.ContextVar("who", default=None)


def test_heavy_work_runs_at_a_lower_priority_and_returns_its_result():
    if not sys.platform.startswith("linux"):
        pytest.skip("per-thread nice values are a Linux feature")
    here = thread_nice()
    assert run_heavy(thread_nice) == here + NICE or run_heavy(thread_nice) == 19  # nice tops out at 19
    assert thread_nice() == here                        # the caller's own priority is untouched


def test_heavy_work_sees_the_callers_context_and_raises_its_errors():
    WHO.set("tab-1")
    assert run_heavy(WHO.get) == "tab-1"
    with pytest.raises(ValueError, match="boom"):
        run_heavy(lambda: (_ for _ in ()).throw(ValueError("boom")))


class _Clock:
    """A stand-in for priority's ``time``: ``monotonic()`` moves only when a test moves it."""

    def __init__(self):
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


class _TimedCondition:
    """A condition whose ``wait(timeout)`` takes exactly ``timeout`` seconds of the fake clock (a click
    that never ends); the waits are recorded."""

    def __init__(self, clock):
        self.clock, self.lock, self.waits = clock, threading.RLock(), []

    def __enter__(self):
        return self.lock.__enter__()

    def __exit__(self, *exc):
        return self.lock.__exit__(*exc)

    def wait(self, timeout):
        self.waits.append(timeout)
        self.clock.now += timeout

    def notify_all(self):
        pass


def test_heavy_work_waits_at_pause_points_for_a_click_and_resumes_when_it_ends(monkeypatch):
    """Real threads, ordered by events (no sleeps): the job waits at its pause point until the click ends."""
    monkeypatch.setattr(priority, "GRACE_S", 3600.0)              # the bound is tested on its own below
    waiting = threading.Event()

    class Watched(threading.Condition):
        def wait(self, timeout=None):
            waiting.set()                                       # the job is held at its pause point
            return super().wait(timeout)

    monkeypatch.setattr(priority, "_changed", Watched())
    order, at_pause = [], threading.Event()

    def job():
        at_pause.set()
        pause_point()
        order.append("job passed its pause point")

    def click():
        with priority.click_running():
            started.set()
            # Set by the job's wait. A job that did not wait would pass first (the time-out only ends
            # such a failing run; it is no bound on anything measured).
            waiting.wait(timeout=60)
            order.append("click ended")

    started = threading.Event()
    clicker = threading.Thread(target=click, daemon=True)
    clicker.start()
    started.wait()
    run_heavy(job)
    clicker.join()
    assert order == ["click ended", "job passed its pause point"]
    assert run_heavy(lambda: (pause_point(), "no click: no wait")[1]) == "no click: no wait"


def test_heavy_work_waits_no_longer_in_total_than_it_worked_plus_the_grace(monkeypatch):
    clock = _Clock()
    condition = _TimedCondition(clock)
    monkeypatch.setattr(priority, "time", clock)
    monkeypatch.setattr(priority, "_changed", condition)
    worked = 0.25

    def job():
        clock.now += worked                                     # the job's own work before its pause point
        before = clock.now
        pause_point()
        first = clock.now - before
        pause_point()                                           # its waits are used up: no more
        return first, clock.now - before - first

    pause_point()                                               # the caller's own thread has no hook: no-op
    assert condition.waits == []
    with priority.click_running():                              # a click that never ends
        first, second = run_heavy(job)
    assert first == pytest.approx(worked + GRACE_S) and second == 0.0
    assert sum(condition.waits) == pytest.approx(worked + GRACE_S)
    clock.now += 10.0
    assert run_heavy(lambda: (pause_point(), clock.now)[1]) == clock.now   # no click running: no wait
