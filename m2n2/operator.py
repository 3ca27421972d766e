"""The Markov transition operator: temperature, then IPF (Sinkhorn) to a doubly stochastic matrix.

The attention matrix A (N x N, rows sum to 1) is sharpened to ``softmax(log(A) / tau)`` along rows
and then balanced by iterative proportional fitting so that rows and columns both sum to 1.
Instead of rewriting the N x N matrix at each of the 200 iterations, the balancing is held as two
scaling vectors (``P = diag(r) K diag(c)``), which costs two matrix-vector products per iteration
and touches the matrix only once more at the end.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field

import torch

from .pausing import pause_point
from .threads import SharedRows, beside, joined

_ROW_CHUNK = 2048  # rows per chunk: bounds the temporaries at R = 128 to a few hundred MiB
_IPF_BLOCK = 256  # rows per block in IPF: small enough to stay in cache between its two uses


def apply_temperature(attention: torch.Tensor, temperature: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """Sharpen a row-stochastic matrix: ``softmax(log(A) / temperature)`` along rows.

    Computed as ``A ** (1 / temperature)`` with rows renormalised, which is the same function
    (to fp32 rounding) at a third of the cost of log, divide and softmax.

    Parameters
    ----------
    attention : torch.Tensor
        (N, N) non-negative matrix whose rows sum to 1.
    temperature : float
        tau > 0; tau < 1 sharpens, tau = 1 returns the (renormalised) input.
    out : torch.Tensor, optional
        Where to write the result (may be ``attention`` itself to work in place).

    Returns
    -------
    torch.Tensor
        (N, N) fp32 row-stochastic matrix.
    """
    if out is None:
        out = torch.empty(attention.shape, dtype=torch.float32, device=attention.device)
    # Written into ``out`` in place: fresh 32 MiB temporaries per chunk cost their page faults
    # (0.19 against 0.10 s at N = 4096 on one CPU thread), and the arithmetic is the same.
    for start in range(0, attention.shape[0], _ROW_CHUNK):
        rows = out[start:start + _ROW_CHUNK]
        torch.pow(attention[start:start + _ROW_CHUNK].float(), 1.0 / temperature, out=rows)
        rows.div_(rows.sum(dim=1, keepdim=True))
    return out


def sinkhorn_scaling(matrix: torch.Tensor, iterations: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaling vectors of IPF: ``diag(r) @ matrix @ diag(c)`` is (nearly) doubly stochastic.

    Each iteration normalises the columns, then the rows, of the scaled matrix, exactly as the
    matrix-rewriting form of IPF does; the last step normalises rows, so row sums are exact.
    One iteration's row step and the next one's column sums read the same block of rows, so
    they share a single pass over the matrix (the arithmetic is unchanged).

    Parameters
    ----------
    matrix : torch.Tensor
        (N, N) non-negative fp32 matrix with no all-zero row or column.
    iterations : int
        Number of (column, row) normalisation pairs.

    Returns
    -------
    r, c : torch.Tensor
        (N,) fp32 row and column scaling vectors.
    """
    n = matrix.shape[0]
    tiny = torch.finfo(torch.float32).tiny
    r = torch.ones(n, dtype=torch.float32, device=matrix.device)
    c = torch.ones(n, dtype=torch.float32, device=matrix.device)
    if iterations == 0:
        return r, c
    block_rows = _IPF_BLOCK if matrix.device.type == "cpu" else n  # GPUs prefer one big product
    col_sums = r @ matrix
    for iteration in range(iterations):
        pause_point()
        c = 1.0 / col_sums.clamp_min(tiny)
        last = iteration == iterations - 1
        next_col_sums = None if last else torch.zeros(n, dtype=torch.float32, device=matrix.device)
        for start in range(0, n, block_rows):
            block = matrix[start:start + block_rows]
            r_block = 1.0 / (block @ c).clamp_min(tiny)
            r[start:start + block_rows] = r_block
            if not last:
                next_col_sums.addmv_(block.T, r_block)
        col_sums = next_col_sums
    return r, c


@dataclass
class TransitionOperator:
    """A prepared Markov transition matrix P, stored transposed for fast ``v <- v P`` steps.

    Attributes
    ----------
    transposed : torch.Tensor
        (N, N) contiguous ``P.T * scale`` in the storage dtype (fp32 or fp16).
    scale : float
        Storage scale (N for fp16, so that entries sit well inside fp16's normal range; 1 for
        fp32). The Markov iteration renormalises every step, so the scale never matters there.
    resolution : int
        R, with N = R * R.
    steps : int
        How many steps of the chain one product makes: 1 for P, k for its power P^k.
    leap : TransitionOperator or None
        P^k (see :func:`with_leap`), which the Markov iteration may use for k steps at a time.
    """

    transposed: torch.Tensor
    scale: float
    resolution: int
    steps: int = 1
    leap: "TransitionOperator | None" = None
    # FBGEMM's packed copy, in one or two parts of the rows (see _SPLIT_MIN_ENTRIES), and its biases
    _packed: tuple[torch.Tensor, ...] | None = field(default=None, init=False, repr=False, compare=False)
    _zeros: tuple[torch.Tensor, ...] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.transposed.dtype == torch.float16 and self.transposed.device.type == "cpu":
            n = self.transposed.shape[0]
            half = n // 2 // _SPLIT_ALIGN * _SPLIT_ALIGN
            cuts = (0, half, n) if n * n >= _SPLIT_MIN_ENTRIES and half > 0 else (0, n)
            parts = [_pack_half_for_cpu(self.transposed[a:b]) for a, b in zip(cuts, cuts[1:])]
            if all(part is not None for part in parts):
                self._packed = tuple(parts)
                self._zeros = tuple(torch.zeros(b - a, dtype=torch.float32) for a, b in zip(cuts, cuts[1:]))

    @property
    def device(self) -> torch.device:
        return self.transposed.device

    @property
    def dtype(self) -> torch.dtype:
        return self.transposed.dtype

    @property
    def nbytes(self) -> int:
        """Bytes held: the stored matrix, its packed copy for the CPU's fp16 product, and the leap's."""
        own = self.transposed.numel() * self.transposed.element_size() + self.opaque_nbytes()
        return own + (self.leap.nbytes if self.leap is not None else 0)

    def opaque_nbytes(self) -> int:
        """Bytes held outside any tensor's storage (FBGEMM's packed copy: 2 per entry)."""
        return self.transposed.numel() * 2 if self._packed is not None else 0

    def matrix(self) -> torch.Tensor:
        """P itself, fp32 (N, N): a copy, for inspection and tests."""
        return (self.transposed.float() / self.scale).T.contiguous()

    def step(self, states: torch.Tensor) -> torch.Tensor:
        """One unnormalised step ``v P`` for states of shape (N,) or (N, K); result fp32."""
        if self._packed is not None:
            return _packed_half_step(self._packed, self._zeros, states)
        if self.dtype == torch.float16:  # fp16 entries times the fp32 state, in fp32, on any device
            return _half_step_widened(self.transposed, states, _HALF_BLOCK_BYTES[self.device.type == "cpu"])
        states = states.float()
        # Column by column on the CPU: its matrix-vector products beat a thin GEMM.
        if states.dim() == 2 and self.device.type == "cpu":
            return torch.stack([self.transposed @ s for s in states.T], dim=1)
        return self.transposed @ states

    def to(self, device=None, dtype=None) -> "TransitionOperator":
        """A copy on another device and/or storage dtype (the same object when nothing changes)."""
        device = torch.device(device) if device is not None else self.device
        dtype = dtype if dtype is not None else self.dtype
        if device == self.device and dtype == self.dtype:
            return self
        scale = float(self.resolution ** 2) if dtype == torch.float16 else 1.0
        data = self.transposed
        if scale != self.scale:
            data = data.float() * (scale / self.scale)
        leap = self.leap.to(device, dtype) if self.leap is not None else None
        return TransitionOperator(data.to(device=device, dtype=dtype).contiguous(), scale, self.resolution,
                                  self.steps, leap)


def _pack_half_for_cpu(transposed: torch.Tensor) -> torch.Tensor | None:
    """FBGEMM's packed copy of an fp16 matrix for fp32 products, or None where FBGEMM is missing.

    FBGEMM (x86 builds of torch) multiplies fp16-stored weights by fp32 activations in fp32,
    exactly the arithmetic of :func:`_half_step_widened`, and reads the 2-byte entries at
    memory speed: 1.4 ms per step at N = 4096 against 3.5 ms for the widened blocks and 2.5 ms
    for an fp32 matrix (one thread, AVX-512, torch 2.13; ``benchmarks/bench_core.py``).
    torch marks these functions deprecated; without them the blocked product is used.
    ``transposed`` may be a block of rows starting at a multiple of 64: each output entry's sum is
    then the same as in the whole matrix's product.
    """
    if not hasattr(torch, "fbgemm_pack_gemm_matrix_fp16"):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:  # a transient fp32 copy (fp16 values are exact in it): what FBGEMM packs from
            return torch.fbgemm_pack_gemm_matrix_fp16(transposed.float())
        except (RuntimeError, AttributeError):
            return None


def _packed_product(rows: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.fbgemm_linear_fp16_weight_fp32_activation(rows, packed, bias)


def _packed_half_step(packed: tuple[torch.Tensor, ...], bias: tuple[torch.Tensor, ...],
                      states: torch.Tensor) -> torch.Tensor:
    """``transposed @ states`` through FBGEMM's packed fp16 parts (plus ``bias``, zeros): fp32 in and out.

    With two parts and two threads allowed (:func:`m2n2.threads.using_threads`), the second part is
    multiplied on a helper thread meanwhile (torch runs FBGEMM's product on one thread); the same
    sums either way.
    Concurrent products are safe: FBGEMM's fp16 product keeps its scratch memory per thread.
    """
    single = states.dim() == 1
    rows = states.reshape(-1, 1).T if single else states.T  # FBGEMM computes input @ weight.T
    rows = rows.float().contiguous()
    pending = beside(_packed_product, rows, packed[1], bias[1]) if len(packed) == 2 else None
    if pending is not None:
        first = _packed_product(rows, packed[0], bias[0])
        outs = [first, joined(pending, _packed_product, rows, packed[1], bias[1])]
    else:
        outs = [_packed_product(rows, part, zeros) for part, zeros in zip(packed, bias)]
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
    return out[0] if single else out.T.contiguous()


# An fp16 operator with at least this many entries (N >= 1449: 4 MiB) is packed in two halves of
# its rows, so that two threads can share a product: one thread's product streams the matrix
# at about half the memory bandwidth two cores reach (N = 4096: 3.8 ms on one, 1.7 ms on two,
# 2-core AMD EPYC; the halves one after the other on one thread: 3.6 ms).
_SPLIT_MIN_ENTRIES = 2 ** 21
# Where the halves meet: FBGEMM sums each block of 32 output entries (AVX2) in its own way, so a
# cut inside a block changes that block's bits (measured); at a multiple of 64 none change.
_SPLIT_ALIGN = 64
# Rows per block of the leap's squarings (a multiple of 64): 8 blocks at N = 4096, each about
# 0.2 s on one thread, so a helper joins soon; the blocks cost about 3 % over the whole product.
_LEAP_BLOCK = 512
# Bytes of the fp16 operator's rows widened to fp32 at a time, by device (index: is it the CPU).
# The CPU: about 1 MiB, so the block stays in the core's cache between its conversion and its
# product. A GPU: 32 MiB, within an H100's or H200's L2 cache (50 MB and more), in few launches.
_HALF_BLOCK_BYTES = {True: 2 ** 20, False: 2 ** 25}


def _half_step_widened(transposed: torch.Tensor, states: torch.Tensor, block_bytes: int) -> torch.Tensor:
    """``transposed @ states`` for an fp16 operator, in fp32, a block of rows at a time.

    The stored fp16 entries are widened to fp32 (exactly) and multiplied by the fp32 state in
    fp32: the state is never rounded to fp16, and the result is the exact product of the stored
    entries with the state up to fp32 summation, on every device (``M2N2Config``'s promise).
    torch's own fp16 product rounds the state and the result to fp16 (and on a CPU it is slow:
    measured 2x slower than fp32 on an AVX-512 machine, torch 2.13); the widened blocks read the
    same 2 bytes per entry from memory.
    """
    n = transposed.shape[0]
    rows = max(1, min(n, block_bytes // (4 * n)))
    block = torch.empty((rows, n), dtype=torch.float32, device=transposed.device)
    states = states.float()
    out = torch.empty((n, *states.shape[1:]), dtype=torch.float32, device=transposed.device)
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        widened = block[:stop - start]
        widened.copy_(transposed[start:stop])
        if states.dim() == 1:
            torch.mv(widened, states, out=out[start:stop])
        else:
            torch.mm(widened, states, out=out[start:stop])
    return out


def prepare_operator(attention: torch.Tensor, temperature: float, ipf_iterations: int,
                     dtype: torch.dtype = torch.float32, inplace: bool = False) -> TransitionOperator:
    """Temperature, IPF and storage: the per-image cost of M2N2 after the attention itself.

    Parameters
    ----------
    attention : torch.Tensor
        (R, R, R, R) or (N, N) row-stochastic attention.
    temperature : float
        tau of :func:`apply_temperature`.
    ipf_iterations : int
        Iterations of :func:`sinkhorn_scaling`.
    dtype : torch.dtype
        Storage dtype of the operator (``torch.float32`` or ``torch.float16``).
    inplace : bool
        Reuse ``attention``'s memory for the sharpened matrix (it must be fp32 and owned by the
        caller), which saves one N x N buffer at R = 128.

    Returns
    -------
    TransitionOperator
    """
    n = attention.shape[0] * attention.shape[1] if attention.dim() == 4 else attention.shape[0]
    resolution = int(round(n ** 0.5))
    flat = attention.reshape(n, n)
    sharpened = apply_temperature(flat, temperature, out=flat if inplace and flat.dtype == torch.float32 else None)
    r, c = sinkhorn_scaling(sharpened, ipf_iterations)
    scale = float(n) if dtype == torch.float16 else 1.0
    transposed = torch.empty((n, n), dtype=dtype, device=flat.device)
    # P.T[j, i] = c[j] * K[i, j] * r[i], written a block of P's columns at a time.
    for start in range(0, n, _ROW_CHUNK):
        block = sharpened[:, start:start + _ROW_CHUNK].T * c[start:start + _ROW_CHUNK, None] * (r[None, :] * scale)
        transposed[start:start + _ROW_CHUNK] = block.to(dtype)
    return TransitionOperator(transposed, scale, resolution)


def with_leap(operator: TransitionOperator, steps: int, shared: SharedRows | None = None) -> TransitionOperator:
    """The operator with its power P^steps attached, for :func:`~m2n2.markov.markov_map`'s leaps.

    The power is computed in fp32 by repeated squaring (``steps`` a power of two: log2(steps)
    N x N products, 0.8 to 1.6 s each at N = 4096 on one CPU thread) and stored like P (same dtype
    and scale). ``steps`` = 1 returns the operator without a leap. On the CPU the squarings run in
    blocks of rows through ``shared`` (a private one if None), which threads waiting for the leap
    may help with (:meth:`~m2n2.threads.SharedRows.help`).
    """
    if steps < 1 or steps & (steps - 1):
        raise ValueError(f"leap steps must be a power of two, got {steps}")
    result = copy.copy(operator)  # shares the matrix and its packed copy
    result.leap = None
    if steps == 1:
        return result
    # (P^k).T = (P.T)^k: square the stored transpose.
    power = operator.transposed.float() / operator.scale
    for _ in range(steps.bit_length() - 1):
        pause_point()
        power = _squared(power, shared)
    leap = TransitionOperator((power * operator.scale).to(operator.dtype).contiguous(), operator.scale,
                              operator.resolution, steps)
    del power
    result.leap = leap
    return result


def _squared(matrix: torch.Tensor, shared: SharedRows | None = None) -> torch.Tensor:
    """``matrix @ matrix``; on the CPU, where torch has one thread, in blocks of
    :data:`_LEAP_BLOCK` rows taken by this thread, its helper where two threads are allowed
    (:mod:`m2n2.threads`) and any thread helping ``shared``: one thread's product is compute
    bound, so two cores take about half the time.

    Each output row is one row of the left factor times the whole right one, so the blocks' rows
    are the same bits as the whole product's (MKL's kernels sum each entry's products in an order
    set by the inner dimension alone; ``tests/test_operator.py`` checks it), whichever thread
    computes them.
    """
    # With torch's own threads (more than one), its product already uses the cores.
    if matrix.device.type != "cpu" or torch.get_num_threads() > 1:
        return matrix @ matrix
    n = matrix.shape[0]
    out = torch.empty_like(matrix)
    (shared or SharedRows()).run(lambda first, stop: _product_into(matrix[first:stop], matrix, out[first:stop]),
                                 n, _LEAP_BLOCK)
    return out


def _product_into(left: torch.Tensor, right: torch.Tensor, out: torch.Tensor) -> None:
    torch.mm(left, right, out=out)
