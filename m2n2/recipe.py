"""Recipes: a small JSON document that fully determines a segmentation, to share and replay it.

A recipe names the image by its content hash (and an example's name when it is one), the
backbone (its registry key, name, model and attention resolution R), every M2N2 setting, and per object the
clicks (:class:`~m2n2.prompts.Click`: x, y, label in original image pixels) with the override of the object's latest
click's threshold (the one threshold M2N2 lets a user set). :func:`replay` turns a recipe and
a prepared predictor back into the masks, bit for bit the ones that were shown when the recipe
was written.

Validation (:func:`check`) raises :class:`~m2n2.errors.InputError` with a message saying what
is wrong (another image, a newer format, another backbone, a point outside the image) before
anything is computed, so callers change nothing on error.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

from .config import M2N2Config
from .errors import InputError
from .prompts import Click, as_arrays, check_clicks, check_threshold, parse_clicks

#: The ``format`` field of every recipe.
FORMAT = "m2n2-recipe"
#: The format version this code writes; it reads this one and older ones. Version 2 added the
#: backbone's registry key (version 1 named Stable Diffusion 2 or the colour fallback by name) and
#: the config's ``early_maps`` (absent in version 1: 0, as those recipes were made). Version 3 added
#: ``early_table`` (absent before: False, the dense filter those recipes' first maps were made with).
VERSION = 3


def image_hash(image: np.ndarray) -> str:
    """Content hash of an RGB uint8 image: ``"sha256:<hex>"`` of its shape and pixels.

    The decoded pixels are hashed, not the file, so the same picture saved again losslessly
    (another PNG encoder, metadata changed) keeps its hash; a re-compressed JPEG does not.
    """
    image = np.ascontiguousarray(image, dtype=np.uint8)
    digest = hashlib.sha256(f"{image.shape}".encode())
    digest.update(image.tobytes())
    return "sha256:" + digest.hexdigest()


@dataclass(frozen=True)
class ObjectRecipe:
    """One object: its clicks in original pixels and its threshold override.

    ``threshold`` overrides the adaptive threshold of the object's latest click (None: adaptive).
    """

    clicks: tuple[Click, ...]
    threshold: float | None = None

    @property
    def points(self) -> np.ndarray:
        """(K, 2) float64 (x, y)."""
        return as_arrays(self.clicks)[0]

    @property
    def labels(self) -> np.ndarray:
        """(K,) int64 labels."""
        return as_arrays(self.clicks)[1]


@dataclass(frozen=True)
class BackboneRecord:
    """What a recipe says about the attention: the backbone's name, model, R, description and
    registry key (None in recipes written before the key was recorded)."""

    name: str
    resolution: int
    model: str | None = None
    description: str = ""
    key: str | None = None

    @classmethod
    def of(cls, backbone) -> "BackboneRecord":
        """The description of a loaded backbone (anything with ``name``, ``resolution``, ``description``)."""
        return cls(str(backbone.name), int(backbone.resolution), getattr(backbone, "model", None),
                   str(getattr(backbone, "description", "")), getattr(backbone, "key", None))

    @property
    def registry_key(self) -> str:
        """The :mod:`m2n2.backbones` name that loads this backbone: the recorded key, else (a
        version-1 recipe, when only SD2 and the colour fallback existed) read from the name."""
        if self.key:
            return self.key
        return "color" if self.name.startswith("colour") else "sd2"

    def same_kind(self, other: "BackboneRecord") -> bool:
        """Same attention source (name and model); R and the device may differ."""
        return (self.name, self.model) == (other.name, other.model)


@dataclass(frozen=True)
class Recipe:
    """Everything that determines a segmentation (see the module's docstring)."""

    image_hash: str
    width: int
    height: int
    backbone: BackboneRecord
    config: M2N2Config
    objects: tuple[ObjectRecipe, ...] = field(default_factory=tuple)
    example: str | None = None
    version: int = VERSION

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict:
        """A JSON-ready dict (the recipe file's content)."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "image": {"sha256": self.image_hash.removeprefix("sha256:"), "width": self.width,
                      "height": self.height, **({"example": self.example} if self.example else {})},
            "backbone": dataclasses.asdict(self.backbone),
            "settings": dataclasses.asdict(self.config),
            "objects": [{"clicks": [[_number(c.x), _number(c.y), int(c.label)] for c in obj.clicks],
                         "threshold": obj.threshold} for obj in self.objects],
        }

    def to_json(self) -> str:
        """The recipe as indented JSON text."""
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text) -> "Recipe":
        """Parse a recipe (JSON text, bytes or an already parsed dict); raises InputError with the reason."""
        if isinstance(text, (bytes, bytearray)):
            text = text.decode("utf-8", errors="replace")
        if isinstance(text, str):
            try:
                data = json.loads(text)
            except json.JSONDecodeError as error:
                raise InputError(f"the recipe is not JSON: {error}") from None
        else:
            data = text
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise InputError(f'this is not an M2N2 recipe (expected a JSON object with "format": "{FORMAT}")')
        version = data.get("version")
        if not isinstance(version, int) or version < 1:
            raise InputError(f"the recipe's format version must be a positive integer, got {version!r}")
        if version > VERSION:
            raise InputError(f"the recipe was written by a newer M2N2 Studio (format version {version}); "
                             f"this one reads versions up to {VERSION}: update M2N2 Studio to use it")
        try:
            image, backbone, settings = data["image"], data["backbone"], data["settings"]
            known = {f.name for f in dataclasses.fields(M2N2Config)}
            unknown = sorted(set(settings) - known)
            if unknown:
                raise InputError(f"the recipe has unknown settings {unknown}")
            config = M2N2Config(**settings)
            for side in ("width", "height"):  # a size like NaN, inf or -5 would make every click "outside" it
                value = image[side]
                if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                    raise InputError(f"the recipe's image {side} must be a whole number of pixels >= 1, "
                                     f"got {value!r}")
            objects = tuple(_object(number, obj) for number, obj in enumerate(data.get("objects", []), start=1))
            return cls(image_hash="sha256:" + str(image["sha256"]), width=int(image["width"]),
                       height=int(image["height"]),
                       backbone=BackboneRecord(str(backbone["name"]), int(backbone["resolution"]),
                                               backbone.get("model"), str(backbone.get("description", "")),
                                               backbone.get("key")),
                       config=config, objects=objects, example=image.get("example"), version=version)
        except InputError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as error:
            raise InputError(f"the recipe is incomplete or malformed ({type(error).__name__}: {error})") from None


def _number(value: float):
    """Whole numbers as ints in the JSON (clicks are pixel positions), others as floats."""
    return int(value) if float(value).is_integer() else float(value)


def _object(number: int, data) -> ObjectRecipe:
    what = f"object {number} of the recipe"
    if not isinstance(data, dict) or not isinstance(data.get("clicks"), list):
        raise InputError(f"{what} needs a non-empty list of clicks [x, y, label]")
    clicks = parse_clicks(data["clicks"], what=what)
    try:
        threshold = check_threshold(data.get("threshold"))
    except InputError as error:
        raise InputError(f"{what}: {error}") from None
    return ObjectRecipe(tuple(clicks), threshold)


def make(image: np.ndarray, backbone, config: M2N2Config, objects, example: str | None = None,
         hashed: str | None = None) -> Recipe:
    """The recipe of ``objects`` (ObjectRecipe, or ``(clicks, threshold)`` pairs) on ``image``.

    Clicks are :class:`~m2n2.prompts.Click` or ``(x, y, label)`` items. ``backbone`` is a
    loaded backbone or a :class:`BackboneRecord`. ``hashed`` is the image's
    :func:`image_hash` when the caller already has it (hashing a 12-megapixel image takes
    about 50 ms, too much to repeat on every click).
    """
    height, width = np.asarray(image).shape[:2]
    described = backbone if isinstance(backbone, BackboneRecord) else BackboneRecord.of(backbone)
    objects = tuple(obj if isinstance(obj, ObjectRecipe) else
                    ObjectRecipe(tuple(Click(float(x), float(y), int(label)) for x, y, label in obj[0]),
                                 None if obj[1] is None else float(obj[1]))
                    for obj in objects)
    return Recipe(hashed or image_hash(image), int(width), int(height), described, config, objects, example)


def check(recipe: Recipe, image: np.ndarray | None = None, backbone=None) -> None:
    """Raise :class:`InputError` when ``recipe`` cannot reproduce its result here.

    Parameters
    ----------
    recipe : Recipe
    image : numpy.ndarray, optional
        The image it is to be replayed on: its content hash must match.
    backbone : optional
        The running backbone (or a :class:`BackboneRecord`): it must be the same kind (name and model).
    """
    if image is not None:
        found = image_hash(image)
        if found != recipe.image_hash:
            height, width = np.asarray(image).shape[:2]
            raise InputError(
                f"this recipe was made for another image ({recipe.width} x {recipe.height}, "
                f"{recipe.image_hash[:19]}…), not this one ({width} x {height}, {found[:19]}…)"
                + (f"; it names the example '{recipe.example}'" if recipe.example else
                   ": load the image it was made for first"))
    if backbone is not None:
        running = backbone if isinstance(backbone, BackboneRecord) else BackboneRecord.of(backbone)
        if not running.same_kind(recipe.backbone):
            wanted = recipe.backbone.name + (f" ({recipe.backbone.model})" if recipe.backbone.model else "")
            have = running.name + (f" ({running.model})" if running.model else "")
            raise InputError(f"this recipe was made with the backbone {wanted}, but this one runs {have}: "
                             "its masks would differ")
    for number, obj in enumerate(recipe.objects, start=1):
        try:  # no click limit here: that is the app's (see m2n2.studio.limits)
            check_clicks(obj.clicks, (recipe.height, recipe.width), max_clicks=None)
        except InputError as error:
            raise InputError(f"object {number}: {error}") from None


def replay_object(predictor, points, labels, threshold: float | None = None, keep: str = "all"):
    """Segment one object the way the app does: each click's Markov-map computed on its own, in order.

    The app computes a click's map when the click arrives; computing several maps in one batch
    may round differently, so a replay walks the clicks one by one to give the same bits.
    Returns the final :class:`~m2n2.predictor.Prediction` (``keep`` as in ``predict``; the
    intermediate clicks bring nothing back).
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    labels = np.asarray(labels, dtype=np.int64)
    for count in range(1, len(points)):
        predictor.predict(points[:count], labels[:count], keep="none")
    return predictor.predict(points, labels, threshold=threshold, keep=keep)


def replay(predictor, recipe: Recipe) -> list[np.ndarray]:
    """The masks of ``recipe``'s objects ((H, W) bool each) on ``predictor``'s image.

    ``predictor`` must hold the recipe's image (checked by hash) with the recipe's settings
    (its config is set to them first).
    """
    check(recipe, predictor.original_image, getattr(predictor, "backbone", None))
    if predictor.config != recipe.config:
        predictor.set_config(recipe.config)
    return [replay_object(predictor, obj.points, obj.labels, obj.threshold, keep="none").mask
            for obj in recipe.objects]
