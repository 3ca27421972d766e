"""Methods the evaluation compares, all behind the same small interface (see
:class:`m2n2.evaluate.protocol.Method`): M2N2 on any backbone with any ablation, and two
classical training-free baselines driven by the same clicks.

Methods are built from short specs such as ``m2n2``, ``m2n2:use_edge=false``,
``m2n2:flood_fill=false,name=no-flood``, ``grabcut:iterations=3`` or
``randomwalker:beta=90`` (see :func:`build_methods`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from ..config import M2N2Config
from ..errors import InputError
from ..geometry import Geometry
from ..image import resize_rgb

# The paper's ablations (Table 2 and the flood fill), as spec strings.
ABLATIONS = ("m2n2:use_prior=false,name=m2n2-no-prior",
             "m2n2:use_edge=false,name=m2n2-no-edge",
             "m2n2:use_pos=false,name=m2n2-no-pos",
             "m2n2:use_neg=false,name=m2n2-no-neg",
             "m2n2:flood_fill=false,name=m2n2-no-flood")


def click_seeds(shape: tuple[int, int], points, labels, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Disks of ``radius`` pixels round the clicks: (foreground, background) bool masks.

    A pixel in both keeps the label of the later click, as a user's correction would.
    """
    height, width = shape
    rows, cols = np.ogrid[:height, :width]
    foreground = np.zeros(shape, dtype=bool)
    background = np.zeros(shape, dtype=bool)
    for (x, y), label in zip(points, labels):
        disk = (rows - y) ** 2 + (cols - x) ** 2 <= radius ** 2
        (foreground if label else background)[disk] = True
        (background if label else foreground)[disk] = False
    return foreground, background


def border(shape: tuple[int, int], width: int) -> np.ndarray:
    """(H, W) bool: a frame ``width`` pixels wide along the image's edges (none for width 0)."""
    frame = np.zeros(shape, dtype=bool)
    if width > 0:
        frame[:width, :] = frame[-width:, :] = True
        frame[:, :width] = frame[:, -width:] = True
    return frame


def _upscale_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a bool mask to (height, width)."""
    if mask.shape == shape:
        return mask
    rows = np.minimum((np.arange(shape[0]) + 0.5) * mask.shape[0] / shape[0], mask.shape[0] - 1).astype(int)
    cols = np.minimum((np.arange(shape[1]) + 0.5) * mask.shape[1] / shape[1], mask.shape[1] - 1).astype(int)
    return mask[rows[:, None], cols[None, :]]


class _Downscaled:
    """Shared part of the baselines: a working copy of the image whose longest side is at most
    ``max_side`` (0 = full size), clicks moved onto it, masks returned at the original size."""

    max_side: int

    def set_image(self, image: np.ndarray) -> None:
        self.shape = image.shape[:2]
        self.geometry = Geometry.for_image(*self.shape, self.max_side or max(self.shape))
        self.image = resize_rgb(image, self.geometry.working[::-1])

    def _work(self, points) -> list[tuple[int, int]]:
        """Clicks (x, y) moved onto the working copy (the same map as the predictor's)."""
        return [(int(col), int(row)) for row, col in self.geometry.working_pixels(points)]


class GrabCutMethod(_Downscaled):
    """OpenCV's GrabCut (Rother et al. 2004) seeded from the clicks.

    Everything starts as probable foreground and a thin frame along the image's edges as
    definite background: GrabCut's own rectangle start with the whole image as rectangle.
    Click disks are definite labels and win over the frame, so an object touching the edge can
    still be clicked there. The object is then the connected components of the result that hold
    a positive click, so a same-coloured region elsewhere does not count. (On 10 GrabCut images
    this seeding needed NoC@90 4.3 clicks against 7.0 when the frame is dropped at the first
    negative click and 8.2 with a probable-background frame.) OpenCV's process-wide RNG is
    reseeded before every call, so a mask depends only on the image, the clicks and ``seed``,
    not on which images or methods ran before it.

    Parameters
    ----------
    radius : int
        Seed disk radius in working-copy pixels.
    iterations : int
        GrabCut iterations per click.
    max_side : int
        Longest side of the working copy (0 = the full image).
    frame : int
        Width of the background frame, in working-copy pixels; 0 for none (the clicks alone:
        until the first negative click there is no background model and the whole image is
        returned).
    seed : int
        Seed of the k-means start of GrabCut's colour models.
    """

    def __init__(self, radius: int = 5, iterations: int = 5, max_side: int = 320, frame: int = 5,
                 seed: int = 0, name: str = "grabcut") -> None:
        import cv2  # optional dependency: only this baseline needs it

        self._cv2 = cv2
        self.radius, self.iterations, self.max_side, self.frame = radius, iterations, max_side, frame
        self.seed = seed
        self.name = name

    def predict(self, points, labels) -> np.ndarray:
        cv2 = self._cv2
        shape = self.image.shape[:2]
        if not any(labels):
            return np.zeros(self.shape, dtype=bool)
        work = self._work(points)
        foreground, background = click_seeds(shape, work, labels, self.radius)
        mask = np.full(shape, cv2.GC_PR_FGD, dtype=np.uint8)
        mask[border(shape, self.frame) | background] = cv2.GC_BGD
        mask[foreground] = cv2.GC_FGD
        if not (mask == cv2.GC_BGD).any():
            # Without a frame and before the first negative click there is no background colour
            # model to fit: every pixel is as likely foreground as the clicked one.
            return np.ones(self.shape, dtype=bool)
        models = (np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64))
        cv2.setRNGSeed(self.seed)
        cv2.grabCut(np.ascontiguousarray(self.image[:, :, ::-1]), mask, None, *models,
                    self.iterations, cv2.GC_INIT_WITH_MASK)
        result = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
        result = keep_clicked_components(result, work, labels)
        return _upscale_mask(result, self.shape)


class RandomWalkerMethod(_Downscaled):
    """scikit-image's random walker (Grady 2006) with the click disks as seeds.

    A frame along the image's edges is a background seed besides the negative clicks; click
    disks win over it. (On 10 GrabCut images: NoC@90 13.4, against 14.2 to 15.3 when the frame
    is used only until the first negative click.)

    Parameters
    ----------
    radius : int
        Seed disk radius in working-copy pixels.
    beta : float
        Edge weight sharpness (scikit-image's default 130).
    max_side : int
        Longest side of the working copy; the linear system grows with its area.
    frame : int
        Width of the background frame, in working-copy pixels; 0 for none (until the first
        negative click every walk ends at a positive seed: the whole image).
    """

    def __init__(self, radius: int = 3, beta: float = 130.0, max_side: int = 240, frame: int = 2,
                 name: str = "randomwalker") -> None:
        self.radius, self.beta, self.max_side, self.frame = radius, beta, max_side, frame
        self.name = name

    def set_image(self, image: np.ndarray) -> None:
        super().set_image(image)
        self.features = self.image.astype(np.float64) / 255.0

    def predict(self, points, labels) -> np.ndarray:
        from skimage.segmentation import random_walker

        shape = self.image.shape[:2]
        if not any(labels):
            return np.zeros(self.shape, dtype=bool)
        foreground, background = click_seeds(shape, self._work(points), labels, self.radius)
        background |= border(shape, self.frame) & ~foreground
        seeds = np.zeros(shape, dtype=np.int32)
        seeds[background] = 2
        seeds[foreground] = 1
        if not background.any():
            return np.ones(self.shape, dtype=bool)  # one label only: every walk ends at it
        result = random_walker(self.features, seeds, beta=self.beta, mode="bf",
                               channel_axis=-1)
        return _upscale_mask(result == 1, self.shape)


def keep_clicked_components(mask: np.ndarray, points, labels) -> np.ndarray:
    """The 8-connected components of ``mask`` that contain a positive click."""
    from scipy.ndimage import label as label_components

    components, _ = label_components(mask, structure=np.ones((3, 3), dtype=bool))
    kept = {components[y, x] for (x, y), positive in zip(points, labels) if positive} - {0}
    return np.isin(components, list(kept))


class M2N2Method:
    """The M2N2 predictor behind the evaluation interface.

    Parameters
    ----------
    backbone : object
        An attention backbone (``m2n2.backbones.load(...)``); share one between variants so
        that the attention of an image is computed once (see :class:`SharedBackbone`).
    config : M2N2Config
    name : str
    """

    def __init__(self, backbone, config: M2N2Config, name: str = "m2n2") -> None:
        from .. import M2N2Predictor  # here: the package imports this module's package

        # The deferred preparation in this thread: one busy thread per process, as `--threads 1` and a
        # spread over processes assume (the same bits as on a second thread).
        self.predictor = M2N2Predictor(backbone, config=config, background=False)
        self.config, self.name = config, name

    def set_image(self, image: np.ndarray) -> None:
        self.predictor.set_image(image)

    def predict(self, points, labels) -> np.ndarray:
        # The mask alone: no point's curves, map or distances (the same mask, less work per click).
        return self.predictor.predict(points=list(points), labels=list(labels), keep="none").mask


class SharedBackbone:
    """Wraps a backbone so that M2N2 variants evaluated on the same image share one
    ``extract`` call: the attention of the last image is kept and handed to every caller
    (``M2N2Predictor`` never writes into a tensor it did not allocate)."""

    def __init__(self, backbone) -> None:
        self.inner = backbone
        self._key: tuple | None = None
        self._attention = None

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self.inner, attribute)

    def extract(self, image: np.ndarray):
        image = np.ascontiguousarray(image)
        key = (image.shape, hash(image.tobytes()))
        if key != self._key:
            self._attention, self._key = self.inner.extract(image), key
        return self._attention


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """Split ``"kind:key=value,key=value"`` into the kind and its options (all strings)."""
    kind, _, rest = spec.strip().partition(":")
    options: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, equals, value = item.partition("=")
        if not equals:
            raise InputError(f"method option {item!r} in {spec!r} is not of the form key=value")
        options[key.strip()] = value.strip()
    return kind.strip().lower(), options


def _convert(value: str, like: Any, what: str) -> Any:
    """Convert a spec string to the type of ``like`` (bool, int, float or str)."""
    if isinstance(like, bool):
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise InputError(f"{what} must be true or false, got {value!r}")
    try:
        return type(like)(value)
    except ValueError as error:
        raise InputError(f"{what} must be a {type(like).__name__}, got {value!r}") from error


def _options(options: dict[str, str], defaults: dict[str, Any], kind: str) -> dict[str, Any]:
    """``defaults`` with the spec's ``options`` converted to their types and put in."""
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise InputError(f"unknown option(s) {unknown} for {kind}; known: {sorted(defaults)}")
    return {**defaults, **{key: _convert(value, defaults[key], f"{kind} option {key}")
                           for key, value in options.items()}}


def build_methods(specs: list[str], backbone_factory: Callable[[], Any] | None = None,
                  base_config: M2N2Config | None = None, seed: int = 0) -> list:
    """Build methods from specs.

    Parameters
    ----------
    specs : list of str
        ``kind[:key=value,...]`` with kind ``m2n2`` (keys: any M2N2Config field, and ``preset``:
        ``exact`` or ``fast`` for the configuration the fields modify), ``grabcut``
        (radius, iterations, max_side, frame, seed) or ``randomwalker`` (radius, beta, max_side,
        frame); every kind also takes ``name``.
    backbone_factory : callable, optional
        Returns the backbone; called once, and only if an ``m2n2`` spec is present.
    base_config : M2N2Config, optional
        The configuration that ``m2n2`` options modify.
    seed : int
        Default ``seed`` of the methods that draw random numbers (GrabCut).

    Raises
    ------
    InputError
        Unknown kind or option, a bad value, or two methods with the same name.
    """
    backbone = None
    methods = []
    for spec in specs:
        kind, options = parse_spec(spec)
        name = options.pop("name", None)
        if kind == "m2n2":
            config = base_config or M2N2Config()
            preset = options.pop("preset", None)
            if preset is not None:
                config = M2N2Config.preset(preset)  # an unknown name: InputError listing the presets
            fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
            config = config.replace(**_options(options, fields, kind))
            if backbone is None:
                if backbone_factory is None:
                    raise InputError("an m2n2 method needs a backbone")
                backbone = SharedBackbone(backbone_factory())
            methods.append(M2N2Method(backbone, config, name or spec))
        elif kind == "grabcut":
            defaults = {"radius": 5, "iterations": 5, "max_side": 320, "frame": 5, "seed": seed}
            methods.append(GrabCutMethod(**_options(options, defaults, kind), name=name or spec))
        elif kind == "randomwalker":
            defaults = {"radius": 3, "beta": 130.0, "max_side": 240, "frame": 2}
            methods.append(RandomWalkerMethod(**_options(options, defaults, kind), name=name or spec))
        else:
            raise InputError(f"unknown method {kind!r}; known: m2n2, grabcut, randomwalker")
    names = [method.name for method in methods]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"two methods share the name(s) {duplicates}; add name=... to a spec")
    return methods
