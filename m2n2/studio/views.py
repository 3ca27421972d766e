"""What the app shows: mask overlay with click markers, Markov-map heatmap, score curve, the status
line, and the files it offers for download.

Everything here is pure (arrays in, arrays or text out) so the app only wires it up. The heatmap,
the score curve and the status line are HTML that the browser draws (matplotlib lends only its
colour map): no figure is drawn or encoded on the server per click.
"""

from __future__ import annotations

import base64
import io
import re
import time
from html import escape

import numba
import numpy as np
from matplotlib import colormaps
from PIL import Image
from scipy import ndimage

from ..image import resize_mask

FOREGROUND_COLOUR = (40, 200, 60)
BACKGROUND_COLOUR = (235, 45, 45)
MASK_COLOUR = (30, 144, 255)
# The outline's two tones. Each of its two bands (just inside the mask's border, just outside it)
# takes, pixel by pixel, the tone that stands out against the pixels beside that band, so the
# outline keeps WCAG's 3:1 contrast for graphics on a white suit as on a black sky.
OUTLINE_DARK, OUTLINE_LIGHT = (0, 0, 0), (255, 255, 255)
#: WCAG 2's minimum contrast ratio for graphical objects (success criterion 1.4.11).
MIN_CONTRAST = 3.0
# Legends and labels of the figures, in points at the figures' 100 dpi (they are shown ~1:1).
FONT_SIZE = 10
HEATMAP_COLOURMAP = "magma"
#: Percentiles of a Markov-map that the heatmap's colours span (values beyond take the end colours).
HEATMAP_PERCENTILES = (2.0, 98.0)
_MAX_CURVE_POINTS = 2 * 356  # two per unit of the score view's plot width (356 of its 440 units)


def marker_radius(height: int, width: int) -> int:
    """Radius in pixels of a click marker: visible on small and large images alike."""
    return max(3, round(min(height, width) / 70))


def outline_width(height: int, width: int) -> int:
    """Width in pixels of each of the outline's two bands (2 on a 512-pixel picture)."""
    return max(1, round(min(height, width) / 256))


def _linear_channel(values: np.ndarray) -> np.ndarray:
    channels = np.asarray(values, dtype=np.float64) / 255.0
    return np.where(channels <= 0.04045, channels / 12.92, ((channels + 0.055) / 1.055) ** 2.4)


# Each uint8 channel value's linear-light share of the luminance (a table: no power per pixel).
_LUMINANCE_TABLE = (_linear_channel(np.arange(256))[:, None] * np.array([0.2126, 0.7152, 0.0722])).astype(np.float32)


def relative_luminance(rgb) -> np.ndarray:
    """WCAG 2 relative luminance in [0, 1] of sRGB colours (values 0..255, rounded; any leading shape)."""
    rgb = np.asarray(rgb, dtype=np.float32)
    if rgb.ndim == 3:  # a picture: one compiled pass (5 -> 1 ms at 512 x 512), the same sums
        return _picture_luminance(rgb, _LUMINANCE_TABLE)
    index = np.clip(np.rint(rgb), 0, 255).astype(np.intp)
    table = _LUMINANCE_TABLE
    return table[index[..., 0], 0] + table[index[..., 1], 1] + table[index[..., 2], 2]


@numba.njit(cache=True, nogil=True)
def _picture_luminance(rgb, table):  # pragma: no cover - compiled
    height, width, _ = rgb.shape
    out = np.empty((height, width), np.float32)
    for y in range(height):
        for x in range(width):
            total = np.float32(0.0)
            for channel in range(3):
                level = min(max(np.rint(rgb[y, x, channel]), np.float32(0.0)), np.float32(255.0))
                total += table[int(level), channel]
            out[y, x] = total
    return out


def contrast_ratio(luminance_a, luminance_b) -> np.ndarray:
    """WCAG 2 contrast ratio (1 to 21) between relative luminances."""
    a, b = np.asarray(luminance_a, dtype=np.float64), np.asarray(luminance_b, dtype=np.float64)
    return (np.maximum(a, b) + 0.05) / (np.minimum(a, b) + 0.05)


_DARK_LUMINANCE, _LIGHT_LUMINANCE = relative_luminance(OUTLINE_DARK), relative_luminance(OUTLINE_LIGHT)


def _draw_outline(out: np.ndarray, mask: np.ndarray, width_px: int) -> None:
    """Draw ``mask``'s two-band outline into ``out`` (float RGB, already tinted), in place.

    For each band pixel, the darkest and the lightest pixel of the neighbouring strip on the band's
    side (within ``width_px + 1``) tell how well each tone would stand out there. The band keeps one
    tone (the one that reaches 3:1 on most of it) wherever that tone reaches 3:1, and elsewhere takes
    whichever tone contrasts more: one colour along most of the line, switched only where it
    would vanish.
    """
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return
    # Only the mask's bounding box (and the strips around it) is looked at: a small object costs little.
    margin = 3 * width_px + 2
    box = (slice(max(0, rows[0] - margin), rows[-1] + margin + 1), slice(max(0, cols[0] - margin), cols[-1] + margin + 1))
    out, mask = out[box], mask[box]  # views: the drawing lands in the caller's array
    # Taxicab distances to the other side (the picture's edge counts as outside the mask): n
    # erosions or dilations by the cross, in two passes instead of four.
    padded = np.pad(mask, 1)
    to_outside = ndimage.distance_transform_cdt(padded, metric="taxicab")[1:-1, 1:-1]
    to_inside = ndimage.distance_transform_cdt(~mask, metric="taxicab")
    inner, inside = mask & (to_outside <= width_px), mask & (to_outside > width_px) & (to_outside <= 2 * width_px)
    outer, outside = ~mask & (to_inside <= width_px), ~mask & (to_inside > width_px) & (to_inside <= 2 * width_px)
    luminance = relative_luminance(out)
    for band, side in ((inner, inside), (outer, outside)):
        if not band.any():
            continue
        if not side.any():  # a mask too thin to have an inside strip: look at the band itself
            side = band
        # The darkest and lightest strip pixel in the (2 width_px + 3)-square around each band
        # pixel (band pixels with none in reach take their own luminance).
        rows, cols = np.nonzero(band)
        lowest, highest = _reach_extremes(luminance, side, rows, cols, width_px + 1)
        dark = contrast_ratio(lowest, _DARK_LUMINANCE)     # worst case: the darkest neighbour
        light = contrast_ratio(highest, _LIGHT_LUMINANCE)  # worst case: the lightest neighbour
        usual_dark = (dark >= MIN_CONTRAST).sum() >= (light >= MIN_CONTRAST).sum()
        if usual_dark:
            use_dark = (dark >= MIN_CONTRAST) | (dark >= light)
        else:
            use_dark = (light < MIN_CONTRAST) & (dark > light)
        out[band] = np.where(use_dark[:, None], np.array(OUTLINE_DARK, np.float32),
                             np.array(OUTLINE_LIGHT, np.float32))


@numba.njit(cache=True, nogil=True)
def _reach_extremes(luminance, side, rows, cols, radius):  # pragma: no cover - compiled
    """Per band pixel (``rows[i], cols[i]``), the lowest and highest ``luminance`` of ``side``
    pixels within ``radius`` (a square, cut at the picture's edge), or its own where there is none.

    The minimum and maximum filters of the whole box (scipy's, mirrored at the edge: the same
    values), but looked at around the band only: 10 -> 1 ms for the astronaut's outline.
    """
    height, width = luminance.shape
    count = rows.size
    lowest = np.empty(count, np.float32)
    highest = np.empty(count, np.float32)
    for i in range(count):
        row, col = rows[i], cols[i]
        low, high, seen = np.float32(np.inf), np.float32(-np.inf), False
        for y in range(max(0, row - radius), min(height, row + radius + 1)):
            for x in range(max(0, col - radius), min(width, col + radius + 1)):
                if side[y, x]:
                    value = luminance[y, x]
                    low, high, seen = min(low, value), max(high, value), True
        if not seen:
            low = high = luminance[row, col]
        lowest[i], highest[i] = low, high
    return lowest, highest


def _tint(out: np.ndarray, mask: np.ndarray, colour, alpha: float) -> None:
    """``out[mask] = (1 - alpha) out[mask] + alpha colour`` in place, in float32."""
    _tint_pixels(out, mask, np.float32(1.0 - alpha), alpha * np.array(colour, dtype=np.float32))


@numba.njit(cache=True, nogil=True)
def _tint_pixels(out, mask, keep, added):  # pragma: no cover - compiled
    """One pass over the picture (numpy's three over the whole picture took 5 to 8 ms at 512 x 512;
    this, under 1), each tinted channel ``out * keep + added`` rounded after each operation as
    numpy's float32 lines round it (no fused multiply-add: numba's default)."""
    height, width, channels = out.shape
    for y in range(height):
        for x in range(width):
            if mask[y, x]:
                for c in range(channels):
                    out[y, x, c] = out[y, x, c] * keep + added[c]


def overlay(image: np.ndarray, mask: np.ndarray | None, points, labels, alpha: float = 0.45,
            colour: tuple[int, int, int] = MASK_COLOUR, others=(), outline: bool = True) -> np.ndarray:
    """Draw the mask and the clicks over an image.

    Parameters
    ----------
    image : numpy.ndarray
        (h, w, 3) uint8 RGB image.
    mask : numpy.ndarray or None
        Boolean mask of any size (resized to the image); None draws the clicks only.
    points : array-like
        (K, 2) click positions (x, y) in the image's pixels.
    labels : array-like
        (K,) 1 for foreground (green marker), 0 for background (red marker).
    alpha : float
        Opacity of the mask tint.
    colour : tuple of int
        The mask's tint (RGB).
    others : sequence of (mask, colour)
        Other objects' masks, tinted in their colours under the mask and outlined more thinly
        (no clicks).
    outline : bool
        Draw the outlines (False: the tints only).

    Returns
    -------
    numpy.ndarray
        (h, w, 3) uint8: the image, the masks tinted, each outlined by a dark and a light band
        (see :func:`_draw_outline`) whose contrast with the pixels beside them is at least 3:1
        wherever one tone can reach it, and a disc with a white ring at every click.
    """
    out = np.array(image, dtype=np.float32, copy=True)
    height, width = out.shape[:2]
    width_px = outline_width(height, width)
    drawn = []
    for other, other_colour in others:
        other = resize_mask(other, (height, width))
        _tint(out, other, other_colour, alpha)
        drawn.append((other, max(1, width_px // 2)))
    if mask is not None:
        mask = resize_mask(mask, (height, width))
        _tint(out, mask, colour, alpha)
        drawn.append((mask, width_px))  # last: the current object's outline lies on top
    if outline:
        for shape, band_width in drawn:
            if shape.any():
                _draw_outline(out, shape, band_width)
    np.rint(out, out=out)
    out = np.clip(out, 0, 255, out=out).astype(np.uint8)

    radius = marker_radius(height, width)
    ring = radius + max(1, radius // 3)
    for (x, y), label in zip(np.asarray(points, dtype=np.float64).reshape(-1, 2), np.asarray(labels).reshape(-1)):
        # Only the square around the marker (a whole-image distance map per click costs ~1 ms each).
        top, left = max(0, int(np.floor(y)) - ring - 1), max(0, int(np.floor(x)) - ring - 1)
        rows, cols = np.ogrid[top:min(height, int(np.ceil(y)) + ring + 2), left:min(width, int(np.ceil(x)) + ring + 2)]
        distance2 = (cols - x) ** 2 + (rows - y) ** 2
        patch = out[top:top + distance2.shape[0], left:left + distance2.shape[1]]
        patch[distance2 <= ring ** 2] = (255, 255, 255)
        patch[distance2 <= radius ** 2] = FOREGROUND_COLOUR if int(label) == 1 else BACKGROUND_COLOUR
    return out


def warm_up() -> float:
    """Compile the overlay's kernels (or load them from numba's cache) on a tiny picture; returns
    the seconds it took. A server calls this at start with :func:`m2n2.predictor.warm_up`."""
    start = time.perf_counter()
    mask = np.zeros((48, 64), dtype=bool)
    mask[20:28, 24:40] = True  # the outline looks at a box inside the picture (a strided view), as a click's
    overlay(np.full((48, 64, 3), 128, dtype=np.uint8), mask, [(30.0, 24.0)], [1], others=[(~mask, (255, 140, 0))])
    return time.perf_counter() - start


#: The canvas picture's encoding: JPEG at quality 95 without chroma subsampling.
CANVAS_FORMAT = "jpeg"
CANVAS_JPEG = {"quality": 95, "subsampling": 0}


def canvas_picture(picture: np.ndarray) -> Image.Image:
    """``picture`` (uint8 RGB) as a PIL image that Gradio encodes as the canvas shows it.

    The canvas is only looked at (downloads are lossless PNGs written apart), so it goes as JPEG at
    quality 95 with full-resolution colour, which keeps the one-pixel outline and markers sharp:
    for the 512 x 512 astronaut overlay 2 ms and 127 kB, against 24 ms and 365 kB for PNG at
    zlib's fastest level (58 ms at Gradio's default), and it decodes faster in the browser.
    Gradio calls ``save(buffer, format, **params)``, so only this instance's ``save`` adds the
    settings (PNG, if asked for, at zlib's fastest level).
    """
    image = Image.fromarray(np.asarray(picture, dtype=np.uint8))
    save = image.save

    def quick_save(fp, format=None, **params):
        kind = str(format or "").lower()
        if kind in ("jpeg", "jpg"):
            params.pop("exif", None)
            params.update(CANVAS_JPEG)
        elif kind == "png":
            params.setdefault("compress_level", 1)
        return save(fp, format, **params)

    image.save = quick_save
    return image


def colourise(values: np.ndarray, colourmap: str = HEATMAP_COLOURMAP) -> np.ndarray:
    """Map an (h, w) array with values in [0, 1] to an (h, w, 3) uint8 RGB image."""
    values = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float32), nan=1.0), 0.0, 1.0)
    rgba = colormaps[colourmap](values, bytes=True)
    return np.ascontiguousarray(rgba[..., :3])


def heatmap_scale(markov_map: np.ndarray) -> np.ndarray:
    """A Markov-map's values spread over [0, 1] by the map's own percentiles.

    A click in a large region leaves most of the map within a hair of 1 (the median can be
    0.99995), so scaling by the minimum and maximum paints most of the picture one colour.
    Here the 2nd to 98th percentiles (:data:`HEATMAP_PERCENTILES`, knots every 2 %) map linearly
    onto [0, 1] piece by piece: a pixel's colour says which share of the picture the walk reaches
    before it. The order of the values is kept; equal values keep one colour; values beyond the
    2nd and 98th percentiles take the end colours.

    Parameters
    ----------
    markov_map : numpy.ndarray
        (h, w) map (NaN reads as 1, "far").

    Returns
    -------
    numpy.ndarray
        (h, w) float32 in [0, 1].
    """
    values = np.nan_to_num(np.asarray(markov_map, dtype=np.float64), nan=1.0, posinf=1.0, neginf=0.0)
    low, high = HEATMAP_PERCENTILES
    knots = np.percentile(values, np.linspace(low, high, int(round((high - low) / 2)) + 1))
    if knots[-1] <= knots[0]:  # a flat map: one colour says so
        return np.zeros(values.shape, dtype=np.float32)
    return np.interp(values, knots, np.linspace(0.0, 1.0, len(knots))).astype(np.float32)


def _display_step(height: int, width: int, limit: int = 400) -> int:
    """Stride that brings a map to at most ``limit`` pixels a side (the heatmap is shown ~400 px wide)."""
    return max(1, -(-max(height, width) // limit))


# ---------------------------------------------------------------------- the views the browser draws
# The heatmap and the score curve are HTML (an <img> and an inline SVG) that the browser lays out
# and draws: the server only colours the map (a table look-up) and writes numbers, instead of
# drawing and encoding two matplotlib figures per click (docs/performance.md, "In the browser").

def _hex(rgb) -> str:
    return "#%02x%02x%02x" % tuple(int(c) for c in rgb)


def _png_data_url(rgb: np.ndarray) -> str:
    """``rgb`` (uint8) as a PNG data URL; zlib's fastest level (the picture is small, the link local)."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="png", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def heatmap_picture(markov_map: np.ndarray) -> np.ndarray:
    """The heatmap's picture: the map at most 400 pixels a side, coloured by :func:`heatmap_scale`
    in the colour-blind-safe ``magma`` map; (h', w', 3) uint8 covering the whole map."""
    height, width = markov_map.shape
    step = _display_step(height, width)
    return colourise(heatmap_scale(np.asarray(markov_map)[::step, ::step]))


def heatmap_view(markov_map: np.ndarray, point_xy: tuple[float, float], label: int) -> str:
    """The Markov-map of one click as a heatmap with a legend (HTML; well-formed XML as well).

    Parameters
    ----------
    markov_map : numpy.ndarray
        (h, w) map in [0, 1] (0 at the click).
    point_xy : tuple of float
        The click (x, y) in the map's pixels, drawn as a marker.
    label : int
        1 foreground, 0 background (the marker's colour).

    Returns
    -------
    str
        A ``<figure>``: a title, the picture of :func:`heatmap_picture` (``<img>``, scaled by the
        browser without smoothing), the click as a round marker placed in percent of the picture,
        and a colour bar (a CSS gradient of the same colour map) whose ends say what low and high
        values mean.
    """
    height, width = markov_map.shape
    picture = heatmap_picture(markov_map)
    # Pixel i covers [i - 0.5, i + 0.5] of the map: its centre is at (i + 0.5) / size of the picture.
    left = 100.0 * (float(point_xy[0]) + 0.5) / width
    top = 100.0 * (float(point_xy[1]) + 0.5) / height
    colour = FOREGROUND_COLOUR if label == 1 else BACKGROUND_COLOUR
    stops = ", ".join(f"{_hex(c)} {100 * k / 16:.2f}%" for k, c in enumerate(colourise(np.linspace(0, 1, 17))))
    return (f'<figure class="m2n2-view m2n2-heatmap">'
            f'<figcaption class="m2n2-title">Markov-map of the latest click</figcaption>'
            f'<div class="m2n2-map"><img src="{_png_data_url(picture)}" width="{picture.shape[1]}" '
            f'height="{picture.shape[0]}" alt="Markov-map of the latest click: dark where the walk from the click '
            f'arrives first"/><span class="m2n2-marker" data-x="{float(point_xy[0]):g}" data-y="{float(point_xy[1]):g}" '
            f'style="left: {left:.3f}%; top: {top:.3f}%; background: {_hex(colour)}"></span></div>'
            f'<div class="m2n2-bar" style="background: linear-gradient(to right, {stops})"></div>'
            f'<div class="m2n2-bar-labels"><span>0: reached first<br/>(like the click)</span><span>50 %</span>'
            f'<span>100 %: reached last<br/>(unlike the click)</span></div>'
            f'<div class="m2n2-caption">share of the picture reached first (the map\'s percentiles)</div>'
            f'</figure>')


def _thinned_indices(count: int, keep: list[int], limit: int = _MAX_CURVE_POINTS) -> np.ndarray:
    """At most about ``limit`` evenly spread indices of ``range(count)``, always including ``keep``."""
    if count <= limit:
        return np.arange(count)
    picked = np.linspace(0, count - 1, limit).round().astype(np.int64)
    return np.unique(np.concatenate([picked, np.asarray(keep, dtype=np.int64)]))


def _ticks(low: float, high: float, most: int) -> np.ndarray:
    """At most ``most`` round tick values (1, 2, 2.5 or 5 times a power of ten apart) in [low, high]."""
    span = high - low
    if not span > 0:
        return np.array([low])
    magnitude = 10.0 ** np.floor(np.log10(span / most))
    step = next(m * magnitude for m in (1.0, 2.0, 2.5, 5.0, 10.0) if span / (m * magnitude) <= most)
    first = np.ceil(low / step - 1e-9) * step
    return np.round(np.arange(first, high + step * 1e-9, step), 10)


def _range(values: np.ndarray) -> tuple[float, float]:
    """The axis range of ``values``: their span and 5 % either side (matplotlib's margins)."""
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    margin = 0.05 * (high - low) if high > low else 0.5
    return low - margin, high + margin


class _Axes:
    """A plotting box of the score view: data coordinates to SVG pixels."""

    def __init__(self, x: float, y: float, width: float, height: float, xlim, ylim):
        self.x, self.y, self.width, self.height, self.xlim, self.ylim = x, y, width, height, xlim, ylim

    def px(self, xs) -> np.ndarray:
        low, high = self.xlim
        return self.x + (np.asarray(xs, dtype=np.float64) - low) / ((high - low) or 1.0) * self.width

    def py(self, ys) -> np.ndarray:
        low, high = self.ylim
        return self.y + self.height - (np.asarray(ys, dtype=np.float64) - low) / ((high - low) or 1.0) * self.height

    def line(self, xs, ys, colour: str, width: float, name: str) -> str:
        ys = np.nan_to_num(np.asarray(ys, dtype=np.float64))
        flat = np.column_stack([self.px(xs), self.py(ys)]).ravel().tolist()
        points = ("%.1f,%.1f " * (len(flat) // 2) % tuple(flat)).rstrip()  # one format: 2x faster than a join
        return (f'<polyline class="m2n2-curve" data-name="{escape(name)}" points="{points}" fill="none" '
                f'stroke="{colour}" stroke-width="{width}" stroke-linejoin="round"/>')

    def vline(self, x: float, colour: str, width: float, name: str, dash: str = "") -> str:
        px = float(self.px([x])[0])
        dashed = f' stroke-dasharray="{dash}"' if dash else ""
        return (f'<line class="m2n2-threshold" data-name="{escape(name)}" data-x="{float(x):.6g}" x1="{px:.1f}" '
                f'x2="{px:.1f}" y1="{self.y:.1f}" y2="{self.y + self.height:.1f}" stroke="{colour}" '
                f'stroke-width="{width}"{dashed}/>')

    def frame(self, yticks, xticks=None) -> str:
        parts = [f'<rect x="{self.x:.1f}" y="{self.y:.1f}" width="{self.width:.1f}" height="{self.height:.1f}" '
                 f'fill="none" stroke="currentColor" stroke-width="0.8"/>']
        for value, py in zip(yticks, self.py(yticks)):
            parts.append(f'<line x1="{self.x - 4:.1f}" x2="{self.x:.1f}" y1="{py:.1f}" y2="{py:.1f}" '
                         f'stroke="currentColor" stroke-width="0.8"/><text x="{self.x - 6:.1f}" y="{py + 4:.1f}" '
                         f'text-anchor="end" font-size="{_TICK_PX}">{value + 0.0:g}</text>')
        bottom = self.y + self.height
        for value, px in zip(xticks if xticks is not None else [], self.px(xticks if xticks is not None else [])):
            parts.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{bottom:.1f}" y2="{bottom + 4:.1f}" '
                         f'stroke="currentColor" stroke-width="0.8"/><text x="{px:.1f}" y="{bottom + 17:.1f}" '
                         f'text-anchor="middle" font-size="{_TICK_PX}">{value + 0.0:g}</text>')
        return "".join(parts)


# Sizes of the score view, in CSS pixels (it is drawn at its width, ~440 px, in the app).
_SCORE_SIZE = (440, 520)
_TEXT_PX, _TICK_PX = round(FONT_SIZE * 100 / 72), round((FONT_SIZE - 1) * 100 / 72)
_BLUE, _COMPONENT_COLOURS = "#1f77b4", ("#7f7f7f", "#ff7f0e", "#2ca02c", "#d62728")  # matplotlib's tab: colours


def _legend_entry(x: float, y: float, colour: str, width: float, text: str, dash: str = "") -> str:
    dashed = f' stroke-dasharray="{dash}"' if dash else ""
    return (f'<g class="m2n2-legend-entry"><line x1="{x:.1f}" x2="{x + 22:.1f}" y1="{y - 4:.1f}" y2="{y - 4:.1f}" '
            f'stroke="{colour}" stroke-width="{width}"{dashed}/><text x="{x + 28:.1f}" y="{y:.1f}" '
            f'font-size="{_TEXT_PX}">{escape(text)}</text></g>')


def score_view(point, click_number: int) -> str:
    """The threshold scores of one click against the candidate threshold (an inline SVG).

    Parameters
    ----------
    point : PointResult
        Needs ``thresholds``, ``score``, ``score_prior``, ``score_edge``, ``score_pos``,
        ``score_neg``, ``threshold``, ``threshold_index``, ``overridden`` and ``label``.
    click_number : int
        1-based number of the click, for the title.

    Returns
    -------
    str
        An ``<svg>`` (440 x 520 user units, scaled to its column). Top: the total score with the
        threshold in use marked (and, when overridden, the adaptive choice dashed); its legend
        sits above the axes, off the curve. Bottom: the four component scores; the edge score is
        divided by its maximum so that all four share the [0, 1] axis. Curves longer than two
        points per unit of the plot's width are thinned (keeping the adaptive choice). Each curve is a ``polyline`` and
        each threshold a ``line`` whose ``data-name`` and ``data-x`` say what they show.
    """
    thresholds = np.asarray(point.thresholds, dtype=np.float64)
    adaptive = float(thresholds[point.threshold_index]) if len(thresholds) else float(point.threshold)
    # Two points per unit of the plot's width (writing the points is most of the view's time).
    index = _thinned_indices(len(thresholds), [int(point.threshold_index)])
    x = thresholds[index]
    score = np.asarray(point.score, dtype=np.float64)[index]
    width, height = _SCORE_SIZE
    xlim = (float(x.min()), float(x.max())) if x.size and x.max() > x.min() else (0.0, 1.0)
    top = _Axes(66, 104, 356, 125, xlim, _range(score))
    bottom = _Axes(66, 237, 356, 171, xlim, (-0.05, 1.05))
    kind = "foreground" if point.label == 1 else "background"
    used = f"threshold used: {point.threshold:.3f}" + (" (yours)" if point.overridden else " (adaptive)")
    parts = [f'<svg class="m2n2-view m2n2-scores" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
             f'role="img" font-family="sans-serif" fill="currentColor">',
             f'<text class="m2n2-title" x="{width / 2}" y="20" text-anchor="middle" font-size="{_TEXT_PX + 1}">'
             f'Threshold scores of click {click_number} ({kind})</text>']
    # The top legend, above the axes (never over the curve).
    legend = [("total score", "currentColor", 1.6, ""), (used, _BLUE, 2, "")]
    if point.overridden:
        legend.append((f"adaptive: {adaptive:.3f}", _BLUE, 1.2, "5,3"))
    parts.append('<g class="m2n2-legend m2n2-legend-top">')
    parts += [_legend_entry(top.x, 44 + 18 * k, colour, w, text, dash) for k, (text, colour, w, dash) in enumerate(legend)]
    parts.append("</g>")
    parts.append(top.frame(_ticks(*top.ylim, 3)))
    parts.append(bottom.frame(_ticks(-0.05, 1.05, 3), _ticks(*xlim, 5)))
    parts.append(top.line(x, score, "currentColor", 1.6, "total score"))
    parts.append(top.vline(point.threshold, _BLUE, 2, "threshold used"))
    if point.overridden:
        parts.append(top.vline(adaptive, _BLUE, 1.2, "adaptive", dash="5,3"))
    edge = np.asarray(point.score_edge, dtype=np.float64)
    edge_max = float(edge.max()) if edge.size and edge.max() > 0 else 1.0
    components = [("area prior", point.score_prior), ("edge (÷ max)", edge / edge_max),
                  ("same-label clicks in", point.score_pos), ("no other-label click in", point.score_neg)]
    for (name, values), colour in zip(components, _COMPONENT_COLOURS):
        parts.append(bottom.line(x, np.asarray(values, dtype=np.float64)[index], colour, 1.2, name))
    parts.append(bottom.vline(point.threshold, _BLUE, 2, "threshold used"))
    parts.append(f'<text x="{top.x + top.width / 2:.1f}" y="448" text-anchor="middle" font-size="{_TEXT_PX}">'
                 f'threshold λ (segment = pixels with value ≤ λ)</text>')
    for axes, name in ((top, "score"), (bottom, "component")):
        middle = axes.y + axes.height / 2
        parts.append(f'<text x="16" y="{middle:.1f}" text-anchor="middle" font-size="{_TEXT_PX}" '
                     f'transform="rotate(-90 16 {middle:.1f})">{name}</text>')
    parts.append('<g class="m2n2-legend m2n2-legend-bottom">')
    parts += [_legend_entry(30 + 210 * (k % 2), 476 + 20 * (k // 2), colour, 1.2, name)
              for k, ((name, _), colour) in enumerate(zip(components, _COMPONENT_COLOURS))]
    parts.append("</g></svg>")
    return "".join(parts)


#: The views' style (``app.py`` adds it to the page's CSS).
CSS = """
.m2n2-view {margin: 0; width: 100%; color: var(--body-text-color)}
.m2n2-view .m2n2-title {text-align: center; font-size: 15px; margin-bottom: 4px}
.m2n2-map {position: relative; line-height: 0}
.m2n2-map img {width: 100%; height: auto; image-rendering: pixelated}
.m2n2-marker {position: absolute; width: 14px; height: 14px; margin: -7px 0 0 -7px; border-radius: 50%;
              border: 2px solid white; box-sizing: border-box}
.m2n2-bar {height: 14px; margin: 10px 10% 2px; border: 1px solid var(--border-color-primary)}
.m2n2-bar-labels {display: flex; justify-content: space-between; font-size: 13px; line-height: 1.2}
.m2n2-bar-labels span:nth-child(2) {text-align: center}
.m2n2-bar-labels span:last-child {text-align: right}
.m2n2-caption {text-align: center; font-size: 13px; margin-top: 2px}
svg.m2n2-scores {display: block; height: auto}
"""


class ClickPlots:
    """A click's heatmap and score curve (:func:`heatmap_view`, :func:`score_view`), drawn on the
    first call and kept: HTML the browser draws (no figure drawn or encoded on the server).

    Parameters
    ----------
    point : PointResult
        The click's result (its Markov-map and score curves).
    point_xy : tuple of float
        The click in the displayed picture's pixels.
    click_number : int
        How many clicks the object has (the curve's title).
    """

    def __init__(self, point, point_xy: tuple[float, float], click_number: int):
        self.point, self.point_xy, self.click_number = point, point_xy, click_number
        self._drawn: tuple[str, str] | None = None

    def __call__(self) -> tuple[str, str]:
        point = self.point
        if self._drawn is None:  # two events asking at once both draw the same HTML
            self._drawn = (heatmap_view(point.markov_map, self.point_xy, point.label),
                           score_view(point, self.click_number))
            self.point = None  # its map and curves (megabytes) are not kept once drawn
        return self._drawn


def status_line(*, backbone: str | None, resolution: int, reason: str | None = None, name: str | None = None,
                image_seconds: float | None = None, action: tuple[str, float] | None = None,
                clicks: int | None = None, mask_fraction: float | None = None,
                threshold: tuple[float, bool] | None = None, memory_bytes: int | None = None) -> str:
    """The app's one status line (HTML): one short line, the most telling parts first.

    Parameters
    ----------
    backbone : str or None
        The backbone's description; None while the model is not loaded yet.
    resolution : int
        R the next image will use.
    reason : str, optional
        Why the app fell back to another backbone: the line starts with a warning sign and the
        backbone's name, once; the reason itself is in the line's tooltip (and the log).
    name : str, optional
        The backbone's short name (default: ``backbone`` up to its first parenthesis or comma).
    image_seconds : float, optional
        Time the current image took (attention and operator).
    action : tuple, optional
        ``(name, seconds)`` of the latest action, e.g. ``("click", 0.42)`` or ``("undo", 0.01)``.
    clicks : int, optional
        Clicks applied. The part is a ``<span class="m2n2-clicks">``: the page adds the clicks
        still waiting for their turn to it, " (+2 waiting)" (static/page.js).
    mask_fraction : float, optional
        Share of the image the mask covers.
    threshold : tuple, optional
        ``(value, overridden)`` of the latest click's threshold.
    memory_bytes : int, optional
        Memory the image's prepared state holds (in the tooltip only).

    Returns
    -------
    str
        A ``<div class="m2n2-status">`` whose text is the line's parts joined by " · " (the
        backbone, clicks, mask, threshold, the latest action's and the image's seconds, R); the
        parts of class ``m2n2-wide`` are left out on narrow screens (:data:`STATUS_CSS`), and
        whatever still does not fit ends in an ellipsis. The tooltip holds the full description,
        the fallback's reason and the image's memory.
    """
    if backbone is None:
        text = f"The model loads with the first image (attention resolution R = {resolution})."
        return f'<div class="m2n2-status" title="{escape(text)}">{escape(text)}</div>'
    name = name or re.split(r" \(|, ", backbone, maxsplit=1)[0]
    details = [backbone]
    parts = [f"⚠ {escape(name)}" if reason else escape(name)]
    if reason:
        # The fallback is said once: the name says which backbone is in use, so the reason's
        # closing "using the ..." (m2n2.backbones.load's wording) is dropped.
        details.append("fell back: " + re.sub(r";\s*using the [^;]*$", "", reason.strip()))
    if clicks is not None:
        parts.append(f'<span class="m2n2-clicks">{clicks} click{"" if clicks == 1 else "s"}</span>')
    if mask_fraction is not None:
        parts.append(f'mask {100.0 * mask_fraction:.1f} %<span class="m2n2-wide"> of the image</span>')
    if threshold is not None:
        parts.append(f"threshold {threshold[0]:.3f} ({'yours' if threshold[1] else 'adaptive'})")
    if action is not None:
        parts.append(f"{escape(action[0])} {action[1]:.2f} s")
    wide = []
    if image_seconds is not None:
        wide.append(f"image {image_seconds:.2f} s")
    wide.append(f"R = {resolution}")
    if memory_bytes is not None:
        details.append(f"image memory {memory_bytes / 2 ** 20:.0f} MiB")
    line = " · ".join(parts) + "".join(f'<span class="m2n2-wide"> · {part}</span>' for part in wide)
    return f'<div class="m2n2-status" title="{escape(" · ".join(details))}">{line}</div>'


#: The status line's style: one line; the details go on narrow screens (``app.py`` adds it to the page's CSS).
STATUS_CSS = """
#status {min-height: 0}
.m2n2-status {white-space: nowrap; overflow: hidden; text-overflow: ellipsis; line-height: 1.6;
              font-size: var(--text-md); padding: 2px 4px}
@media (max-width: 640px) {.m2n2-status {font-size: var(--text-sm)} .m2n2-status .m2n2-wide {display: none}}
"""
