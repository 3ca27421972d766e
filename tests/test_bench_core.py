"""benchmarks/bench_core.py at a small size, so that the benchmark never rots (its numbers are not checked)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("preset", ["exact", "fast"])
def test_bench_core_runs_and_counts_the_markov_products(preset):
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_core.py"), "--preset", preset, "--resolutions", "16",
         "--size", "60", "80", "--repeats", "1", "--sigma-color", "5", "--sigma-position", "0.2"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    (report,) = json.loads(out.stdout)["results"]
    assert report["resolution"] == 16 and report["image"] == [60, 80]
    assert report["click_s"] > 0 and report["per_pixel_s"] > 0
    floor = report["markov_floor"]
    assert floor["steps"] >= 1 and floor["read_gb_s"] > 0
    if preset == "fast":  # leaps: fewer products than steps once past the single steps
        assert floor["chain_steps"] > 48 and floor["steps"] < floor["chain_steps"]
        assert "leap" in report["prepare_stages_s"]
    else:
        assert floor["steps"] == floor["chain_steps"]


def test_a_baseline_gets_the_preset_as_every_commits_copy_reads_it():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import bench_core
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    rest = ["--repeats", "1", "--resolutions", "16"]
    for given, preset in ((["--preset", "fast"], "fast"), (["--fast"], "fast"), (["--preset=fast"], "fast"),
                          (["--preset", "exact"], "exact"), (["--faithful"], "exact"), ([], "exact")):
        expected = rest + (["--preset", "fast"] if preset == "fast" else [])
        assert bench_core.portable_argv(given + rest, preset) == expected
        assert bench_core.portable_argv(rest[:2] + given + rest[2:], preset) == expected
