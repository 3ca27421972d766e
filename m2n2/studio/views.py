"""What the app shows: mask overlay with click markers, Markov-map heatmap, score curve, the status
line, and the files it offers for download.

Everything here is pure (arrays in, arrays, text or matplotlib figures out) so the app only wires
it up. Figures use matplotlib's object-oriented API (no ``pyplot``), which is safe to call from
the several worker threads of a web app and leaves nothing in a global figure registry.
"""

from __future__ import annotations

import os

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from PIL import Image
from scipy import ndimage

from ..image import resize_mask

FOREGROUND_COLOUR = (40, 200, 60)
BACKGROUND_COLOUR = (235, 45, 45)
MASK_COLOUR = (30, 144, 255)
# The outline is two-tone (light inside, dark outside) so that it shows on any background, blue too.
OUTLINE_INNER, OUTLINE_OUTER = (255, 255, 255), (0, 0, 0)
# Legends and labels of the figures, in points at the figures' 100 dpi (they are shown ~1:1).
FONT_SIZE = 10
HEATMAP_COLOURMAP = "magma"
_MAX_CURVE_POINTS = 1500


def marker_radius(height: int, width: int) -> int:
    """Radius in pixels of a click marker: visible on small and large images alike."""
    return max(3, round(min(height, width) / 70))


def overlay(image: np.ndarray, mask: np.ndarray | None, points, labels, alpha: float = 0.45,
            colour: tuple[int, int, int] = MASK_COLOUR, others=()) -> np.ndarray:
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
        Other objects' masks, tinted in their colours under the mask (no outline, no clicks).

    Returns
    -------
    numpy.ndarray
        (h, w, 3) uint8: the image, the mask tinted blue with a white line just inside its border
        and a black line just outside it, and a disc with a white ring at every click.
    """
    out = np.array(image, dtype=np.float32, copy=True)
    height, width = out.shape[:2]
    for other, other_colour in others:
        other = resize_mask(other, (height, width))
        out[other] = (1.0 - alpha) * out[other] + alpha * np.array(other_colour, dtype=np.float32)
    if mask is not None:
        mask = resize_mask(mask, (height, width))
        out[mask] = (1.0 - alpha) * out[mask] + alpha * np.array(colour, dtype=np.float32)
        width_px = max(1, min(height, width) // 300)
        inner = mask & ~ndimage.binary_erosion(mask, iterations=width_px, border_value=0)
        outer = ndimage.binary_dilation(mask, iterations=width_px) & ~mask
        out[inner] = OUTLINE_INNER
        out[outer] = OUTLINE_OUTER
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)

    radius = marker_radius(height, width)
    rows, cols = np.ogrid[:height, :width]
    for (x, y), label in zip(np.asarray(points, dtype=np.float64).reshape(-1, 2), np.asarray(labels).reshape(-1)):
        distance2 = (cols - x) ** 2 + (rows - y) ** 2
        out[distance2 <= (radius + max(1, radius // 3)) ** 2] = (255, 255, 255)
        out[distance2 <= radius ** 2] = FOREGROUND_COLOUR if int(label) == 1 else BACKGROUND_COLOUR
    return out


def colourise(values: np.ndarray, colourmap: str = HEATMAP_COLOURMAP) -> np.ndarray:
    """Map an (h, w) array with values in [0, 1] to an (h, w, 3) uint8 RGB image."""
    values = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float32), nan=1.0), 0.0, 1.0)
    rgba = colormaps[colourmap](values, bytes=True)
    return np.ascontiguousarray(rgba[..., :3])


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
        The map in the ``magma`` colour map with a colour bar whose ends say what low and high
        values mean.
    """
    height, width = markov_map.shape
    figure = Figure(figsize=(4.2, 4.2 * height / width + 0.9), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    shown = axes.imshow(markov_map, cmap=HEATMAP_COLOURMAP, vmin=0.0, vmax=1.0, interpolation="nearest")
    colour = np.array(FOREGROUND_COLOUR if label == 1 else BACKGROUND_COLOUR) / 255.0
    axes.plot([point_xy[0]], [point_xy[1]], marker="o", markersize=9, color=colour,
              markeredgecolor="white", markeredgewidth=2, linestyle="none")
    axes.set_axis_off()
    axes.set_title("Markov-map of the latest click", fontsize=FONT_SIZE + 1)
    bar = figure.colorbar(shown, ax=axes, orientation="horizontal", fraction=0.06, pad=0.02, ticks=[0.0, 1.0])
    bar.ax.set_xticklabels(["0: reached first\n(like the click)", "1: reached last\n(unlike the click)"],
                           fontsize=FONT_SIZE)
    bar.set_label("random-walk steps to reach a pixel (scaled)", fontsize=FONT_SIZE)
    return figure


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
        adaptive choice dashed). Bottom: the four component scores; the edge score is divided by
        its maximum so that all four share the [0, 1] axis.
    """
    thresholds = np.asarray(point.thresholds, dtype=np.float64)
    adaptive = float(thresholds[point.threshold_index]) if len(thresholds) else float(point.threshold)
    index = _thinned_indices(len(thresholds), [int(point.threshold_index)])
    x = thresholds[index]

    figure = Figure(figsize=(4.4, 5.2), dpi=100, layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[1.2, 1.0])
    top.plot(x, np.asarray(point.score)[index], color="black", linewidth=1.6, label="total score")
    top.axvline(point.threshold, color="tab:blue", linewidth=2,
                label=f"threshold used: {point.threshold:.3f}" + (" (yours)" if point.overridden else " (adaptive)"))
    if point.overridden:
        top.axvline(adaptive, color="tab:blue", linestyle="--", linewidth=1.2, label=f"adaptive: {adaptive:.3f}")
    top.set_ylabel("score")
    kind = "foreground" if point.label == 1 else "background"
    top.set_title(f"Threshold scores of click {click_number} ({kind})", fontsize=FONT_SIZE + 1)
    top.legend(fontsize=FONT_SIZE, loc="upper right")

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
    # Below the axes, in the figure's own space (constrained layout makes room for it).
    figure.legend(*bottom.get_legend_handles_labels(), fontsize=FONT_SIZE, loc="outside lower center", ncol=2,
                  frameon=False)
    return figure


def cutout(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """RGBA cut-out: the image with alpha 255 inside the mask and 0 outside.

    Parameters
    ----------
    image : numpy.ndarray
        (H, W, 3) uint8.
    mask : numpy.ndarray
        (H, W) bool of the same size.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask {mask.shape} and image {image.shape[:2]} differ in size")
    alpha = mask.astype(np.uint8)[..., None] * 255
    return np.concatenate([image, alpha], axis=2)


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
        parts.insert(0, f"⚠ Fell back: {reason}")
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


def write_exports(folder: str, image: np.ndarray, mask: np.ndarray, which: str = "both") -> tuple[str | None, str | None]:
    """Write the mask (PNG, 0/255) and/or the RGBA cut-out of ``image`` into ``folder``.

    ``which`` is ``"mask"``, ``"cutout"`` or ``"both"``; returns (mask path, cut-out path), None
    for a file not written. A 12-megapixel cut-out takes about a second, so the app writes each
    file only when it is downloaded.
    """
    os.makedirs(folder, exist_ok=True)
    mask_path = cutout_path = None
    if which in ("mask", "both"):
        mask_path = os.path.join(folder, "mask.png")
        Image.fromarray(np.asarray(mask, dtype=np.uint8) * 255).save(mask_path, compress_level=1)
    if which in ("cutout", "both"):
        cutout_path = os.path.join(folder, "cutout.png")
        Image.fromarray(cutout(image, mask), "RGBA").save(cutout_path, compress_level=1)
    return mask_path, cutout_path
