import contextvars
import sys

import pytest

from m2n2.studio.priority import NICE, run_heavy, thread_nice

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
