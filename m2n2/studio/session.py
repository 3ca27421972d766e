"""One user's state in the app, as plain data: the image, its clicks, the threshold override, settings.

A :class:`Session` is what the app keeps in ``gr.State``. It holds no model, no operator and no
tensor, so copying or pickling it is cheap; the prepared image (the predictor with its operator)
lives in the serving process's store under :attr:`Session.key` (see :mod:`m2n2.studio.serving`)
and is rebuilt from :attr:`Session.image` when the store no longer has it.

Every method here is a state change without computation: the handlers do the computing (through
:mod:`m2n2.studio.gpu`) and commit the result, so a failure leaves the session as it was.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..config import M2N2Config
from ..errors import InputError, NotReadyError
from ..geometry import Geometry
from ..image import resize_rgb
from ..prompts import Click, as_arrays, check_threshold
from ..recipe import image_hash

__all__ = ["Click", "SegObject", "Session", "Shown"]  # Click is m2n2.prompts' (the one click type)


@dataclass
class Shown:
    """The latest result, kept to draw again without computing (plain arrays).

    Attributes
    ----------
    mask : numpy.ndarray
        (H, W) bool at the original size.
    threshold : float
        The latest click's threshold.
    overridden : bool
        Whether that threshold is the user's.
    """

    mask: np.ndarray
    threshold: float
    overridden: bool


@dataclass
class SegObject:
    """One object of the image: its clicks, the latest click's threshold override and its result."""

    clicks: list[Click] = field(default_factory=list)
    threshold: float | None = None
    shown: Shown | None = None


@dataclass
class Session:
    """One user's image, clicks and settings.

    Parameters
    ----------
    resolution : int
        Attention resolution R of the next image.
    config : M2N2Config
        Settings of the next image.
    """

    resolution: int
    config: M2N2Config = field(default_factory=M2N2Config)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    image: np.ndarray | None = None
    display_image: np.ndarray | None = None
    geometry: Geometry | None = None
    version: int = 0
    # Every object of the image (several objects: see m2n2.studio.objects); ``clicks``,
    # ``threshold`` and ``shown`` below are the active one's, so undo, reset and the threshold
    # act on the current object.
    objects: list[SegObject] = field(default_factory=lambda: [SegObject()])
    active: int = 0
    image_seconds: float | None = None
    action: tuple[str, float] | None = None
    memory_bytes: int | None = None
    example: str | None = None  # the example's name when the image is one (recipes and links name it)
    image_sha256: str | None = None  # recipe.image_hash of ``image``, computed once per image
    source: str | None = None  # the uploaded file the image came from (a deep link carries it)
    # The latest click's heatmap and score curve (HTML), drawn on the first call and kept: a
    # click's own event leaves drawing and sending them to the event that follows it
    # (Page.after_click), so that its mask is shown sooner.
    plots: Callable[[], tuple[str, str]] | None = None

    # ------------------------------------------------------------------ the current object
    @property
    def current(self) -> SegObject:
        """The object the clicks, undo, reset and threshold act on."""
        return self.objects[self.active]

    @property
    def clicks(self) -> list[Click]:
        """The current object's clicks."""
        return self.current.clicks

    @clicks.setter
    def clicks(self, value: list[Click]) -> None:
        self.current.clicks = list(value)

    @property
    def threshold(self) -> float | None:
        """The current object's override of its latest click's threshold (None: adaptive)."""
        return self.current.threshold

    @threshold.setter
    def threshold(self, value: float | None) -> None:
        self.current.threshold = value

    @property
    def shown(self) -> Shown | None:
        """The current object's latest result."""
        return self.current.shown

    @shown.setter
    def shown(self, value: Shown | None) -> None:
        self.current.shown = value

    # ------------------------------------------------------------------ state
    @property
    def has_image(self) -> bool:
        """Whether an image is loaded."""
        return self.image is not None

    @property
    def key(self) -> str:
        """Where the serving store keeps this image's prepared predictor (changes with the image)."""
        return f"{self.id}/{self.version}"

    @property
    def next_key(self) -> str:
        """The key the next image (or the same image at a new resolution) will have."""
        return f"{self.id}/{self.version + 1}"

    def require_image(self) -> Geometry:
        """The image's geometry; raises :class:`NotReadyError` without an image."""
        if self.geometry is None:
            raise NotReadyError("upload an image or pick an example first, then click on it")
        return self.geometry

    @property
    def points(self) -> tuple[np.ndarray, np.ndarray]:
        """(K, 2) float64 click positions (x, y) in original pixels and (K,) int64 labels."""
        return as_arrays(self.clicks)

    # ------------------------------------------------------------------ transitions
    def set_image(self, image: np.ndarray, working: tuple[int, int], resolution: int, seconds: float) -> None:
        """Take a prepared image: its clicks, override and result are forgotten."""
        height, width = image.shape[:2]
        self.image = image
        self.image_sha256 = image_hash(image)
        self.geometry = Geometry((height, width), tuple(working), int(resolution))
        # What the app shows and clicks land on: the working copy (the predictor resizes the same way).
        self.display_image = resize_rgb(image, self.geometry.working[::-1])
        self.resolution = int(resolution)
        self.version += 1
        self.objects, self.active = [SegObject()], 0
        self.image_seconds, self.action, self.example, self.source = seconds, None, None, None

    def set_resolution(self, working: tuple[int, int], resolution: int) -> None:
        """Take the same image prepared again at another R (a new key; clicks and objects stay)."""
        self.version += 1
        self.resolution = int(resolution)
        self.geometry = Geometry(self.geometry.original, tuple(working), int(resolution))

    def click_at(self, x: float, y: float, label: int) -> Click:
        """The click at (x, y) of the displayed image, in original pixels (validated, not recorded)."""
        geometry = self.require_image()
        if label not in (0, 1):
            raise InputError(f"a click's label must be 1 (foreground) or 0 (background), got {label!r}")
        if not (np.isfinite(x) and np.isfinite(y)):
            raise InputError(f"the click ({x}, {y}) is not a position on the image")
        ox, oy = geometry.display_to_original([(x, y)])[0]
        return Click(float(ox), float(oy), int(label))

    def clear_clicks(self) -> None:
        """Forget the current object's clicks and override (the image and the other objects stay)."""
        self.clicks, self.threshold, self.shown, self.action = [], None, None, None

    def check_override(self, threshold: float | None) -> float | None:
        """``threshold`` validated as an override of the latest click's threshold (None: automatic)."""
        self.require_image()
        if not self.clicks:
            raise InputError("click on the image first: the threshold belongs to the latest click")
        return check_threshold(threshold)

    def forget_image(self) -> None:
        """Drop the image and everything about it (the settings stay)."""
        self.image, self.display_image, self.geometry, self.source = None, None, None, None
        self.version += 1
        self.objects, self.active = [SegObject()], 0
        self.clear_clicks()
        self.image_seconds = None
