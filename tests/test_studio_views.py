"""Pictures: overlay with markers, heatmap with legend, score curve, cut-out."""

from pathlib import Path

import numpy as np
import pytest
from matplotlib.lines import Line2D
from PIL import Image

from m2n2.export import cutout
from m2n2.studio import views
from m2n2.predictor import PointResult
from m2n2.studio.views import (BACKGROUND_COLOUR, FONT_SIZE, FOREGROUND_COLOUR, OUTLINE_DARK, OUTLINE_LIGHT,
                               colourise, heatmap_figure, heatmap_scale, marker_radius, overlay,
                               score_figure, status_line)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def grey(height=40, width=60, value=100):
    return np.full((height, width, 3), value, dtype=np.uint8)


def point_result(overridden=False, count=10):
    thresholds = np.linspace(0.0, 1.0, count)
    score = np.exp(-((thresholds - 0.3) ** 2) / 0.01)
    index = int(np.argmax(score))
    return PointResult(xy=(5.0, 6.0), label=1, markov_map=np.zeros((4, 4), np.float32), thresholds=thresholds,
                       score=score, score_prior=(thresholds < 0.8).astype(float), score_edge=score * 7.0,
                       score_pos=np.ones(count), score_neg=np.ones(count),
                       threshold=0.9 if overridden else float(thresholds[index]), threshold_index=index,
                       overridden=overridden)


def test_overlay_tints_the_mask_only_and_draws_coloured_markers():
    mask = np.zeros((40, 60), dtype=bool)
    mask[10:30, 10:30] = True
    out = overlay(grey(), mask, [(45, 20), (50, 35)], [1, 0])
    assert out.shape == (40, 60, 3) and out.dtype == np.uint8
    assert tuple(out[0, 59]) == (100, 100, 100)                      # outside: untouched
    inside = out[20, 20].astype(int)
    assert inside[2] > 100 and inside[0] < 100                        # tinted towards blue
    tones = {OUTLINE_DARK, OUTLINE_LIGHT}
    assert tuple(out[10, 20]) in tones and tuple(out[9, 20]) in tones  # outlined just inside and outside
    assert tuple(out[20, 45]) == FOREGROUND_COLOUR
    assert tuple(out[35, 50]) == BACKGROUND_COLOUR
    ring = marker_radius(40, 60) + 1
    assert tuple(out[20, 45 + ring]) == (255, 255, 255)


def test_overlay_resizes_a_full_size_mask_and_works_without_one():
    big = np.zeros((80, 120), dtype=bool)
    big[:, :60] = True
    out = overlay(grey(), big, [], [])
    assert out[20, 10, 2] > 100 and tuple(out[20, 50]) == (100, 100, 100)
    np.testing.assert_array_equal(overlay(grey(), None, [], []), grey())


def test_marker_on_the_last_pixel_is_clipped_not_an_error():
    out = overlay(grey(), None, [(59, 39)], [0])
    assert tuple(out[39, 59]) == BACKGROUND_COLOUR


def test_colourise_maps_low_and_high_to_different_colours():
    out = colourise(np.array([[0.0, 1.0], [np.nan, 2.0]]))
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8
    assert out[0, 0].sum() < out[0, 1].sum()                          # magma: dark low, light high
    np.testing.assert_array_equal(out[1, 0], out[0, 1])               # NaN and >1 read as "far"
    np.testing.assert_array_equal(out[1, 1], out[0, 1])


def test_heatmap_figure_shows_the_map_the_click_and_a_legend():
    values = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    figure = heatmap_figure(values, (2.0, 1.0), 1)
    image_axes = figure.axes[0]
    np.testing.assert_array_equal(image_axes.images[0].get_array(), colourise(heatmap_scale(values)))
    marker = image_axes.lines[0]
    assert marker.get_xdata()[0] == 2.0 and marker.get_ydata()[0] == 1.0
    labels = [t.get_text() for t in figure.axes[1].get_xticklabels()]
    assert "reached first" in labels[0] and "reached last" in labels[-1]


def test_heatmap_of_a_large_map_is_shown_at_most_400_pixels_a_side_over_the_whole_picture():
    values = np.random.default_rng(0).random((900, 1200)).astype(np.float32)
    shown = heatmap_figure(values, (5.0, 5.0), 0).axes[0].images[0]
    assert max(shown.get_array().shape[:2]) <= 400
    assert shown.get_extent() == [-0.5, 1199.5, 899.5, -0.5]           # click coordinates stay the map's


def test_heatmap_scale_keeps_the_order_and_spreads_the_percentiles():
    values = np.concatenate([np.zeros(5), np.linspace(0.99990, 0.99999, 90), np.ones(5)])
    scaled = heatmap_scale(values)
    assert scaled.max() == 1.0 and np.all(scaled[:5] == scaled.min())  # ties keep one colour
    assert np.all(np.diff(scaled) >= 0)                                # the order of the values is kept
    middle = scaled[5:95]                                             # 90 % of the map within 1e-4 of 1
    assert middle.max() - middle.min() > 0.8                          # still spans most of the colours
    assert np.all(heatmap_scale(np.full((3, 3), 0.7)) == 0.0)         # a flat map: one colour, no NaN


def vertical_lines(axes):
    return [line for line in axes.lines if isinstance(line, Line2D) and len(set(line.get_xdata())) == 1]


def test_score_figure_marks_the_adaptive_threshold():
    result = point_result()
    figure = score_figure(result, 3)
    top, bottom = figure.axes[:2]
    assert [line.get_xdata()[0] for line in vertical_lines(top)] == [pytest.approx(result.threshold)]
    assert any("click 3 (foreground)" in text.get_text() for text in figure.texts)
    np.testing.assert_allclose(top.lines[0].get_ydata(), result.score)
    edge = next(line for line in bottom.lines if line.get_label().startswith("edge"))
    assert max(edge.get_ydata()) == pytest.approx(1.0)               # edge scaled to its maximum
    legend = figure.legends[0]
    assert len(legend.get_texts()) == 4
    assert all(text.get_fontsize() >= FONT_SIZE for text in legend.get_texts())


def test_score_figure_shows_an_override_and_the_adaptive_choice():
    result = point_result(overridden=True)
    top = score_figure(result, 1).axes[0]
    xs = sorted(line.get_xdata()[0] for line in vertical_lines(top))
    assert xs == [pytest.approx(float(result.thresholds[result.threshold_index])), pytest.approx(0.9)]
    assert any("(yours)" in text.get_text() for text in top.get_legend().get_texts())


def test_score_figure_thins_long_curves_but_keeps_the_peak():
    result = point_result(count=50_000)
    line = score_figure(result, 1).axes[0].lines[0]
    assert len(line.get_xdata()) <= 1501
    assert max(line.get_ydata()) == pytest.approx(result.score.max())


def test_cutout_alpha_follows_the_mask():
    image = grey(4, 5)
    mask = np.zeros((4, 5), dtype=bool)
    mask[1, 2] = True
    rgba = cutout(image, mask)
    assert rgba.shape == (4, 5, 4)
    np.testing.assert_array_equal(rgba[..., 3], mask * 255)
    np.testing.assert_array_equal(rgba[..., :3], image)
    with pytest.raises(ValueError, match="differ in size"):
        cutout(image, np.zeros((3, 3), dtype=bool))
    assert not hasattr(views, "cutout")                               # one cut-out: the exports' (the app's download)


def wcag_luminance(rgb):
    """WCAG 2 relative luminance, written out here (not the module's) so that the test checks it."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    c = np.where(c <= 0.03928, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return 0.2126 * c[..., 0] + 0.7152 * c[..., 1] + 0.0722 * c[..., 2]


def outline_contrasts(image, mask, **kwargs):
    """Contrast ratio of each (outline pixel, neighbouring picture pixel) pair of the drawn overlay.

    The outline is whatever the overlay draws beyond its tint (the pixels that differ from the
    overlay without outline); its neighbours are the 4-neighbours that are not outline.
    """
    drawn = overlay(image, mask, [], [], **kwargs)
    line = (drawn != overlay(image, mask, [], [], outline=False, **kwargs)).any(axis=2)
    assert line.sum() > 0
    luminance = wcag_luminance(drawn)
    ratios = []
    for axis in (0, 1):
        for forward in (True, False):
            a = [slice(None)] * 2
            b = [slice(None)] * 2
            a[axis], b[axis] = (slice(None, -1), slice(1, None)) if forward else (slice(1, None), slice(None, -1))
            pairs = line[tuple(a)] & ~line[tuple(b)]
            la, lb = luminance[tuple(a)][pairs], luminance[tuple(b)][pairs]
            ratios.append((np.maximum(la, lb) + 0.05) / (np.minimum(la, lb) + 0.05))
    return np.concatenate(ratios)


@pytest.mark.parametrize("background", [(30, 144, 255), (0, 0, 0), (255, 255, 255), (120, 120, 120)])
def test_the_mask_outline_shows_on_any_plain_background(background):
    image = np.empty((40, 60, 3), dtype=np.uint8)
    image[:] = background
    mask = np.zeros((40, 60), dtype=bool)
    mask[10:30, 10:30] = True
    assert outline_contrasts(image, mask).min() >= 3.0                # WCAG 1.4.11's 3:1, on every side


def example(name):
    return np.asarray(Image.open(EXAMPLES / f"{name}.jpg").convert("RGB"))


@pytest.fixture(scope="module")
def example_results(one_thread):
    """Masks and Markov-maps of clicks on the examples (colour backbone, R = 32: no weights needed)."""
    from m2n2.backbones import load
    from m2n2.predictor import M2N2Predictor

    clicks = {"astronaut": [(150, 440), (30, 30)], "chelsea": [(300, 150)], "coffee": [(300, 200), (50, 50)]}
    results = {}
    for name, points in clicks.items():
        image = example(name)
        predictor = M2N2Predictor(load("color", resolution=32))
        predictor.set_image(image)
        for xy in points:
            prediction = predictor.predict([xy], [1])
            results[name, xy] = (image, prediction.mask, prediction.points[-1].markov_map)
    return results


def test_the_mask_outline_keeps_3_to_1_contrast_on_the_example_photos(example_results):
    """A fixed light-inside, dark-outside line vanished against light suits and dark backgrounds:
    43 to 96 % of its pairs reached 3:1 on these clicks."""
    for (name, xy), (image, mask, _) in example_results.items():
        ratios = outline_contrasts(image, mask)
        assert np.mean(ratios >= 3.0) >= 0.97, (name, xy, np.mean(ratios >= 3.0))


def test_a_second_objects_outline_shows_on_the_coffee_photo(example_results):
    image, first, _ = example_results["coffee", (300, 200)]
    _, second, _ = example_results["coffee", (50, 50)]
    ratios = outline_contrasts(image, first, colour=(30, 144, 255), others=[(second, (255, 140, 0))])
    assert np.mean(ratios >= 3.0) >= 0.97


def test_the_heatmap_spreads_its_colours_on_the_example_photos(example_results):
    """A click in a large region leaves most of its map within 1e-4 of 1: min-max scaling painted
    56 to 94 % of the astronaut and coffee maps one colour; the percentiles spread them."""
    for (name, xy), (_, _, markov_map) in example_results.items():
        shown = heatmap_figure(markov_map, xy, 1).axes[0].images[0].get_array().reshape(-1, 3)
        colours, counts = np.unique(shown, axis=0, return_counts=True)
        assert counts.max() / counts.sum() <= 0.25, (name, xy, counts.max() / counts.sum())
        assert len(colours) >= 64, (name, xy, len(colours))


def test_legends_are_readable_where_the_app_shows_them():
    """The plot column is about 430 px wide at 1400 px: text must stay >= 9 px tall there."""
    figure = score_figure(point_result(), 1)
    width_px = figure.get_figwidth() * figure.dpi
    for text in [*figure.legends[0].get_texts(), *figure.axes[0].get_legend().get_texts()]:
        assert text.get_fontsize() * figure.dpi / 72 * 430 / width_px >= 9


def test_status_line_says_what_happened():
    line = status_line(backbone="colour-affinity fallback (no Stable Diffusion), R = 16", resolution=16,
                       reason="SD2 weights are absent; using the colour-affinity fallback",
                       image_seconds=1.5, action=("undo", 0.01), clicks=2, pending=1, mask_fraction=0.25,
                       threshold=(0.3, True), memory_bytes=2 ** 21)
    assert line.startswith("⚠ colour-affinity fallback (no Stable Diffusion), R = 16 (fell back: SD2 weights are absent)")
    assert line.count("colour-affinity fallback") == 1                 # said once
    for part in ("image 1.50 s", "undo 0.01 s", "2 clicks (+1 waiting)", "mask 25.0 %", "threshold 0.300 (yours)",
                 "image memory 2 MiB"):
        assert part in line
    assert "load" in status_line(backbone=None, resolution=64)
