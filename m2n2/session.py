"""Per-user state of the app: one image, its prepared predictor and the click history.

A :class:`Session` is what the Gradio app keeps in ``gr.State``. It is deliberately light to copy
and to pickle (ZeroGPU sends it to a GPU worker process and back): it never holds the backbone,
only the key under which the process-wide :func:`register_backbones` registry finds it, and its
predictor's transition operator rests on the CPU between calls (in fp16 with the app's fast
preset, :meth:`M2N2Config.fast`, which halves the memory a session holds).

The registry exists because the backbone (Stable Diffusion 2: gigabytes of weights) is loaded
once per process and shared by every user, while ``gr.State`` deep-copies its initial value for
each user and ZeroGPU pickles everything it passes around.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .config import M2N2Config
from .errors import InputError, NotReadyError
from .image import as_rgb_uint8
from .predictor import M2N2Predictor, Prediction
from .viz import cutout, heatmap_figure, overlay, score_figure

#: Largest accepted upload in pixels (a decompression-bomb guard; larger images are refused).
MAX_PIXELS = 100_000_000

_registries: dict[str, "_Registry"] = {}
_registries_lock = threading.Lock()


class _Registry:
    """Backbones of one kind, loaded on first use, one per attention resolution."""

    def __init__(self, factory: Callable[[int], object]):
        self.factory = factory
        self.backbones: dict[int, object] = {}
        self.lock = threading.Lock()

    def get(self, resolution: int):
        with self.lock:
            if resolution not in self.backbones:
                self.backbones[resolution] = self.factory(resolution)
            return self.backbones[resolution]


def register_backbones(key: str, factory: Callable[[int], object]) -> None:
    """Make a backbone source available to sessions under ``key``.

    Parameters
    ----------
    key : str
        Name sessions use to find the backbone (a session stores only this string).
    factory : callable
        ``factory(resolution) -> Backbone``; called at most once per resolution, on first use.
        Registering a key again replaces its factory and forgets what it loaded.
    """
    with _registries_lock:
        _registries[key] = _Registry(factory)


def get_backbone(key: str, resolution: int):
    """The backbone registered under ``key`` at ``resolution``, loading it on first use.

    Raises
    ------
    NotReadyError
        Nothing is registered under ``key``.
    """
    try:
        registry = _registries[key]
    except KeyError:
        raise NotReadyError(f"no backbone is registered under {key!r}") from None
    return registry.get(int(resolution))


def is_backbone_loaded(key: str, resolution: int) -> bool:
    """Whether :func:`get_backbone` would return at once (no model to load first)."""
    registry = _registries.get(key)
    return registry is not None and int(resolution) in registry.backbones


@contextmanager
def _borrowed(predictor: M2N2Predictor, backbone):
    """Lend the shared backbone to a predictor for one call, so the session never keeps it."""
    predictor.backbone = backbone
    try:
        yield predictor
    finally:
        predictor.backbone = None


def read_image(path) -> np.ndarray:
    """Read an image file into RGB uint8, with a message a user understands when it fails.

    Grayscale, palette, RGBA (composited over white) and 16-bit images are converted by
    :func:`m2n2.image.as_rgb_uint8`; EXIF orientation is applied.

    Raises
    ------
    InputError
        The file is missing, is not an image, is corrupt or truncated, or is too large.
    """
    if path is None:
        raise InputError("no image was given")
    try:
        with Image.open(path) as image:
            if image.width * image.height > MAX_PIXELS:
                raise InputError(f"the image is too large ({image.width} x {image.height} pixels); "
                                 f"the limit is {MAX_PIXELS // 1_000_000} megapixels")
            image.load()
            return as_rgb_uint8(ImageOps.exif_transpose(image))
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"the file {os.path.basename(str(path))!r} does not exist") from None
    except (UnidentifiedImageError, Image.DecompressionBombError) as error:
        raise InputError(f"this file is not an image M2N2 can read ({type(error).__name__})") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise InputError(f"the image file is corrupt or truncated ({error})") from None


def parse_points(text) -> tuple[np.ndarray, np.ndarray]:
    """Parse prompt points given as JSON, for the stateless API.

    Parameters
    ----------
    text : str or list
        A JSON list (or the list itself) whose items are ``[x, y, label]`` or
        ``{"x": ..., "y": ..., "label": ...}``; x is the column and y the row in original image
        pixels, label 1 foreground and 0 background (default 1 when left out).

    Returns
    -------
    points : numpy.ndarray
        (K, 2) float64 (x, y).
    labels : numpy.ndarray
        (K,) int64.

    Raises
    ------
    InputError
        Not JSON, not a list, an empty list, or an item of the wrong shape.
    """
    if isinstance(text, str):
        try:
            text = json.loads(text)
        except json.JSONDecodeError as error:
            raise InputError(f"points must be a JSON list such as [[120, 80, 1]]: {error}") from None
    if not isinstance(text, list) or not text:
        raise InputError('points must be a non-empty JSON list such as [[120, 80, 1], {"x": 5, "y": 9, "label": 0}]')
    points, labels = [], []
    for number, item in enumerate(text, start=1):
        if isinstance(item, dict) and "x" in item and "y" in item:
            x, y, label = item["x"], item["y"], item.get("label", 1)
        elif isinstance(item, (list, tuple)) and len(item) in (2, 3):
            x, y, label = item[0], item[1], item[2] if len(item) == 3 else 1
        else:
            raise InputError(f"point {number} must be [x, y, label] or {{\"x\", \"y\", \"label\"}}, got {item!r}")
        if isinstance(label, bool):
            label = int(label)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (x, y)) or label not in (0, 1):
            raise InputError(f"point {number}: x and y must be numbers and label 0 or 1, got {item!r}")
        points.append((float(x), float(y)))
        labels.append(int(label))
    return np.array(points, dtype=np.float64), np.array(labels, dtype=np.int64)


def summarize(prediction: Prediction, backbone_description: str) -> dict:
    """A JSON-ready summary of a prediction (what the stateless API returns next to the mask)."""
    height, width = prediction.mask.shape
    covered = int(prediction.mask.sum())
    return {
        "width": int(width),
        "height": int(height),
        "mask_pixels": covered,
        "mask_fraction": round(covered / (height * width), 6),
        "points": [{"x": p.xy[0], "y": p.xy[1], "label": p.label, "threshold": round(float(p.threshold), 6),
                    "overridden": bool(p.overridden)} for p in prediction.points],
        "backbone": backbone_description,
        "timings": {stage: round(float(seconds), 4) for stage, seconds in prediction.timings.items()},
    }


def tensor_bytes(obj, _seen: set | None = None) -> int:
    """Bytes of every numpy array and torch tensor reachable from ``obj`` (each counted once).

    Follows dicts, lists, tuples, sets and objects' ``__dict__``; a tensor counts its whole
    storage, so views are not double counted. This is the memory an object pins, not counting
    small Python objects.
    """
    seen = set() if _seen is None else _seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        storage = obj.untyped_storage()
        key = ("storage", storage.data_ptr(), obj.device.type)
        if key in seen:
            return 0
        seen.add(key)
        return storage.nbytes()
    if isinstance(obj, np.ndarray):
        base = obj.base if isinstance(obj.base, np.ndarray) else None
        return tensor_bytes(base, seen) if base is not None else obj.nbytes
    if isinstance(obj, dict):
        return sum(tensor_bytes(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple, set, frozenset)):
        return sum(tensor_bytes(v, seen) for v in obj)
    if hasattr(obj, "__dict__") and not isinstance(obj, type):
        return tensor_bytes(vars(obj), seen)
    return 0


@dataclass
class Views:
    """What the app shows after an action (see :meth:`Session.render`).

    Attributes
    ----------
    overlay : numpy.ndarray
        (h, w, 3) uint8 working copy with the mask and the click markers.
    heatmap : matplotlib.figure.Figure or None
        Markov-map of the latest click with its legend.
    scores : matplotlib.figure.Figure or None
        Score curves of the latest click.
    mask_path, cutout_path : str or None
        Downloadable mask PNG (original size) and RGBA cut-out.
    threshold : float or None
        The threshold the latest click uses (adaptive or overridden).
    status : str
        The status line.
    """

    overlay: np.ndarray
    heatmap: object | None = None
    scores: object | None = None
    mask_path: str | None = None
    cutout_path: str | None = None
    threshold: float | None = None
    status: str = ""


@dataclass(frozen=True)
class Click:
    """One click, in original image pixels (x column, y row); label 1 foreground, 0 background."""

    x: float
    y: float
    label: int


class Session:
    """One user's image, predictor and clicks.

    Parameters
    ----------
    backbone_key : str
        Key of the backbone registry (see :func:`register_backbones`).
    resolution : int
        Attention resolution R used for the next image.
    config : M2N2Config, optional
        Settings; the paper's by default.

    Notes
    -----
    Every method either succeeds or leaves the session exactly as it was (a failed click is not
    recorded, a failed upload keeps the previous image and its clicks).
    """

    def __init__(self, backbone_key: str, resolution: int, config: M2N2Config | None = None):
        self.id = uuid.uuid4().hex
        self.backbone_key = backbone_key
        self.resolution = int(resolution)
        self.config = config or M2N2Config()
        self.predictor: M2N2Predictor | None = None
        self.clicks: list[Click] = []
        self.threshold: float | None = None
        self.image_seconds: float | None = None
        self.click_seconds: float | None = None
        self.view: np.ndarray | None = None

    # ------------------------------------------------------------------ state
    @property
    def has_image(self) -> bool:
        """Whether an image is loaded and prepared."""
        return self.predictor is not None

    @property
    def backbone(self):
        """The shared backbone this session uses (from the registry; loads it on first use)."""
        return get_backbone(self.backbone_key, self.resolution)

    def _require_image(self) -> M2N2Predictor:
        if self.predictor is None:
            raise NotReadyError("upload an image or pick an example first, then click on it")
        return self.predictor

    @property
    def display_image(self) -> np.ndarray:
        """The working copy (longest side at most ``config.max_side``) that the app shows."""
        return self._require_image().image

    def to_original(self, x: float, y: float) -> tuple[float, float]:
        """Map a pixel of the displayed working copy to original image pixels (clamped inside)."""
        predictor = self._require_image()
        height, width = predictor.original_size
        h, w = predictor.image.shape[:2]
        return (float(np.clip((x + 0.5) * width / w - 0.5, 0, width - 1)),
                float(np.clip((y + 0.5) * height / h - 0.5, 0, height - 1)))

    def to_display(self, points: np.ndarray) -> np.ndarray:
        """Map (K, 2) original-pixel points (x, y) onto the displayed working copy."""
        predictor = self._require_image()
        height, width = predictor.original_size
        h, w = predictor.image.shape[:2]
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        return np.stack([(points[:, 0] + 0.5) * w / width - 0.5, (points[:, 1] + 0.5) * h / height - 0.5], axis=1)

    def memory_bytes(self) -> int:
        """Bytes of arrays and tensors this session holds (operator, images, cached maps)."""
        return tensor_bytes(self)

    # ------------------------------------------------------------------ per image
    def set_image(self, image) -> None:
        """Prepare a new image: attention, operator; forgets the previous image and its clicks.

        Parameters
        ----------
        image : numpy.ndarray or PIL.Image.Image
            Any image :func:`m2n2.image.as_rgb_uint8` accepts; large images are processed at a
            working copy of at most ``config.max_side`` pixels.
        """
        backbone = self.backbone
        predictor = M2N2Predictor(None, self.config, device=backbone.device)
        start = time.perf_counter()
        with _borrowed(predictor, backbone):
            predictor.set_image(image)
        predictor.to(device="cpu")
        self.predictor = predictor
        self.clicks, self.threshold = [], None
        self.image_seconds, self.click_seconds = time.perf_counter() - start, None

    def update_settings(self, config: M2N2Config, resolution: int) -> Prediction | None:
        """Change settings, recomputing only what they invalidate, and segment the clicks again.

        A new resolution or temperature recomputes the attention (the backbone runs again);
        rho and flood fill recompute the Markov-maps only.

        Returns
        -------
        Prediction or None
            The segmentation of the current clicks with the new settings (None without clicks).
        """
        resolution = int(resolution)
        if self.predictor is None:
            self.config, self.resolution = config, resolution
            return None
        if resolution != self.resolution:
            previous = (self.config, self.resolution, self.clicks, self.threshold)
            self.config, self.resolution = config, resolution
            clicks, threshold = self.clicks, self.threshold
            try:
                self.set_image(self.predictor.original_image)
            except Exception:
                self.config, self.resolution, self.clicks, self.threshold = previous
                raise
            self.clicks, self.threshold = clicks, threshold
        else:
            predictor = self.predictor
            backbone = self.backbone if config.operator_fields != self.config.operator_fields else None
            start = time.perf_counter()
            with _borrowed(predictor, backbone):
                predictor.to(device=backbone.device if backbone is not None else None)
                try:
                    predictor.set_config(config)
                finally:
                    predictor.to(device="cpu")
            if backbone is not None:
                self.image_seconds = time.perf_counter() - start
            self.config = config
        return self.predict() if self.clicks else None

    # ------------------------------------------------------------------ per click
    def predict(self) -> Prediction | None:
        """Segment with the current clicks and threshold override (None when there are no clicks).

        The operator moves to the backbone's device for the call and back to the CPU after it,
        whatever happens.
        """
        predictor = self._require_image()
        if not self.clicks:
            return None
        device = self.backbone.device
        start = time.perf_counter()
        try:
            predictor.to(device=device)
            prediction = predictor.predict([(c.x, c.y) for c in self.clicks], [c.label for c in self.clicks],
                                           threshold=self.threshold)
        finally:
            predictor.to(device="cpu")
        self.click_seconds = time.perf_counter() - start
        return prediction

    def click(self, x: float, y: float, label: int) -> Prediction:
        """Add a click at (x, y) of the displayed image; it gets the adaptive threshold.

        Parameters
        ----------
        x, y : float
            Column and row in the displayed working copy (see :attr:`display_image`).
        label : int
            1 foreground, 0 background.
        """
        self._require_image()
        if label not in (0, 1):
            raise InputError(f"a click's label must be 1 (foreground) or 0 (background), got {label!r}")
        if not (np.isfinite(x) and np.isfinite(y)):
            raise InputError(f"the click ({x}, {y}) is not a position on the image")
        previous = (self.clicks, self.threshold)
        self.clicks = [*self.clicks, Click(*self.to_original(x, y), int(label))]
        self.threshold = None
        try:
            return self.predict()
        except Exception:
            self.clicks, self.threshold = previous
            raise

    def undo(self) -> Prediction | None:
        """Remove the latest click (and any threshold override); None when no click is left."""
        self._require_image()
        if not self.clicks:
            raise InputError("there is no click to undo")
        previous = (self.clicks, self.threshold)
        self.clicks, self.threshold = self.clicks[:-1], None
        try:
            return self.predict()
        except Exception:
            self.clicks, self.threshold = previous
            raise

    def reset(self) -> None:
        """Forget every click and its cached Markov-map (the image and its operator stay)."""
        self._require_image().clear_cache()
        self.clicks, self.threshold, self.click_seconds = [], None, None

    def override_threshold(self, threshold: float | None) -> Prediction:
        """Use ``threshold`` for the latest click instead of its adaptive one (None: automatic)."""
        self._require_image()
        if not self.clicks:
            raise InputError("click on the image first: the threshold belongs to the latest click")
        if threshold is not None and not (np.isfinite(threshold) and 0.0 <= threshold <= 1.0):
            raise InputError(f"the threshold must lie in [0, 1], got {threshold}")
        previous = self.threshold
        self.threshold = None if threshold is None else float(threshold)
        try:
            return self.predict()
        except Exception:
            self.threshold = previous
            raise

    # ------------------------------------------------------------------ output
    def status(self, prediction: Prediction | None = None) -> str:
        """One line for the app: backbone and where it runs, timings, mask coverage, memory."""
        if not is_backbone_loaded(self.backbone_key, self.resolution):
            return f"The model loads with the first image (attention resolution R = {self.resolution})."
        parts = [self.backbone.description]
        if self.image_seconds is not None:
            parts.append(f"image {self.image_seconds:.2f} s")
        if self.click_seconds is not None:
            parts.append(f"last click {self.click_seconds:.2f} s")
        if self.has_image:
            parts.append(f"{len(self.clicks)} click{'' if len(self.clicks) == 1 else 's'}")
        if prediction is not None:
            parts.append(f"mask {100.0 * prediction.mask.mean():.1f} % of the image")
        if self.has_image:
            parts.append(f"session memory {self.memory_bytes() / 2 ** 20:.0f} MiB")
        return " · ".join(parts)

    @property
    def export_dir(self) -> str:
        """This session's folder for downloadable files (removed by :meth:`close`)."""
        return os.path.join(tempfile.gettempdir(), "m2n2-studio", self.id)

    def export(self, prediction: Prediction) -> tuple[str, str]:
        """Write the mask (PNG, original size, 0/255) and the RGBA cut-out; return both paths."""
        predictor = self._require_image()
        os.makedirs(self.export_dir, exist_ok=True)
        mask_path = os.path.join(self.export_dir, "mask.png")
        cutout_path = os.path.join(self.export_dir, "cutout.png")
        Image.fromarray(prediction.mask.astype(np.uint8) * 255).save(mask_path, compress_level=1)
        Image.fromarray(cutout(predictor.original_image, prediction.mask), "RGBA").save(cutout_path, compress_level=1)
        return mask_path, cutout_path

    def render(self, prediction: Prediction | None) -> Views:
        """Everything the app shows for the current state and ``prediction`` (None: no clicks).

        Also writes the downloadable files, and remembers the overlay in :attr:`view` so that
        the app can show it again after an input it rejects.
        """
        image = self.display_image
        if prediction is None:
            views = Views(overlay=image.copy(), status=self.status())
        else:
            shown = self.to_display([(c.x, c.y) for c in self.clicks])
            last = prediction.points[-1]
            mask_path, cutout_path = self.export(prediction)
            views = Views(overlay=overlay(image, prediction.mask, shown, [c.label for c in self.clicks]),
                          heatmap=heatmap_figure(last.markov_map, tuple(shown[-1]), last.label),
                          scores=score_figure(last, len(self.clicks)), mask_path=mask_path,
                          cutout_path=cutout_path, threshold=float(last.threshold),
                          status=self.status(prediction))
        self.view = views.overlay
        return views

    def close(self) -> None:
        """Free everything: the predictor (operator, images, cached maps) and exported files."""
        self.predictor, self.clicks, self.threshold, self.view = None, [], None, None
        shutil.rmtree(self.export_dir, ignore_errors=True)


def segment_once(backbone, config: M2N2Config, image, points, labels) -> Prediction:
    """Stateless segmentation: prepare ``image`` with ``backbone`` and segment the points.

    Parameters
    ----------
    backbone : Backbone
        The (shared) attention backbone.
    config : M2N2Config
        Settings.
    image : numpy.ndarray or PIL.Image.Image
        Any supported image.
    points, labels : array-like
        (K, 2) points (x, y) in original pixels and (K,) labels.
    """
    predictor = M2N2Predictor(None, config, device=backbone.device)
    with _borrowed(predictor, backbone):
        predictor.set_image(image)
    prediction = predictor.predict(points, labels)
    prediction.timings = {**predictor.image_timings, **prediction.timings}
    return prediction


class LiveSessions:
    """The live session of each browser tab, so that closing the tab frees it at once.

    ``gr.State`` keeps a closed tab's value for an hour (in case the user comes back); the app
    calls :meth:`end` from ``demo.unload`` to free the heavy part sooner. Only weak references
    are kept: tracking never extends a session's life.
    """

    def __init__(self):
        self._sessions: dict[str, weakref.ref] = {}
        self._lock = threading.Lock()

    def track(self, tab: str, session: Session) -> None:
        """Remember ``session`` as the live session of browser tab ``tab``."""
        with self._lock:
            self._sessions[tab] = weakref.ref(session)

    def end(self, tab: str) -> bool:
        """Close the session of ``tab``; returns whether one was still alive."""
        with self._lock:
            ref = self._sessions.pop(tab, None)
        session = ref() if ref is not None else None
        if session is None:
            return False
        session.close()
        return True

    def __len__(self) -> int:
        with self._lock:
            return sum(ref() is not None for ref in self._sessions.values())
