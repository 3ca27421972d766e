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


def test_analyse_times_each_clicks_mask_status_and_plots_from_the_pages_log():
    # Two clicks; the first's plots come after its mask (the event after the click), the second's
    # with its status; the second's picture loads after its status line.
    log = [{"t": 1000.0, "kind": "click"}, {"t": 1001.0, "kind": "marker"},
           {"t": 1400.0, "kind": "src", "src": "a"}, {"t": 1410.0, "kind": "status", "text": "1 click, click 0.30 s"},
           {"t": 1420.0, "kind": "load", "src": "a"}, {"t": 1480.0, "kind": "plots"},
           {"t": 3000.0, "kind": "click"}, {"t": 3300.0, "kind": "plots"},
           {"t": 3300.0, "kind": "status", "text": "2 clicks (+1 waiting)"},
           {"t": 3350.0, "kind": "src", "src": "b"}, {"t": 3360.0, "kind": "status", "text": "2 clicks, click 0.25 s"},
           {"t": 3390.0, "kind": "load", "src": "b"}]
    first, second = bench_browser.analyse(log, 2)
    assert first == {"click": 1, "marker_s": 0.001, "plots_s": 0.48, "status_s": 0.41, "server_s": 0.30,
                     "mask_s": 0.42}
    # its result's status line still counts it as waiting until the page takes its marker away (the
    # click's follow-up): the count shown says the result is there
    assert second["plots_s"] == 0.3 and second["status_s"] == 0.3 and second["mask_s"] == 0.39
    summary = bench_browser.summarise([first, second])
    assert summary["plots_s"]["p50"] == 0.39 and summary["missing"] == 0


def test_analyse_takes_a_result_that_comes_while_later_clicks_wait_as_its_own():
    # The first click (an image's first map) takes 1.5 s; the second is made meanwhile and waits.
    # The first's result shows "1 click (+1 waiting)": that is its mask, not the second's.
    log = [{"t": 1000.0, "kind": "click"}, {"t": 1000.0, "kind": "status", "text": "0 clicks (+1 waiting)"},
           {"t": 2000.0, "kind": "click"}, {"t": 2000.0, "kind": "status", "text": "0 clicks (+2 waiting)"},
           {"t": 2500.0, "kind": "src", "src": "a"},
           {"t": 2510.0, "kind": "status", "text": "1 click (+1 waiting) · click 1.45 s"},
           {"t": 2540.0, "kind": "load", "src": "a"},
           {"t": 2900.0, "kind": "src", "src": "b"}, {"t": 2905.0, "kind": "status", "text": "2 clicks · click 0.38 s"},
           {"t": 2930.0, "kind": "load", "src": "b"}]
    first, second = bench_browser.analyse(log, 2)
    assert (first["status_s"], first["server_s"], first["mask_s"]) == (1.51, 1.45, 1.54)
    assert (second["status_s"], second["server_s"], second["mask_s"]) == (0.905, 0.38, 0.93)
