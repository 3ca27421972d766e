"""The app's handlers without a browser: click, undo, reset, override, settings, bad input, API."""

import os
import re
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest
import torch
from PIL import Image
from synthetic import CountingBackbone, centre_of, iou, square_image, select_event as select

import app
from m2n2 import M2N2Config
from m2n2.studio import serving
from m2n2.studio.handlers import Handlers
from m2n2.studio.session import Session

OPTIONS = app.Options(backbone="color", resolution=16, max_side=256)


# One app for the module; its components are the keys of every handler's dict.
DEMO, HANDLERS = app.build(OPTIONS, serving.start(OPTIONS, CountingBackbone))
UI = HANDLERS.ui
STATE, IMAGE, MASK, CUTOUT, SLIDER, AUTOMATIC, STATUS = UI.core  # what a click's own event updates
HEATMAP, SCORES = UI.plots  # they follow it
FOREGROUND, BACKGROUND = 1, 0  # the labels the "Next click is" switch gives (m2n2.studio.ui.MODES)


@pytest.fixture
def handlers():
    """The app's handlers with fresh backbones and an empty store of prepared images."""
    return Handlers(serving.start(OPTIONS, CountingBackbone), UI, app.EXAMPLES)


def read_download(button) -> np.ndarray:
    """The image a DownloadButton update offers (Gradio has copied it into its cache)."""
    return np.asarray(Image.open(button.value["path"]))


def downloaded_mask(out) -> np.ndarray:
    """The mask PNG the download button would give now (written when asked for)."""
    return read_download(HANDLERS.sharing.export_mask(out[STATE])[HANDLERS.ui.mask_file])


def changes_only_the_state(out) -> bool:
    """A rejected input: the dict names the state (unchanged) and nothing else."""
    return set(out) == {STATE}


@pytest.fixture
def loaded(handlers, square_file):
    path, truth = square_file
    out = handlers.images.set_image({"path": path, "orig_name": "square.png"}, None)
    return out[STATE], truth


def test_upload_prepares_the_image_and_shows_it(handlers, square_file):
    out = handlers.images.set_image({"path": square_file[0]}, None)
    session = out[STATE]
    assert isinstance(session, Session) and session.has_image and session.clicks == []
    assert out[IMAGE].shape == (60, 80, 3)
    assert out[HEATMAP] is None and out[SCORES] is None
    assert not out[MASK].interactive and not out[SLIDER].interactive
    assert "colour-affinity fallback (no Stable Diffusion), R = 16" in out[STATUS] and "image" in out[STATUS]


def test_click_before_an_image_warns_and_changes_nothing(handlers):
    with pytest.warns(UserWarning, match="Upload an image or pick an example first"):
        out = handlers.clicks.click(None, FOREGROUND, select(3, 4))
    # The status line is drawn again as it was (the page's marker and waiting count go as the event ends).
    assert out[STATE] is None and set(out) == {STATE, STATUS} and out[STATUS] == handlers.page.status(None)


def test_click_shows_mask_heatmap_scores_and_downloads(handlers, loaded):
    session, truth = loaded
    out = handlers.clicks.click(session, FOREGROUND, select(*centre_of(truth)))
    assert out[STATE].clicks[-1].label == 1
    assert out[HEATMAP] is not None and out[SCORES] is not None
    mask = downloaded_mask(out) > 0
    assert mask.shape == truth.shape and iou(mask, truth) > 0.8
    assert out[MASK].interactive and out[CUTOUT].interactive
    cut = HANDLERS.sharing.export_cutout(out[STATE])[HANDLERS.ui.cutout_file]
    assert Image.open(cut.value["path"]).mode == "RGBA"
    assert out[SLIDER].interactive and 0 <= out[SLIDER].value <= 1
    assert "1 click" in out[STATUS] and re.search(r"click \d+\.\d\d s", out[STATUS]) and "(adaptive)" in out[STATUS]
    overlay = out[IMAGE]
    x, y = (int(round(v)) for v in centre_of(truth))
    assert tuple(overlay[y, x]) == (40, 200, 60)                         # the green marker


def test_background_click_then_undo_then_reset(handlers, loaded):
    session, truth = loaded
    first = handlers.clicks.click(session, FOREGROUND, select(*centre_of(truth)))
    first_mask = downloaded_mask(first).copy()
    second = handlers.clicks.click(first[STATE], BACKGROUND, select(3, 3))
    assert [c.label for c in second[STATE].clicks] == [1, 0] and "2 clicks" in second[STATUS]
    undone = handlers.clicks.undo(second[STATE])
    np.testing.assert_array_equal(downloaded_mask(undone), first_mask)
    assert len(undone[STATE].clicks) == 1
    reset = handlers.clicks.reset(undone[STATE])
    assert reset[STATE].clicks == [] and reset[HEATMAP] is None and not reset[MASK].interactive
    assert reset[STATE].has_image and "0 clicks" in reset[STATUS]


def test_undo_with_nothing_to_undo_warns_and_keeps_the_state(handlers, loaded):
    session, _ = loaded
    with pytest.warns(UserWarning, match="no click to undo"):
        out = handlers.clicks.undo(session)
    assert out[STATE] is session and session.has_image


def test_threshold_override_and_automatic(handlers, loaded):
    session, truth = loaded
    auto = handlers.clicks.click(session, FOREGROUND, select(*centre_of(truth)))
    adaptive = auto[SLIDER].value
    auto_mask = downloaded_mask(auto).copy()
    wide = handlers.clicks.override(auto[STATE], 1.0)
    assert wide[SLIDER].value == 1.0 and wide[STATE].threshold == 1.0
    assert (downloaded_mask(wide) > 0).sum() > (auto_mask > 0).sum()
    back = handlers.clicks.automatic(wide[STATE])
    assert back[SLIDER].value == pytest.approx(adaptive) and back[STATE].threshold is None
    np.testing.assert_array_equal(downloaded_mask(back), auto_mask)


def test_override_before_any_click_warns(handlers, loaded):
    with pytest.warns(UserWarning, match="click on the image first"):
        out = handlers.clicks.override(loaded[0], 0.4)
    assert out[STATE].threshold is None


def test_corrupt_upload_warns_and_keeps_the_session(handlers, loaded, tmp_path):
    session, truth = loaded
    clicked = handlers.clicks.click(session, FOREGROUND, select(*centre_of(truth)))
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    with pytest.warns(UserWarning, match="This file cannot be used"):
        out = handlers.images.set_image({"path": str(bad)}, clicked[STATE])
    assert out[STATE] is session and len(session.clicks) == 1
    np.testing.assert_array_equal(out[IMAGE], clicked[IMAGE])            # the overlay is shown again
    assert set(out) == {STATE, IMAGE}


def test_tiny_image_is_refused_with_a_message(handlers, tmp_path):
    path = tmp_path / "dot.png"
    Image.fromarray(np.zeros((1, 1, 3), dtype=np.uint8)).save(path)
    with pytest.warns(UserWarning, match="too small"):
        out = handlers.images.set_image(str(path), None)
    assert not out[STATE].has_image and out[IMAGE] is None


def test_a_long_strip_is_refused_before_any_attention_and_the_session_stays(handlers, loaded, tmp_path):
    session, truth = loaded
    clicked = handlers.clicks.click(session, FOREGROUND, select(*centre_of(truth)))
    backbone = handlers.serving.backbones.get(OPTIONS.attention_resolution)
    calls = backbone.calls
    strip = tmp_path / "strip.png"
    Image.fromarray(square_image(100, 20000)[0]).save(strip)
    with pytest.warns(UserWarning, match=r"20000 x 100 pixels, 200 times as wide .* limit is 8 times.*crop it"):
        out = handlers.images.set_image({"path": str(strip)}, clicked[STATE])
    assert backbone.calls == calls                                        # no attention was computed
    assert out[STATE] is session and len(session.clicks) == 1 and session.image.shape == (60, 80, 3)
    np.testing.assert_array_equal(out[IMAGE], clicked[IMAGE])            # the previous picture is shown again
    with pytest.raises(gr.Error, match="crop it to at most 800 x 100"):
        handlers.api.segment(str(strip), "[[5, 5, 1]]")
    recipe = handlers.page.recipe_of(session)                              # (any recipe: the strip fails first)
    with pytest.raises(gr.Error, match="crop it to at most 800 x 100"):
        handlers.api.segment_recipe(str(strip), recipe.to_json())
    assert backbone.calls == calls


@pytest.mark.parametrize("mode, make", [
    ("L", lambda a: a[..., 0]),
    ("RGBA", lambda a: np.dstack([a, np.full(a.shape[:2], 255, np.uint8)])),
    ("I;16", lambda a: a[..., 0].astype(np.uint16) * 257),
])
def test_gray_rgba_and_16_bit_uploads_just_work(handlers, tmp_path, mode, make):
    image, truth = square_image()
    path = tmp_path / f"image-{mode.replace(';', '')}.png"
    Image.fromarray(make(image)).save(path)
    out = handlers.images.set_image(str(path), None)
    assert out[STATE].has_image and out[IMAGE].shape == (60, 80, 3)
    clicked = handlers.clicks.click(out[STATE], FOREGROUND, select(*centre_of(truth)))
    assert 0 < (downloaded_mask(clicked) > 0).mean() < 1


def test_huge_image_is_shown_small_and_downloaded_full_size(handlers, tmp_path):
    image, truth = square_image(300, 1200)                              # 4.7 x the 256-pixel cap
    path = tmp_path / "wide.png"
    Image.fromarray(image).save(path)
    out = handlers.images.set_image(str(path), None)
    assert out[IMAGE].shape == (64, 256, 3)
    x, y = centre_of(truth)
    clicked = handlers.clicks.click(out[STATE], FOREGROUND, select(x * 256 / 1200, y * 64 / 300))
    mask = downloaded_mask(clicked)
    assert mask.shape == (300, 1200) and iou(mask > 0, truth) > 0.7


def test_click_on_the_last_pixel_row(handlers, loaded):
    out = handlers.clicks.click(loaded[0], BACKGROUND, select(79, 59))
    assert out[STATE].clicks[-1].y == 59 and out[STATE].clicks[-1].label == 0


def test_example_loads(handlers):
    out = handlers.images.load_example(app.EXAMPLES.index(next(p for p in app.EXAMPLES if "chelsea" in p)), None)
    assert out[IMAGE].shape == (170, 256, 3) and out[STATE].has_image            # 451 x 300, capped at 256


def test_examples_are_four_or_more_shipped_photos():
    assert len(app.EXAMPLES) >= 4
    assert {p.rsplit("/", 1)[-1] for p in app.EXAMPLES} >= {"astronaut.jpg", "coffee.jpg", "chelsea.jpg",
                                                            "rocket.jpg"}


def test_apply_settings_recomputes_and_warns_on_bad_values(handlers, loaded):
    session, truth = loaded
    clicked = handlers.clicks.click(session, FOREGROUND, select(*centre_of(truth)))
    out = handlers.settings.apply_settings(clicked[STATE], 0.65, 0.5, False, 8)
    assert out[STATE].resolution == 8 and out[STATE].config.rho == 0.5 and not out[STATE].config.flood_fill
    assert len(out[STATE].clicks) == 1 and out[SCORES] is not None
    with pytest.warns(UserWarning, match="temperature must be > 0"):
        bad = handlers.settings.apply_settings(out[STATE], 0.0, 0.5, False, 8)
    assert bad[STATE].config.temperature == 0.65


def test_clear_frees_the_prepared_image(handlers, loaded):
    session, truth = loaded
    handlers.clicks.click(session, FOREGROUND, select(*centre_of(truth)))
    assert session.key in handlers.serving.store
    out = handlers.images.clear(session)
    assert not out[STATE].has_image and out[IMAGE] is None and len(handlers.serving.store) == 0


def test_closing_the_tab_frees_the_prepared_image(handlers, square_file):
    request = type("Request", (), {"session_hash": "tab-42"})()
    session = handlers.images.set_image(square_file[0], None, request)[STATE]
    assert session.key in handlers.serving.store
    handlers.page.end_session(request)
    assert session.key not in handlers.serving.store


def test_a_page_load_copies_the_config_without_the_apps_state(square_file):
    """Gradio deep-copies the app's config on every page load (GET /config). The state's delete
    callback is in it: it must be copied as itself, not with the page, its store and the prepared
    images (which took seconds per page load, under the GIL, and then failed on a lock)."""
    import copy
    session = HANDLERS.images.set_image(square_file[0], None)[STATE]  # the app's store holds an image
    HANDLERS.clicks.click(session, FOREGROUND, select(*centre_of(square_file[1])))
    assert session.key in HANDLERS.serving.store
    copied = copy.deepcopy(DEMO.config)  # raised TypeError (a lock) when the callback was a bound method
    callbacks = [c["props"]["delete_callback"] for c in copied["components"] if "delete_callback" in c.get("props", {})]
    assert len(callbacks) == 1 and callbacks[0] is STATE.delete_callback
    STATE.delete_callback(session)  # and it still releases the session's prepared image
    assert session.key not in HANDLERS.serving.store


def test_clicks_are_applied_in_order_and_each_picture_draws_the_applied_ones(handlers, loaded):
    session, truth = loaded
    spots = [(centre_of(truth), FOREGROUND), ((3, 3), BACKGROUND), ((70, 50), BACKGROUND)]
    first = handlers.clicks.click(session, FOREGROUND, select(*spots[0][0]))
    for (x, y), _ in spots[1:]:                                # clicks still waiting: the page draws those
        assert tuple(first[IMAGE][int(round(y)), int(round(x))]) != (235, 45, 45)
    assert '<span class="m2n2-clicks">1 click</span>' in first[STATUS]   # where the page adds "(+2 waiting)"
    for (x, y), mode in spots[1:]:                             # then each click in its turn
        out = handlers.clicks.click(session, mode, select(x, y))
    for (x, y), _ in spots[1:]:
        assert tuple(out[IMAGE][int(round(y)), int(round(x))]) == (235, 45, 45)
    assert [c.label for c in out[STATE].clicks] == [1, 0, 0]
    assert "3 clicks" in out[STATUS] and "waiting" not in out[STATUS]


def test_typed_threshold_then_back_to_automatic(handlers, loaded):
    session, truth = loaded
    auto = handlers.clicks.click(session, FOREGROUND, select(*centre_of(truth)))
    assert not auto[AUTOMATIC].interactive                     # nothing to go back to yet
    typed = handlers.clicks.override(auto[STATE], 0.25)
    assert typed[STATE].threshold == 0.25 and "threshold 0.250 (yours)" in typed[STATUS]
    assert typed[AUTOMATIC].interactive and typed[SLIDER].value == 0.25
    back = handlers.clicks.automatic(typed[STATE])
    assert back[STATE].threshold is None and "(adaptive)" in back[STATUS]
    assert back[SLIDER].value == pytest.approx(auto[SLIDER].value) and not back[AUTOMATIC].interactive


def test_downloads_are_written_only_when_asked_for(handlers, loaded, tmp_path):
    session, truth = loaded
    folder = serving.export_dir(session.id)
    handlers.clicks.click(session, FOREGROUND, select(*centre_of(truth)))
    assert not os.path.exists(os.path.join(folder, "cutout.png"))
    handlers.sharing.export_cutout(session)
    assert os.path.exists(os.path.join(folder, "cutout.png"))
    handlers.clicks.reset(session)
    with pytest.warns(UserWarning, match="no mask to download"):
        handlers.sharing.export_mask(session)


def test_a_new_click_drops_the_override(handlers, loaded):
    session, truth = loaded
    handlers.clicks.click(session, FOREGROUND, select(*centre_of(truth)))
    handlers.clicks.override(session, 0.9)
    out = handlers.clicks.click(session, BACKGROUND, select(3, 3))
    assert out[STATE].threshold is None and "(adaptive)" in out[STATUS]


def test_undo_reports_its_own_time_not_a_click(handlers, loaded):
    session, truth = loaded
    handlers.clicks.click(session, FOREGROUND, select(*centre_of(truth)))
    handlers.clicks.click(session, BACKGROUND, select(3, 3))
    out = handlers.clicks.undo(session)
    assert "undo " in out[STATUS] and not re.search(r"\bclick \d", out[STATUS])


def test_an_evicted_image_is_prepared_again_and_the_click_applies(handlers, loaded):
    session, truth = loaded
    handlers.serving.store.drop_session(session.id)            # e.g. the memory budget evicted it
    out = handlers.clicks.click(session, FOREGROUND, select(*centre_of(truth)))
    assert len(out[STATE].clicks) == 1 and iou(downloaded_mask(out) > 0, truth) > 0.8


def test_temperature_reprepares_rho_only_recomputes_maps(handlers, loaded):
    session, truth = loaded
    handlers.clicks.click(session, FOREGROUND, select(*centre_of(truth)))
    backbone = handlers.serving.backbones.get(16)
    assert backbone.calls == 1
    handlers.settings.apply_settings(session, session.config.temperature, 0.5, False, 16)
    assert backbone.calls == 1 and session.config.rho == 0.5
    handlers.settings.apply_settings(session, 1.0, 0.5, False, 16)
    assert backbone.calls == 2 and session.config.temperature == 1.0


def test_settings_before_an_image_apply_to_the_next_one(handlers, square_file):
    out = handlers.settings.apply_settings(None, 0.65, 0.4, True, 8)
    session = handlers.images.set_image(square_file[0], out[STATE])[STATE]
    assert session.resolution == 8 and session.geometry.resolution == 8 and session.config.rho == 0.4


def test_two_sessions_never_share_clicks(handlers, square_file):
    path, truth = square_file
    a = handlers.images.set_image(path, None)[STATE]
    b = handlers.images.set_image(path, None)[STATE]
    handlers.clicks.click(a, FOREGROUND, select(*centre_of(truth)))
    assert b.clicks == [] and len(a.clicks) == 1 and a.key != b.key
    assert handlers.serving.backbones.get(16).calls == 2     # one shared backbone, called once per image


def test_the_fallback_reason_is_in_the_status_line_and_the_log(handlers, square_file, caplog):
    class FellBack(CountingBackbone):
        def __init__(self, resolution):
            super().__init__(resolution)
            self.reason = "SD2 weights are absent (offline); using the colour-affinity fallback"

    handlers = Handlers(serving.start(OPTIONS, FellBack), UI, app.EXAMPLES)
    with caplog.at_level("WARNING", logger="m2n2.studio"):
        out = handlers.images.set_image(square_file[0], None)
    assert "SD2 weights are absent" in out[STATUS]
    assert any("SD2 weights are absent" in record.getMessage() for record in caplog.records)


def test_segment_api_returns_a_full_size_mask_and_summary(handlers, square_file):
    path, truth = square_file
    mask, summary = handlers.api.segment(path, '[{"x": %f, "y": %f, "label": 1}]' % centre_of(truth))
    assert mask.shape == truth.shape and iou(mask > 0, truth) > 0.8
    assert summary["width"] == 80 and summary["points"][0]["label"] == 1


@pytest.mark.parametrize("points, match", [("[[1, 2, 7]]", "label 0 or 1"), ("[[500, 2, 1]]", "outside")])
def test_segment_api_errors_are_clear(handlers, square_file, points, match):
    with pytest.raises(gr.Error, match=match):
        handlers.api.segment(square_file[0], points)


def test_the_demo_builds_with_only_the_stateless_api_endpoints_public(handlers):
    demo = DEMO
    named = [fn.api_name for fn in demo.fns.values() if fn.api_visibility == "public"]
    assert named == ["segment", "segment_recipe"]


def test_serving_loads_the_requested_backbone_lazily():
    started = serving.start(app.Options(backbone="color", resolution=16))
    assert not started.backbones.is_loaded(16)
    backbone = started.backbones.get(16)
    assert backbone.resolution == 16 and "colour-affinity fallback" in backbone.description
    assert started.backbones.get(16) is backbone


def test_the_title_names_the_attention_the_app_will_use():
    assert "Stable Diffusion" not in app.heading(app.Options(backbone="color")).split("stand-in")[0]
    assert "colour-affinity" in app.heading(app.Options(backbone="color"))
    assert "the status line says which" in app.heading(app.Options(backbone="auto"))


def test_command_line_flags():
    args = app.parse_args(["--share", "--server-name", "0.0.0.0", "--port", "7000", "--backbone", "sd2",
                           "--model", "/models/sd2", "--resolution", "64", "--max-side", "512"])
    assert (args.share, args.server_name, args.port, args.backbone, args.model, args.resolution, args.max_side) == \
        (True, "0.0.0.0", 7000, "sd2", "/models/sd2", 64, 512)
    assert app.parse_args([]).resolution is None and app.parse_args([]).threads == 1
    assert app.Options().config.max_side == (1024 if torch.cuda.is_available() else 640)
    with pytest.raises(SystemExit):
        app.parse_args(["--backbone", "nope"])                  # choices come from the registry


def test_the_preset_is_one_option_and_the_old_flags_still_choose_it(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    chosen = {flags: app.options_from_args(app.parse_args(list(flags)))
              for flags in [(), ("--preset", "exact"), ("--preset", "fast"), ("--faithful",), ("--fast",)]}
    assert chosen[()].preset is None and chosen[()].config == M2N2Config.fast(max_side=640)   # a CPU: fast
    assert chosen[("--preset", "exact")].config == chosen[("--faithful",)].config == M2N2Config(max_side=640)
    assert chosen[("--preset", "fast")].config == chosen[("--fast",)].config == M2N2Config.fast(max_side=640)
    said = capsys.readouterr().err
    assert "--faithful is deprecated; use --preset exact" in said and "--fast is deprecated; use --preset fast" in said
    with pytest.raises(SystemExit):
        app.parse_args(["--preset", "exact", "--fast"])         # two choices: refused


def test_the_memory_budget_counts_each_sessions_image_until_its_state_expires(handlers, loaded):
    session, truth = loaded
    store = handlers.serving.store
    assert store.session_bytes >= session.image.nbytes  # (the display copy is the image itself when small)
    handlers.clicks.click(session, FOREGROUND, select(*centre_of(truth)))
    assert store.session_bytes >= session.image.nbytes + session.shown.mask.nbytes
    handlers.page.release_state(session)                     # gr.State's delete callback
    assert store.session_bytes == 0 and session.key not in store


def test_an_example_is_prepared_once_and_choosing_it_again_gives_the_same_masks(handlers):
    index = app.EXAMPLES.index(next(p for p in app.EXAMPLES if "coffee" in p))
    backbone = handlers.serving.backbones.get(OPTIONS.attention_resolution)
    first = handlers.images.load_example(index, None)
    handlers.images.example_keeping.join()  # kept off the request, once its preparation has finished
    calls = backbone.calls
    again = handlers.images.load_example(index, None)                 # another visitor chooses it
    assert backbone.calls == calls                             # no attention, no operator: a copy
    assert again[STATE].has_image and again[STATE].key != first[STATE].key
    assert len(handlers.images.example_cache) == 1 and handlers.serving.store.session_bytes >= handlers.images.example_cache.bytes
    x, y = 120, 80
    masks = [handlers.clicks.click(out[STATE], FOREGROUND, select(x, y))[STATE].shown.mask for out in (first, again)]
    np.testing.assert_array_equal(masks[0], masks[1])
    # The copy's maps are its own: the kept example gained none from either click.
    (template, _), = handlers.images.example_cache._items.values()
    assert template.cached_points == 0


def test_examples_prepared_at_start_are_clickable_without_the_backbone(handlers):
    backbone = handlers.serving.backbones.get(OPTIONS.attention_resolution)
    seconds = handlers.images.prepare_examples()
    assert set(seconds) == set(app.EXAMPLES) and len(handlers.serving.store) == 0  # kept outside the store
    calls = backbone.calls
    out = handlers.images.load_example(0, None)
    assert backbone.calls == calls and out[STATE].has_image


def the_map_of(handlers, session) -> np.ndarray:
    """The Markov-map of the session's latest click, as its predictor made it (cached, not recomputed)."""
    predictor = handlers.serving.store.get(session.key)
    return predictor.predict(*session.points, keep="last").points[-1].markov_map


def test_an_example_is_segmented_with_its_whole_preparation_and_an_upload_with_the_preset_s_early_map(
        handlers, tmp_path):
    # A kept example has its leap and table built: its first map takes them (early_maps = 0), as
    # the library makes it with that setting; an upload's first map goes without them (the preset's 1).
    from m2n2 import M2N2Predictor
    from m2n2.image import read_image
    assert OPTIONS.config.early_maps == 1
    handlers.images.prepare_examples()
    index = app.EXAMPLES.index(next(p for p in app.EXAMPLES if "astronaut" in p))
    image = read_image(app.EXAMPLES[index])
    example = handlers.images.load_example(index, None)[STATE]
    handlers.clicks.click(example, FOREGROUND, select(120, 80))
    assert example.config == OPTIONS.config.replace(early_maps=0)
    assert handlers.page.recipe_of(example).config.early_maps == 0         # a replay makes the same maps
    backbone = handlers.serving.backbones.get(OPTIONS.attention_resolution)
    reference = {}
    for early_maps in (0, 1):
        predictor = M2N2Predictor(backbone, OPTIONS.config.replace(early_maps=early_maps))
        predictor.set_image(image)
        reference[early_maps] = predictor.predict(*example.points, keep="last")
    np.testing.assert_array_equal(the_map_of(handlers, example), reference[0].points[-1].markov_map)
    np.testing.assert_array_equal(example.shown.mask, reference[0].mask)
    assert not np.array_equal(reference[0].points[-1].markov_map, reference[1].points[-1].markov_map)

    # The same pixels uploaded: the preset's setting again, and the upload's first map.
    path = tmp_path / "astronaut.png"
    Image.fromarray(image).save(path)
    upload = handlers.images.set_image({"path": str(path)}, example)[STATE]
    handlers.clicks.click(upload, FOREGROUND, select(120, 80))
    assert upload.config == OPTIONS.config
    np.testing.assert_array_equal(the_map_of(handlers, upload), reference[1].points[-1].markov_map)


def test_an_example_not_kept_yet_gives_the_maps_of_a_kept_one(handlers):
    # Chosen before the start-up preparation reached it: prepared with the same setting, so the
    # result does not depend on when it was chosen.
    index = app.EXAMPLES.index(next(p for p in app.EXAMPLES if "coffee" in p))
    backbone = handlers.serving.backbones.get(OPTIONS.attention_resolution)
    fresh = handlers.images.load_example(index, None)[STATE]
    assert backbone.calls == 1                                          # prepared for this choice
    handlers.images.example_keeping.join()
    lent = handlers.images.load_example(index, None)[STATE]
    assert backbone.calls == 1                                          # lent
    maps = []
    for session in (fresh, lent):
        handlers.clicks.click(session, FOREGROUND, select(120, 80))
        assert session.config.early_maps == 0
        maps.append(the_map_of(handlers, session))
    np.testing.assert_array_equal(maps[0], maps[1])


def test_the_api_segments_an_example_as_the_page_does(handlers):
    import json
    handlers.images.prepare_examples()
    index = app.EXAMPLES.index(next(p for p in app.EXAMPLES if "chelsea" in p))
    session = handlers.images.load_example(index, None)[STATE]
    handlers.clicks.click(session, FOREGROUND, select(120, 80))
    click = session.clicks[-1]
    mask, summary = handlers.api.segment(app.EXAMPLES[index], json.dumps([[click.x, click.y, 1]]))
    np.testing.assert_array_equal(mask > 0, session.shown.mask)
    assert "preparation_wait" not in summary["timings"]


def test_the_click_switch_gives_the_label_not_its_display_text():
    radio = next(block for block in DEMO.blocks.values() if getattr(block, "elem_id", None) == "mode")
    assert radio.choices == [("Foreground (green)", 1), ("Background (red)", 0)] and radio.value == 1
    assert radio.preprocess(0) == BACKGROUND                    # what the click handler receives
    with pytest.raises(gr.Error):
        radio.preprocess("Foreground (green)")                  # the display text is no value


# ---------------------------------------------------------------- refusals leave a page that matches the session
def wired(name: str):
    """The app's event whose handler is called ``name`` (its outputs and whether it preprocesses)."""
    return next(fn for fn in DEMO.fns.values() if getattr(fn.fn, "__name__", None) == name)


@pytest.mark.parametrize("kind", ["mask", "cutout", "instances", "coco", "recipe"])
def test_an_export_with_nothing_to_export_warns_within_its_events_outputs(handlers, loaded, kind):
    event = wired(f"export_{kind}")
    for session in (None, loaded[0]):                           # no image; an image but no object yet
        with pytest.warns(UserWarning, match="Click on the image first"):
            out = getattr(handlers.sharing, f"export_{kind}")(session)
        assert set(out) <= set(event.outputs)                   # else Gradio's "Returned component" error
        assert all(update.value is None for update in out.values())   # and no earlier file handed out


def test_the_exports_of_every_object_are_offered_once_there_is_one(handlers, loaded):
    session, truth = loaded
    buttons = UI.export_buttons
    assert len(buttons) == 3 and set(buttons) <= set(UI.share) and not set(buttons) & set(UI.core)
    assert all(not button.interactive for button in buttons)     # as the page starts
    fresh = handlers.page.render(session)
    assert all(not fresh[button].interactive for button in buttons)
    clicked = handlers.clicks.click(session, FOREGROUND, select(*centre_of(truth)))
    shared = handlers.page.after_click(clicked[STATE])          # what follows a click
    assert all(shared[button].interactive and shared[button].value == button.value for button in buttons)
    reset = handlers.clicks.reset(session)
    assert all(not reset[button].interactive for button in buttons)


@pytest.fixture
def two_clicks_at_most(square_file):
    """Handlers whose images take two clicks at most, and a session with two clicks."""
    options = app.Options(backbone="color", resolution=16, max_side=256, max_points=2)
    handlers = Handlers(serving.start(options, CountingBackbone), UI, app.EXAMPLES)
    path, truth = square_file
    session = handlers.images.set_image(path, None)[STATE]
    handlers.clicks.click(session, FOREGROUND, select(*centre_of(truth)))
    done = handlers.clicks.click(session, BACKGROUND, select(3, 3))
    return handlers, session, done


def test_a_refused_click_changes_nothing_but_says_why(two_clicks_at_most):
    handlers, session, done = two_clicks_at_most
    with pytest.warns(UserWarning, match="the most one may have"):
        out = handlers.clicks.click_only(session, FOREGROUND, select(70, 50))
    assert len(session.clicks) == 2 and set(out) == {STATE, STATUS}   # the picture stays as it is
    assert "waiting" not in out[STATUS] and "2 clicks" in out[STATUS]
    np.testing.assert_array_equal(handlers.page.overlay(session), done[IMAGE])


def test_a_click_that_fails_in_computing_changes_nothing(handlers, loaded, monkeypatch):
    session, truth = loaded
    before = handlers.page.overlay(session)

    def fail(*args, **kwargs):
        raise gr.Error("the GPU is gone")
    monkeypatch.setattr(handlers.clicks, "segment", fail)
    with pytest.warns(UserWarning, match="the GPU is gone"):
        out = handlers.clicks.click_only(session, FOREGROUND, select(*centre_of(truth)))
    assert session.clicks == [] and set(out) == {STATE, STATUS} and "0 clicks" in out[STATUS]
    np.testing.assert_array_equal(handlers.page.overlay(session), before)


@pytest.mark.parametrize("typed", [-1, 5, None, "", "abc", float("nan")])
def test_the_threshold_box_refuses_what_it_cannot_use_and_shows_the_threshold_in_use(handlers, loaded, typed):
    session, truth = loaded
    clicked = handlers.clicks.click(session, FOREGROUND, select(*centre_of(truth)))
    assert wired("override").preprocess is False                 # the box's value comes as typed (None: empty)
    with pytest.warns(UserWarning, match="Threshold not changed"):
        out = handlers.clicks.override(session, typed)
    assert out[SLIDER].value == clicked[SLIDER].value            # the box shows the threshold in use again
    assert session.threshold is None and session.shown.threshold == pytest.approx(clicked[SLIDER].value, abs=5e-4)


def test_the_picture_comes_back_after_a_file_the_browser_refused(handlers, loaded):
    session, truth = loaded
    clicked = handlers.clicks.click(session, FOREGROUND, select(*centre_of(truth)))
    out = handlers.images.restore(session)
    assert set(out) <= set(wired("restore").outputs)
    np.testing.assert_array_equal(out[IMAGE], clicked[IMAGE])
    handlers.images.clear(session)                              # a real clear (queued before it) stays
    assert handlers.images.restore(session)[IMAGE] is None and handlers.images.restore(None)[IMAGE] is None


def test_warnings_go_within_ten_seconds(handlers, monkeypatch):
    shown = []
    monkeypatch.setattr(gr, "Warning", lambda message, **kwargs: shown.append(kwargs))
    handlers.clicks.undo(None)
    assert shown and 0 < shown[0]["duration"] < 10               # Gradio's default is 10 s


def test_new_settings_say_what_they_do_without_a_stuck_percentage(handlers, loaded):
    session, truth = loaded
    handlers.clicks.click(session, FOREGROUND, select(*centre_of(truth)))
    calls = []
    progress = lambda value, desc=None, **kwargs: calls.append((value, desc))   # noqa: E731
    handlers.settings.apply_settings(session, 0.65, 0.5, False, 8, progress=progress)
    handlers.settings.apply_settings(session, 0.9, 0.5, False, 8, progress=progress)
    assert session.resolution == 8 and session.config.temperature == 0.9
    assert any("R = 8" in desc for _, desc in calls) and any("temperature" in desc for _, desc in calls)
    # Steps, not a percentage that sits still: (steps done, steps), each step named as it starts.
    assert [value for value, _ in calls] == [(0, 2), (1, 2), (0, 1)]


@pytest.mark.parametrize("x, says", [(-1.0, "is outside the 80 x 60 image"), (float("nan"), "NaN or infinite"),
                                     (float("inf"), "NaN or infinite"), (float("-inf"), "NaN or infinite")])
def test_negative_nan_and_infinite_coordinates_say_what_is_wrong_everywhere(handlers, loaded, x, says):
    import json
    session, truth = loaded
    path = session.source
    handlers.clicks.click(session, FOREGROUND, select(*centre_of(truth)))
    recipe = json.loads(handlers.page.recipe_of(session).to_json())
    recipe["objects"][0]["clicks"][0][0] = x
    recipe_text = json.dumps(recipe)                       # NaN, Infinity and -Infinity, as Python writes them
    said = []
    for call in (lambda: handlers.api.segment(path, json.dumps([[x, 5, 1]])),
                 lambda: handlers.api.segment_recipe(path, recipe_text)):
        with pytest.raises(gr.Error) as refused:
            call()
        said.append(refused.value.message)
    with pytest.warns(UserWarning) as warned:
        handlers.sharing.load_recipe(session, None, recipe_text)
    said.append(str(warned[0].message))
    assert all(says in message for message in said), said
    assert not any(re.search(r"(inf|nan) x", message) for message in said), said
    # A click event on the page: a non-finite position is no position; a negative one is the edge.
    if np.isfinite(x):
        assert handlers.clicks.click(session, FOREGROUND, select(x, 5))[STATE].clicks[-1].x == 0
    else:
        with pytest.warns(UserWarning, match="is not a position on the image"):
            handlers.clicks.click(session, FOREGROUND, select(x, 5))


@pytest.mark.parametrize("ending", ["tab closed", "state expired"])
def test_a_sessions_exported_files_are_served_only_while_the_session_lives(handlers, square_file, ending):
    from gradio.utils import get_upload_folder
    request = type("Request", (), {"session_hash": f"tab-{ending}"})()
    session = handlers.images.set_image(square_file[0], None, request)[STATE]
    handlers.clicks.click(session, FOREGROUND, select(*centre_of(square_file[1])))
    offered = [handlers.sharing.export_mask(session)[UI.mask_file].value["path"],
               handlers.sharing.export_coco(session)[UI.coco_file].value["path"]]
    # What Gradio serves by URL is the file in the session's own folder, not a copy that outlives it;
    # the folder's name is no session id.
    for path in offered:
        assert os.path.exists(path) and os.path.dirname(path) == serving.export_dir(session.id)
        assert os.path.commonpath([path, get_upload_folder()]) == get_upload_folder() and session.id not in path
    if ending == "tab closed":
        handlers.page.end_session(request)
    else:
        handlers.page.release_state(session)
    assert not any(os.path.exists(path) for path in offered)


def test_the_canvas_label_names_no_single_mask_colour():
    # Each object has its own colour (object 1 blue, object 2 another): a label saying "mask in blue"
    # was wrong from the second object on.
    from m2n2.studio import objects
    assert objects.colour(1) != objects.colour(2)
    label = UI.image.label.lower()
    assert not re.search(r"\b(blue|orange|red|green|yellow|purple|pink)\b", label), label
    assert "colour" in label and "outlined" in label


@pytest.mark.parametrize("click_threads", [1, 2])
def test_a_clicks_markov_products_use_the_click_threads_option(click_threads, square_file, monkeypatch):
    # The app runs each job on one torch thread; a click's chain may use a second core
    # (--click-threads, m2n2.threads.using_threads), an image's preparation never does.
    import dataclasses

    import m2n2.operator as operator_module
    from m2n2.threads import allowed_threads
    options = dataclasses.replace(OPTIONS, click_threads=click_threads, threads=1)
    seen = []
    step = operator_module.TransitionOperator.step
    monkeypatch.setattr(operator_module.TransitionOperator, "step",
                        lambda self, states: seen.append(allowed_threads()) or step(self, states))
    handlers = Handlers(serving.start(options, CountingBackbone), UI, app.EXAMPLES)
    out = handlers.images.set_image({"path": square_file[0]}, None)
    assert set(seen) <= {1}  # the preparation's products (if any) keep the job's one thread
    seen.clear()
    handlers.clicks.click(out[STATE], FOREGROUND, select(*centre_of(square_file[1])))
    assert seen and set(seen) == {click_threads}
    assert allowed_threads() == torch.get_num_threads()  # nothing left set after the click


def test_the_click_threads_flag():
    assert app.options_from_args(app.parse_args(["--click-threads", "1"])).click_threads == 1
    assert app.options_from_args(app.parse_args([])).click_threads == min(2, os.cpu_count() or 1)


def test_a_clicks_own_event_leaves_the_shared_views_to_the_event_after_it(handlers, loaded, monkeypatch):
    session, truth = loaded
    drawn = []
    render_shared = handlers.page.render_shared
    monkeypatch.setattr(handlers.page, "render_shared", lambda *a, **k: drawn.append(1) or render_shared(*a, **k))
    out = handlers.clicks.click_only(session, FOREGROUND, select(*centre_of(truth)))
    assert drawn == [] and set(out) <= set(UI.core) and IMAGE in out   # the object list and recipe: not drawn
    shared = handlers.page.after_click(session)
    assert drawn == [1] and UI.objects in shared and UI.recipe_text in shared
    assert handlers.clicks.click(session, FOREGROUND, select(*centre_of(truth)))[UI.objects] is not None


def test_a_clicks_plots_follow_its_mask_in_the_event_after_it(handlers, loaded, monkeypatch):
    """The heatmap and score curve (about 0.1 MB of HTML) are left out of a click's own event, and
    drawn and sent by the one after it: the plots of that click, the same as a full update draws them."""
    from m2n2.studio import views
    drawn, heatmap_view = [], views.heatmap_view
    monkeypatch.setattr(views, "heatmap_view", lambda *a: drawn.append(a) or heatmap_view(*a))
    session, truth = loaded
    out = handlers.clicks.click_only(session, FOREGROUND, select(*centre_of(truth)))
    assert HEATMAP not in out and SCORES not in out and "1 click" in out[STATUS]
    assert not drawn                                 # nothing drawn on the mask's path
    following = handlers.page.after_click(out[STATE])
    assert set(following) == set(UI.after_click) and len(drawn) == 1
    assert handlers.page.after_click(out[STATE])[HEATMAP] == following[HEATMAP] and len(drawn) == 1  # kept
    assert out[STATE].plots.point is None            # the click's map and curves (7 MB at 512 px) let go
    heatmap, scores = following[HEATMAP], following[SCORES]
    assert "m2n2-heatmap" in heatmap and "<svg" in scores and "scores of click 1 " in scores
    # a full update of the same session (undo's, the threshold's) draws the same plots
    again = handlers.clicks.apply(out[STATE], out[STATE].clicks, None, "click")
    assert (again[HEATMAP], again[SCORES]) == (heatmap, scores)
    # a second click's follow-up sends the second click's plots
    second = handlers.clicks.click_only(out[STATE], BACKGROUND, select(3, 3))
    assert "scores of click 2 " in handlers.page.after_click(second[STATE])[SCORES]


def test_a_refused_click_leaves_the_plots_shown_and_a_reset_clears_them(handlers, loaded):
    session, truth = loaded
    shown = handlers.page.after_click(handlers.clicks.click_only(session, FOREGROUND, select(*centre_of(truth)))[STATE])
    with pytest.warns(UserWarning):
        refused = handlers.clicks.click_only(session, 7, select(*centre_of(truth)))   # no such label
    after = handlers.page.after_click(refused[STATE])
    assert (after[HEATMAP], after[SCORES]) == (shown[HEATMAP], shown[SCORES])   # the plots still match the mask
    reset = handlers.clicks.reset(session)
    assert reset[HEATMAP] is None and reset[SCORES] is None
    after = handlers.page.after_click(reset[STATE])
    assert after[HEATMAP] is None and after[SCORES] is None


def test_the_queue_looks_for_events_200_times_a_second_not_1000():
    """Gradio's queue wakes every 1 ms while idle; the app's sets its loops' intervals (the
    attributes must exist: a Gradio that renamed them would silently poll at 1 kHz again)."""
    queue = DEMO._queue
    assert queue.sleep_when_free == app.QUEUE_POLL_S == 0.005
    assert queue.progress_update_sleep_when_free == app.PROGRESS_POLL_S == 0.05


def test_a_clicks_heatmap_and_score_curve_are_drawn_beside_its_picture_the_same(monkeypatch, square_file):
    """With two click threads the helper draws the heatmap and score curve while the handler draws
    the picture: the same views as with one thread."""
    import dataclasses
    import threading

    import m2n2.studio.page as page_module
    from m2n2.studio import views
    drawn_on = []
    heatmap_view = views.heatmap_view
    monkeypatch.setattr(views, "heatmap_view",
                        lambda *a: drawn_on.append(threading.current_thread().name) or heatmap_view(*a))
    # the helper's half is kept with the helper here (taken back, the handler draws it as on one thread)
    monkeypatch.setattr(page_module, "joined", lambda pending, fn: pending.result() if pending else fn())
    path, truth = square_file
    shown = {}
    for threads in (1, 2):
        options = dataclasses.replace(OPTIONS, click_threads=threads)
        handlers = Handlers(serving.start(options, CountingBackbone), UI, app.EXAMPLES)
        session = handlers.images.set_image({"path": path}, None)[STATE]
        first = handlers.clicks.click(session, FOREGROUND, select(*centre_of(truth)))
        out = handlers.clicks.click(first[STATE], BACKGROUND, select(3, 3))
        shown[threads] = (out[IMAGE], out[HEATMAP], out[SCORES])
    assert drawn_on[:2] == ["MainThread", "MainThread"]
    assert all(name.startswith("m2n2-helper") for name in drawn_on[2:]) and len(drawn_on) == 4
    assert np.array_equal(shown[1][0], shown[2][0])
    assert shown[1][1] == shown[2][1] and shown[1][2] == shown[2][2] and "<svg" in shown[2][2]


def test_at_start_compiles_the_click_kernels_then_prepares_the_examples(monkeypatch):
    calls = []
    monkeypatch.setattr(app, "warm_up", lambda config: calls.append(("warm_up", config)) or 0.5)
    monkeypatch.setattr(app.views, "warm_up", lambda: calls.append("views") or 0.1)
    handlers = SimpleNamespace(images=SimpleNamespace(prepare_examples=lambda: calls.append("examples")))
    options = SimpleNamespace(config=M2N2Config.fast())
    app.at_start(handlers, options, True)
    assert calls == [("warm_up", M2N2Config.fast()), "views", "examples"]
    calls.clear()
    app.at_start(handlers, options, False)                   # --no-prepare-examples: the kernels still
    assert calls == [("warm_up", M2N2Config.fast()), "views"]
