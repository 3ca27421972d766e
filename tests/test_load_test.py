"""benchmarks/load_test.py at a tiny scale against the real app, so that the load test never rots
(it drives the app's private events by name and reads the status line among their outputs)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_load_test_uploads_clicks_and_reports(tmp_path):
    env = {**os.environ, "TMPDIR": str(tmp_path), "GRADIO_ANALYTICS_ENABLED": "False"}
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "load_test.py"), "--users", "2", "--clicks", "2",
         "--think", "0", "0", "--resolution", "32", "--height", "96", "--width", "128", "--sessions", "2", "--example-choices", "5",
         "--time-limit", "240", "--log", str(tmp_path / "server.log")],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["all_clicks"]["count"] == 4 and report["all_clicks"]["errors"] == 0
    assert all(user["upload_s"] is not None and user["clicks"] == 2 for user in report["users"])
    assert report["peak_rss_mib"] >= report["rss_ready_mib"] > 0
    assert report["server_tracebacks"] == 0
    assert report["first_mask"]["count"] == 2 and report["first_mask"]["p95_s"] >= report["first_mask"]["p50_s"] > 0
    examples = report["examples"]
    assert examples["choices"] == 5 and examples["errors"] == []     # the fifth chooses the first one again
    assert "prepared 4 of 4" in report["examples_prepared_at_start"]  # the start-up cost is reported


def test_a_users_error_names_the_request_that_failed(tmp_path):
    """A user who cannot even connect is reported as such (not as an anonymous timeout)."""
    import time

    import numpy as np
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import load_test
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    result = load_test.UserResult("nobody")
    url = f"http://127.0.0.1:{load_test.free_port()}/"  # nothing listens there
    load_test.run_user(url, "nobody", str(tmp_path / "none.png"), np.ones((4, 4), bool), 1, (0, 0), 0,
                       time.monotonic() + 30, result)
    assert len(result.errors) == 1 and result.errors[0].startswith("connecting: ")
    assert result.upload_s is None and result.clicks == []
