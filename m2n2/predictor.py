"""M2N2Predictor: pay the per-image cost once in ``set_image``, then segment every click cheaply."""

from __future__ import annotations

import atexit
import copy
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from .config import M2N2Config
from .errors import InputError, NotReadyError
from .floodfill import flood_fill
from .geometry import Geometry
from .image import as_rgb_uint8, resize_mask, resize_rgb
from .markov import markov_map, start_states
from .merge import merge_maps
from .numerics import denormals_flushed, full_fp32
from .pausing import current_pause_hook, set_pause_hook
from .operator import TransitionOperator, prepare_operator, with_leap
from .prompts import Click, check_clicks, check_threshold
from .threads import SharedRows, allowed_threads, using_threads
from .threshold import Array, ThresholdCurves, choose_threshold, score_thresholds, threshold_curves
from .upsample import JBUTable, apply_jbu_table, jbu_table, joint_bilateral_upsample

_DTYPES = {"float32": torch.float32, "float16": torch.float16}
_MAX_CACHED_MAPS = 64


@dataclass
class PointResult:
    """Everything M2N2 computed for one prompt point.

    Attributes
    ----------
    xy : tuple of float
        The point (x, y) in original image pixels.
    label : int
        1 foreground, 0 background.
    markov_map : numpy.ndarray
        (h, w) float32 final Markov-map in [0, 1] at the working size (0 at the point).
    thresholds, score, score_prior, score_edge, score_pos, score_neg : numpy.ndarray
        (T,) candidate thresholds (the map's values in ascending order, one per pixel but the
        last, so plateaus repeat; see :mod:`m2n2.threshold`) and, for each, the total and the
        four component scores.
    threshold : float
        The threshold used: the adaptive choice, or the override.
    threshold_index : int
        Index of the adaptive choice in ``thresholds``.
    overridden : bool
        Whether ``threshold`` came from the caller.
    """

    xy: tuple[float, float]
    label: int
    markov_map: np.ndarray
    thresholds: np.ndarray
    score: np.ndarray
    score_prior: np.ndarray
    score_edge: np.ndarray
    score_pos: np.ndarray
    score_neg: np.ndarray
    threshold: float
    threshold_index: int
    overridden: bool


@dataclass
class Prediction:
    """The result of one ``predict`` call, as plain arrays.

    Attributes
    ----------
    mask : numpy.ndarray
        (H, W) bool at the original image size.
    points : list of PointResult
        One per prompt point, in order.
    distance : numpy.ndarray
        (h, w) float32 merged nearest-neighbour distance ``min_k M_k / lambda_k`` (working size).
    nearest : numpy.ndarray
        (h, w) int index of the nearest point.
    timings : dict
        Seconds spent in each stage of this call.
    host_bytes : int
        Bytes of the arrays this call brought back from the device's tensors (the torch-stages
        path; 0 on the numpy path, whose arrays never leave the host).

    With ``predict(..., keep="last")`` only the last point's map and curves are filled (the
    other points' arrays, ``distance`` and ``nearest`` are None); with ``keep="none"`` no point's.
    """

    mask: np.ndarray
    points: list[PointResult]
    distance: np.ndarray | None
    nearest: np.ndarray | None
    timings: dict[str, float] = field(default_factory=dict)
    host_bytes: int = 0


_BACKGROUND: dict = {}  # id -> (finishing, thread) still running: stopped before the interpreter exits


@atexit.register
def _stop_background() -> None:
    """Cancel and join the background threads at exit (a daemon thread killed inside a torch
    operation aborts the process); each stops at its next pause point."""
    for finishing, thread in list(_BACKGROUND.values()):
        finishing.cancel()
        thread.join()


class _Superseded(Exception):
    """Raised at a pause point of background work whose image has been replaced."""


@dataclass
class _Finishing:
    """The background part of an image's preparation (see ``early_maps``): the table, or the
    dense filter's weight sums and then the table (from the image alone, while the operator is
    computed), then the leap (once the operator is ready)."""

    done: threading.Event = field(default_factory=threading.Event)
    cancelled: threading.Event = field(default_factory=threading.Event)  # a newer image, or a failure
    operator_ready: threading.Event = field(default_factory=threading.Event)
    operator: TransitionOperator | None = None
    sums_lock: threading.Lock = field(default_factory=threading.Lock)  # whoever comes first sums
    weight_sums: torch.Tensor | None = None
    table_lock: threading.Lock = field(default_factory=threading.Lock)  # whoever comes first builds
    table: JBUTable | None = None  # (early_table) what the early maps are upsampled through
    error: BaseException | None = None
    run: Callable[[], None] | None = None  # the work itself, when it runs in the caller's thread
    leap_rows: SharedRows = field(default_factory=SharedRows)  # the leap's blocks, which a waiting click helps with

    def cancel(self) -> None:
        self.cancelled.set()
        self.operator_ready.set()  # wake the thread, which then stops


@dataclass
class _CachedMap:
    """A point's final Markov-map and its curves: numpy, or tensors on the device (torch stages)."""

    markov_map: Array
    curves: ThresholdCurves


class M2N2Predictor:
    """Interactive segmentation with M2N2, in the shape of ``SamPredictor``.

    Parameters
    ----------
    backbone : Backbone, optional
        Attention source used by :meth:`set_image` (see :mod:`m2n2.backbones`). Not needed when
        the attention is given with :meth:`set_attention`.
    config : M2N2Config, optional
        Hyperparameters; the paper's by default.
    device : str or torch.device, optional
        Where the operator and the Markov iteration live; the backbone's device by default
        (else the CPU).
    torch_stages : bool, optional
        Run the per-pixel stages (flood fill, curves, scores, merge) in torch on ``device``,
        so that only the mask and the pictures leave it; by default on any device but the
        CPU, where the compiled numpy stages are faster. True on the CPU runs the device path
        with CPU tensors (the tests do, so it is exercised without a GPU).
    background : bool, optional
        Run the part of an image's preparation that ``early_maps`` defers (weight sums, table,
        leap) on a second thread, so that ``set_image`` returns sooner (True, the default: an
        interactive user waits less). False runs it in the calling thread at the end of
        ``set_image``: the same bits, and one busy thread per predictor (a batch evaluation
        spread over processes, one core each).

    Examples
    --------
    >>> predictor = M2N2Predictor(load("color"))          # doctest: +SKIP
    >>> predictor.set_image(image)                        # doctest: +SKIP
    >>> predictor.predict([(120, 80)], [1]).mask          # doctest: +SKIP
    """

    def __init__(self, backbone=None, config: M2N2Config | None = None, device=None,
                 torch_stages: bool | None = None, background: bool = True):
        self.backbone = backbone
        self.background = background
        self._torch_stages = torch_stages
        self.config = config or M2N2Config()
        if device is None:
            device = getattr(backbone, "device", None) or "cpu"
        self.device = torch.device(device)
        self._operator: TransitionOperator | None = None
        self._original: np.ndarray | None = None
        self._image: np.ndarray | None = None
        self._guide: torch.Tensor | None = None
        self._attention: torch.Tensor | None = None  # kept only when the caller gave it
        self._jbu: JBUTable | None = None  # per-image upsampling table (config.jbu_table)
        self._weight_sums: torch.Tensor | None = None  # the dense filter's denominator (per image)
        self._maps: OrderedDict[tuple[int, int], _CachedMap] = OrderedDict()
        self._maps_made = 0  # maps computed for this image: the first config.early_maps are early
        self._finishing: _Finishing | None = None
        self._lock = threading.Lock()
        #: Called by the background thread before it starts (tests hold the work there).
        self.before_finishing = None
        self.image_timings: dict[str, float] = {}
        self.image_transfer_bytes = 0  # bytes of the attention moved to ``device`` for the current image

    # ------------------------------------------------------------------ per image
    def set_image(self, image) -> None:
        """Compute the image's attention with the backbone and prepare the operator.

        Parameters
        ----------
        image : numpy.ndarray or PIL.Image.Image
            Any image :func:`m2n2.image.as_rgb_uint8` accepts.
        """
        if self.backbone is None:
            raise NotReadyError("this predictor has no backbone: use set_attention(), or pass a backbone")
        original, work = self._working_copy(image)
        # What needs the image only (the table) starts now, beside the backbone.
        early = self._start_early(work)
        try:
            start = time.perf_counter()
            # The learned backbones resize the original themselves, as the authors do; the colour
            # backbone gets the working copy.
            attention = self.backbone.extract(original if getattr(self.backbone, "wants_original", False) else work)
            _synchronise(attention.device)
            elapsed = time.perf_counter() - start
            start = time.perf_counter()
            flat, moved = self._normalised(self._validated_attention(attention))
            del attention  # the backbone's tensor: freed here unless the backbone keeps it
            with full_fp32():  # the operator's values feed every threshold: no TF32 products on CUDA
                self._prepare(original, work, flat, moved, start, attention=None, early=early)
        except BaseException:
            if early is not None:
                early[1].cancel()  # the previous image and its background work stay as they were
            raise
        self.image_timings = {"attention": elapsed, **self.image_timings}

    def set_attention(self, image, attention) -> None:
        """Use a given attention tensor for an image (tests, caching, per-user app state).

        Parameters
        ----------
        image : numpy.ndarray or PIL.Image.Image
            The image the attention belongs to.
        attention : torch.Tensor or numpy.ndarray
            (R, R, R, R) non-negative, finite, each [i, j] slice with a positive sum (slices
            are renormalised to sum 1).
        """
        original, work = self._working_copy(image)
        attention = self._validated_attention(attention)
        start = time.perf_counter()
        flat, moved = self._normalised(attention)
        with full_fp32():
            self._prepare(original, work, flat, moved, start, attention=attention)

    def _working_copy(self, image) -> tuple[np.ndarray, np.ndarray]:
        original = as_rgb_uint8(image)
        height, width = Geometry.for_image(*original.shape[:2], self.config.max_side).working
        return original, resize_rgb(original, (width, height))

    @staticmethod
    def _validated_attention(attention) -> torch.Tensor:
        if isinstance(attention, np.ndarray):
            attention = torch.from_numpy(attention)
        if not isinstance(attention, torch.Tensor):
            raise InputError(f"attention must be a torch.Tensor or numpy array, got {type(attention).__name__}")
        shape = tuple(attention.shape)
        if len(shape) != 4 or len(set(shape)) != 1 or shape[0] < 2:
            raise InputError(f"attention must have shape (R, R, R, R) with R >= 2, got {shape}")
        if not attention.is_floating_point():
            raise InputError(f"attention must be floating point, got {attention.dtype}")
        n = shape[0] * shape[1]
        row_sums = attention.reshape(n, n).sum(dim=1, dtype=torch.float32)
        if not bool(torch.isfinite(row_sums).all()):  # NaN and inf survive a sum (entries are <= 1)
            raise InputError("attention contains NaN or infinite values")
        if float(attention.amin()) < 0:
            raise InputError("attention contains negative values")
        if bool((row_sums <= 0).any()):
            raise InputError("attention has an all-zero row (a cell that attends to nothing)")
        return attention

    def _normalised(self, attention: torch.Tensor) -> tuple[torch.Tensor, int]:
        """The attention as the predictor's own (N, N) fp32 row-stochastic matrix on its device,
        and the bytes moved there (none when the backbone computes on the predictor's device).

        Never a view of ``attention``: the operator is prepared in this matrix's memory, and the
        caller's tensor (a backbone may keep it) must not change.
        """
        n = attention.shape[0] * attention.shape[1]
        moved = attention.numel() * attention.element_size() if attention.device != self.device else 0
        flat = attention.reshape(n, n).to(device=self.device, dtype=torch.float32)
        row_sums = flat.sum(dim=1, keepdim=True)
        if _shares_memory(flat, attention):
            return flat / row_sums, moved
        return flat.div_(row_sums), moved  # a copy already (another device or dtype): reuse it

    def _uses_background(self) -> bool:
        """Whether the image's preparation ends in the background (``early_maps``)."""
        config = self.config
        return config.early_maps > 0 and (config.markov_leap > 1 or config.jbu_table)

    def _start_early(self, work: np.ndarray) -> tuple[torch.Tensor, _Finishing, int] | None:
        """Start the background thread before the backbone runs, when the attention's size is
        known beforehand (the backbone's ``resolution``): its guide, its work and N."""
        resolution = getattr(self.backbone, "resolution", None)
        if not (self.background and self._uses_background() and isinstance(resolution, int) and resolution > 0):
            return None
        guide = self._guide_of(work)
        return guide, self._start_finishing(guide, resolution * resolution), resolution * resolution

    def _prepare(self, original: np.ndarray, work: np.ndarray, flat: torch.Tensor, moved: int, start: float,
                 attention: torch.Tensor | None, early: tuple | None = None) -> None:
        """Prepare the operator from ``flat`` (our own normalised matrix, written in place) and
        install the image; ``attention`` is kept when the caller gave it (for :meth:`set_config`).
        ``early``: the background thread :meth:`_start_early` started for this image."""
        n = flat.shape[0]
        background = self._uses_background()
        if early is not None and early[2] == n:
            guide, finishing = early[0], early[1]
        else:
            if early is not None:  # the attention is not of the size announced: start again
                early[1].cancel()
            # What needs the image only starts at once, beside the operator (a second thread).
            guide = self._guide_of(work) if background else None
            finishing = self._start_finishing(guide, n) if background else None
        try:
            with denormals_flushed(self.config.flush_denormals):
                operator = prepare_operator(flat, self.config.temperature, self.config.ipf_iterations,
                                            dtype=_DTYPES[self.config.operator_dtype], inplace=True)
                _synchronise(self.device)  # each stage's time its own on a GPU
                elapsed = time.perf_counter() - start
                del flat
                if self.config.markov_leap > 1 and not background:
                    operator = with_leap(operator, self.config.markov_leap)
                    _synchronise(self.device)
        except BaseException:
            if finishing is not None:
                finishing.cancel()
            raise
        leap_elapsed = time.perf_counter() - start - elapsed
        # Only now, after everything that can fail, replace the state.
        with self._lock:
            if self._finishing is not None:
                self._finishing.cancel()  # the previous image's background work is dropped
            self._finishing = finishing
            self._operator = operator
        self._original, self._image = original, work
        self._guide = guide if guide is not None else self._guide_of(work)
        self._attention = attention
        self._maps.clear()
        self._maps_made = 0
        self.image_timings = {"operator": elapsed}
        self.image_transfer_bytes = moved
        if operator.leap is not None:
            self.image_timings["leap"] = leap_elapsed
        if finishing is not None:
            self._jbu = self._weight_sums = None
            finishing.operator = operator
            finishing.operator_ready.set()
            if finishing.run is not None:  # background=False: the same work, in this thread
                finishing.run()
                if finishing.error is not None:
                    raise finishing.error
        else:
            self._prepare_upsampling()

    def _guide_of(self, work: np.ndarray) -> torch.Tensor:
        """The upsampling's guide: the working copy as (3, h, w) float32 in [0, 1] on the device."""
        return torch.from_numpy(np.array(work)).to(self.device).permute(2, 0, 1).float().div_(255.0).contiguous()

    def _start_finishing(self, guide: torch.Tensor, n: int) -> _Finishing:
        """Start the background thread: the table (after the dense filter's weight sums, unless
        ``early_table``) from ``guide``, then the leap of the operator handed over in
        ``operator_ready``; installed when done, if still current."""
        config, resolution = self.config, int(round(n ** 0.5))
        finishing = _Finishing()
        inherited = current_pause_hook()  # a server's priority hook applies to this work as well
        threads = allowed_threads()  # and the threads its caller allows, for the leap (m2n2.threads)

        def pause() -> None:
            if finishing.cancelled.is_set():
                raise _Superseded
            if inherited is not None:
                inherited()

        def work() -> None:
            previous = current_pause_hook()  # None on the thread; the caller's own when run in its thread
            set_pause_hook(pause)
            timings = {}
            try:
                if self.before_finishing is not None:
                    self.before_finishing()
                # A helper of its own (never the first click's); the sums and the table run beside
                # the operator, on the critical path of the first mask, so only the leap gets the
                # caller's threads.
                with full_fp32(), denormals_flushed(config.flush_denormals), \
                        using_threads(allowed_threads(), group="background"):
                    table = None
                    if config.early_maps_use_table:  # what the first maps need: the table
                        t0 = time.perf_counter()
                        with finishing.table_lock:
                            if finishing.table is None:
                                finishing.table = _table_of(guide, resolution, config)
                        table = finishing.table
                        timings["jbu_table"] = time.perf_counter() - t0
                    else:
                        t0 = time.perf_counter()
                        with finishing.sums_lock:  # what the first map's filter needs
                            if finishing.weight_sums is None:
                                finishing.weight_sums = weight_sums(guide, resolution, config)
                        timings["weight_sums"] = time.perf_counter() - t0
                        if config.jbu_table:
                            t0 = time.perf_counter()
                            table = _table_of(guide, resolution, config)
                            timings["jbu_table"] = time.perf_counter() - t0
                    finishing.operator_ready.wait()
                    pause()
                    t0 = time.perf_counter()
                    leaped = finishing.operator
                    if config.markov_leap > 1:
                        with using_threads(threads, group="background"):
                            leaped = with_leap(leaped, config.markov_leap, finishing.leap_rows)
                        _synchronise(leaped.device)
                        timings["leap"] = time.perf_counter() - t0
                with self._lock:
                    if self._finishing is finishing and not finishing.cancelled.is_set():
                        self._operator, self._jbu = leaped, table
                        self.image_timings = {**self.image_timings, **timings, "background": True}
            except _Superseded:
                pass
            except BaseException as error:  # kept, and raised where a map needs the result
                finishing.error = error
            finally:
                set_pause_hook(previous)
                finishing.leap_rows.close()
                finishing.done.set()
                _BACKGROUND.pop(id(finishing), None)

        if not self.background:
            finishing.run = work  # by _prepare, once the operator is handed over
            return finishing
        thread = threading.Thread(target=work, name="m2n2-finish-preparation", daemon=True)
        _BACKGROUND[id(finishing)] = (finishing, thread)
        thread.start()
        return finishing

    @property
    def is_prepared(self) -> bool:
        """Whether the image's whole preparation, background part included, has finished."""
        finishing = self._finishing
        return self.is_ready and (finishing is None or finishing.done.is_set())

    def wait_prepared(self) -> float:
        """Wait for the background part of the image's preparation; return the seconds waited.

        Raises what the background work raised (e.g. ``MemoryError``), every time it is needed.
        """
        finishing = self._finishing
        if finishing is None:
            return 0.0
        start = time.perf_counter()
        # A click that would only wait computes blocks of the leap's squarings meanwhile (the
        # same bits whoever computes them): the wait takes about half as long on two cores. The
        # background closes them just before it is done.
        finishing.leap_rows.help()
        finishing.done.wait()
        if finishing.error is not None:
            raise finishing.error
        return time.perf_counter() - start

    def _settle(self) -> None:
        """Wait for the background work to end, whatever its outcome (before changing the state)."""
        finishing = self._finishing
        if finishing is not None:
            finishing.done.wait()

    def _prepare_upsampling(self) -> None:
        """Build the image's upsampling table when the config asks for one (else drop it)."""
        self._jbu = self._weight_sums = None
        if self.config.jbu_table:
            start = time.perf_counter()
            resolution = self._operator.resolution
            with denormals_flushed(self.config.flush_denormals):
                self._jbu = jbu_table(self._guide, (resolution, resolution), self.config.sigma_spatial,
                                      self.config.sigma_range)
            _synchronise(self.device)
            self.image_timings["jbu_table"] = time.perf_counter() - start

    # ------------------------------------------------------------------ state
    @property
    def is_ready(self) -> bool:
        """Whether an image (and its operator) is set."""
        return self._operator is not None

    @property
    def image(self) -> np.ndarray:
        """The working copy (h, w, 3) uint8 that M2N2 segments."""
        self._require_ready()
        return self._image

    @property
    def original_image(self) -> np.ndarray:
        """The image as given (converted to RGB uint8), at its original size."""
        self._require_ready()
        return self._original

    @property
    def original_size(self) -> tuple[int, int]:
        """(H, W) of the image as given."""
        self._require_ready()
        return self._original.shape[:2]

    @property
    def geometry(self) -> Geometry:
        """Original, working and attention-grid sizes of the current image, and the maps between them."""
        self._require_ready()
        return Geometry(tuple(self._original.shape[:2]), tuple(self._image.shape[:2]), self._operator.resolution)

    @property
    def resolution(self) -> int:
        """R of the current attention."""
        self._require_ready()
        return self._operator.resolution

    @property
    def operator(self) -> TransitionOperator:
        """The prepared transition operator of the current image."""
        self._require_ready()
        return self._operator

    @property
    def torch_stages(self) -> bool:
        """Whether the per-pixel stages run in torch on the device (see the constructor)."""
        return self.device.type != "cpu" if self._torch_stages is None else bool(self._torch_stages)

    @property
    def cached_points(self) -> int:
        """How many points' Markov-maps are cached for the current image."""
        return len(self._maps)

    def to(self, device=None, dtype=None) -> "M2N2Predictor":
        """Move (and/or cast) the operator, e.g. to fp16 on the CPU between app calls."""
        self._settle()
        moved = device is not None and torch.device(device) != self.device
        if device is not None:
            self.device = torch.device(device)
        if moved:
            self._maps.clear()  # cached maps live where the stages ran
            self._weight_sums = None  # and so do the sums they were upsampled with
        if self._operator is not None:
            self._operator = self._operator.to(device=self.device, dtype=dtype)
            self._guide = self._guide.to(self.device)
            if self._jbu is not None:
                self._jbu = self._jbu.to(self.device)
        return self

    def shared_copy(self) -> "M2N2Predictor":
        """A predictor of the same prepared image with its own Markov-maps and clicks.

        The operator, its leap, the guide, the upsampling table and the dense filter's weight
        sums are shared, not copied (nothing writes into them), so serving one prepared image
        (an example) to many users costs its maps only. Waits for the preparation to finish.
        """
        self._require_ready()
        self.wait_prepared()
        twin = copy.copy(self)
        twin._maps = OrderedDict()
        twin._maps_made = 0
        twin._lock = threading.Lock()
        twin.image_timings = dict(self.image_timings)
        return twin

    def prepare_weight_sums(self) -> None:
        """Compute the dense filter's weight sums now (they depend on the image only), so that
        the first map upsampled with the dense filter does not pay for them."""
        self._require_ready()
        if self._weight_sums is None:
            with denormals_flushed(self.config.flush_denormals):
                self._weight_sums = weight_sums(self._guide, self._operator.resolution, self.config)

    def clear_cache(self) -> None:
        """Forget the cached Markov-maps (they are recomputed on demand)."""
        self._maps.clear()

    def set_config(self, config: M2N2Config) -> None:
        """Change settings, recomputing only what they invalidate.

        Score switches and the area prior keep every cached map; Markov, upsampling and flood
        fill settings drop the maps; temperature, IPF and operator dtype re-prepare the operator
        (from the attention given to :meth:`set_attention`, or by running the backbone again).
        """
        self._settle()
        old, self.config = self.config, config
        if not self.is_ready:
            return
        if old.max_side != config.max_side or old.operator_fields != config.operator_fields:
            try:
                if self._attention is not None:
                    self.set_attention(self._original, self._attention)
                else:
                    self.set_image(self._original)
            except Exception:
                self.config = old
                raise
        else:
            upsampling = ("sigma_spatial", "sigma_range", "jbu_table")
            if any(getattr(old, f) != getattr(config, f) for f in upsampling):
                with full_fp32():
                    self._prepare_upsampling()
            markov = ("rho", "max_steps", "markov_leap_after", "flood_fill", "early_maps", "early_table")
            if any(getattr(old, f) != getattr(config, f) for f in (*markov, *upsampling)):
                self._maps.clear()

    def _require_ready(self) -> None:
        if self._operator is None:
            raise NotReadyError("no image is set: call set_image() or set_attention() first")

    # ------------------------------------------------------------------ per click
    def predict(self, points, labels, threshold: float | None = None, keep: str = "all") -> Prediction:
        """Segment the current image from prompt points.

        Parameters
        ----------
        points : array-like
            (K, 2) points as (x, y) = (column, row) in original image pixels, 0 <= x < W and
            0 <= y < H (fractional coordinates are rounded to the nearest pixel).
        labels : array-like
            (K,) 1 (or True) for foreground, 0 (or False) for background.
        threshold : float, optional
            Override the adaptive threshold of the last point (a value in [0, 1]).
        keep : {"all", "last", "none"}
            Which points' Markov-maps and score curves the result carries: every point's, with
            ``distance`` and ``nearest`` (the default), only the last point's, or none (the
            mask and the thresholds only). On a GPU what is not kept never leaves the device.

        Returns
        -------
        Prediction
        """
        self._require_ready()
        if keep not in _KEEP:
            raise InputError(f"keep must be one of {', '.join(_KEEP)}, got {keep!r}")
        points, labels = self._validated_prompts(points, labels, threshold)
        timings = {"markov": 0.0, "upsample": 0.0, "flood_fill": 0.0, "curves": 0.0}
        start = time.perf_counter()
        geometry = self.geometry
        pixels = geometry.working_pixels(points)
        keys = [tuple(p) for p in pixels]

        with denormals_flushed(self.config.flush_denormals), full_fp32():
            missing = list(dict.fromkeys(k for k in keys if k not in self._maps))
            if missing:
                self._compute_maps(missing, timings)
            for key in keys:
                self._maps.move_to_end(key)
            while len(self._maps) > max(_MAX_CACHED_MAPS, len(keys)):
                self._maps.popitem(last=False)

            prediction = self._score_and_merge(points, labels, pixels, keys, threshold, timings, keep)
        t0 = time.perf_counter()
        prediction.mask = self._to_original_size(prediction.mask, geometry, points, labels)
        timings["merge"] += time.perf_counter() - t0
        timings["total"] = time.perf_counter() - start
        return prediction

    def _score_and_merge(self, points, labels, pixels, keys, threshold, timings, keep) -> Prediction:
        """Scores of every point and the merged mask at the working size, computed where the maps
        are (numpy on the CPU; tensors on the device, from which only the mask and what ``keep``
        asks for come back: see :meth:`predict`)."""
        t0 = time.perf_counter()
        maps = [self._maps[k].markov_map for k in keys]  # not stacked: merge_maps takes them as they are
        rows, cols = _like(pixels[:, 0], maps[0]), _like(pixels[:, 1], maps[0])
        values = _stack([m[rows, cols] for m in maps])  # values[k, j] = M_k(p_j)
        same_label = _like(labels[:, None] == labels[None, :], values)
        kept = _kept_points(keep, len(keys))
        # Only the kept points' curves are returned: the others need their choice alone.
        scores = [(score_thresholds if k in kept else choose_threshold)(
            self._maps[key].curves, values[k][same_label[k]], values[k][~same_label[k]], self.config)
            for k, key in enumerate(keys)]
        thresholds = [float(threshold) if threshold is not None and k == len(keys) - 1 else sc.threshold
                      for k, sc in enumerate(scores)]
        _wait(values)
        timings["scores"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        mask, distance, nearest = merge_maps(maps, np.array(thresholds), labels, pixels)
        mask = _host(mask)
        distance, nearest = (_host(distance), _host(nearest)) if keep == "all" else (None, None)
        timings["merge"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        results = []
        for k, (key, sc) in enumerate(zip(keys, scores)):
            if k in kept:
                results.append(self._point_result(points, labels, k, _host(self._maps[key].markov_map),
                                                  _scores_on_host(sc), threshold, len(keys)))
            else:  # the chosen threshold only: on a device, its arrays stay there
                results.append(_without_arrays(self._point_result(points, labels, k, None, sc, threshold,
                                                                  len(keys))))
        timings["results"] = time.perf_counter() - t0  # the maps and curves brought back (if on a device)
        host_bytes = 0
        if isinstance(maps[0], torch.Tensor):
            host_bytes = mask.nbytes + sum(a.nbytes for a in (distance, nearest) if a is not None) + sum(
                r.markov_map.nbytes + sum(getattr(r, n).nbytes for n in _CURVES) for r in results
                if r.markov_map is not None)
        return Prediction(mask=mask, points=results, distance=distance, nearest=nearest, timings=timings,
                          host_bytes=host_bytes)

    @staticmethod
    def _point_result(points, labels, k, markov_map, scores, threshold, count) -> PointResult:
        chosen, overridden = scores.threshold, False
        if threshold is not None and k == count - 1:
            chosen, overridden = float(threshold), True
        return PointResult(
            xy=(float(points[k, 0]), float(points[k, 1])), label=int(labels[k]), markov_map=markov_map,
            thresholds=scores.thresholds, score=scores.score, score_prior=scores.score_prior,
            score_edge=scores.score_edge, score_pos=scores.score_pos, score_neg=scores.score_neg,
            threshold=chosen, threshold_index=scores.index, overridden=overridden)

    def _validated_prompts(self, points, labels, threshold):
        """``(points, labels)`` as (K, 2) float64 and (K,) int64, checked by :mod:`m2n2.prompts`
        (finite, on the image; the threshold in [0, 1]); the array shapes are checked here."""
        try:
            points = np.asarray(points, dtype=np.float64)
            labels = np.asarray(labels)
        except (TypeError, ValueError) as error:
            raise InputError(f"points must be numbers (x, y) and labels 0/1: {error}") from None
        if points.size == 0:
            raise InputError("at least one prompt point is needed")
        points = points.reshape(-1, 2) if points.ndim == 1 and points.size == 2 else points
        if points.ndim != 2 or points.shape[1] != 2:
            raise InputError(f"points must have shape (K, 2) as (x, y), got {points.shape}")
        if labels.ndim != 1 or len(labels) != len(points):
            raise InputError(f"got {len(points)} points but {labels.size} labels; give one label per point")
        if labels.dtype == np.bool_:
            labels = labels.astype(np.int64)
        if not np.isin(labels, (0, 1)).all():
            raise InputError(f"labels must be 1 (foreground) or 0 (background), got {sorted(set(labels.tolist()))}")
        labels = labels.astype(np.int64)
        # The library takes any number of points; the click limit is the app's and the API's.
        check_clicks((Click(x, y, label) for (x, y), label in zip(points.tolist(), labels.tolist())),
                     self._original.shape[:2], max_clicks=None)
        check_threshold(threshold)
        return points, labels

    def _compute_maps(self, keys: list[tuple[int, int]], timings: dict[str, float]) -> None:
        """Compute the maps of new points: the image's first ``early_maps`` without the leap
        (single steps; the dense filter, or the table with ``early_table``), the others with the
        leap and the table once they are ready."""
        early = max(0, min(len(keys), self.config.early_maps - self._maps_made))
        if early:
            self._compute_map_group(keys[:early], timings, early=True)
        if early < len(keys):
            waited = self.wait_prepared()
            if waited:
                timings["preparation_wait"] = timings.get("preparation_wait", 0.0) + waited
            self._compute_map_group(keys[early:], timings, early=False)

    def _compute_map_group(self, keys: list[tuple[int, int]], timings: dict[str, float], early: bool) -> None:
        config, operator = self.config, self._operator
        h, w = self._image.shape[:2]
        t0 = time.perf_counter()
        xy = np.array([[col, row] for row, col in keys], dtype=np.float64)
        starts = start_states(xy, (h, w), operator.resolution)
        leaps = operator.leap is not None and not early
        steps = markov_map(operator, starts, rho=config.rho, max_steps=config.max_steps,
                           leap_after=config.markov_leap_after if leaps else None)
        steps = steps.reshape(len(keys), operator.resolution, operator.resolution)
        _synchronise(operator.device)
        timings["markov"] += time.perf_counter() - t0

        t0 = time.perf_counter()
        finishing = self._finishing
        if self._jbu is not None and (not early or config.early_maps_use_table):
            upsampled = apply_jbu_table(self._jbu, steps)
        elif early and config.early_maps_use_table:
            upsampled = apply_jbu_table(self._table_for_early_maps(timings), steps)
        elif self._weight_sums is None and finishing is not None:
            # The background thread's sums (the same bits); if it has not begun them, this filter's
            # own sums serve it too, so that nobody sums the weights twice.
            with finishing.sums_lock:
                upsampled, self._weight_sums = joint_bilateral_upsample(
                    steps, self._guide, config.sigma_spatial, config.sigma_range,
                    denominator=finishing.weight_sums, return_denominator=True)
                finishing.weight_sums = self._weight_sums
        else:
            upsampled, self._weight_sums = joint_bilateral_upsample(
                steps, self._guide, config.sigma_spatial, config.sigma_range, denominator=self._weight_sums,
                return_denominator=True)
        self._maps_made += len(keys)
        if not self.torch_stages:
            upsampled = upsampled.cpu().numpy()  # the CPU's stages are compiled numpy kernels
        _wait(upsampled)
        timings["upsample"] += time.perf_counter() - t0

        # Each stage picks its kernel from the arrays it gets: numpy, or tensors kept on the device.
        for key, up in zip(keys, upsampled):
            t0 = time.perf_counter()
            # float32 throughout, as the authors' maps: the threshold's ties depend on it
            final = _max_normalised(up)
            if config.flood_fill:
                final = _max_normalised(flood_fill(final, key))
            _wait(final)
            timings["flood_fill"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            self._maps[key] = _CachedMap(final, threshold_curves(final))
            _wait(final)
            timings["curves"] += time.perf_counter() - t0

    def _table_for_early_maps(self, timings: dict[str, float]) -> JBUTable:
        """The background's table (``early_table``): waited for while it is being built, built
        here when the background has not begun it (the same bits either way)."""
        finishing = self._finishing  # there is one: without it set_image or set_config built self._jbu
        start = time.perf_counter()
        with finishing.table_lock:
            if finishing.table is None:
                with full_fp32(), denormals_flushed(self.config.flush_denormals):
                    finishing.table = _table_of(self._guide, self._operator.resolution, self.config)
            table = finishing.table
        timings["preparation_wait"] = timings.get("preparation_wait", 0.0) + time.perf_counter() - start
        return table

    @property
    def upsampling_table(self) -> JBUTable | None:
        """The current image's upsampling table (None unless ``config.jbu_table``)."""
        return self._jbu

    @staticmethod
    def _to_original_size(mask: np.ndarray, geometry: Geometry, points: np.ndarray, labels: np.ndarray) -> np.ndarray:
        if mask.shape == geometry.original:
            return mask
        mask = resize_mask(mask, geometry.original)
        rows, cols = geometry.original_pixels(points).T
        mask[rows, cols] = labels.astype(bool)  # every prompt pixel keeps its own label
        return mask


def _table_of(guide: torch.Tensor, resolution: int, config: M2N2Config) -> JBUTable:
    """The upsampling table of an image for maps of R x R, ready on the guide's device."""
    table = jbu_table(guide, (resolution, resolution), config.sigma_spatial, config.sigma_range)
    _synchronise(guide.device)
    return table


def weight_sums(guide: torch.Tensor, resolution: int, config: M2N2Config) -> torch.Tensor:
    """The dense filter's per-pixel weight sums for maps of R x R (what a first call computes)."""
    _, sums = joint_bilateral_upsample(torch.zeros((1, resolution, resolution), device=guide.device), guide,
                                       config.sigma_spatial, config.sigma_range, return_denominator=True)
    return sums


def warm_up(config: M2N2Config | None = None) -> float:
    """Compile the CPU kernels a click uses (or load them from numba's cache), on a tiny image.

    A server calls this at start, so that its first visitor's first click does not pay for it: the
    kernels are compiled on the first call in a process, several seconds on a fresh install and
    about 0.4 s to load them from the cache (docs/first-mask.md). A random 48 x 64 picture with
    R = 8 attention goes through both paths of ``config`` (the first map and, once the background
    preparation is done, the later ones), and through the dense filter where ``config`` itself
    does not use it. Results are thrown away; nothing is kept.

    Parameters
    ----------
    config : M2N2Config, optional
        The settings the server will use (default: the exact preset).

    Returns
    -------
    float
        The seconds it took.
    """
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    attention = torch.from_numpy(rng.random((8, 8, 8, 8), dtype=np.float32) + 0.01)
    predictor = M2N2Predictor(config=config or M2N2Config(), device="cpu")
    predictor.set_attention(image, attention)
    predictor.predict(np.array([[10.0, 10.0]]), np.array([1]))
    predictor.wait_prepared()
    predictor.predict(np.array([[10.0, 10.0], [50.0, 30.0]]), np.array([1, 0]))
    predictor.prepare_weight_sums()  # the dense filter too, where the preset does not use it: an older recipe's does
    return time.perf_counter() - start


def _max_normalised(values: Array) -> Array:
    """``values / max(values)`` in float32 (unchanged where the maximum is not positive); a
    tensor stays on its device, and is not read back to decide."""
    if isinstance(values, torch.Tensor):
        values = values.float()
        top = values.max()
        return torch.where(top > 0, values / top, values)
    values = values.astype(np.float32, copy=False)
    top = values.max()
    return values / top if top > 0 else values


def _stack(arrays: list) -> Array:
    """``arrays`` stacked along a new first axis, numpy or torch as they are."""
    return torch.stack(arrays) if isinstance(arrays[0], torch.Tensor) else np.stack(arrays)


def _like(array: np.ndarray, reference: Array) -> Array:
    """``array`` as the kind of ``reference``: itself for numpy, a tensor on the reference's device."""
    return torch.as_tensor(array, device=reference.device) if isinstance(reference, torch.Tensor) else array


def _host(array: Array) -> np.ndarray:
    """``array`` as a numpy array on the host (a tensor is copied back from its device)."""
    return array.cpu().numpy() if isinstance(array, torch.Tensor) else array


def _wait(array: Array) -> None:
    """Wait for the device that computes ``array``, if any (stage timings on a GPU)."""
    if isinstance(array, torch.Tensor):
        _synchronise(array.device)


def _shares_memory(tensor: torch.Tensor, other: torch.Tensor) -> bool:
    """Whether two tensors are views of the same storage."""
    return (tensor.device == other.device
            and tensor.untyped_storage().data_ptr() == other.untyped_storage().data_ptr())


_KEEP = ("all", "last", "none")
_CURVES = ("thresholds", "score", "score_prior", "score_edge", "score_pos", "score_neg")


def _kept_points(keep: str, count: int) -> set[int]:
    """Indices of the points whose arrays ``predict(..., keep=keep)`` returns."""
    return set(range(count)) if keep == "all" else {count - 1} if keep == "last" else set()


def _without_arrays(result: PointResult) -> PointResult:
    """``result`` without its Markov-map and curves (the threshold and flags stay)."""
    result.markov_map = None
    for name in _CURVES:
        setattr(result, name, None)
    return result


def _scores_on_host(scores):
    """A :class:`~m2n2.threshold.ThresholdScores` with numpy curves (brought back from a device)."""
    for name in _CURVES:
        setattr(scores, name, _host(getattr(scores, name)))
    return scores


def _synchronise(device: torch.device) -> None:
    """Wait for the device's queued work, so that stage timings mean something on a GPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
