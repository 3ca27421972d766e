"""Agreement runs: one method drives the clicks, the others follow them."""

import json

import numpy as np
import pytest

from m2n2.config import M2N2Config
from m2n2.errors import InputError
from m2n2.evaluate import __main__ as cli
from m2n2.evaluate.agreement import agreement_table, follow, summarize_agreement
from m2n2.evaluate.methods import build_methods
from m2n2.evaluate.protocol import iou, simulate
from test_evaluate import Constant, Oracle, rectangle, write_dataset


class Recorder(Constant):
    """A constant mask that records its calls under its own name."""

    def __init__(self, mask, name):
        super().__init__(mask)
        self.name = name


def test_followers_get_the_reference_clicks_and_their_iou_with_it():
    target = rectangle()
    reference = Recorder(rectangle(box=(12, 10, 28, 26)), "reference")
    same = Recorder(reference.mask, "same")
    other = Recorder(rectangle(box=(0, 0, 20, 20)), "other")
    own, runs, agreement = follow(reference, [same, other], target, max_clicks=4)
    alone = simulate(Recorder(reference.mask, "alone"), target, max_clicks=4)
    assert own.ious == alone.ious and own.clicks == alone.clicks  # following changes nothing
    assert same.calls == reference.calls == other.calls
    assert agreement["same"] == [1.0] * len(reference.calls)
    assert agreement["other"] == [iou(other.mask, reference.mask)] * len(reference.calls)
    assert runs["other"].ious == [iou(other.mask, target)] * 4
    assert runs["other"].clicks == own.clicks


def test_followers_ious_are_carried_forward_when_the_clicks_stop():
    target = rectangle()
    own, runs, agreement = follow(Oracle(target), [Recorder(target, "same")], target, max_clicks=5)
    assert len(agreement["same"]) == 1 and runs["same"].ious == [1.0] * 5 == own.ious


def test_summary_over_masks_and_per_click():
    agreement = {"fast": {"a": [1.0, 0.9, 0.8], "b": [1.0, 0.5]}}
    row = summarize_agreement(agreement, max_clicks=4)["fast"]
    values = [1.0, 0.9, 0.8, 1.0, 0.5]
    assert row["masks"] == 5 and row["identical"] == 2
    assert row["mean"] == pytest.approx(np.mean(values)) and row["min"] == 0.5
    assert row["per_click_mean"][:3] == pytest.approx([1.0, np.mean([0.9, 0.5]), 0.8])
    assert row["per_click_min"][:3] == [1.0, 0.5, 0.8] and row["per_click_mean"][3] is None
    assert "| fast | 5 |" in agreement_table({"fast": row}, "default")


def test_m2n2_spec_preset_picks_the_base_configuration():
    default, fast, tuned = build_methods(["m2n2", "m2n2:preset=fast,name=fast",
                                          "m2n2:preset=fast,rho=0.4,name=tuned"], backbone_factory=lambda: None)
    assert default.config == M2N2Config() and fast.config == M2N2Config.fast()
    assert tuned.config == M2N2Config.fast(rho=0.4)
    exact, = build_methods(["m2n2:preset=exact"], backbone_factory=lambda: None, base_config=M2N2Config.fast())
    assert exact.config == M2N2Config()  # the spec's preset wins over the command line's
    for name in ("turbo", "default", "faithful"):
        with pytest.raises(InputError, match=f"unknown preset '{name}'; the presets are exact, fast"):
            build_methods([f"m2n2:preset={name}"], backbone_factory=lambda: None)


def test_cli_agreement_writes_the_comparison(tmp_path, capsys):
    pytest.importorskip("cv2")
    data = write_dataset(tmp_path / "data")
    out = tmp_path / "out"
    status = cli.main([str(data), "--agreement", "--method", "grabcut", "--method", "grabcut:name=again",
                       "--method", "randomwalker", "--max-clicks", "3", "--limit", "2", "--out", str(out),
                       "--no-progress"])
    assert status == 0
    printed = capsys.readouterr().out
    assert "Mask IoU with grabcut" in printed and "| again |" in printed
    result = json.loads((out / "results.json").read_text())
    summary = result["agreement"]["summary"]
    assert result["agreement"]["reference"] == "grabcut" and set(summary) == {"again", "randomwalker"}
    assert summary["again"]["mean"] == 1.0  # GrabCut reseeds per call: the same clicks, the same masks
    clicks = {key: run["clicks"] for key, run in result["instances"]["grabcut"].items()}
    assert {key: run["clicks"] for key, run in result["instances"]["randomwalker"].items()} == clicks


def test_cli_agreement_needs_two_methods(capsys):
    with pytest.raises(SystemExit):
        cli.parse_args(["data", "--agreement", "--method", "grabcut"])
