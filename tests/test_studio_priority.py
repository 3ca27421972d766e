import contextvars
import sys

import pytest

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


def test_heavy_work_waits_at_pause_points_while_a_click_runs_but_not_forever():
    import threading
    import time

    from m2n2.pausing import pause_point
    from m2n2.studio.priority import click_running

    def job(seconds_of_work):
        reached = []
        end = time.monotonic() + seconds_of_work
        while time.monotonic() < end:
            time.sleep(0.01)
            pause_point()
            reached.append(time.monotonic())
        return reached

    assert run_heavy(job, 0.05)                      # no click: no waiting
    started, finished = threading.Event(), []

    def click():
        with click_running():
            started.set()
            time.sleep(0.4)
        finished.append(time.monotonic())

    thread = threading.Thread(target=click)
    thread.start()
    started.wait()
    begin = time.monotonic()
    reached = run_heavy(job, 1.0)
    thread.join()
    # It waited for the click at its first pause point (the click took 0.4 s) ...
    assert reached[0] >= finished[0] - 0.02 and reached[0] - begin >= 0.3
    # ... but not forever: its waits add up to at most its work plus GRACE_S.
    pause_point()                                       # the caller's own thread has no hook: no-op
    with click_running():                               # a click that never ends
        start = time.monotonic()
        run_heavy(job, 0.1)
        took = time.monotonic() - start
    assert GRACE_S <= took <= 0.1 + 0.1 + GRACE_S + 0.5
