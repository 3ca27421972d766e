"""Smoke evaluation on a few real GrabCut images from ../shared (CI has it beside the clone)."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from m2n2.evaluate.__main__ import main

GRABCUT = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "GrabCut"


@pytest.mark.skipif(not GRABCUT.is_dir() and not os.environ.get("CI"),
                    reason=f"GrabCut benchmark not found at {GRABCUT} (it lies beside the checkout in CI)")
def test_grabcut_smoke_evaluation(tmp_path, capsys):
    assert GRABCUT.is_dir(), f"CI must have the GrabCut benchmark at {GRABCUT}"
    out = tmp_path / "eval"
    main([str(GRABCUT), "--backbone", "color", "--resolution", "32", "--preset", "fast", "--limit", "2",
          "--max-clicks", "3", "--method", "m2n2", "--method", "grabcut", "--out", str(out), "--no-progress"])
    table = capsys.readouterr().out
    assert "m2n2" in table and "grabcut" in table
    results = json.loads((out / "results.json").read_text())
    assert (out / "miou.png").stat().st_size > 0
    assert results["failures"] == []
    for method in ("m2n2", "grabcut"):
        summary = results["summary"][method]
        per_object = results["instances"][method]
        assert summary["instances"] == 2 and len(per_object) == 2
        # The summary restates the per-object records: NoC@90 is the first click reaching 0.9
        # (3 when none does), mIoU the mean over objects after each click.
        noc = [next((k for k, v in enumerate(r["ious"], start=1) if v >= 0.9), 3) for r in per_object.values()]
        assert summary["noc"]["0.90"] == pytest.approx(np.mean(noc))
        assert summary["miou"] == pytest.approx(np.mean([r["ious"] for r in per_object.values()], axis=0).tolist())
        for name, record in per_object.items():
            # The simulated user's first click is positive, on the object (not GrabCut's band).
            x, y, label = record["clicks"][0]
            with Image.open(GRABCUT / "masks" / f"{name}.png") as mask:
                assert label == 1 and np.asarray(mask.convert("L"))[y, x] == 255, (method, name, x, y)
        assert summary["miou"][0] > 0.2  # one click inside the object finds part of it
