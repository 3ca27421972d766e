"""The app's handlers without a browser: click, undo, reset, override, settings, bad input, API."""

import gradio as gr
import numpy as np
import pytest
from PIL import Image
from test_session import CountingBackbone, centre_of, iou, square_image

import app
from m2n2.session import Session, get_backbone, is_backbone_loaded, register_backbones

OPTIONS = app.Options(backbone="color", resolution=16, max_side=256)
# The outputs of every UI handler, in order.
STATE, IMAGE, HEATMAP, SCORES, MASK, CUTOUT, SLIDER, AUTOMATIC, STATUS = range(9)


@pytest.fixture
def handlers():
    register_backbones(app.BACKBONE_KEY, CountingBackbone)
    return app.Handlers(OPTIONS)


def select(x, y):
    return gr.SelectData(None, {"index": [x, y], "value": None})


def read_download(button) -> np.ndarray:
    """The image a DownloadButton update offers (Gradio has copied it into its cache)."""
    return np.asarray(Image.open(button.value["path"]))


def is_skip(value):
    return value == gr.skip()


@pytest.fixture
def loaded(handlers, square_file):
    path, truth = square_file
    out = handlers.set_image({"path": path, "orig_name": "square.png"}, None)
    return out[STATE], truth


def test_upload_prepares_the_image_and_shows_it(handlers, square_file):
    out = handlers.set_image({"path": square_file[0]}, None)
    session = out[STATE]
    assert isinstance(session, Session) and session.has_image and session.clicks == []
    assert out[IMAGE].shape == (60, 80, 3)
    assert out[HEATMAP] is None and out[SCORES] is None
    assert not out[MASK].interactive and not out[SLIDER].interactive
    assert "colour-affinity fallback (no Stable Diffusion), R = 16" in out[STATUS] and "image" in out[STATUS]


def test_click_before_an_image_warns_and_changes_nothing(handlers):
    with pytest.warns(UserWarning, match="Upload an image or pick an example first"):
        out = handlers.click(None, app.FOREGROUND, select(3, 4))
    assert out[STATE] is None and all(is_skip(v) for v in out[1:])


def test_click_shows_mask_heatmap_scores_and_downloads(handlers, loaded):
    session, truth = loaded
    out = handlers.click(session, app.FOREGROUND, select(*centre_of(truth)))
    assert out[STATE].clicks[-1].label == 1
    assert out[HEATMAP] is not None and out[SCORES] is not None
    mask = read_download(out[MASK]) > 0
    assert mask.shape == truth.shape and iou(mask, truth) > 0.8
    assert Image.open(out[CUTOUT].value["path"]).mode == "RGBA"
    assert out[SLIDER].interactive and 0 <= out[SLIDER].value <= 1
    assert "1 click" in out[STATUS] and "last click" in out[STATUS]
    overlay = out[IMAGE]
    x, y = (int(round(v)) for v in centre_of(truth))
    assert tuple(overlay[y, x]) == (40, 200, 60)                         # the green marker


def test_background_click_then_undo_then_reset(handlers, loaded):
    session, truth = loaded
    first = handlers.click(session, app.FOREGROUND, select(*centre_of(truth)))
    first_mask = read_download(first[MASK]).copy()
    second = handlers.click(first[STATE], app.BACKGROUND, select(3, 3))
    assert [c.label for c in second[STATE].clicks] == [1, 0] and "2 clicks" in second[STATUS]
    undone = handlers.undo(second[STATE])
    np.testing.assert_array_equal(read_download(undone[MASK]), first_mask)
    assert len(undone[STATE].clicks) == 1
    reset = handlers.reset(undone[STATE])
    assert reset[STATE].clicks == [] and reset[HEATMAP] is None and not reset[MASK].interactive
    assert reset[STATE].has_image and "0 clicks" in reset[STATUS]


def test_undo_with_nothing_to_undo_warns_and_keeps_the_state(handlers, loaded):
    session, _ = loaded
    with pytest.warns(UserWarning, match="no click to undo"):
        out = handlers.undo(session)
    assert out[STATE] is session and session.has_image


def test_threshold_override_and_automatic(handlers, loaded):
    session, truth = loaded
    auto = handlers.click(session, app.FOREGROUND, select(*centre_of(truth)))
    adaptive = auto[SLIDER].value
    auto_mask = read_download(auto[MASK]).copy()
    wide = handlers.override(auto[STATE], 1.0)
    assert wide[SLIDER].value == 1.0 and wide[STATE].threshold == 1.0
    assert (read_download(wide[MASK]) > 0).sum() > (auto_mask > 0).sum()
    back = handlers.automatic(wide[STATE])
    assert back[SLIDER].value == pytest.approx(adaptive) and back[STATE].threshold is None
    np.testing.assert_array_equal(read_download(back[MASK]), auto_mask)


def test_override_before_any_click_warns(handlers, loaded):
    with pytest.warns(UserWarning, match="click on the image first"):
        out = handlers.override(loaded[0], 0.4)
    assert out[STATE].threshold is None


def test_corrupt_upload_warns_and_keeps_the_session(handlers, loaded, tmp_path):
    session, truth = loaded
    clicked = handlers.click(session, app.FOREGROUND, select(*centre_of(truth)))
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    with pytest.warns(UserWarning, match="This file cannot be used"):
        out = handlers.set_image({"path": str(bad)}, clicked[STATE])
    assert out[STATE] is session and len(session.clicks) == 1
    np.testing.assert_array_equal(out[IMAGE], clicked[IMAGE])            # the overlay is shown again
    assert all(is_skip(v) for v in out[2:])


def test_tiny_image_is_refused_with_a_message(handlers, tmp_path):
    path = tmp_path / "dot.png"
    Image.fromarray(np.zeros((1, 1, 3), dtype=np.uint8)).save(path)
    with pytest.warns(UserWarning, match="too small"):
        out = handlers.set_image(str(path), None)
    assert not out[STATE].has_image and out[IMAGE] is None


@pytest.mark.parametrize("mode, make", [
    ("L", lambda a: a[..., 0]),
    ("RGBA", lambda a: np.dstack([a, np.full(a.shape[:2], 255, np.uint8)])),
    ("I;16", lambda a: a[..., 0].astype(np.uint16) * 257),
])
def test_gray_rgba_and_16_bit_uploads_just_work(handlers, tmp_path, mode, make):
    image, truth = square_image()
    path = tmp_path / f"image-{mode.replace(';', '')}.png"
    Image.fromarray(make(image)).save(path)
    out = handlers.set_image(str(path), None)
    assert out[STATE].has_image and out[IMAGE].shape == (60, 80, 3)
    clicked = handlers.click(out[STATE], app.FOREGROUND, select(*centre_of(truth)))
    assert 0 < (read_download(clicked[MASK]) > 0).mean() < 1


def test_huge_image_is_shown_small_and_downloaded_full_size(handlers, tmp_path):
    image, truth = square_image(300, 1200)                              # 4.7 x the 256-pixel cap
    path = tmp_path / "wide.png"
    Image.fromarray(image).save(path)
    out = handlers.set_image(str(path), None)
    assert out[IMAGE].shape == (64, 256, 3)
    x, y = centre_of(truth)
    clicked = handlers.click(out[STATE], app.FOREGROUND, select(x * 256 / 1200, y * 64 / 300))
    mask = read_download(clicked[MASK])
    assert mask.shape == (300, 1200) and iou(mask > 0, truth) > 0.7


def test_click_on_the_last_pixel_row(handlers, loaded):
    out = handlers.click(loaded[0], app.BACKGROUND, select(79, 59))
    assert out[STATE].clicks[-1].y == 59 and out[STATE].clicks[-1].label == 0


def test_example_loads(handlers):
    out = handlers.load_example(app.EXAMPLES.index(next(p for p in app.EXAMPLES if "chelsea" in p)), None)
    assert out[IMAGE].shape == (170, 256, 3) and out[STATE].has_image            # 451 x 300, capped at 256


def test_examples_are_four_or_more_shipped_photos():
    assert len(app.EXAMPLES) >= 4
    assert {p.rsplit("/", 1)[-1] for p in app.EXAMPLES} >= {"astronaut.jpg", "coffee.jpg", "chelsea.jpg",
                                                            "rocket.jpg"}


def test_apply_settings_recomputes_and_warns_on_bad_values(handlers, loaded):
    session, truth = loaded
    clicked = handlers.click(session, app.FOREGROUND, select(*centre_of(truth)))
    out = handlers.apply_settings(clicked[STATE], 0.65, 0.5, False, 8)
    assert out[STATE].resolution == 8 and out[STATE].config.rho == 0.5 and not out[STATE].config.flood_fill
    assert len(out[STATE].clicks) == 1 and out[SCORES] is not None
    with pytest.warns(UserWarning, match="temperature must be > 0"):
        bad = handlers.apply_settings(out[STATE], 0.0, 0.5, False, 8)
    assert bad[STATE].config.temperature == 0.65


def test_clear_frees_the_session(handlers, loaded):
    session, truth = loaded
    handlers.click(session, app.FOREGROUND, select(*centre_of(truth)))
    out = handlers.clear(session)
    assert out[STATE] is None and not session.has_image


def test_closing_the_tab_frees_the_session(handlers, square_file):
    request = type("Request", (), {"session_hash": "tab-42"})()
    session = handlers.set_image(square_file[0], None, request)[STATE]
    handlers.end_session(request)
    assert not session.has_image


def test_segment_api_returns_a_full_size_mask_and_summary(handlers, square_file):
    path, truth = square_file
    mask, summary = handlers.segment(path, '[{"x": %f, "y": %f, "label": 1}]' % centre_of(truth))
    assert mask.shape == truth.shape and iou(mask > 0, truth) > 0.8
    assert summary["width"] == 80 and summary["points"][0]["label"] == 1


@pytest.mark.parametrize("points, match", [("[[1, 2, 7]]", "label 0 or 1"), ("[[500, 2, 1]]", "outside")])
def test_segment_api_errors_are_clear(handlers, square_file, points, match):
    with pytest.raises(gr.Error, match=match):
        handlers.segment(square_file[0], points)


def test_the_demo_builds_with_one_public_api_endpoint(handlers):
    demo = app.build_demo(OPTIONS)
    named = [fn.api_name for fn in demo.fns.values() if fn.api_visibility == "public"]
    assert named == ["segment"]


def test_register_loads_the_requested_backbone_lazily():
    app.register(app.Options(backbone="color", resolution=16))
    assert not is_backbone_loaded(app.BACKBONE_KEY, 16)
    backbone = get_backbone(app.BACKBONE_KEY, 16)
    assert backbone.resolution == 16 and "colour-affinity fallback" in backbone.description


def test_command_line_flags():
    args = app.parse_args(["--share", "--server-name", "0.0.0.0", "--port", "7000", "--backbone", "sd2",
                           "--model", "/models/sd2", "--resolution", "64", "--max-side", "512"])
    assert (args.share, args.server_name, args.port, args.backbone, args.model, args.resolution, args.max_side) == \
        (True, "0.0.0.0", 7000, "sd2", "/models/sd2", 64, 512)
    assert app.parse_args([]).resolution is None and app.Options().config.max_side == 1024
