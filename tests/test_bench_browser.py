"""benchmarks/bench_browser.py's accounting of where the cores went during the clicks (the
browser run itself is tests/test_browser.py's ground: it needs Chromium)."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_browser  # noqa: E402

pytestmark = pytest.mark.skipif(not Path("/proc/stat").exists(), reason="CPU accounting reads Linux's /proc")


def test_cpu_per_click_counts_the_servers_cpu_and_chromiums_by_process_kind(tmp_path):
    # A stand-in for the server (its pid) and one for a Chromium renderer (a process named
    # "chromium" whose command line says --type=renderer), each burning CPU between two snapshots.
    fake = tmp_path / "chromium"
    fake.write_bytes(Path(sys.executable).read_bytes())
    fake.chmod(0o755)
    burn = "import time\nend = time.process_time() + 0.4\nwhile time.process_time() < end: pass\nimport sys; sys.stdin.read()"
    server = subprocess.Popen([sys.executable, "-c", burn], stdin=subprocess.PIPE)
    renderer = subprocess.Popen([str(fake), "-c", burn, "--type=renderer"], stdin=subprocess.PIPE)
    try:
        before = bench_browser.cpu_snapshot(server.pid)
        time.sleep(0.1)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and min(bench_browser._process_cpu_s(p.pid) for p in (server, renderer)) < 0.38:
            time.sleep(0.05)
        after = bench_browser.cpu_snapshot(server.pid)
    finally:
        for process in (server, renderer):
            process.communicate(b"", timeout=30)
    used = bench_browser.cpu_per_click(before, after, clicks=2)
    assert 0.1 <= used["server"] <= 0.25  # 0.4 s over two clicks, less what ran before the first snapshot
    assert 0.1 <= used["chromium renderer"] <= used["chromium"]
    assert used["steal"] >= 0
    assert bench_browser.cpu_per_click(before, None, 2) is None and bench_browser.cpu_per_click(before, after, 0) is None
    assert bench_browser._process_cpu_s(server.pid) == 0.0  # gone: nothing to count
