"""benchmarks/bench_first_mask.py at a small size, so that the benchmark never rots (its numbers are not checked)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--resolution", "16", "--size", "60", "80", "--images", "astronaut", "chelsea", "--clicks", "2"]


def _run(*args):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_first_mask.py"), *SMALL, *args],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def test_bench_first_mask_reports_each_preset_with_its_stages():
    report = _run()
    fast, exact = report["presets"]["fast"], report["presets"]["exact"]
    for preset in (fast, exact):
        assert preset["first_mask_s"] >= preset["first_click_s"] > 0
        assert preset["first_mask_s"] >= preset["set_attention_s"] > 0
        assert "operator" in preset["prepare_stages_s"] and "markov" in preset["first_click_stages_s"]
        assert len(preset["per_photo"]) == 2 and preset["later_click_median_s"] > 0
    # the fast preset's leap and table are built in the background, and the report says when they were ready
    assert fast["background"] and {"leap", "jbu_table"} <= set(fast["prepare_stages_s"])
    assert fast["preparation_finished_after_first_mask_s"] >= 0
    assert not exact["background"] and "leap" not in exact["prepare_stages_s"]


def test_bench_first_mask_compares_with_a_baseline_checkout_in_the_same_run():
    report = _run("--presets", "fast", "--baseline", str(ROOT), "--rounds", "1")
    row = report["comparison"]["fast"]
    assert row["baseline_first_mask_s"] > 0 and row["current_first_mask_s"] > 0
    assert row["speedup_first_mask_s"] == row["baseline_first_mask_s"] / row["current_first_mask_s"]
    assert "operator" in row["baseline_prepare_stages_s"]
    assert row["baseline_preparation_finished_after_first_mask_s"] >= 0  # both sides say when theirs ended
    assert row["current_preparation_finished_after_first_mask_s"] >= 0
    for name in ("baseline", "current"):  # both sides report their early clicks and their slowest click
        early = row[f"{name}_clicks_before_preparation_finished"]
        assert (early["count"] == 0) == (early["p50_s"] is None) == (early["max_s"] is None)
        assert row[f"{name}_later_click_max_s"] >= row[f"{name}_later_click_median_s"] > 0


def test_bench_first_mask_measures_the_apps_setting_with_two_threads_allowed():
    report = _run("--presets", "fast", "--click-threads", "2")
    fast = report["presets"]["fast"]
    assert report["click_threads"] == 2 and report["torch_threads"] >= 1
    assert fast["first_mask_s"] > 0 and fast["preparation_finished_after_first_mask_s"] >= 0
    assert _run("--presets", "fast")["click_threads"] is None  # torch's own threads by default
