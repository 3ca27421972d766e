import time

import numpy as np
import pytest
import torch

from m2n2.operator import TransitionOperator, _half_step_widened, apply_temperature, prepare_operator, sinkhorn_scaling
from synthetic import random_attention


def plain_ipf(matrix: torch.Tensor, iterations: int) -> torch.Tensor:
    """The obviously-correct form: rewrite the matrix, columns then rows, every iteration."""
    matrix = matrix.double().clone()
    for _ in range(iterations):
        matrix /= matrix.sum(dim=0, keepdim=True)
        matrix /= matrix.sum(dim=1, keepdim=True)
    return matrix


def test_temperature_equals_softmax_of_log_over_tau():
    a = random_attention(6).reshape(36, 36)
    expected = torch.softmax(torch.log(a.double()) / 0.65, dim=1)
    torch.testing.assert_close(apply_temperature(a, 0.65).double(), expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_temperature_is_the_bits_of_power_then_row_sums(dtype):
    # The plain form, a whole matrix at once (the function works in chunks of rows, in place)
    a = random_attention(48, seed=5).reshape(2304, 2304).to(dtype)
    powered = a.float().pow(1 / 0.65)
    expected = powered / powered.sum(dim=1, keepdim=True)
    assert torch.equal(apply_temperature(a, 0.65), expected)
    if dtype == torch.float32:
        inplace = a.clone()
        assert apply_temperature(inplace, 0.65, out=inplace) is inplace and torch.equal(inplace, expected)


def test_temperature_below_one_sharpens_rows():
    a = random_attention(6).reshape(36, 36)
    sharp = apply_temperature(a, 0.5)
    assert torch.all(sharp.max(dim=1).values > a.max(dim=1).values)
    torch.testing.assert_close(sharp.sum(dim=1), torch.ones(36))


def test_ipf_output_is_doubly_stochastic():
    operator = prepare_operator(random_attention(12, seed=1), 0.65, 200)
    p = operator.matrix()
    assert (p.sum(dim=0) - 1).abs().max() < 1e-3
    assert (p.sum(dim=1) - 1).abs().max() < 1e-3
    assert p.min() >= 0


@pytest.mark.parametrize("iterations", [1, 3, 25])
def test_scaling_vectors_match_the_matrix_rewriting_ipf(iterations):
    # Large blocks (_IPF_BLOCK rows) are exercised by R = 20 (N = 400 > 256).
    k = apply_temperature(random_attention(20, seed=2).reshape(400, 400), 0.65)
    r, c = sinkhorn_scaling(k, iterations)
    fast = k.double() * r.double()[:, None] * c.double()[None, :]
    torch.testing.assert_close(fast, plain_ipf(k, iterations), rtol=1e-4, atol=1e-9)


def test_fp16_storage_stays_close_to_fp32():
    attention = random_attention(10, seed=3)
    p32 = prepare_operator(attention, 0.65, 200).matrix()
    p16 = prepare_operator(attention, 0.65, 200, dtype=torch.float16).matrix()
    assert ((p16 - p32).abs().max() / p32.abs().max()) < 2e-3


def test_operator_to_changes_storage_but_not_the_matrix():
    operator = prepare_operator(random_attention(8), 0.65, 50)
    half = operator.to(dtype=torch.float16)
    assert half.dtype == torch.float16 and half.transposed.nbytes == operator.transposed.nbytes // 2
    torch.testing.assert_close(half.to(dtype=torch.float32).matrix(), operator.matrix(), rtol=2e-3, atol=1e-6)
    assert operator.to() is operator


@pytest.mark.parametrize("resolution", [5, 40])
def test_half_step_on_the_cpu_is_the_fp32_product_of_the_stored_entries(resolution):
    # A block of rows widened to fp32 at a time (resolution 40: several blocks and a short last one)
    torch.manual_seed(resolution)
    n = resolution ** 2
    transposed = torch.rand(n, n).half()
    operator = TransitionOperator(transposed, float(n), resolution)
    widened = transposed.float()
    one, many = torch.rand(n), torch.rand(n, 3)
    # fp32 sums in another order (an fp16 sum would be off by about 1e-3)
    torch.testing.assert_close(operator.step(one), widened @ one, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(operator.step(many), widened @ many, rtol=1e-5, atol=1e-5)
    assert operator.step(one).dtype == torch.float32 and operator.step(many).shape == (n, 3)
    # the fallback where FBGEMM is missing: widened blocks of rows
    torch.testing.assert_close(_half_step_widened(transposed, one, 2 ** 20), widened @ one, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(_half_step_widened(transposed, many, 2 ** 20), widened @ many, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("columns", [None, 3])
def test_the_gpu_fp16_step_accumulates_in_fp32_with_an_fp32_state(monkeypatch, columns):
    # The arithmetic of a CUDA fp16 operator's step (FBGEMM is CPU-only, so without its packed
    # copy; the GPU's block size), run on CPU tensors, against an fp64 reference.
    import m2n2.operator as operator_module
    monkeypatch.setattr(operator_module, "_pack_half_for_cpu", lambda transposed: None)
    torch.manual_seed(0)
    resolution = 40
    n = resolution ** 2
    transposed = (torch.rand(n, n) * (torch.rand(n, n) < 0.3)).half()
    operator = TransitionOperator(transposed, float(n), resolution)
    assert operator._packed is None
    # A Markov state: positive, summing to 1, with values far below fp16's resolution near them.
    shape = (n,) if columns is None else (n, columns)
    state = torch.rand(shape, dtype=torch.float64) ** 8
    state = (state / state.sum(0)).float()
    reference = transposed.double() @ state.double()
    # fp32 accuracy: a few dozen ulps of the sum of magnitudes (measured: 3 to 10; the fp16 state: over 700)
    bound = 32 * torch.finfo(torch.float32).eps * (transposed.double().abs() @ state.double().abs())
    for block_bytes in operator_module._HALF_BLOCK_BYTES.values():  # the CPU's and the GPU's blocks
        out = _half_step_widened(transposed, state, block_bytes)
        assert out.dtype == torch.float32
        assert bool(((out.double() - reference).abs() <= bound).all())
    assert bool(((operator.step(state).double() - reference).abs() <= bound).all())
    # What the GPU did before: the state rounded to fp16, then an fp16 product; far outside fp32 accuracy.
    rounded = (transposed.double() @ state.half().double()).float().double()
    assert bool(((rounded - reference).abs() > bound).any())


def test_the_packed_fp16_copy_is_counted_and_used_only_on_the_cpu():
    n = 16 ** 2
    transposed = torch.rand(n, n).half()
    operator = TransitionOperator(transposed, float(n), 16)
    if operator._packed is None:
        pytest.skip("this torch build has no FBGEMM (not x86): the CPU uses the widened blocks")
    assert operator.nbytes == 2 * n * n * 2  # the fp16 matrix and FBGEMM's packed copy
    assert TransitionOperator(transposed.float(), 1.0, 16).nbytes == n * n * 4  # fp32: no copy


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_the_leap_is_the_operators_power_stored_like_it(dtype):
    from m2n2.operator import with_leap
    operator = prepare_operator(random_attention(6, seed=2), 0.65, 100, dtype=dtype)
    leaping = with_leap(operator, 8)
    assert leaping.leap.steps == 8 and leaping.leap.dtype == dtype and leaping.leap.scale == operator.scale
    expected = torch.linalg.matrix_power(operator.matrix().double(), 8)
    tolerance = 1e-3 if dtype == torch.float16 else 1e-5
    torch.testing.assert_close(leaping.leap.matrix().double(), expected, rtol=tolerance, atol=tolerance / 36)
    assert leaping.transposed is operator.transposed and operator.leap is None  # P shared, not copied
    assert leaping.nbytes == 2 * operator.nbytes
    assert leaping.to(dtype=torch.float32).leap.dtype == torch.float32
    assert with_leap(leaping, 1).leap is None
    with pytest.raises(ValueError):
        with_leap(operator, 6)


@pytest.mark.parametrize("n", [200, 333])  # blocks of 64 rows: the last 8 or 13 rows long
def test_the_leaps_squaring_in_blocks_is_the_whole_products_bits_on_one_thread_or_two(monkeypatch, n):
    import threading

    import m2n2.operator as operator_module
    from m2n2.operator import _squared, with_leap
    from m2n2.threads import using_threads
    torch.manual_seed(n)
    matrix = torch.rand(n, n) ** 8
    expected = matrix @ matrix
    blocks = []
    product = operator_module._product_into
    took = {}  # with two threads, each one's first block waits until the other has one

    def recorded(left, right, out):
        name = threading.current_thread().name
        blocks.append((name, out.data_ptr(), left.shape[0]))
        mine, other = ("main", "helper") if name == "MainThread" else ("helper", "main")
        if took and not took[mine].is_set():
            took[mine].set()
            assert took[other].wait(10)
        return product(left, right, out)

    monkeypatch.setattr(operator_module, "_product_into", recorded)
    monkeypatch.setattr(operator_module, "_LEAP_BLOCK", 64)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)  # torch's own product on one thread
    whole_blocks = [64] * (n // 64) + [n % 64]
    for allowed in (2, 1):
        blocks.clear()
        took.clear()
        if allowed == 2:
            took.update(main=threading.Event(), helper=threading.Event())
        with using_threads(allowed):
            assert torch.equal(_squared(matrix), expected)
        # every row once: the blocks' starts are distinct and their lengths add up to the rows
        assert len({ptr for _, ptr, _ in blocks}) == len(blocks) and sorted(rows for *_, rows in blocks) == sorted(whole_blocks)
        helpers = {name.startswith("m2n2-helper") for name, *_ in blocks}
        assert helpers == ({False, True} if allowed == 2 else {False})
    # With torch's own threads, the whole product (the blocks would gain nothing)
    blocks.clear()
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert torch.equal(_squared(matrix), expected) and blocks == []
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    # The leap itself: the plain squarings' bits
    operator = prepare_operator(random_attention(12, seed=5), 0.65, 50, dtype=torch.float16)
    plain = operator.transposed.float() / operator.scale
    for _ in range(3):
        plain = plain @ plain
    with using_threads(2):
        leap = with_leap(operator, 8).leap
    assert torch.equal(leap.transposed, (plain * operator.scale).half())


def _split_everything(monkeypatch):
    import m2n2.operator as operator_module
    monkeypatch.setattr(operator_module, "_SPLIT_MIN_ENTRIES", 1)


@pytest.mark.parametrize("resolution", [17, 37])  # odd N: halves of unequal length
def test_a_product_in_two_halves_on_two_threads_is_the_one_products_bits(monkeypatch, resolution):
    import threading

    import m2n2.operator as operator_module
    from m2n2.threads import using_threads
    torch.manual_seed(resolution)
    n = resolution ** 2
    transposed = (torch.rand(n, n) ** 8).half()
    whole = TransitionOperator(transposed, float(n), resolution)
    if whole._packed is None:
        pytest.skip("this torch build has no FBGEMM (not x86): no packed copy to split")
    assert len(whole._packed) == 1  # small matrices stay in one part
    _split_everything(monkeypatch)
    split = TransitionOperator(transposed, float(n), resolution)
    assert len(split._packed) == 2 and split.nbytes == whole.nbytes
    threads = []
    product = operator_module._packed_product

    def recorded(*args):
        name = threading.current_thread().name
        threads.append(name)
        if name == "MainThread" and len(threads) == 1:
            time.sleep(0.05)  # the caller's half takes long enough for the helper to start its own
        return product(*args)

    monkeypatch.setattr(operator_module, "_packed_product", recorded)
    for states in (torch.rand(n), torch.rand(n, 3)):
        expected = whole.step(states)
        for count in (1, 2):
            threads.clear()
            with using_threads(count):
                assert torch.equal(split.step(states), expected)
            helpers = [name for name in threads if name.startswith("m2n2-helper")]
            assert len(threads) == 2 and len(helpers) == count - 1


def test_markov_maps_are_the_same_bits_with_the_products_split(monkeypatch):
    from m2n2.markov import markov_map, start_states
    from m2n2.operator import with_leap
    from m2n2.threads import using_threads
    attention = random_attention(12, seed=4)
    starts = start_states(np.array([[3.0, 5.0], [20.0, 9.0]]), (24, 24), 12)
    whole = with_leap(prepare_operator(attention, 0.65, 50, dtype=torch.float16), 8)
    if whole._packed is None:
        pytest.skip("this torch build has no FBGEMM (not x86): no packed copy to split")
    expected = markov_map(whole, starts, leap_after=16)
    _split_everything(monkeypatch)
    split = with_leap(prepare_operator(attention, 0.65, 50, dtype=torch.float16), 8)
    assert len(split._packed) == 2 and len(split.leap._packed) == 2
    for count in (1, 2):
        with using_threads(count):
            assert torch.equal(markov_map(split, starts, leap_after=16), expected)


def test_a_half_the_helper_has_not_started_is_taken_back_and_the_helper_freed():
    """joined(): work still queued (the helper's thread has no core yet) is computed by the caller."""
    import threading

    from m2n2.threads import _helper, joined
    helper = _helper()
    started, release = threading.Event(), threading.Event()
    blocker = helper._pool.submit(lambda: (started.set(), release.wait(10)))  # the thread is held
    assert started.wait(10)
    ran_on = []
    pending = helper.try_submit(lambda x: ran_on.append(threading.current_thread().name) or x + 1, 41)
    assert pending is not None  # accepted, but queued behind the held thread
    assert joined(pending, lambda x: ran_on.append(threading.current_thread().name) or x + 1, 41) == 42
    assert ran_on == [threading.current_thread().name] and pending.cancelled()
    again = helper.try_submit(int)  # freed: it takes work again
    release.set()
    blocker.result(10)
    assert again is not None and joined(again, int) == 0 and again.done()
    assert joined(None, int, "7") == 7


def test_a_busy_helper_refuses_work_and_helpers_keep_their_callers_nice_value():
    import os
    import threading

    from m2n2.threads import _helper
    helper = _helper()
    started, release = threading.Event(), threading.Event()
    busy = helper.try_submit(lambda: (started.set(), release.wait(10)))
    assert busy is not None and started.wait(10)
    assert helper.try_submit(int) is None  # another caller computes both halves itself meanwhile
    release.set()
    busy.result(10)
    assert helper.try_submit(int).result(10) == 0  # free again once its work is done
    # A thread of a higher nice value (a server's background job) gets a helper of its own, at its nice value
    seen = {}

    def niced():
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 5 + os.getpriority(os.PRIO_PROCESS, 0))
        except (AttributeError, OSError):
            seen["skip"] = True
            return
        own = _helper()
        seen["other"] = own is not helper
        seen["nice"] = own.try_submit(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())).result(10)
        seen["mine"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    thread = threading.Thread(target=niced)
    thread.start()
    thread.join(10)
    if seen.get("skip"):
        pytest.skip("per-thread nice values are Linux's")
    assert seen["other"] and seen["nice"] == seen["mine"]


def test_a_group_of_work_gets_a_helper_of_its_own():
    """An image's background preparation (group "background") never holds the helper that a click
    at the same priority needs for its halves, nor waits for it."""
    import threading

    from m2n2.threads import _helper, using_threads
    plain = _helper()
    with using_threads(2, group="background"):
        background = _helper()
        assert _helper() is background
        release, started = threading.Event(), threading.Event()
        busy = background.try_submit(lambda: (started.set(), release.wait(10)))
        assert started.wait(10)
    assert background is not plain and _helper() is plain
    assert plain.try_submit(int).result(10) == 0  # free while the group's helper works
    release.set()
    busy.result(10)
