"""Smoke evaluation on a few real GrabCut images from ../shared (CI has it beside the clone)."""

import json
import os
from pathlib import Path

import pytest

from m2n2.evaluate.__main__ import main

GRABCUT = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "GrabCut"


@pytest.mark.skipif(not GRABCUT.is_dir() and not os.environ.get("CI"),
                    reason=f"GrabCut benchmark not found at {GRABCUT} (it lies beside the checkout in CI)")
def test_grabcut_smoke_evaluation(tmp_path, capsys):
    assert GRABCUT.is_dir(), f"CI must have the GrabCut benchmark at {GRABCUT}"
    out = tmp_path / "eval"
    main([str(GRABCUT), "--backbone", "color", "--resolution", "32", "--fast", "--limit", "2",
          "--max-clicks", "3", "--method", "m2n2", "--method", "grabcut", "--out", str(out), "--no-progress"])
    table = capsys.readouterr().out
    assert "m2n2" in table and "grabcut" in table
    results = json.loads((out / "results.json").read_text())
    assert (out / "miou.png").stat().st_size > 0
    assert results["failures"] == []
    for method in ("m2n2", "grabcut"):
        summary = results["summary"][method]
        assert summary["instances"] == 2
        assert 1 <= summary["noc"]["0.90"] <= 3
        assert len(summary["miou"]) == 3 and all(0 <= v <= 1 for v in summary["miou"])
        assert summary["miou"][0] > 0.2  # one click inside the object finds part of it
