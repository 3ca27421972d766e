import math

import numpy as np
import pytest
import torch

from m2n2.markov import markov_map, start_states
from m2n2.operator import prepare_operator
from synthetic import random_attention, region_attention


def plain_markov_map(p: torch.Tensor, start: torch.Tensor, rho: float, max_steps: int) -> torch.Tensor:
    """Direct transcription of the definition, one cell at a time, no early stop."""
    v = start.double().clone()
    times = torch.full_like(v, float(max_steps))
    crossed = v > rho
    times[crossed] = 0
    for i in range(max_steps):
        prev = v
        v = v @ p.double()
        v = v / v.max()
        for cell in range(len(v)):
            if not crossed[cell] and v[cell] > rho:
                delta = (1 - rho) if i == 0 else (v[cell] - prev[cell])
                times[cell] = i + 1 - (v[cell] - rho) / (delta + 1e-6)  # the authors add 1e-6
                crossed[cell] = True
    return times


def test_start_state_is_bilinear_and_max_normalised():
    s = start_states(np.array([[0.0, 0.0], [50.0, 50.0]]), (101, 101), 5).reshape(2, 5, 5)
    assert s[0, 0, 0] == 1 and s[0].sum() == 1  # a corner point sits on one cell
    # (50, 50) in a 101 x 101 image -> grid (1.98, 1.98): mostly cell (2, 2), a little of (1, *)
    assert s[1].max() == 1 and s[1, 2, 2] == 1
    assert 0 < s[1, 1, 1] < s[1, 1, 2] < 1


def test_matches_plain_definition_on_random_operator():
    operator = prepare_operator(random_attention(6, seed=4), 0.65, 100)
    start = start_states(np.array([[13.0, 27.0]]), (60, 60), 6)[0]
    fast = markov_map(operator, start, rho=0.3, max_steps=200)
    plain = plain_markov_map(operator.matrix(), start, 0.3, 200)
    torch.testing.assert_close(fast.double(), plain, rtol=1e-4, atol=1e-3)


def test_batched_start_states_equal_single_runs():
    operator = prepare_operator(random_attention(8, seed=5), 0.65, 100)
    starts = start_states(np.array([[3.0, 4.0], [60.0, 10.0], [30.0, 70.0]]), (80, 80), 8)
    batched = markov_map(operator, starts)
    for k in range(3):
        torch.testing.assert_close(batched[k], markov_map(operator, starts[k]))


def test_zero_at_start_cell_and_growing_away_on_block_attention():
    r = 12
    labels = np.zeros((r, r), int)
    labels[:, r // 2:] = 1
    operator = prepare_operator(region_attention(labels), 0.65, 200)
    start = start_states(np.array([[0.0, 0.0]]), (r, r), r)[0]  # exactly cell (0, 0)
    times = markov_map(operator, start).reshape(r, r)
    assert times[0, 0] == 0
    same, other = times[:, : r // 2], times[:, r // 2:]
    assert same.max() < other.min()  # the own region is reached first
    assert other.min() > 1


def test_unreached_cells_get_max_steps_and_early_stop_changes_nothing():
    r = 6
    labels = np.zeros((r, r), int)
    labels[:, 3:] = 1
    attention = region_attention(labels, leak=0.0)  # two disconnected regions
    operator = prepare_operator(attention, 0.65, 50)
    start = start_states(np.array([[0.0, 0.0]]), (r, r), r)[0]
    times = markov_map(operator, start, max_steps=40).reshape(r, r)
    assert torch.all(times[:, 3:] == 40)
    assert torch.all(times[:, :3] < 40)


def test_the_chain_calls_only_its_own_threads_pause_hook_once_per_step():
    import threading

    from m2n2.pausing import set_pause_hook
    operator = prepare_operator(random_attention(6, seed=4), 0.65, 100)
    start = start_states(np.array([[10.0, 10.0]]), (60, 60), 6)
    calls = []
    set_pause_hook(lambda: calls.append(1))
    try:
        with_hook = markov_map(operator, start, max_steps=7)
        other = []
        thread = threading.Thread(target=lambda: other.append(markov_map(operator, start, max_steps=7)))
        thread.start()
        thread.join()
    finally:
        set_pause_hook(None)
    assert len(calls) == math.ceil(float(with_hook.max()))   # one call per step taken (value i + frac at step i + 1)
    assert torch.equal(other[0], with_hook)                          # and nothing else changes


def plain_leaping_markov_map(p: torch.Tensor, k: int, after: int, start: torch.Tensor, rho: float,
                             max_steps: int) -> torch.Tensor:
    """The leaping iteration restated: single steps up to ``after``, then P^k while k steps fit."""
    p = p.double()
    power = torch.linalg.matrix_power(p, k)
    v = start.double().clone()
    times = torch.full_like(v, float(max_steps))
    crossed = v > rho
    times[crossed] = 0
    i = 0
    while i < max_steps:
        size = k if i >= after and i + k <= max_steps else 1
        prev = v
        v = v @ (power if size == k else p)
        v = v / v.max()
        for cell in range(len(v)):
            if not crossed[cell] and v[cell] > rho:
                delta = (1 - rho) if i == 0 else (v[cell] - prev[cell])
                times[cell] = i + size * (1 - (v[cell] - rho) / (delta + 1e-6))
                crossed[cell] = True
        i += size
    return times


@pytest.mark.parametrize("k, after", [(4, 3), (8, 0), (2, 2)])
def test_leaps_match_their_plain_restatement(k, after):
    from m2n2.operator import with_leap
    operator = with_leap(prepare_operator(random_attention(6, seed=4), 0.4, 100), k)
    start = start_states(np.array([[13.0, 27.0]]), (60, 60), 6)[0]
    leaping = markov_map(operator, start, rho=0.3, max_steps=60, leap_after=after)
    plain = plain_leaping_markov_map(operator.matrix(), k, after, start, 0.3, 60)
    torch.testing.assert_close(leaping.double(), plain, rtol=1e-4, atol=1e-3)
    assert not torch.allclose(leaping, markov_map(operator, start, rho=0.3, max_steps=60))  # leaps did happen


def test_leaps_are_off_unless_asked_and_place_crossings_near_the_single_steps():
    from m2n2.operator import with_leap
    # a random walk on the grid (attention to the 3 x 3 neighbourhood) mixes slowly
    r = 8
    grid = np.stack(np.meshgrid(np.arange(r), np.arange(r), indexing="ij"), -1).reshape(-1, 2)
    near = (np.abs(grid[:, None] - grid[None]).max(-1) <= 1).astype(np.float32)
    attention = torch.from_numpy(near / near.sum(1, keepdims=True)).reshape(r, r, r, r)
    operator = prepare_operator(attention, 1.0, 100)
    leaping = with_leap(operator, 8)
    start = start_states(np.array([[30.0, 50.0]]), (80, 80), 8)[0]
    single = markov_map(operator, start, max_steps=300)
    assert torch.equal(markov_map(leaping, start, max_steps=300), single)  # leap_after=None: every step
    assert torch.equal(markov_map(leaping, start, max_steps=300, leap_after=300), single)
    leaped = markov_map(leaping, start, max_steps=300, leap_after=4)
    early = single <= 4
    assert torch.equal(leaped[early], single[early])  # crossings before the first leap are untouched
    assert float((leaped - single).abs().max()) < 8  # later ones within a leap
    assert float(single.max()) > 12  # and there are later ones


def every_step_markov_map(operator, starts: torch.Tensor, rho: float, max_steps: int,
                          leap_after: int | None) -> torch.Tensor:
    """The iteration as it was before quiet steps were skipped: the crossing arithmetic at every
    product, in the same fp32 operations (so the comparison can be exact)."""
    state = starts.float().T.contiguous()
    leap = operator.leap if leap_after is not None else None
    times = torch.full_like(state, float(max_steps))
    pending = state <= rho
    times[~pending] = 0.0
    i = 0
    while i < max_steps:
        jump = leap if leap is not None and i >= leap_after and i + leap.steps <= max_steps else operator
        previous = state
        state = jump.step(state)
        state = state / state.amax(dim=0, keepdim=True)
        crossed = pending & (state > rho)
        delta = (1.0 - rho) if i == 0 else (state - previous)
        value = i + jump.steps * (1.0 - (state - rho) / (delta + 1e-6))
        times = torch.where(crossed, value, times)
        pending &= ~crossed
        i += jump.steps
        if not bool(pending.any()):
            break
    return times.T.contiguous()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("leap_after", [None, 5])
def test_skipping_quiet_steps_changes_no_bit(dtype, leap_after):
    from m2n2.operator import with_leap
    # a slowly mixing grid walk: many steps where no cell crosses, some cells never crossing
    r = 10
    grid = np.stack(np.meshgrid(np.arange(r), np.arange(r), indexing="ij"), -1).reshape(-1, 2)
    near = (np.abs(grid[:, None] - grid[None]).max(-1) <= 1).astype(np.float32)
    near[:, : r * r // 2] *= 1e-3  # the first half is hard to reach
    attention = torch.from_numpy(near / near.sum(1, keepdims=True)).reshape(r, r, r, r)
    operator = with_leap(prepare_operator(attention, 0.65, 50, dtype=dtype), 4)
    starts = start_states(np.array([[75.0, 85.0], [5.0, 95.0]]), (100, 100), r)
    fast = markov_map(operator, starts, rho=0.3, max_steps=150, leap_after=leap_after)
    plain = every_step_markov_map(operator, starts, 0.3, 150, leap_after)
    assert torch.equal(fast, plain)
    assert bool((fast == 150).any()) and bool((fast < 150).any())  # capped cells and crossed ones
    # sparse checks (as on a GPU) stop after the last crossing as well, with the same result
    assert torch.equal(markov_map(operator, starts, rho=0.3, max_steps=150, leap_after=leap_after,
                                  check_every=7), plain)


def torch_divide_and_cross(state, previous, pending, times, rho, i, steps):
    """The torch lines of one step that the compiled pass stands for (state divided in place)."""
    state.div_(state.amax(dim=0, keepdim=True))
    crossed = pending & (state > rho)
    delta = (1.0 - rho) if i == 0 else (state - previous)
    fraction = 1.0 - (state - rho) / (delta + 1e-6)
    times = torch.where(crossed, i + steps * fraction, times)
    return times, pending & ~crossed, int(crossed.sum())


@pytest.mark.parametrize("i, steps", [(0, 1), (1, 1), (37, 1), (48, 8), (992, 8)])
def test_the_compiled_step_is_the_torch_lines_bit_for_bit(i, steps):
    """Division by the maximum, the crossing test and the crossing's interpolated step in one
    compiled pass, against the torch lines, with values on both sides of rho in float32."""
    from m2n2.markov import _divide_and_cross

    rng = np.random.default_rng(i + steps)
    rho = 0.3
    counts = []
    for trial in range(30):
        columns = 1 + trial % 3
        top = np.float32(rng.choice([1.0, 3.7, 0.011]))
        state = rng.random((301, columns), dtype=np.float32) * np.float32(0.6) * top
        state[7] = top
        state[:5] = np.nextafter(np.float32(rho) * top, np.float32(np.inf if trial % 2 else -np.inf))
        state[5] = np.float32(rho) * top
        previous = rng.random((301, columns), dtype=np.float32) * np.float32(0.3)
        previous[8] = state[8] / top  # a crossing with delta 0: the epsilon alone divides
        pending = rng.random((301, columns)) < 0.6
        times = np.where(pending, 1000.0, rng.random((301, columns)) * 50).astype(np.float32)
        state, previous, pending, times = map(torch.from_numpy, (state, previous, pending, times))
        expected_state = state.clone()
        expected_times, expected_pending, expected_count = torch_divide_and_cross(
            expected_state, previous, pending.clone(), times.clone(), rho, i, steps)
        got_state, got_pending, got_times = state.clone(), pending.clone(), times.clone()
        count = _divide_and_cross(got_state.numpy(), previous.numpy(), got_pending.numpy(), got_times.numpy(),
                                  np.float32(rho), np.float32(1e-6), np.float32((1.0 - rho) + 1e-6), i, steps)
        assert count == expected_count
        assert torch.equal(got_state, expected_state) and torch.equal(got_pending, expected_pending)
        assert torch.equal(got_times, expected_times)
        counts.append(count)
    assert min(counts) >= 1 and max(counts) > 20
    state = torch.tensor([[1.0, 2.0], [float("nan"), 4.0], [3.0, 1.0]])
    expected = state / state.amax(dim=0, keepdim=True)
    nothing = np.zeros((3, 2), dtype=bool)
    assert _divide_and_cross(state.numpy(), state.numpy().copy(), nothing, np.zeros((3, 2), np.float32),
                             np.float32(rho), np.float32(1e-6), np.float32(0.7), i, steps) == 0
    assert torch.equal(state.isnan(), expected.isnan()) and torch.equal(state[:, 1], expected[:, 1])
