"""benchmarks/gpu_check.py on the CPU at a small R, so that the GPU script never rots."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("diffusers")


def test_gpu_check_runs_on_the_cpu_with_a_scaled_down_sd2(tmp_path):
    clicks = 4
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TMPDIR": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--scale", "tiny",
         "--resolution", "8", "--image-size", "64", "--clicks", str(clicks), "--agreement-clicks", "3",
         "--threads", "1"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    assert report["device"] == "cpu" and report["resolution"] == 8 and report["image"] == [64, 64]
    assert report["attention_device"] == "cpu" and set(report["presets"]) == {"exact", "fast"}
    for name, preset in report["presets"].items():
        assert len(preset["click_s"]) == clicks and preset["click_median_s"] > 0
        assert preset["first_mask_s"] == pytest.approx(report["attention_s"] + preset["prepare_s"] + preset["click_s"][0])
        assert preset["click_p95_s"] >= preset["click_median_s"]
        stages = preset["click_stages_median_s"]
        assert {"markov", "upsample", "flood_fill", "curves", "scores", "merge", "total"} <= set(stages)
        assert preset["image_transfer_bytes"] == 0  # the attention was made where the operator is
        # the app's clicks bring back one point's arrays; every point's grow with the clicks
        app, every = preset["click_host_bytes"]["app (keep='last')"], preset["click_host_bytes"]["all points (keep='all')"]
        assert len(set(app)) == 1 and every == sorted(every) and every[-1] > every[0] > app[0] > 0
        assert preset["masks_same_with_keep_last_and_all"]
        assert all(0 < s <= 120 for s in preset["duration_requested_s"].values())
        # The device path (torch stages, here on CPU tensors) and the numpy path give the same masks.
        assert preset["agreement"]["clicks"] == 3 and preset["agreement"]["resolution"] == 8
        assert preset["agreement"]["pixels_equal"] == 1.0 and preset["agreement"]["min_iou"] == 1.0
    assert report["presets"]["exact"]["operator_mib"] == pytest.approx(8 ** 4 * 4 / 2 ** 20)  # fp32
    assert list(tmp_path.iterdir()) == []  # the model folder was removed
