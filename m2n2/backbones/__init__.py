"""Attention backbones: where M2N2's (R, R, R, R) attention tensors come from.

``load("sd2")`` is Stable Diffusion 2 (the paper); ``load("color")`` the colour-affinity fallback;
``load("auto")`` SD2 when its weights can be loaded, else the fallback with a one-line reason.
"""

from __future__ import annotations

from ..errors import BackboneUnavailable
from .base import Backbone
from .color import ColorAffinityBackbone

KINDS = ("auto", "sd2", "color")


def load(kind: str = "auto", **options) -> Backbone:
    """Load an attention backbone.

    Parameters
    ----------
    kind : {"auto", "sd2", "color"}
    **options
        Passed to the backbone (e.g. ``resolution``, ``device``; ``model`` for SD2;
        ``sigma_color`` / ``sigma_position`` for the colour fallback).

    Returns
    -------
    Backbone
        For ``"auto"`` falling back, ``backbone.reason`` says why.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown backbone {kind!r}; choose one of {', '.join(KINDS)}")
    if kind == "color":
        return ColorAffinityBackbone(**_only(options, ("resolution", "sigma_color", "sigma_position", "device")))
    try:
        from .sd2 import StableDiffusion2Backbone
    except ImportError as error:
        if kind == "sd2":
            raise BackboneUnavailable(f"cannot import the Stable Diffusion 2 backbone ({error}); "
                                      "install diffusers and transformers") from None
        reason = f"cannot import it: {error}"
    else:
        try:
            return StableDiffusion2Backbone.load(**options)
        except BackboneUnavailable as error:
            if kind == "sd2":
                raise
            reason = str(error).splitlines()[0]
    fallback = ColorAffinityBackbone(**_only(options, ("resolution", "device")))
    fallback.reason = f"Stable Diffusion 2 unavailable ({reason}); using the colour-affinity fallback"
    return fallback


def _only(options: dict, names: tuple) -> dict:
    return {k: v for k, v in options.items() if k in names and v is not None}


__all__ = ["Backbone", "ColorAffinityBackbone", "load", "KINDS"]
