"""One object for the four coordinate systems of an image (SamPredictor's ``ResizeLongestSide`` idea).

* **original**: the image as given, (H, W). Prompts, masks and exports use it.
* **working**: the copy M2N2 segments, longest side at most ``max_side``, (h, w).
* **attention grid**: the backbone's R x R cells.
* **display**: what a viewer shows (the app shows the working copy, so by default display = working).

Points are (x, y) = (column, row) as float arrays of shape (K, 2). Pixel centres sit at integer
coordinates, so resizing maps ``x -> (x + 0.5) * new / old - 0.5`` (corners stay corners).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _scale(values: np.ndarray, source: int, target: int) -> np.ndarray:
    return (values + 0.5) * (target / source) - 0.5


def grid_coordinates(points_xy, image_size: tuple[int, int], resolution: int) -> np.ndarray:
    """Continuous attention-grid coordinates of points given in pixels of an image of ``image_size``.

    The paper's convention (its authors' code): x is scaled by (R - 1) / W and y by (R - 1) / H,
    then clipped to [0, R - 1]; the start state splits a point over the four nearest cells.

    Parameters
    ----------
    points_xy : array-like
        (K, 2) points (x, y) in pixels.
    image_size : tuple of int
        (height, width) of that image.
    resolution : int
        R.

    Returns
    -------
    numpy.ndarray
        (K, 2) float64 grid coordinates (gx, gy) in [0, R - 1].
    """
    height, width = image_size
    points = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
    return np.stack([np.clip(points[:, 0] * (resolution - 1) / width, 0, resolution - 1),
                     np.clip(points[:, 1] * (resolution - 1) / height, 0, resolution - 1)], axis=1)


@dataclass(frozen=True)
class Geometry:
    """Sizes of one image in every coordinate system, and the maps between them.

    Parameters
    ----------
    original : tuple of int
        (H, W) of the image as given.
    working : tuple of int
        (h, w) of the working copy.
    resolution : int, optional
        R of the attention grid (needed only for the grid maps).
    display : tuple of int, optional
        (height, width) of what a viewer shows; the working copy's size by default.
    """

    original: tuple[int, int]
    working: tuple[int, int]
    resolution: int | None = None
    display: tuple[int, int] | None = None

    @classmethod
    def for_image(cls, height: int, width: int, max_side: int, resolution: int | None = None,
                  display: tuple[int, int] | None = None) -> "Geometry":
        """The geometry of an (height, width) image whose working copy is at most ``max_side`` long."""
        return cls((int(height), int(width)), working_size(height, width, max_side), resolution, display)

    @property
    def shown(self) -> tuple[int, int]:
        """(height, width) of the display."""
        return self.display or self.working

    # ------------------------------------------------------------ continuous maps
    @staticmethod
    def _map(points, source: tuple[int, int], target: tuple[int, int], clip: bool) -> np.ndarray:
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        out = np.stack([_scale(points[:, 0], source[1], target[1]), _scale(points[:, 1], source[0], target[0])],
                       axis=1)
        if clip:
            out[:, 0] = np.clip(out[:, 0], 0, target[1] - 1)
            out[:, 1] = np.clip(out[:, 1], 0, target[0] - 1)
        return out

    def original_to_working(self, points) -> np.ndarray:
        """(K, 2) original-pixel points -> working-copy pixels (not rounded)."""
        return self._map(points, self.original, self.working, clip=False)

    def display_to_original(self, points) -> np.ndarray:
        """(K, 2) points on the display (e.g. a click's pixel) -> original pixels, clamped inside."""
        return self._map(points, self.shown, self.original, clip=True)

    def original_to_display(self, points) -> np.ndarray:
        """(K, 2) original-pixel points -> display pixels (e.g. to draw click markers)."""
        return self._map(points, self.original, self.shown, clip=False)

    # ------------------------------------------------------------ discrete maps
    def working_pixels(self, points) -> np.ndarray:
        """(K, 2) int (row, column) of the working-copy pixel nearest each original-pixel point."""
        h, w = self.working
        xy = self.original_to_working(points)
        cols = np.clip(np.rint(xy[:, 0]), 0, w - 1)
        rows = np.clip(np.rint(xy[:, 1]), 0, h - 1)
        return np.stack([rows, cols], axis=1).astype(np.int64)

    def original_pixels(self, points) -> np.ndarray:
        """(K, 2) int (row, column) of the original pixel nearest each original-pixel point."""
        height, width = self.original
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        return np.stack([np.clip(np.rint(points[:, 1]), 0, height - 1),
                         np.clip(np.rint(points[:, 0]), 0, width - 1)], axis=1).astype(np.int64)


def working_size(height: int, width: int, max_side: int) -> tuple[int, int]:
    """(height, width) of the working copy: the image scaled so its longest side <= max_side."""
    longest = max(height, width)
    if longest <= max_side:
        return int(height), int(width)
    scale = max_side / longest
    return max(2, round(height * scale)), max(2, round(width * scale))
