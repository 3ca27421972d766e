"""The hyperparameters of M2N2, with the paper's values as defaults; its presets and shared limits.

The two presets are ``"exact"`` (:class:`M2N2Config` as constructed: the paper's hyperparameters
with the authors' definitions) and ``"fast"`` (:meth:`M2N2Config.fast`); every command line
chooses one with ``--preset exact|fast`` (:func:`add_preset_argument`, :func:`preset_from_args`).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass

from .errors import InputError

#: The preset names, the only ones anywhere (flags, method specs, the app's options).
PRESETS = ("exact", "fast")

#: Clicks per object: the evaluation protocol (NoC, RITM / SimpleClick) stops at 20 and counts an
#: object not done by then as a failure; the app and its API take at most this many per request.
MAX_CLICKS = 20


def default_resolution(device=None) -> int:
    """The attention resolution R used when none is given: 128 (the paper's) on CUDA, else 64.

    On a CPU, R = 96 and 128 take tens of seconds per image (the operator has R^4 entries; see
    docs/performance.md), which is no interactive use. ``device`` is a ``torch.device`` or its name; None: CUDA when available.
    """
    import torch  # here, so that reading the config needs no torch

    cuda = torch.cuda.is_available() if device is None else torch.device(device).type == "cuda"
    return 128 if cuda else 64


@dataclass(frozen=True)
class M2N2Config:
    """Settings of the M2N2 pipeline.

    Defaults are the paper's hyperparameters (CVPR 2025, Sections 3 and 4), and every stage
    follows the definitions of the authors' public code where its details differ from the
    paper's text (see docs/fidelity.md); the few settings that go beyond it are
    marked as such and default to the authors' behaviour. These defaults are the ``"exact"``
    preset; :meth:`fast` is the ``"fast"`` one (see :meth:`preset`).

    Attributes
    ----------
    temperature : float
        tau: the attention is sharpened to ``A ** (1 / tau)`` (rows renormalised) before IPF.
    ipf_iterations : int
        Sinkhorn/IPF iterations (columns, then rows) that make the operator doubly stochastic.
    rho : float
        Relative probability threshold: a cell's Markov-map value is the (interpolated) step at
        which ``v / max(v)`` first exceeds ``rho``.
    max_steps : int
        Largest number of Markov steps; cells that never cross get this value.
    sigma_spatial : float
        Joint bilateral upsampling: spatial sigma in attention-resolution pixels; the window
        is the disc of radius 3 sigma.
    sigma_range : float
        Joint bilateral upsampling: range sigma on RGB in [0, 1].
    flood_fill : bool
        Apply the minimax flood fill to every upsampled Markov-map.
    area_prior : float
        S_prior: a candidate passes while its rank among all pixels (one stable sort of the
        map), as a fraction ``k / (T - 1)`` of the T candidates, is below this value (the
        authors' measure of the segment's area).
    use_prior, use_edge, use_pos, use_neg : bool
        Switch each of the four threshold scores on or off (the paper's ablation).
    max_side : int
        Images whose longest side exceeds this are processed at a copy of this size; the mask
        is returned at the original size. (Beyond the paper: it works at the input size.)
    operator_dtype : str
        ``"float32"`` (exact) or ``"float16"``: storage of the transition operator; all
        accumulation stays in fp32. On a GPU fp16 halves the operator's memory; on an x86 CPU
        it also keeps FBGEMM's packed copy (the same 2 bytes per entry again), which makes a
        Markov step about 1.7x faster than fp32. (Beyond the paper.)
    flush_denormals : bool
        Run the CPU stages with subnormal floats flushed to zero (FTZ/DAZ). They make up about
        7 % of the operator's entries and make fp32 arithmetic about 5x slower; flushing them
        changed no Markov-map and no mask in the measurements of docs/fidelity.md (GrabCut, both presets),
        so it is on by default; False gives plain IEEE arithmetic. (Beyond the paper: speed.)
    markov_leap : int
        k, a power of two: with k > 1, ``set_image`` also computes P^k (log2 k products of
        N x N matrices; docs/first-mask.md times them) and the Markov iteration
        advances k steps per product after its first ``markov_leap_after`` steps, crossings
        interpolated within a leap (see :func:`~m2n2.markov.markov_map`). 1 (exact) takes
        every step. (Beyond the paper: speed; the fast preset's agreement is measured.)
    markov_leap_after : int
        Single steps before the leaps start: the cells near the point, which shape the
        segment, cross in these with the authors' interpolation.
    jbu_table : bool
        Precompute, in ``set_image``, what joint bilateral upsampling does to any map of this
        image (the weights depend on the image only), so that a click's upsampling is a short
        gather-multiply-add per pixel instead of the dense filter: the same result up to float
        rounding, about 256 bytes per working-size pixel (75 MiB at 480 x 640) and a few
        seconds of ``set_image`` on one CPU thread. (Beyond the paper: a faster evaluation.)
    early_maps : int
        The first this many Markov-maps of an image (its first points, in click order) are
        computed with single Markov steps and the dense filter (see ``early_table``), so that
        ``set_image`` returns once the operator is ready: the leap (``markov_leap``) and the
        table (``jbu_table``) are then built in a background thread, and only later maps wait
        for them. The rule depends on the click order only, never on timing. 0 builds both
        before ``set_image`` returns.
        (Beyond the paper: a shorter wait for the first mask; the fast preset's agreement is
        measured with it.)
    early_table : bool
        With ``jbu_table`` and ``early_maps``: the early maps are upsampled through the table as
        well (it is built first in the background, beside the operator; an early map that is
        ready before it waits for it, or builds it when the background has not begun), so that
        only the leap is left out of them. False upsamples them with the dense filter. (Beyond
        the paper: the dense filter costs a first map about as much as its whole chain.)
    """

    temperature: float = 0.65
    ipf_iterations: int = 200
    rho: float = 0.3
    max_steps: int = 1000
    sigma_spatial: float = 1.0
    sigma_range: float = 0.1
    flood_fill: bool = True
    area_prior: float = 0.4
    use_prior: bool = True
    use_edge: bool = True
    use_pos: bool = True
    use_neg: bool = True
    max_side: int = 1024
    operator_dtype: str = "float32"
    flush_denormals: bool = True
    markov_leap: int = 1
    markov_leap_after: int = 48
    jbu_table: bool = False
    early_maps: int = 0
    early_table: bool = False

    def __post_init__(self) -> None:
        checks = [
            (self.temperature > 0, "temperature must be > 0"),
            (self.ipf_iterations >= 0, "ipf_iterations must be >= 0"),
            (0 < self.rho < 1, "rho must lie in (0, 1)"),
            (self.max_steps >= 1, "max_steps must be >= 1"),
            (self.sigma_spatial > 0, "sigma_spatial must be > 0"),
            (self.sigma_range > 0, "sigma_range must be > 0"),
            (0 < self.area_prior <= 1, "area_prior must lie in (0, 1]"),
            (self.max_side >= 8, "max_side must be >= 8"),
            (self.operator_dtype in ("float32", "float16"),
             "operator_dtype must be 'float32' or 'float16'"),
            (isinstance(self.markov_leap, int) and self.markov_leap >= 1
             and not self.markov_leap & (self.markov_leap - 1), "markov_leap must be a power of two (1, 2, 4, ...)"),
            (self.markov_leap_after >= 0, "markov_leap_after must be >= 0"),
            (isinstance(self.early_maps, int) and self.early_maps >= 0, "early_maps must be an integer >= 0"),
            (isinstance(self.early_table, bool), "early_table must be True or False"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(f"M2N2Config: {message}")

    @classmethod
    def fast(cls, **changes) -> "M2N2Config":
        """The interactive preset: fp16 operator storage, Markov leaps of 8 steps after the
        first 48, and the precomputed upsampling table, both built in the background; the
        image's first map takes single steps and waits for the table only (``early_maps`` = 1,
        ``early_table``).

        Not bit-identical to the exact preset (fp16 storage of the operator, late crossings placed
        within a leap, another summation order in the upsampling); ``python -m m2n2.evaluate
        --agreement`` measures the masks' agreement with the exact preset over the click protocol."""
        return cls(**{"operator_dtype": "float16", "markov_leap": 8, "jbu_table": True, "early_maps": 1,
                      "early_table": True, **changes})

    @classmethod
    def preset(cls, name: str, **changes) -> "M2N2Config":
        """The preset called ``name`` (one of :data:`PRESETS`) with some fields changed.

        ``"exact"`` is ``M2N2Config(**changes)``, ``"fast"`` is ``M2N2Config.fast(**changes)``.

        Raises
        ------
        InputError
            An unknown name (the message lists the known ones).
        """
        if name == "exact":
            return cls(**changes)
        if name == "fast":
            return cls.fast(**changes)
        raise InputError(f"unknown preset {name!r}; the presets are {', '.join(PRESETS)}")

    @property
    def preset_name(self) -> str | None:
        """``"exact"`` or ``"fast"`` when this config is that preset unchanged, else None (a custom mix)."""
        for name in PRESETS:
            if self == type(self).preset(name):
                return name
        return None

    def replace(self, **changes) -> "M2N2Config":
        """Return a copy with some fields changed (validated like the constructor)."""
        return dataclasses.replace(self, **changes)

    @property
    def early_maps_use_table(self) -> bool:
        """Whether the early maps (``early_maps``) are upsampled through the table (``early_table``)."""
        return self.early_table and self.jbu_table and self.early_maps > 0

    @property
    def uses_dense_filter(self) -> bool:
        """Whether some map is upsampled with the dense filter: every map without the table, the
        early ones unless they go through it."""
        return not self.jbu_table or (self.early_maps > 0 and not self.early_table)

    @property
    def operator_fields(self) -> tuple:
        """The settings the transition operator depends on (a change means re-preparing it)."""
        return (self.temperature, self.ipf_iterations, self.operator_dtype, self.flush_denormals, self.markov_leap)


_PRESET_HELP = ("exact: M2N2Config(), every Markov step with the fp32 operator and the dense upsampling "
                "filter; fast: M2N2Config.fast(), fp16 operator, Markov leaps and the precomputed "
                "upsampling table (masks agree closely with exact, not bit for bit)")


class _PresetAction(argparse.Action):
    """``--preset NAME``, or an alias (``--fast``, ``--faithful``) with a fixed ``preset``.

    Two of them on one command line are a parser error (argparse's mutually exclusive groups
    miss ``--preset exact --fast`` when the value given is the default object itself).
    """

    def __init__(self, option_strings, dest, preset: str | None = None, **kwargs):
        self.preset = preset
        if preset is not None:
            kwargs["nargs"] = 0
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        earlier = getattr(namespace, "_preset_option", None)
        if earlier is not None and earlier != option_string:
            parser.error(f"argument {option_string}: not allowed with argument {earlier}")
        namespace._preset_option = option_string
        if self.preset is not None:
            print(f"warning: {option_string} is deprecated; use --preset {self.preset}", file=sys.stderr)
        setattr(namespace, self.dest, self.preset if self.preset is not None else values)


def add_preset_argument(parser: argparse.ArgumentParser, default: str | None = "exact",
                        help_default: str | None = None):
    """Add ``--preset {exact,fast}`` to ``parser``, with ``--fast`` and ``--faithful`` as deprecated aliases.

    The three are mutually exclusive (two different ones on one command line are a parser error,
    even when they agree); an alias prints ``warning: --fast is deprecated; use --preset fast`` to
    stderr. Read the choice with :func:`preset_from_args`.

    Parameters
    ----------
    parser : argparse.ArgumentParser
    default : str or None
        The preset when none is given; None lets the command decide (``preset_from_args`` gives None).
    help_default : str, optional
        How the help names the default (e.g. ``"the recipe's settings"``); by default ``default``.

    Returns
    -------
    argparse._ArgumentGroup
        The help section holding the three options.
    """
    if default is not None and default not in PRESETS:
        raise ValueError(f"the default must be one of the presets {PRESETS} or None, got {default!r}")
    shown = help_default if help_default is not None else (default or "none")
    group = parser.add_argument_group("preset")
    group.add_argument("--preset", choices=PRESETS, default=default, action=_PresetAction,
                       help=f"{_PRESET_HELP} (default: {shown})")
    group.add_argument("--fast", dest="preset", action=_PresetAction, preset="fast",
                       help="deprecated: use --preset fast")
    group.add_argument("--faithful", dest="preset", action=_PresetAction, preset="exact",
                       help="deprecated: use --preset exact")
    return group


def preset_from_args(args: argparse.Namespace) -> str | None:
    """The preset a command line chose with :func:`add_preset_argument`'s options: ``"exact"``,
    ``"fast"``, or None (nothing given and no default)."""
    name = getattr(args, "preset", None)
    if name is not None and name not in PRESETS:
        raise InputError(f"unknown preset {name!r}; the presets are {', '.join(PRESETS)}")
    return name
