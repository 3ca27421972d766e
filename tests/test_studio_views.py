"""Pictures: overlay with markers, heatmap with legend, score curve, cut-out."""

import numpy as np
import pytest
from matplotlib.lines import Line2D

from m2n2.predictor import PointResult
from m2n2.studio.views import (BACKGROUND_COLOUR, FONT_SIZE, FOREGROUND_COLOUR, OUTLINE_INNER,
                               OUTLINE_OUTER, colourise, cutout, heatmap_figure, marker_radius, overlay,
                               score_figure, status_line)


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
    assert tuple(out[10, 20]) == OUTLINE_INNER                        # outline: light inside the border
    assert tuple(out[9, 20]) == OUTLINE_OUTER                         # and dark just outside it
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
    np.testing.assert_array_equal(image_axes.images[0].get_array(), values)
    marker = image_axes.lines[0]
    assert marker.get_xdata()[0] == 2.0 and marker.get_ydata()[0] == 1.0
    labels = [t.get_text() for t in figure.axes[1].get_xticklabels()]
    assert "reached first" in labels[0] and "reached last" in labels[1]


def vertical_lines(axes):
    return [line for line in axes.lines if isinstance(line, Line2D) and len(set(line.get_xdata())) == 1]


def test_score_figure_marks_the_adaptive_threshold():
    result = point_result()
    figure = score_figure(result, 3)
    top, bottom = figure.axes[:2]
    assert [line.get_xdata()[0] for line in vertical_lines(top)] == [pytest.approx(result.threshold)]
    assert "click 3 (foreground)" in top.get_title()
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


@pytest.mark.parametrize("background", [(30, 144, 255), (0, 0, 0), (255, 255, 255)])
def test_the_mask_outline_shows_on_any_background(background):
    image = np.empty((40, 60, 3), dtype=np.uint8)
    image[:] = background
    mask = np.zeros((40, 60), dtype=bool)
    mask[10:30, 10:30] = True
    out = overlay(image, mask, [], []).astype(int)
    ring = np.array([out[10, 20], out[9, 20]])                        # inner and outer line at the top edge
    contrast = np.abs(ring - np.array(background)).sum(axis=1).max()
    assert contrast >= 300                                            # one of the two lines stands out


def test_legends_are_readable_where_the_app_shows_them():
    """The plot column is about 430 px wide at 1400 px: text must stay >= 9 px tall there."""
    figure = score_figure(point_result(), 1)
    width_px = figure.get_figwidth() * figure.dpi
    for text in [*figure.legends[0].get_texts(), *figure.axes[0].get_legend().get_texts()]:
        assert text.get_fontsize() * figure.dpi / 72 * 430 / width_px >= 9


def test_status_line_says_what_happened():
    line = status_line(backbone="colour fallback, R = 16", resolution=16, reason="SD2 weights are absent",
                       image_seconds=1.5, action=("undo", 0.01), clicks=2, pending=1, mask_fraction=0.25,
                       threshold=(0.3, True), memory_bytes=2 ** 21)
    assert line.startswith("⚠ Fell back: SD2 weights are absent")
    for part in ("image 1.50 s", "undo 0.01 s", "2 clicks (+1 waiting)", "mask 25.0 %", "threshold 0.300 (yours)",
                 "image memory 2 MiB"):
        assert part in line
    assert "load" in status_line(backbone=None, resolution=64)
