"""Markov-maps: how many steps of the attention's random walk a cell needs to become "reached".

Starting from the prompt point's one-hot state, the state is propagated by the doubly stochastic
operator and renormalised by its maximum after every step. A cell's value is the (linearly
interpolated) first step at which its relative probability exceeds ``rho``: semantically close
cells are reached early, unrelated ones late.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from .geometry import grid_coordinates
from .operator import TransitionOperator
from .pausing import pause_point

# The authors add this to the interpolation's denominator (``create_semantic_markov_map_from_start_state``).
_DELTA_EPSILON = 1e-6


def start_states(points_xy: np.ndarray, image_size: tuple[int, int], resolution: int) -> torch.Tensor:
    """One-hot start states of prompt points, split bilinearly over the four nearest cells.

    Parameters
    ----------
    points_xy : numpy.ndarray
        (K, 2) points as (x, y) = (column, row) in pixels of an image of ``image_size``.
    image_size : tuple of int
        (height, width) of that image.
    resolution : int
        R: the attention grid is R x R.

    Returns
    -------
    torch.Tensor
        (K, R * R) fp32 states, each divided by its maximum (so its largest entry is 1).
    """
    points_xy = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
    states = np.zeros((len(points_xy), resolution, resolution), dtype=np.float64)
    for k, (gx, gy) in enumerate(grid_coordinates(points_xy, image_size, resolution)):
        x0, y0 = int(np.floor(gx)), int(np.floor(gy))
        x1, y1 = min(x0 + 1, resolution - 1), min(y0 + 1, resolution - 1)
        fx, fy = gx - x0, gy - y0
        states[k, y0, x0] += (1 - fy) * (1 - fx)
        states[k, y0, x1] += (1 - fy) * fx
        states[k, y1, x0] += fy * (1 - fx)
        states[k, y1, x1] += fy * fx
        states[k] /= states[k].max()
    return torch.from_numpy(states.reshape(len(points_xy), -1).astype(np.float32))


def markov_map(operator: TransitionOperator, starts: torch.Tensor, rho: float = 0.3,
               max_steps: int = 1000, check_every: int | None = None,
               leap_after: int | None = None) -> torch.Tensor:
    """Markov-map iteration counts for one or several start states at once.

    Parameters
    ----------
    operator : TransitionOperator
        The prepared doubly stochastic operator P.
    starts : torch.Tensor
        (K, N) or (N,) start states (max-normalised).
    rho : float
        Relative probability threshold.
    max_steps : int
        Step limit; cells that never cross get ``max_steps``.
    check_every : int, optional
        Test for "every cell has crossed" every this many products (1 on the CPU, 8 on a GPU
        where the test costs a device synchronisation). Crossed cells never change, so this
        affects only the run time, never the result.
    leap_after : int, optional
        With an operator that carries its power P^k (:func:`~m2n2.operator.with_leap`): after
        this many single steps, advance k steps per product, a crossing's step interpolated
        linearly within the leap (``i + k (1 - (v_new - rho) / (v_new - v_prev + 1e-6))``).
        Beyond the authors' definition (which is ``None``, single steps throughout): late
        crossings are placed to within the leap, for k times fewer products once the cells near
        the point have crossed; a crossing and uncrossing inside one leap goes unseen.

    Returns
    -------
    torch.Tensor
        (K, N) or (N,) fp32 crossing steps: 0 where the start state already exceeds ``rho``,
        ``i + 1 - (v_new - rho) / (v_new - v_prev + 1e-6)`` for a crossing at loop index i (with
        ``1 - rho`` for ``v_new - v_prev`` at i = 0; the 1e-6 is the authors'), ``max_steps``
        where it never crosses.
    """
    single = starts.dim() == 1
    state = starts.reshape(1, -1) if single else starts
    state = state.to(device=operator.device, dtype=torch.float32).T.contiguous()  # (N, K)
    if check_every is None:
        check_every = 1 if operator.device.type == "cpu" else 8
    leap = operator.leap if leap_after is not None else None

    times = torch.full_like(state, float(max_steps))
    pending = state <= rho
    times[~pending] = 0.0
    # On the CPU each step's division, test and crossing arithmetic run in one compiled pass,
    # with the float32 operations of the torch lines below (the same bits); on a GPU asking
    # whether any cell crossed would synchronise at every step.
    compiled = operator.device.type == "cpu" and state.dtype == torch.float32
    left = int(pending.sum()) if compiled else -1  # cells still pending (the compiled pass counts them)
    i = products = 0  # steps taken, products made
    while i < max_steps:
        pause_point()
        jump = leap if leap is not None and i >= leap_after and i + leap.steps <= max_steps else operator
        previous = state
        state = jump.step(state).contiguous()  # a new tensor: dividing it in place is safe
        if compiled:
            left -= _divide_and_cross(state.numpy(), previous.numpy(), pending.numpy(), times.numpy(),
                                      np.float32(rho), np.float32(_DELTA_EPSILON), np.float32((1.0 - rho) + _DELTA_EPSILON),
                                      i, jump.steps)
        else:
            state.div_(state.amax(dim=0, keepdim=True))
            crossed = pending & (state > rho)
            delta = (1.0 - rho) if i == 0 else (state - previous)
            fraction = 1.0 - (state - rho) / (delta + _DELTA_EPSILON)
            value = i + jump.steps * fraction  # times 1 is exact: single steps keep the authors' values
            times = torch.where(crossed, value, times)
            pending &= ~crossed
        i += jump.steps
        products += 1
        if products % check_every == 0 and not (left > 0 if compiled else bool(pending.any())):
            break
    times = times.T
    return times[0] if single else times.contiguous()


@numba.njit(cache=True, nogil=True)
def _divide_and_cross(state, previous, pending, times, rho, epsilon, first_divisor, i, steps):  # pragma: no cover - compiled
    """One step's division by each column's maximum and its crossings, in place; returns how many
    cells crossed.

    The float32 operations of :func:`markov_map`'s torch lines, element by element: ``amax`` (NaN
    when a value is), ``div_``, the test ``pending & (state > rho)`` (torch compares a tensor with
    a Python number in the tensor's dtype), then for a crossing cell ``i + steps * (1 - (v - rho) /
    (delta + epsilon))`` with ``delta = v - previous`` (at ``i = 0`` the divisor is the Python
    number ``1 - rho + 1e-6``, rounded once to float32, as torch does). About 10 us a step at
    N = 4096 against 60 to 80 for the torch lines on a step with crossings (most steps of a click's
    chain). ``tests/test_markov.py`` compares the two.
    """
    count, columns = state.shape
    crossed = 0
    one = np.float32(1.0)
    for k in range(columns):
        top = state[0, k]
        for n in range(1, count):
            value = state[n, k]
            if top != top:
                break
            if value > top or value != value:
                top = value
        for n in range(count):
            value = state[n, k] / top
            state[n, k] = value
            if pending[n, k] and value > rho:
                divisor = first_divisor if i == 0 else (value - previous[n, k]) + epsilon
                fraction = one - (value - rho) / divisor
                times[n, k] = np.float32(i) + np.float32(steps) * fraction
                pending[n, k] = False
                crossed += 1
    return crossed
