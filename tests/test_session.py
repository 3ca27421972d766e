"""Per-user session logic: clicks, undo, reset, threshold override, settings, bad input, memory."""

import copy
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from m2n2 import InputError, M2N2Config, NotReadyError
from m2n2.backbones import load
from m2n2.session import (LiveSessions, Session, get_backbone, is_backbone_loaded, parse_points, read_image,
                          register_backbones, segment_once, summarize, tensor_bytes)


FAST = M2N2Config.fast()  # the app's settings


class CountingBackbone:
    """The colour-affinity backbone, counting how often it runs."""

    def __init__(self, resolution: int):
        self.inner = load("color", resolution=resolution)
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def extract(self, image: np.ndarray) -> torch.Tensor:
        self.calls += 1
        return self.inner.extract(image)


def square_image(height: int = 60, width: int = 80) -> tuple[np.ndarray, np.ndarray]:
    """A brownish square on a darker textured background, and the square's mask.

    The contrast is moderate on purpose: the random walk then reaches every cell in a few steps
    (a stark contrast leaves cells that never cross and costs the full 1000 steps per click).
    """
    rng = np.random.default_rng(0)
    image = (rng.random((height, width, 3)) * 30 + 60).astype(np.uint8)
    truth = np.zeros((height, width), dtype=bool)
    truth[height // 4: 3 * height // 4, width // 4: width // 2 + width // 8] = True
    image[truth] = (120, 110, 80)
    return image, truth


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.fixture
def backbones():
    """Register fake backbones under 'test'; returns the dict resolution -> backbone."""
    made = {}

    def factory(resolution):
        made[resolution] = CountingBackbone(resolution)
        return made[resolution]

    register_backbones("test", factory)
    return made


@pytest.fixture
def session(backbones):
    """A session with the app's settings (the fast preset) and the square image."""
    image, _ = square_image()
    s = Session("test", 16, FAST)
    s.set_image(image)
    yield s
    s.close()


def centre_of(truth: np.ndarray) -> tuple[float, float]:
    rows, cols = np.nonzero(truth)
    return float(cols.mean()), float(rows.mean())


# ------------------------------------------------------------------ registry
def test_registry_loads_each_resolution_once(backbones):
    assert not is_backbone_loaded("test", 16)
    first = get_backbone("test", 16)
    assert get_backbone("test", 16) is first and len(backbones) == 1
    assert is_backbone_loaded("test", 16)
    assert get_backbone("test", 8) is not first and sorted(backbones) == [8, 16]


def test_unknown_backbone_key_is_a_clear_error():
    with pytest.raises(NotReadyError, match="no backbone is registered under 'nope'"):
        get_backbone("nope", 16)


# ------------------------------------------------------------------ clicks
def test_click_before_an_image_says_what_to_do(backbones):
    s = Session("test", 16, FAST)
    with pytest.raises(NotReadyError, match="upload an image or pick an example"):
        s.click(1, 1, 1)
    assert s.clicks == [] and not s.has_image


def test_operator_rests_on_the_cpu_in_fp16(session):
    assert session.predictor.operator.dtype == torch.float16
    assert session.predictor.operator.device.type == "cpu"
    assert session.predictor.backbone is None


def test_faithful_settings_keep_the_fp32_operator(backbones):
    s = Session("test", 16, M2N2Config())
    s.set_image(square_image()[0])
    s.click(10, 10, 1)
    assert s.predictor.operator.dtype == torch.float32


def test_foreground_click_finds_the_square(session):
    _, truth = square_image()
    prediction = session.click(*centre_of(truth), 1)
    assert prediction.mask.shape == truth.shape
    assert iou(prediction.mask, truth) > 0.8
    assert len(session.clicks) == 1 and session.clicks[0].label == 1
    assert session.click_seconds is not None and session.predictor.operator.dtype == torch.float16


def test_undo_restores_the_previous_mask_and_reset_keeps_the_image(session):
    _, truth = square_image()
    first = session.click(*centre_of(truth), 1).mask
    second = session.click(5, 5, 0).mask
    assert len(session.clicks) == 2
    np.testing.assert_array_equal(session.undo().mask, first)
    assert len(session.clicks) == 1
    assert session.undo() is None and session.clicks == []
    with pytest.raises(InputError, match="no click to undo"):
        session.undo()
    session.click(*centre_of(truth), 1)
    session.reset()
    assert session.clicks == [] and session.has_image and session.threshold is None
    del second


def test_threshold_override_and_back_to_automatic(session):
    _, truth = square_image()
    adaptive = session.click(*centre_of(truth), 1)
    assert not adaptive.points[-1].overridden
    everything = session.override_threshold(1.0)
    assert everything.points[-1].overridden and everything.points[-1].threshold == 1.0
    assert everything.mask.sum() > adaptive.mask.sum()
    tiny = session.override_threshold(0.0)
    assert tiny.mask.sum() < adaptive.mask.sum()
    back = session.override_threshold(None)
    np.testing.assert_array_equal(back.mask, adaptive.mask)
    assert session.threshold is None


def test_a_new_click_drops_the_override(session):
    _, truth = square_image()
    session.click(*centre_of(truth), 1)
    session.override_threshold(0.9)
    session.click(5, 5, 0)
    assert session.threshold is None


@pytest.mark.parametrize("bad", [1.5, -0.1, float("nan")])
def test_bad_override_changes_nothing(session, bad):
    _, truth = square_image()
    session.click(*centre_of(truth), 1)
    session.override_threshold(0.7)
    with pytest.raises(InputError, match="threshold must lie in"):
        session.override_threshold(bad)
    assert session.threshold == 0.7


def test_override_without_clicks_is_refused(session):
    with pytest.raises(InputError, match="click on the image first"):
        session.override_threshold(0.5)


@pytest.mark.parametrize("label, x", [(2, 10.0), (1, float("inf"))])
def test_a_bad_click_is_not_recorded(session, label, x):
    session.click(10, 10, 1)
    with pytest.raises(InputError):
        session.click(x, 10, label)
    assert len(session.clicks) == 1


def test_click_on_the_last_pixel_row_and_column(session):
    height, width = session.display_image.shape[:2]
    prediction = session.click(width - 1, height - 1, 1)
    assert prediction.mask[height - 1, width - 1]
    assert session.clicks[-1].x == width - 1 and session.clicks[-1].y == height - 1


def test_huge_image_uses_a_working_copy_but_returns_full_size(backbones):
    image, truth = square_image(300, 400)
    s = Session("test", 16, M2N2Config.fast(max_side=100))
    s.set_image(image)
    assert s.display_image.shape == (75, 100, 3)
    x, y = centre_of(truth)
    shown = s.to_display([(x, y)])[0]
    prediction = s.click(*shown, 1)
    assert prediction.mask.shape == (300, 400)
    assert abs(s.clicks[0].x - x) <= 4 and abs(s.clicks[0].y - y) <= 4
    assert iou(prediction.mask, truth) > 0.75
    np.testing.assert_allclose(s.to_original(*s.to_display([(123.0, 45.0)])[0]), (123.0, 45.0), atol=1e-9)


def test_a_failed_new_image_keeps_the_old_one_and_its_clicks(session):
    session.click(10, 10, 1)
    before = session.predictor
    with pytest.raises(InputError):
        session.set_image(np.zeros((1, 1, 3), dtype=np.uint8))
    assert session.predictor is before and len(session.clicks) == 1


def test_two_sessions_never_share_clicks(backbones):
    image, truth = square_image()
    a, b = Session("test", 16, FAST), Session("test", 16, FAST)
    a.set_image(image)
    b.set_image(image)
    a.click(*centre_of(truth), 1)
    assert b.clicks == [] and len(a.clicks) == 1
    assert get_backbone("test", 16).calls == 2  # one shared backbone, called once per image


# ------------------------------------------------------------------ settings
def test_rho_change_keeps_the_attention_temperature_recomputes_it(session, backbones):
    _, truth = square_image()
    session.click(*centre_of(truth), 1)
    backbone = backbones[16]
    assert backbone.calls == 1
    prediction = session.update_settings(session.config.replace(rho=0.5, flood_fill=False), 16)
    assert backbone.calls == 1 and prediction is not None and session.config.rho == 0.5
    session.update_settings(session.config.replace(temperature=1.0), 16)
    assert backbone.calls == 2 and session.config.temperature == 1.0
    assert session.predictor.operator.dtype == torch.float16 and session.predictor.backbone is None


def test_resolution_change_recomputes_and_keeps_the_clicks(session, backbones):
    _, truth = square_image()
    session.click(*centre_of(truth), 1)
    prediction = session.update_settings(session.config, 8)
    assert session.resolution == 8 and session.predictor.resolution == 8
    assert backbones[8].calls == 1 and len(session.clicks) == 1 and prediction is not None


def test_settings_before_an_image_apply_to_the_next_one(backbones):
    s = Session("test", 16, FAST)
    assert s.update_settings(FAST.replace(rho=0.4), 8) is None
    s.set_image(square_image()[0])
    assert s.predictor.resolution == 8 and s.predictor.config.rho == 0.4


# ------------------------------------------------------------------ state hygiene
def test_session_pickles_and_deep_copies_without_the_backbone(session):
    _, truth = square_image()
    mask = session.click(*centre_of(truth), 1).mask
    data = pickle.dumps(session)
    assert b"CountingBackbone" not in data and b"ColorAffinityBackbone" not in data
    for clone in (pickle.loads(data), copy.deepcopy(session)):
        np.testing.assert_array_equal(clone.predict().mask, mask)
        assert clone.clicks == session.clicks and clone.clicks is not session.clicks


def test_memory_counts_the_fp16_operator_and_the_cached_maps(session):
    n = 16 * 16
    before = session.memory_bytes()
    assert before >= n * n * 2
    session.click(10, 10, 1)
    assert session.memory_bytes() >= before + session.display_image.shape[0] * session.display_image.shape[1] * 4


def test_tensor_bytes_counts_shared_storage_once():
    t = torch.zeros(100)
    a = np.zeros(50)
    assert tensor_bytes({"x": t, "y": t[10:], "z": [a, a[5:]]}) == 400 + 400


def test_export_writes_full_size_files_and_close_removes_them(session, tmp_path):
    _, truth = square_image()
    prediction = session.click(*centre_of(truth), 1)
    mask_path, cutout_path = session.export(prediction)
    mask = np.asarray(Image.open(mask_path))
    np.testing.assert_array_equal(mask > 0, prediction.mask)
    cut = Image.open(cutout_path)
    assert cut.mode == "RGBA" and cut.size == (80, 60)
    np.testing.assert_array_equal(np.asarray(cut)[..., 3] > 0, prediction.mask)
    session.close()
    assert not session.has_image
    assert not any(p.exists() for p in map(__import__("pathlib").Path, (mask_path, cutout_path)))


def test_render_gives_every_view(session):
    _, truth = square_image()
    empty = session.render(None)
    assert empty.heatmap is None and empty.threshold is None and "colour-affinity fallback" in empty.status
    prediction = session.click(*centre_of(truth), 1)
    views = session.render(prediction)
    assert views.overlay.shape == (60, 80, 3) and views.heatmap is not None and views.scores is not None
    assert views.threshold == pytest.approx(prediction.points[-1].threshold)
    assert "1 click" in views.status and "mask" in views.status and "session memory" in views.status
    np.testing.assert_array_equal(session.view, views.overlay)


def test_live_sessions_end_frees_the_session(session):
    live = LiveSessions()
    live.track("tab-1", session)
    assert len(live) == 1
    assert live.end("tab-1") and not session.has_image
    assert not live.end("tab-1")


def test_live_sessions_hold_only_weak_references(backbones):
    live = LiveSessions()
    live.track("tab", Session("test", 16, FAST))
    assert len(live) == 0 and not live.end("tab")


# ------------------------------------------------------------------ files and API helpers
def test_read_image_handles_gray_rgba_and_16_bit(tmp_path):
    gray = np.tile(np.arange(0, 250, 10, dtype=np.uint8), (10, 1))
    Image.fromarray(gray).save(tmp_path / "gray.png")
    rgba = np.zeros((10, 12, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 128
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    deep = (np.linspace(0, 65535, 12 * 10).reshape(10, 12)).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")

    out = read_image(tmp_path / "gray.png")
    assert out.shape == (10, 25, 3) and out.dtype == np.uint8 and (out[..., 0] == gray).all()
    out = read_image(tmp_path / "rgba.png")
    assert out.shape == (10, 12, 3) and tuple(out[0, 0]) == (255, 127, 127)
    out = read_image(tmp_path / "deep.png")
    assert out.dtype == np.uint8 and out[0, 0, 0] == 0 and out[-1, -1, 0] == 255


def test_read_image_rejects_garbage_with_a_clear_message(tmp_path):
    (tmp_path / "notes.png").write_text("this is not an image")
    with pytest.raises(InputError, match="not an image"):
        read_image(tmp_path / "notes.png")
    image, _ = square_image()
    Image.fromarray(image).save(tmp_path / "ok.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "ok.png").read_bytes()[:200])
    with pytest.raises(InputError, match="corrupt or truncated"):
        read_image(tmp_path / "cut.png")
    with pytest.raises(InputError, match="does not exist"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(InputError, match="no image"):
        read_image(None)


def test_parse_points_accepts_lists_and_objects():
    points, labels = parse_points('[[10, 20, 1], {"x": 3.5, "y": 4, "label": 0}, [7, 8]]')
    np.testing.assert_array_equal(points, [[10, 20], [3.5, 4], [7, 8]])
    np.testing.assert_array_equal(labels, [1, 0, 1])
    assert parse_points([[1, 2, True]])[1].tolist() == [1]


@pytest.mark.parametrize("text, match", [
    ("not json", "JSON list"), ("[]", "non-empty"), ('{"x": 1}', "non-empty"),
    ("[[1, 2, 3, 4]]", "point 1"), ('[[1, 2, 5]]', "label 0 or 1"), ('[["a", 2, 1]]', "numbers"),
])
def test_parse_points_rejects_bad_input(text, match):
    with pytest.raises(InputError, match=match):
        parse_points(text)


def test_segment_once_and_summary(backbones):
    image, truth = square_image()
    backbone = get_backbone("test", 16)
    prediction = segment_once(backbone, FAST, image, [centre_of(truth)], [1])
    summary = summarize(prediction, backbone.description)
    assert iou(prediction.mask, truth) > 0.8
    assert summary["width"] == 80 and summary["height"] == 60
    assert summary["mask_pixels"] == int(prediction.mask.sum())
    assert 0 < summary["mask_fraction"] < 1 and summary["points"][0]["label"] == 1
    assert "attention" in summary["timings"] and summary["backbone"] == backbone.description
