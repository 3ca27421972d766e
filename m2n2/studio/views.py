"""What the app shows: mask overlay with click markers, Markov-map heatmap, score curve, the status
line, and the files it offers for download.

Everything here is pure (arrays in, arrays, text or matplotlib figures out) so the app only wires
it up. Figures use matplotlib's object-oriented API (no ``pyplot``), which is safe to call from
the several worker threads of a web app and leaves nothing in a global figure registry.
"""

from __future__ import annotations

import re

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
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
_MAX_CURVE_POINTS = 1500


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
    index = np.clip(np.rint(np.asarray(rgb, dtype=np.float32)), 0, 255).astype(np.intp)
    table = _LUMINANCE_TABLE
    return table[index[..., 0], 0] + table[index[..., 1], 1] + table[index[..., 2], 2]


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
    size = 2 * width_px + 3
    for band, side in ((inner, inside), (outer, outside)):
        if not band.any():
            continue
        if not side.any():  # a mask too thin to have an inside strip: look at the band itself
            side = band
        lowest = ndimage.minimum_filter(np.where(side, luminance, np.inf), size=size)[band]
        highest = ndimage.maximum_filter(np.where(side, luminance, -np.inf), size=size)[band]
        # Band pixels with no strip pixel in reach take their own pixel's luminance.
        unseen = ~np.isfinite(lowest)
        lowest[unseen] = highest[unseen] = luminance[band][unseen]
        dark = contrast_ratio(lowest, _DARK_LUMINANCE)     # worst case: the darkest neighbour
        light = contrast_ratio(highest, _LIGHT_LUMINANCE)  # worst case: the lightest neighbour
        usual_dark = (dark >= MIN_CONTRAST).sum() >= (light >= MIN_CONTRAST).sum()
        if usual_dark:
            use_dark = (dark >= MIN_CONTRAST) | (dark >= light)
        else:
            use_dark = (light < MIN_CONTRAST) & (dark > light)
        out[band] = np.where(use_dark[:, None], np.array(OUTLINE_DARK, np.float32),
                             np.array(OUTLINE_LIGHT, np.float32))


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
        out[other] = (1.0 - alpha) * out[other] + alpha * np.array(other_colour, dtype=np.float32)
        drawn.append((other, max(1, width_px // 2)))
    if mask is not None:
        mask = resize_mask(mask, (height, width))
        out[mask] = (1.0 - alpha) * out[mask] + alpha * np.array(colour, dtype=np.float32)
        drawn.append((mask, width_px))  # last: the current object's outline lies on top
    if outline:
        for shape, band_width in drawn:
            if shape.any():
                _draw_outline(out, shape, band_width)
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)

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


def colourise(values: np.ndarray, colourmap: str = HEATMAP_COLOURMAP) -> np.ndarray:
    """Map an (h, w) array with values in [0, 1] to an (h, w, 3) uint8 RGB image."""
    values = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float32), nan=1.0), 0.0, 1.0)
    rgba = colormaps[colourmap](values, bytes=True)
    return np.ascontiguousarray(rgba[..., :3])


def _quick_webp(figure: Figure) -> Figure:
    """``figure``, whose WebP encoding (Gradio's format for plots) uses libwebp's fastest method.

    libwebp's default effort took longer than drawing the heatmap (0.23 against 0.05 s for its
    ~400 x 560 picture, for 30 % fewer bytes). Gradio calls ``savefig(buffer, format="webp")``
    and recognises a figure by its class's module, so the figure stays a plain Figure and only
    this instance's ``savefig`` adds the encoder's option.
    """
    save = figure.savefig

    def savefig(fname, *args, **kwargs):
        if str(kwargs.get("format", "")).lower() == "webp" and "pil_kwargs" not in kwargs:
            kwargs["pil_kwargs"] = {"method": 0}
        return save(fname, *args, **kwargs)

    figure.savefig = savefig
    return figure


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


def heatmap_figure(markov_map: np.ndarray, point_xy: tuple[float, float], label: int) -> Figure:
    """The Markov-map of one click as a heatmap with a legend.

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
    matplotlib.figure.Figure
        The map, at most 400 pixels a side, coloured by :func:`heatmap_scale` in the ``magma``
        colour map (as an RGB image: the colours are computed here, once), with a colour bar
        whose ends say what low and high values mean. The axes sit at fixed places (no layout
        engine: it would draw the figure twice per click).
    """
    height, width = markov_map.shape
    step = _display_step(height, width)
    shown_map = np.asarray(markov_map)[::step, ::step]
    aspect = height / width
    figure = Figure(figsize=(4.2, 4.2 * aspect + 1.35), dpi=100)
    fig_height = figure.get_figheight()
    # Inches: 0.35 for the title above, 1.0 for the colour bar and its labels below.
    axes = figure.add_axes((0.02, 1.0 / fig_height, 0.96, (fig_height - 1.35) / fig_height))
    axes.imshow(colourise(heatmap_scale(shown_map)), interpolation="nearest", aspect="auto",
                extent=(-0.5, width - 0.5, height - 0.5, -0.5))
    colour = np.array(FOREGROUND_COLOUR if label == 1 else BACKGROUND_COLOUR) / 255.0
    axes.plot([point_xy[0]], [point_xy[1]], marker="o", markersize=9, color=colour,
              markeredgecolor="white", markeredgewidth=2, linestyle="none")
    axes.set_axis_off()
    axes.set_title("Markov-map of the latest click", fontsize=FONT_SIZE + 1)
    bar = figure.add_axes((0.1, 0.62 / fig_height, 0.8, 0.14 / fig_height))
    bar.imshow(colourise(np.linspace(0.0, 1.0, 256)[None, :]), aspect="auto", extent=(0.0, 1.0, 0.0, 1.0))
    bar.set_yticks([])
    bar.set_xticks([0.0, 0.5, 1.0])
    bar.set_xticklabels(["0: reached first\n(like the click)", "50 %", "100 %: reached last\n(unlike the click)"],
                        fontsize=FONT_SIZE)
    for text, alignment in zip(bar.get_xticklabels(), ("left", "center", "right")):
        text.set_horizontalalignment(alignment)  # the end labels stay inside the figure
    bar.set_title("share of the picture reached first (the map's percentiles)", fontsize=FONT_SIZE)
    return _quick_webp(figure)


def _thinned_indices(count: int, keep: list[int], limit: int = _MAX_CURVE_POINTS) -> np.ndarray:
    """At most about ``limit`` evenly spread indices of ``range(count)``, always including ``keep``."""
    if count <= limit:
        return np.arange(count)
    picked = np.linspace(0, count - 1, limit).round().astype(np.int64)
    return np.unique(np.concatenate([picked, np.asarray(keep, dtype=np.int64)]))


def score_figure(point, click_number: int) -> Figure:
    """The threshold scores of one click against the candidate threshold.

    Parameters
    ----------
    point : PointResult
        Needs ``thresholds``, ``score``, ``score_prior``, ``score_edge``, ``score_pos``,
        ``score_neg``, ``threshold``, ``threshold_index``, ``overridden`` and ``label``.
    click_number : int
        1-based number of the click, for the title.

    Returns
    -------
    matplotlib.figure.Figure
        Top: the total score with the threshold in use marked (and, when overridden, the
        adaptive choice dashed); its legend sits above the axes, off the curve. Bottom: the four
        component scores; the edge score is divided by its maximum so that all four share the
        [0, 1] axis. The axes sit at fixed places (no layout engine: it would draw the figure
        twice per click) with few ticks (each tick label costs a text layout per draw).
    """
    thresholds = np.asarray(point.thresholds, dtype=np.float64)
    adaptive = float(thresholds[point.threshold_index]) if len(thresholds) else float(point.threshold)
    index = _thinned_indices(len(thresholds), [int(point.threshold_index)])
    x = thresholds[index]

    figure = Figure(figsize=(4.4, 5.2), dpi=100)
    top = figure.add_axes((0.15, 0.56, 0.81, 0.24))
    bottom = figure.add_axes((0.15, 0.215, 0.81, 0.33), sharex=top)
    top.tick_params(labelbottom=False)
    for axes in (top, bottom):
        axes.yaxis.set_major_locator(MaxNLocator(3))
        axes.tick_params(labelsize=FONT_SIZE - 1)
    bottom.xaxis.set_major_locator(MaxNLocator(5))
    top.plot(x, np.asarray(point.score)[index], color="black", linewidth=1.6, label="total score")
    top.axvline(point.threshold, color="tab:blue", linewidth=2,
                label=f"threshold used: {point.threshold:.3f}" + (" (yours)" if point.overridden else " (adaptive)"))
    if point.overridden:
        top.axvline(adaptive, color="tab:blue", linestyle="--", linewidth=1.2, label=f"adaptive: {adaptive:.3f}")
    top.set_ylabel("score", fontsize=FONT_SIZE)
    kind = "foreground" if point.label == 1 else "background"
    figure.text(0.5, 0.985, f"Threshold scores of click {click_number} ({kind})", fontsize=FONT_SIZE + 1,
                ha="center", va="top")
    # Above the axes, not over the curve.
    top.legend(fontsize=FONT_SIZE, loc="lower left", bbox_to_anchor=(-0.02, 1.0), ncol=1, frameon=False,
               borderaxespad=0.1, handlelength=1.5, columnspacing=1.0)

    edge = np.asarray(point.score_edge, dtype=np.float64)
    edge_max = float(edge.max()) if edge.size and edge.max() > 0 else 1.0
    components = [("area prior", point.score_prior, "tab:gray"), ("edge (÷ max)", edge / edge_max, "tab:orange"),
                  ("same-label clicks in", point.score_pos, "tab:green"),
                  ("no other-label click in", point.score_neg, "tab:red")]
    for name, values, colour in components:
        bottom.plot(x, np.asarray(values, dtype=np.float64)[index], color=colour, linewidth=1.2, label=name)
    bottom.axvline(point.threshold, color="tab:blue", linewidth=2)
    bottom.set_ylim(-0.05, 1.05)
    bottom.set_xlabel("threshold λ (segment = pixels with value ≤ λ)", fontsize=FONT_SIZE)
    bottom.set_ylabel("component", fontsize=FONT_SIZE)
    figure.legend(*bottom.get_legend_handles_labels(), fontsize=FONT_SIZE, loc="lower center", ncol=2,
                  frameon=False, bbox_to_anchor=(0.5, 0.0), handlelength=1.5, columnspacing=1.0)
    return _quick_webp(figure)


def status_line(*, backbone: str | None, resolution: int, reason: str | None = None,
                image_seconds: float | None = None, action: tuple[str, float] | None = None,
                clicks: int | None = None, pending: int = 0, mask_fraction: float | None = None,
                threshold: tuple[float, bool] | None = None, memory_bytes: int | None = None) -> str:
    """The app's one status line (markdown).

    Parameters
    ----------
    backbone : str or None
        The backbone's description; None while the model is not loaded yet.
    resolution : int
        R the next image will use.
    reason : str, optional
        Why the app fell back to another backbone (shown first: it explains everything after).
    image_seconds : float, optional
        Time the current image took (attention and operator).
    action : tuple, optional
        ``(name, seconds)`` of the latest action, e.g. ``("click", 0.42)`` or ``("undo", 0.01)``.
    clicks, pending : int
        Clicks applied, and clicks received but still waiting for their turn.
    mask_fraction : float, optional
        Share of the image the mask covers.
    threshold : tuple, optional
        ``(value, overridden)`` of the latest click's threshold.
    memory_bytes : int, optional
        Memory the image's prepared state holds.
    """
    if backbone is None:
        return f"The model loads with the first image (attention resolution R = {resolution})."
    parts = [backbone]
    if reason:
        # The fallback is said once: the description names the backbone in use, so the reason's
        # closing "using the ..." (m2n2.backbones.load's wording) is dropped.
        why = re.sub(r";\s*using the [^;]*$", "", reason.strip())
        parts[0] = f"⚠ {backbone} (fell back: {why})"
    if image_seconds is not None:
        parts.append(f"image {image_seconds:.2f} s")
    if action is not None:
        parts.append(f"{action[0]} {action[1]:.2f} s")
    if clicks is not None:
        parts.append(f"{clicks} click{'' if clicks == 1 else 's'}" + (f" (+{pending} waiting)" if pending else ""))
    if mask_fraction is not None:
        parts.append(f"mask {100.0 * mask_fraction:.1f} % of the image")
    if threshold is not None:
        parts.append(f"threshold {threshold[0]:.3f} ({'yours' if threshold[1] else 'adaptive'})")
    if memory_bytes is not None:
        parts.append(f"image memory {memory_bytes / 2 ** 20:.0f} MiB")
    return " · ".join(parts)
