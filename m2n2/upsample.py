"""Joint bilateral upsampling (Kopf et al. 2007) as M2N2 modifies it.

Two changes from the original: dense sampling (the low-resolution map is first upsampled
bilinearly and the filter then runs at full resolution, with its spatial Gaussian measured in
low-resolution pixels) and an isotropic Gaussian range kernel on RGB in [0, 1]. The details
follow the authors' ``joint_bilateral_upsampling`` (``src/utils.py``): bilinear upsampling with
pixel-centre alignment (``align_corners=False``, scale H / h), and a window of the offsets whose
distance in low-resolution pixels is at most 3 sigma (a disc, not a square). Neighbours outside
the image do not count.

:func:`jbu_table` computes, once per image, what the filter does to any map: the result at a
pixel is a fixed linear combination of the few low-resolution cells its window reaches, because
the weights depend on the guide only. :func:`apply_jbu_table` then upsamples a map with a small
gather-multiply-add per pixel, equal to :func:`joint_bilateral_upsample` up to float rounding.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numba
import numpy as np
import torch
import torch.nn.functional as F
from numba.core.extending import intrinsic

from .pausing import pause_point
from .threads import split_rows

# Colour given to pixels outside the image: far enough from [0, 1] that their range weight is 0.
_OUTSIDE = 1.0e3
_CUTOFF = 3.0  # the window holds offsets up to this many spatial sigmas
# exp of anything below this is subnormal (under 1.2e-38): 0 when subnormals are flushed
_UNDERFLOW = -87.5


def window_offsets(height: int, width: int, res_y: int, res_x: int,
                   sigma_spatial: float) -> list[tuple[int, int, float]]:
    """Offsets (dy, dx) of the JBU window in full-resolution pixels, with their log spatial weight.

    An offset belongs to the window when its length in low-resolution pixels (dy / (H / h),
    dx / (W / w)) is at most 3 sigma; its spatial weight is the Gaussian of that length.
    """
    scale_y, scale_x = height / res_y, width / res_x
    reach_y = int(_CUTOFF * scale_y * sigma_spatial + 1)
    reach_x = int(_CUTOFF * scale_x * sigma_spatial + 1)
    offsets = []
    for dy in range(-reach_y, reach_y + 1):
        for dx in range(-reach_x, reach_x + 1):
            uy, ux = dy / (scale_y * sigma_spatial), dx / (scale_x * sigma_spatial)
            if uy * uy + ux * ux <= _CUTOFF ** 2:
                offsets.append((dy, dx, -0.5 * (uy * uy + ux * ux)))
    return offsets


def _window_weights(guide: torch.Tensor, offsets, sigma_range: float):
    """Yield ``(dy, dx, weight)``: the (H, W) weight of the neighbour at (y + dy, x + dx).

    The weights are symmetric, ``w(p, p + d) = w(p + d, p)``, so the weight image of -d is
    that of d shifted by d: one exponential serves both (the window is symmetric). Offsets
    come with dy >= 0 in the order given, each followed by its mirror. The yielded tensors
    are views of one buffer: use each before taking the next.
    """
    _, height, width = guide.shape
    pad_y, pad_x = _padding(offsets)
    for dy, dx, buffer in _weight_pairs(guide, offsets, sigma_range):
        yield dy, dx, buffer[pad_y:pad_y + height, pad_x:pad_x + width]
        if (dy, dx) != (0, 0):
            yield -dy, -dx, buffer[pad_y - dy:pad_y - dy + height, pad_x - dx:pad_x - dx + width]


def _padding(offsets) -> tuple[int, int]:
    """The window's reach (rows, columns): the padding its shifted views need."""
    return max(abs(dy) for dy, _, _ in offsets), max(abs(dx) for _, dx, _ in offsets)


def _weight_pairs(guide: torch.Tensor, offsets, sigma_range: float, rows: tuple[int, int] | None = None):
    """Yield ``(dy, dx, buffer)`` for the offsets with (dy, dx) >= (0, 0).

    ``buffer`` is (H + 2 pad_y, W + 2 pad_x), zero outside its centre, which holds the weight
    image of (dy, dx); shifted by (-dy, -dx) it is the weight image of the mirror (-dy, -dx).
    The same buffer every time: use it before taking the next. ``rows`` (CPU): only the weight
    image's rows ``range(*rows)`` are computed (the others stay 0).
    """
    _, height, width = guide.shape
    first, stop = rows or (0, height)
    pad_y, pad_x = _padding(offsets)
    padded = F.pad(guide, (pad_x, pad_x, pad_y, pad_y), value=_OUTSIDE)
    inv_two_var_r = 1.0 / (2.0 * sigma_range ** 2)
    # zero outside the image: a mirrored neighbour there has no weight
    buffer = torch.zeros((height + 2 * pad_y, width + 2 * pad_x), dtype=torch.float32, device=guide.device)
    inner = buffer[pad_y:pad_y + height, pad_x:pad_x + width]
    on_cpu = guide.device.type == "cpu" and guide.dtype == torch.float32
    if on_cpu:  # the exponent in one compiled pass, the exponential itself still torch's
        exponent = torch.empty((height, width), dtype=torch.float32)
        arrays = padded.contiguous().numpy(), guide.contiguous().numpy(), exponent.numpy(), buffer.numpy()
        # Where torch's exp flushes underflow to 0 anyway, lanes that would underflow get a
        # cheap stand-in and are zeroed after: exp is ~100x slower on them (0.52 -> 0.07 ms a
        # 480 x 640 weight image, where far colours make many such lanes).
        underflow = np.float32(_UNDERFLOW if _exp_flushes_underflow() else -np.inf)
    for dy, dx, log_spatial in offsets:
        if (dy, dx) < (0, 0):
            continue  # given by its mirror
        ys, xs = pad_y + dy, pad_x + dx
        if on_cpu:
            marked = _range_exponent(*arrays[:2], ys, xs, np.float32(-inv_two_var_r), np.float32(log_spatial),
                                     underflow, arrays[2], first, stop)
            torch.exp(exponent[first:stop], out=inner[first:stop])
            if marked:
                _zero_marked(arrays[2], arrays[3], pad_y, pad_x, first, stop)
        else:
            diff = padded[:, ys:ys + height, xs:xs + width] - guide
            torch.exp(diff.square_().sum(dim=0).mul_(-inv_two_var_r).add_(log_spatial), out=inner)
        yield dy, dx, buffer


def _exp_flushes_underflow() -> bool:
    """Whether torch's exp gives exactly 0 below ``_UNDERFLOW`` here (subnormals flushed)."""
    probe = torch.tensor([_UNDERFLOW, -90.0, -100.0, -104.0, -200.0, -1.0e8] * 6, dtype=torch.float32)
    return bool((torch.exp(probe) == 0).all())


@numba.njit(cache=True, nogil=True)
def _range_exponent(padded, guide, ys, xs, scale, shift, underflow, out, first, stop):  # pragma: no cover - compiled
    """``sum_c (padded[c, ys + y, xs + x] - guide[c, y, x]) ** 2 * scale + shift`` into ``out``.

    The float32 operations of the torch expression, in its order (the channel sum left to
    right, no fused multiply-add), so the weights stay bit for bit what torch computes
    (``tests/test_upsample.py``); one pass instead of five over the image. Values below
    ``underflow`` are written as the marker 1.0 (a true exponent is never positive); returns
    how many. Rows ``first`` to ``stop`` (excluded) only. Row slices and a select instead of a
    branch let the compiler vectorise the loop (4x faster than indexing the 3-D arrays per pixel,
    480 x 640 on one thread).
    """
    _, height, width = guide.shape
    marked = 0
    one = np.float32(1.0)
    for y in range(first, stop):
        p0 = padded[0, ys + y, xs:xs + width]
        p1 = padded[1, ys + y, xs:xs + width]
        p2 = padded[2, ys + y, xs:xs + width]
        g0, g1, g2 = guide[0, y], guide[1, y], guide[2, y]
        line = out[y]
        count = 0
        for x in range(width):
            d0 = p0[x] - g0[x]
            d1 = p1[x] - g1[x]
            d2 = p2[x] - g2[x]
            total = d0 * d0 + d1 * d1
            total = total + d2 * d2
            value = total * scale + shift
            below = value < underflow
            line[x] = one if below else value
            count += below
        marked += count
    return marked


@numba.njit(cache=True, nogil=True)
def _zero_marked(exponent, buffer, pad_y, pad_x, first, stop):  # pragma: no cover - compiled
    """Zero the weights whose exponent :func:`_range_exponent` marked (they underflow to 0):
    rows ``first`` to ``stop`` (excluded) of the weight image at (``pad_y``, ``pad_x``) in ``buffer``.

    The whole C-contiguous buffer is passed, not a view of its centre: the view's rows have an
    unknown layout to the compiler, which then leaves the loop unvectorised (4x slower).
    """
    width = exponent.shape[1]
    zero = np.float32(0.0)
    for y in range(first, stop):
        marks, line = exponent[y], buffer[pad_y + y, pad_x:pad_x + width]
        for x in range(width):
            line[x] = zero if marks[x] > 0 else line[x]


# Images of at least this many rows split the upsampling's rows between two threads where two
# are allowed (m2n2.threads.using_threads).
_SPLIT_MIN_ROWS = 64


def _split_rows(rows, middle: int, height: int) -> None:
    """:func:`m2n2.threads.split_rows` for images of at least :data:`_SPLIT_MIN_ROWS` rows."""
    if height >= _SPLIT_MIN_ROWS:
        split_rows(rows, middle, height)
    else:
        rows(0, height)


def joint_bilateral_upsample(low: torch.Tensor, guide: torch.Tensor, sigma_spatial: float = 1.0,
                             sigma_range: float = 0.1, denominator: torch.Tensor | None = None,
                             return_denominator: bool = False):
    """Upsample low-resolution maps to the guide's size, following the guide's edges.

    Parameters
    ----------
    low : torch.Tensor
        (h, w) or (K, h, w) maps.
    guide : torch.Tensor
        (3, H, W) RGB image in [0, 1], on the device to compute on.
    sigma_spatial : float
        Spatial sigma in low-resolution pixels; the window is cut at 3 sigma.
    sigma_range : float
        Range sigma of the Gaussian on RGB distance.
    denominator : torch.Tensor, optional
        (H, W) sum of the weights at each pixel, as returned by an earlier call with the same
        guide, sigmas and map size: it depends on those only, so it is reused, not summed again.
    return_denominator : bool
        Also return that sum (for the next call).

    Returns
    -------
    torch.Tensor
        (H, W) or (K, H, W) fp32 maps; with ``return_denominator``, a pair (maps, denominator).
    """
    single = low.dim() == 2
    maps = low.reshape(-1, *low.shape[-2:]).to(device=guide.device, dtype=torch.float32)
    guide = guide.float()
    _, height, width = guide.shape
    dense = F.interpolate(maps[None], size=(height, width), mode="bilinear", align_corners=False)[0]
    offsets = window_offsets(height, width, *maps.shape[-2:], sigma_spatial)
    pad_y, pad_x = _padding(offsets)
    padded_maps = F.pad(dense, (pad_x, pad_x, pad_y, pad_y))

    numerator = torch.zeros_like(dense)
    summed = denominator is None  # the weights' sum depends on the guide only: once per image
    if summed:
        denominator = torch.zeros((height, width), dtype=torch.float32, device=guide.device)
    if guide.device.type == "cpu" and _addcmul_is_fma():
        # An offset and its mirror in one pass over the sums instead of four torch passes,
        # each pixel's terms in the loop's order: the same sums, bit for bit.
        arrays = padded_maps.contiguous().numpy(), numerator.numpy(), denominator.numpy()

        def accumulate(first: int, stop: int) -> None:
            """The sums of output rows ``first`` to ``stop``, from the weight rows they read (a
            pair's mirror reads up to pad_y rows above)."""
            for dy, dx, buffer in _weight_pairs(guide, offsets, sigma_range, (max(0, first - pad_y), stop)):
                pause_point()
                _accumulate_pair(buffer.numpy(), pad_y, pad_x, dy, dx, *arrays, summed, first, stop)

        # The lower rows' weights start pad_y rows higher, so the helper takes fewer of them.
        _split_rows(accumulate, (height + pad_y) // 2, height)
    else:
        for dy, dx, weight in _window_weights(guide, offsets, sigma_range):
            pause_point()
            ys, xs = pad_y + dy, pad_x + dx
            if summed:
                denominator += weight
            numerator.addcmul_(padded_maps[:, ys:ys + height, xs:xs + width], weight)
    result = numerator / denominator
    result = result[0] if single else result
    return (result, denominator) if return_denominator else result



@intrinsic
def _fma32(typingctx, a, b, c):
    """``a * b + c`` in float32 rounded once (LLVM's fma), as torch's vectorised addcmul computes it."""
    signature = numba.types.float32(numba.types.float32, numba.types.float32, numba.types.float32)

    def codegen(context, builder, sig, args):
        return builder.fma(*args)
    return signature, codegen


@numba.njit(cache=True, nogil=True)
def _accumulate_pair(buffer, pad_y, pad_x, dy, dx, maps, numerator, denominator, summed, first, stop):  # pragma: no cover - compiled
    """Add the terms of offset (dy, dx), then of its mirror, to the dense filter's sums.

    ``buffer`` is :func:`_weight_pairs`'s; ``maps`` the zero-padded bilinear maps (K, H + 2 pad_y,
    W + 2 pad_x). Per pixel: ``denominator += w`` (if ``summed``) and ``numerator = fma(map, w,
    numerator)``, the operations of torch's ``+=`` and ``addcmul_`` in the same order. Row slices
    keep the loops vectorised: 0.18 ms a pair at 480 x 640 (0.13 ms without the denominator)
    against 0.31 ms for the four torch passes. Output rows ``first`` to ``stop`` (excluded) only.
    """
    count, height, width = numerator.shape
    mirror = dy != 0 or dx != 0
    for k in range(count):
        for y in range(first, stop):
            w1 = buffer[pad_y + y, pad_x:pad_x + width]
            w2 = buffer[pad_y - dy + y, pad_x - dx:pad_x - dx + width]
            m1 = maps[k, pad_y + dy + y, pad_x + dx:pad_x + dx + width]
            m2 = maps[k, pad_y - dy + y, pad_x - dx:pad_x - dx + width]
            line, total = numerator[k, y], denominator[y]
            if mirror:
                for x in range(width):
                    line[x] = _fma32(m2[x], w2[x], _fma32(m1[x], w1[x], line[x]))
                if summed and k == 0:
                    for x in range(width):
                        total[x] = (total[x] + w1[x]) + w2[x]
            else:
                for x in range(width):
                    line[x] = _fma32(m1[x], w1[x], line[x])
                if summed and k == 0:
                    for x in range(width):
                        total[x] = total[x] + w1[x]


@numba.njit(cache=True, nogil=True)
def _fma_probe(a, b, c):  # pragma: no cover - compiled
    out = np.empty_like(c)
    for i in range(c.shape[0]):
        out[i] = _fma32(a[i], b[i], c[i])
    return out


@functools.lru_cache(maxsize=None)
def _addcmul_is_fma() -> bool:
    """Whether torch's ``addcmul_`` here rounds ``c + a * b`` once, like :func:`_fma32`.

    torch's x86 builds do (the multiply-add is contracted); where a build does not, the dense
    filter keeps torch's own passes so that its sums stay what they are.
    """
    rng = np.random.default_rng(0)
    a, b, c = (rng.random(4099, dtype=np.float32) for _ in range(3))
    expected = torch.from_numpy(c.copy()).addcmul_(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    return bool(np.array_equal(_fma_probe(a, b, c).view(np.int32), expected.view(np.int32)))

@dataclass
class JBUTable:
    """Per-image coefficients of joint bilateral upsampling (see :func:`jbu_table`).

    Attributes
    ----------
    coefficients : torch.Tensor
        (Ky, Kx, H, W) fp32: the result at (y, x) is
        ``sum_ab coefficients[a, b, y, x] * low[rows[y] + a, cols[x] + b]``.
    rows, cols : torch.Tensor
        (H,) and (W,) int64 first low-resolution row / column each pixel's window reaches.
    low_shape : tuple of int
        (h, w) of the maps the table applies to.
    """

    coefficients: torch.Tensor
    rows: torch.Tensor
    cols: torch.Tensor
    low_shape: tuple[int, int]

    @property
    def nbytes(self) -> int:
        return self.coefficients.numel() * self.coefficients.element_size()

    def to(self, device) -> "JBUTable":
        return JBUTable(self.coefficients.to(device), self.rows.to(device), self.cols.to(device), self.low_shape)


def _bilinear_matrix(size_out: int, size_in: int) -> torch.Tensor:
    """(size_out, size_in) weights of torch's 1-D linear interpolation (align_corners=False)."""
    eye = torch.eye(size_in, dtype=torch.float32)[None]  # (1, channels = cells, length)
    return F.interpolate(eye, size=size_out, mode="linear", align_corners=False)[0].T.contiguous()


def _window_cells(matrix: torch.Tensor, reach: int) -> tuple[torch.Tensor, int]:
    """First cell each pixel's window [p - reach, p + reach] touches, and the most cells any touches."""
    size_out = matrix.shape[0]
    touched = matrix > 0
    first = touched.float().argmax(dim=1)
    last = matrix.shape[1] - 1 - touched.flip(1).float().argmax(dim=1)
    lo = torch.stack([first[max(p - reach, 0):p + reach + 1].min() for p in range(size_out)])
    hi = torch.stack([last[max(p - reach, 0):p + reach + 1].max() for p in range(size_out)])
    return lo, int((hi - lo).max()) + 1


def jbu_table(guide: torch.Tensor, low_shape: tuple[int, int], sigma_spatial: float = 1.0,
              sigma_range: float = 0.1) -> JBUTable:
    """Precompute joint bilateral upsampling for one guide image.

    The dense filter at p is ``sum_q w(p, q) up(q) / sum_q w(p, q)`` with ``up = By @ low @ Bx.T``
    (bilinear upsampling, separable), so its result is ``sum_c C(p, c) low(c)`` with
    ``C(p, (cy, cx)) = sum_q w(p, q) By(qy, cy) Bx(qx, cx) / sum_q w(p, q)``: a few cells per
    pixel (about (6 sigma + 2) squared), independent of the map.

    Parameters
    ----------
    guide : torch.Tensor
        (3, H, W) RGB image in [0, 1].
    low_shape : tuple of int
        (h, w) of the maps to upsample.
    sigma_spatial, sigma_range : float
        As in :func:`joint_bilateral_upsample`.

    Returns
    -------
    JBUTable
        About (6 sigma + 2)^2 * 4 bytes per full-resolution pixel (256 at sigma 1).
    """
    guide = guide.float()
    device = guide.device
    _, height, width = guide.shape
    res_y, res_x = low_shape
    offsets = window_offsets(height, width, res_y, res_x, sigma_spatial)
    reach_y = max(abs(dy) for dy, _, _ in offsets)
    reach_x = max(abs(dx) for _, dx, _ in offsets)
    by, bx = _bilinear_matrix(height, res_y), _bilinear_matrix(width, res_x)
    rows, k_y = _window_cells(by, reach_y)
    cols, k_x = _window_cells(bx, reach_x)

    def slots(matrix, first, k, shift):
        """(k, size) weight of relative cell j for the neighbour at p + shift (0 outside)."""
        size = matrix.shape[0]
        out = torch.zeros((k, size), dtype=torch.float32)
        p = torch.arange(size)
        q = p + shift
        inside = (q >= 0) & (q < size)
        for j in range(k):
            cell = first + j
            ok = inside & (cell < matrix.shape[1])
            out[j, ok] = matrix[q[ok], cell[ok]]
        return out

    def nonzero_slots(matrix, first, k, shift):
        weights = slots(matrix, first, k, shift)
        return [(j, weights[j].to(device)) for j in range(k) if bool((weights[j] != 0).any())]

    # Column slots per dx and row slots per dy: the bilinear weights of the neighbour's cells.
    col_slots = {dx: nonzero_slots(bx, cols, k_x, dx) for dx in range(-reach_x, reach_x + 1)}
    row_slots = {dy: nonzero_slots(by, rows, k_y, dy) for dy in range(-reach_y, reach_y + 1)}

    coefficients = torch.zeros((k_y, k_x, height, width), dtype=torch.float32, device=device)
    denominator = torch.zeros((height, width), dtype=torch.float32, device=device)
    if device.type == "cpu" and _addcmul_is_fma():
        _table_sums_compiled(guide, offsets, sigma_range, col_slots, row_slots, coefficients, denominator)
    else:
        _table_sums_torch(guide, offsets, sigma_range, col_slots, row_slots, coefficients, denominator)
    coefficients /= denominator
    return JBUTable(coefficients, rows.to(device), cols.to(device), (res_y, res_x))


def _table_sums_torch(guide, offsets, sigma_range, col_slots, row_slots, coefficients, denominator) -> None:
    """The table's sums in torch (any device): ``coefficients`` and ``denominator`` in place.

    Per row offset dy, the column sums sum_dx w * Bx-slot b, then C[a] += By-slot a x those. The
    weights come for dy and -dy together, so two rows of partial sums are open at a time.
    """
    _, k_x, height, width = coefficients.shape
    partial: dict[int, torch.Tensor] = {}

    def flush(dy):
        for a, weights in row_slots[dy]:
            coefficients[a].addcmul_(partial[dy], weights[None, :, None])
        del partial[dy]

    for dy, dx, weight in _window_weights(guide, offsets, sigma_range):
        pause_point()
        if dy not in partial:
            for done in [d for d in partial if abs(d) != abs(dy)]:
                flush(done)
            partial[dy] = torch.zeros((k_x, height, width), dtype=torch.float32, device=coefficients.device)
        denominator += weight
        for b, weights in col_slots[dx]:
            partial[dy][b].addcmul_(weight, weights[None, :])
    for dy in list(partial):
        flush(dy)


def _slot_arrays(slots) -> tuple[np.ndarray, np.ndarray]:
    """A slot list ``[(j, weights)]`` as (n,) int64 indices and (n, size) fp32 weights."""
    indices = np.array([j for j, _ in slots], dtype=np.int64)
    weights = np.stack([w.numpy() for _, w in slots]) if slots else np.zeros((0, 0), dtype=np.float32)
    return indices, np.ascontiguousarray(weights, dtype=np.float32)


def _table_sums_compiled(guide, offsets, sigma_range, col_slots, row_slots, coefficients, denominator) -> None:
    """:func:`_table_sums_torch` on the CPU with each pair of offsets in one compiled pass.

    Every sum takes its terms in the torch loop's order with the same roundings (``addcmul_``
    as one fused multiply-add, checked by :func:`_addcmul_is_fma`), so the table is the same
    bits. The image is summed in bands of rows (:data:`_TABLE_BAND_PER_PAD`), all offsets for one band
    before the next, so that the band's partial sums stay in the cache instead of streaming the
    whole image's (about 20 MiB at 480 x 640) once per offset; each band computes the weights
    of its rows and of the ``pad_y`` rows above, which its mirrored offsets read.
    """
    _, k_x, height, width = coefficients.shape
    pad_y, pad_x = _padding(offsets)
    cols = {dx: _slot_arrays(slots) for dx, slots in col_slots.items()}
    rows = {dy: _slot_arrays(slots) for dy, slots in row_slots.items()}
    out, total = coefficients.numpy(), denominator.numpy()
    # partial sums of dy (>= 0) and of its mirror -dy
    upper = np.zeros((k_x, height, width), dtype=np.float32)
    lower = np.zeros((k_x, height, width), dtype=np.float32)

    def flush(dy, first, stop):  # into the table, in the torch loop's order: dy, then its mirror
        _flush_partial(upper, *rows[dy], out, first, stop)
        if dy != 0:
            _flush_partial(lower, *rows[-dy], out, first, stop)

    band = max(_TABLE_BAND_PER_PAD * pad_y, _TABLE_BAND_MIN)
    for first in range(0, height, band):
        stop = min(first + band, height)
        current = None
        for dy, dx, buffer in _weight_pairs(guide, offsets, sigma_range, (max(0, first - pad_y), stop)):
            pause_point()
            if dy != current:
                if current is not None:
                    flush(current, first, stop)
                current = dy
            _table_pair(buffer.numpy(), pad_y, pad_x, dy, dx, *cols[dx], *cols[-dx], upper,
                        upper if dy == 0 else lower, total, first, stop)
        if current is not None:
            flush(current, first, stop)


# Rows per band of the table's sums: 4 pad_y (92 at 480 x 640, R = 64), so that the weights of
# the pad_y rows above each band, which its mirrored offsets read, add at most a quarter; the
# band's partial sums (2 x 9 column slots at sigma 1: 4 MiB at a width of 640) stay in the L3
# cache. One thread, 480 x 640, R = 64: the table 3.3 s with one band, 1.8-1.9 s with bands of
# 96 or 128 rows, 2.1 s with 64 (scratch timing, the same run).
_TABLE_BAND_PER_PAD = 4
_TABLE_BAND_MIN = 32


@numba.njit(cache=True, nogil=True)
def _table_pair(buffer, pad_y, pad_x, dy, dx, slots, weights, mirror_slots, mirror_weights,
                partial, mirror_partial, denominator, first, stop):  # pragma: no cover - compiled
    """Add offset (dy, dx)'s weights, then its mirror's, to the table's partial sums.

    ``buffer`` is :func:`_weight_pairs`'s. Per pixel: ``denominator += w`` and, for each column
    slot b of the offset, ``partial[b] = fma(w, Bx_b, partial[b])``. Rows ``first`` to ``stop``
    (excluded) only.
    """
    _, height, width = partial.shape
    mirror = dy != 0 or dx != 0
    for y in range(first, stop):
        w1 = buffer[pad_y + y, pad_x:pad_x + width]
        w2 = buffer[pad_y - dy + y, pad_x - dx:pad_x - dx + width]
        total = denominator[y]
        if mirror:
            for x in range(width):
                total[x] = (total[x] + w1[x]) + w2[x]
        else:
            for x in range(width):
                total[x] = total[x] + w1[x]
        for i in range(len(slots)):
            line, bx = partial[slots[i], y], weights[i]
            for x in range(width):
                line[x] = _fma32(w1[x], bx[x], line[x])
        if mirror:
            for i in range(len(mirror_slots)):
                line, bx = mirror_partial[mirror_slots[i], y], mirror_weights[i]
                for x in range(width):
                    line[x] = _fma32(w2[x], bx[x], line[x])


@numba.njit(cache=True, nogil=True)
def _flush_partial(partial, slots, weights, out, first, stop):  # pragma: no cover - compiled
    """``out[a] = fma(partial, By_a[y], out[a])`` for each row slot a, then zero ``partial``;
    rows ``first`` to ``stop`` (excluded) only.

    Rows where By_a is 0 are left out: their terms add exactly 0.
    """
    k_x, height, width = partial.shape
    for b in range(k_x):
        for y in range(first, stop):
            line = partial[b, y]
            for i in range(len(slots)):
                by = weights[i, y]
                if by != 0:
                    target = out[slots[i], b, y]
                    for x in range(width):
                        target[x] = _fma32(line[x], by, target[x])
            for x in range(width):
                line[x] = 0


def apply_jbu_table(table: JBUTable, low: torch.Tensor) -> torch.Tensor:
    """Joint bilateral upsampling of (h, w) or (K, h, w) maps with a precomputed table.

    Returns
    -------
    torch.Tensor
        (H, W) or (K, H, W) fp32, equal to :func:`joint_bilateral_upsample` up to rounding.
    """
    single = low.dim() == 2
    maps = low.reshape(-1, *low.shape[-2:]).to(device=table.coefficients.device, dtype=torch.float32)
    if maps.device.type == "cpu":
        # One pass per output row with that row in cache: 4x faster than the torch loop below.
        height, width = table.coefficients.shape[-2:]
        out = np.zeros((len(maps), height, width), dtype=np.float32)
        arrays = table.coefficients.numpy(), table.rows.numpy(), table.cols.numpy(), maps.contiguous().numpy(), out
        _split_rows(lambda first, stop: _apply_table(*arrays, first, stop), height // 2, height)
        out = torch.from_numpy(out)
        return out[0] if single else out
    return _apply_table_torch(table, maps, single)


def _apply_table_torch(table: JBUTable, maps: torch.Tensor, single: bool) -> torch.Tensor:
    """The table's gather-multiply-add in torch (any device; the GPU path)."""
    k_y, k_x, height, width = table.coefficients.shape
    # zero cells past the last row / column: their coefficients are 0 anyway
    padded = F.pad(maps, (0, k_x, 0, k_y))
    out = torch.zeros((len(maps), height, width), dtype=torch.float32, device=maps.device)
    for a in range(k_y):
        band = padded[:, table.rows + a]  # (K, H, w + k_x)
        for b in range(k_x):
            out.addcmul_(band[:, :, table.cols + b], table.coefficients[a, b])
    return out[0] if single else out


@numba.njit(cache=True, nogil=True)
def _apply_table(coefficients, rows, cols, maps, out, first, stop):  # pragma: no cover - compiled
    """``out[k, y, x] += sum_ab coefficients[a, b, y, x] * maps[k, rows[y] + a, cols[x] + b]`` (0 past the
    edge) for the rows ``first`` to ``stop`` (excluded) of the zeroed ``out``."""
    k_y, k_x, height, width = coefficients.shape
    count, res_y, res_x = maps.shape
    for k in range(count):
        for y in range(first, stop):
            line = out[k, y]
            for a in range(k_y):
                cell_y = rows[y] + a
                if cell_y >= res_y:
                    continue
                low = maps[k, cell_y]
                for b in range(k_x):
                    weights = coefficients[a, b, y]
                    for x in range(width):
                        cell_x = cols[x] + b
                        if cell_x < res_x:
                            line[x] += weights[x] * low[cell_x]
