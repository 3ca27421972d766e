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
    assert len(report["click_s"]) == clicks and report["click_median_s"] > 0
    assert report["first_mask_s"] == pytest.approx(report["attention_s"] + report["prepare_s"] + report["click_s"][0])
    assert report["click_p95_s"] >= report["click_median_s"]
    stages = report["click_stages_median_s"]
    assert {"markov", "upsample", "flood_fill", "curves", "scores", "merge", "total"} <= set(stages)
    assert report["operator_mib"] == pytest.approx(8 ** 4 * 4 / 2 ** 20)  # the exact preset: fp32
    # The device path (torch stages, here on CPU tensors) and the numpy path give the same masks.
    assert report["agreement"]["clicks"] == 3
    assert report["agreement"]["pixels_equal"] == 1.0 and report["agreement"]["min_iou"] == 1.0
    assert list(tmp_path.iterdir()) == []  # the model folder was removed
