"""The fast preset's background preparation (``early_maps``, ``early_table``): results never
depend on timing.

Each test forces a path by holding the background thread (``before_finishing``) on an event,
not by sleeping.
"""

import threading

import numpy as np
import pytest
import torch

from m2n2 import M2N2Config, M2N2Predictor
from m2n2.operator import with_leap
from synthetic import random_attention, record_leap_threads

CLICKS = [((20.0, 30.0), 1), ((70.0, 15.0), 0), ((45.0, 50.0), 1)]


@pytest.fixture
def scene():
    rng = np.random.default_rng(3)
    image = (rng.random((60, 80, 3)) * 255).astype(np.uint8)
    image[:, :40] //= 3  # an edge for the upsampling to follow
    return image, random_attention(16, seed=5)


def _held(config):
    """A predictor whose background work waits on the returned event."""
    gate = threading.Event()
    predictor = M2N2Predictor(config=config)
    predictor.before_finishing = gate.wait
    return predictor, gate


def _masks(predictor, clicks=CLICKS):
    return [predictor.predict([p for p, _ in clicks[:k]], [lab for _, lab in clicks[:k]]).mask
            for k in range(1, len(clicks) + 1)]


@pytest.mark.parametrize("early_table", [True, False])
def test_the_first_mask_does_not_wait_for_the_leap_and_masks_never_depend_on_timing(scene, early_table):
    image, attention = scene
    held, gate = _held(M2N2Config.fast(early_table=early_table))
    held.set_attention(image, attention)
    first = held.predict([CLICKS[0][0]], [1])
    assert not held.is_prepared and held.operator.leap is None  # the first map was made without the leap
    built_by_the_click = held._finishing.table
    gate.set()
    rest = _masks(held)[1:]
    assert held.is_prepared and held.operator.leap is not None and held.upsampling_table is not None

    free = M2N2Predictor(config=M2N2Config.fast(early_table=early_table))
    free.set_attention(image, attention)
    free.wait_prepared()  # everything ready before the first click: the same masks
    assert free.is_prepared
    for ours, theirs in zip([first.mask, *rest], _masks(free)):
        np.testing.assert_array_equal(ours, theirs)
    if early_table:
        # the table: built by the first click (the background had not begun) and then used by
        # the background instead of building another
        assert built_by_the_click is not None and held.upsampling_table is built_by_the_click
        assert held._weight_sums is None and free._weight_sums is None  # no map used the dense filter
        torch.testing.assert_close(held.upsampling_table.coefficients, free.upsampling_table.coefficients,
                                   rtol=0, atol=0)
    else:
        assert built_by_the_click is None
        # the dense filter's weight sums: summed by the first click (held) or by the background thread
        assert torch.equal(held._weight_sums, free._weight_sums)


class _ContendedLock:
    """A lock that says when someone had to wait for it."""

    def __init__(self):
        self._lock = threading.Lock()
        self.contended = threading.Event()

    def __enter__(self):
        if not self._lock.acquire(blocking=False):
            self.contended.set()
            self._lock.acquire()
        return self

    def __exit__(self, *exc):
        self._lock.release()


def test_a_first_map_ready_before_the_table_waits_for_the_background_to_finish_it(monkeypatch, scene):
    """The other order: the background has begun the table when the first chain ends; the click
    waits for it (nobody builds it twice) and gets the masks of a free run."""
    import m2n2.predictor as module
    image, attention = scene
    locks, builders = [], []
    real_finishing, real_table_of = module._Finishing, module._table_of

    def finishing():
        made = real_finishing()
        made.table_lock = _ContendedLock()
        locks.append(made.table_lock)
        return made

    def table_of(*args):
        builders.append(threading.current_thread().name)
        assert locks[-1].contended.wait(timeout=60), "the click never came for the table"
        return real_table_of(*args)

    monkeypatch.setattr(module, "_Finishing", finishing)
    monkeypatch.setattr(module, "_table_of", table_of)
    held = M2N2Predictor(config=M2N2Config.fast())
    held.set_attention(image, attention)
    first = held.predict([CLICKS[0][0]], [1])
    assert builders == ["m2n2-finish-preparation"] and "preparation_wait" in first.timings
    rest = _masks(held)[1:]
    monkeypatch.undo()

    free = M2N2Predictor(config=M2N2Config.fast())
    free.set_attention(image, attention)
    free.wait_prepared()
    for ours, theirs in zip([first.mask, *rest], _masks(free)):
        np.testing.assert_array_equal(ours, theirs)


def test_the_first_map_takes_single_steps_and_the_table_and_later_ones_the_leap_too(scene):
    image, attention = scene
    soon = 2  # leaps after two steps: this small scene's chains end before the preset's 48
    fast = M2N2Predictor(config=M2N2Config.fast(markov_leap_after=soon))
    fast.set_attention(image, attention)
    maps = [fast.predict([p], [1]).points[0].markov_map for p, _ in CLICKS[:2]]

    early = M2N2Predictor(config=M2N2Config.fast(markov_leap=1, early_maps=0))
    early.set_attention(image, attention)
    late = M2N2Predictor(config=M2N2Config.fast(markov_leap_after=soon, early_maps=0))
    late.set_attention(image, attention)
    np.testing.assert_array_equal(maps[0], early.predict([CLICKS[0][0]], [1]).points[0].markov_map)
    np.testing.assert_array_equal(maps[1], late.predict([CLICKS[1][0]], [1]).points[0].markov_map)
    # the two paths differ on this map: the test could tell them apart
    assert not np.array_equal(maps[1], early.predict([CLICKS[1][0]], [1]).points[0].markov_map)


def test_without_early_table_the_first_map_takes_the_dense_filter(scene):
    """``early_table`` = False (the fast preset before it, which older recipes replay)."""
    image, attention = scene
    fast = M2N2Predictor(config=M2N2Config.fast(early_table=False))
    fast.set_attention(image, attention)
    first = fast.predict([CLICKS[0][0]], [1]).points[0].markov_map

    dense = M2N2Predictor(config=M2N2Config.fast(markov_leap=1, jbu_table=False, early_maps=0))
    dense.set_attention(image, attention)
    np.testing.assert_array_equal(first, dense.predict([CLICKS[0][0]], [1]).points[0].markov_map)
    table = M2N2Predictor(config=M2N2Config.fast(markov_leap=1, early_maps=0))
    table.set_attention(image, attention)
    assert not np.array_equal(first, table.predict([CLICKS[0][0]], [1]).points[0].markov_map)


def test_a_new_image_drops_the_background_work_of_the_previous_one(scene):
    image, attention = scene
    predictor, gate = _held(M2N2Config.fast())
    predictor.set_attention(image, attention)
    first_finishing = predictor._finishing
    predictor.before_finishing = None
    other = random_attention(16, seed=9)
    predictor.set_attention(image, other)
    predictor.wait_prepared()
    gate.set()  # the first image's work now runs, finds itself superseded and installs nothing
    first_finishing.done.wait()
    expected = with_leap(predictor.operator, 8).leap.transposed
    torch.testing.assert_close(predictor.operator.leap.transposed, expected, rtol=0, atol=0)


def _failed_in_the_background(scene) -> M2N2Predictor:
    """A fast-preset predictor whose image's background work raised MemoryError."""
    image, attention = scene
    predictor = M2N2Predictor(config=M2N2Config.fast())

    def fail():
        raise MemoryError("no room for the leap")

    predictor.before_finishing = fail
    predictor.set_attention(image, attention)
    return predictor


def test_a_failure_in_the_background_is_raised_where_its_result_is_needed(scene):
    predictor = _failed_in_the_background(scene)
    assert predictor.predict([CLICKS[0][0]], [1]).mask.any()  # the first map needs nothing of it
    with pytest.raises(MemoryError, match="no room"):
        predictor.predict([CLICKS[0][0], CLICKS[1][0]], [1, 0])


def test_the_exact_preset_prepares_everything_before_set_image_returns(scene):
    image, attention = scene
    predictor = M2N2Predictor(config=M2N2Config(markov_leap=8, jbu_table=True))
    predictor.before_finishing = lambda: pytest.fail("no background work without early_maps")
    predictor.set_attention(image, attention)
    assert predictor.is_prepared and predictor.operator.leap is not None and predictor.upsampling_table is not None


def test_early_maps_and_early_table_are_validated():
    from m2n2 import InputError
    with pytest.raises(InputError, match="early_maps"):
        M2N2Config(early_maps=-1)
    with pytest.raises(InputError, match="early_table"):
        M2N2Config(early_table=1)


def test_settings_can_change_after_the_background_failed(scene):
    predictor = _failed_in_the_background(scene)
    predictor.before_finishing = None
    predictor.set_config(M2N2Config.fast(temperature=0.5))  # re-prepares: the failure is left behind
    predictor.wait_prepared()
    assert predictor.is_prepared and predictor.operator.leap is not None


def test_without_a_background_thread_the_work_runs_in_the_callers_thread_with_the_same_results(scene):
    image, attention = scene
    ran_on = []
    inline = M2N2Predictor(config=M2N2Config.fast(), background=False)
    inline.before_finishing = lambda: ran_on.append(threading.current_thread())
    inline.set_attention(image, attention)
    assert ran_on == [threading.current_thread()]  # no second thread: one busy thread per predictor
    assert inline.is_prepared and inline.operator.leap is not None and inline.upsampling_table is not None

    threaded = M2N2Predictor(config=M2N2Config.fast())
    threaded.set_attention(image, attention)
    for ours, theirs in zip(_masks(inline), _masks(threaded)):
        np.testing.assert_array_equal(ours, theirs)
    assert torch.equal(inline.operator.leap.transposed, threaded.operator.leap.transposed)


def test_without_a_background_thread_a_failure_is_raised_by_set_image(scene):
    image, attention = scene
    inline = M2N2Predictor(config=M2N2Config.fast(), background=False)

    def fail():
        raise MemoryError("no room for the table")

    inline.before_finishing = fail
    with pytest.raises(MemoryError, match="no room"):
        inline.set_attention(image, attention)


@pytest.mark.parametrize("count", [1, 2])
def test_the_background_work_may_use_the_threads_its_caller_allows(monkeypatch, scene, count):
    """A server gives an image's preparation two threads (m2n2.threads.using_threads): its
    background thread, which starts with a context of its own, uses them too (the leap's halves)."""
    from m2n2.threads import using_threads
    image, attention = scene
    leaps_of = record_leap_threads(monkeypatch)  # torch's own threads: one (the default allowance)
    predictor = M2N2Predictor(config=M2N2Config.fast())
    with using_threads(count):
        predictor.set_attention(image, attention)
    predictor.wait_prepared()
    assert leaps_of(predictor) == [("m2n2-finish-preparation", count)]


def test_a_click_waiting_for_the_leap_computes_part_of_it_and_gets_the_same_masks(monkeypatch, scene):
    """The second click comes while the background squares the operator: instead of idling, the
    click's thread takes blocks of the squarings (m2n2.threads.SharedRows); the masks are the bits
    of a predictor that had everything ready."""
    import m2n2.operator as operator_module
    image, attention = scene
    free = M2N2Predictor(config=M2N2Config.fast())
    free.set_attention(image, attention)
    free.wait_prepared()
    expected = _masks(free)

    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)  # the app's jobs: torch on one thread
    monkeypatch.setattr(operator_module, "_LEAP_BLOCK", 64)  # N = 256: 4 blocks per squaring
    click_took = threading.Event()
    blocks = []
    product = operator_module._product_into

    def recorded(left, right, out):
        name = threading.current_thread().name
        blocks.append(name)
        if name == "MainThread":
            click_took.set()
        else:  # the background's blocks wait until the click has taken one: it must be waiting
            assert click_took.wait(10)
        return product(left, right, out)

    monkeypatch.setattr(operator_module, "_product_into", recorded)
    predictor = M2N2Predictor(config=M2N2Config.fast())
    predictor.set_attention(image, attention)
    first = predictor.predict([CLICKS[0][0]], [1])  # the first map takes single steps: no leap needed
    assert not predictor.is_prepared and "MainThread" not in blocks  # the leap is held at its first block
    rest = _masks(predictor)[1:]  # the second click waits for the leap, and helps
    assert predictor.is_prepared
    assert "MainThread" in blocks and "m2n2-finish-preparation" in blocks
    assert len(blocks) == 3 * 4  # three squarings of 4 blocks, each block computed once
    for ours, theirs in zip([first.mask, *rest], expected):
        np.testing.assert_array_equal(ours, theirs)


class _GivenBackbone:
    """A backbone that returns a given attention; ``during`` runs inside ``extract``."""

    def __init__(self, attention, resolution=None, during=None):
        self.attention, self.during = attention, during
        self.resolution = attention.shape[0] if resolution is None else resolution
        self.device = torch.device("cpu")
        self.name = self.description = "given"
        self.reason = None

    def extract(self, image):
        if self.during is not None:
            self.during()
        return self.attention.clone()


def test_set_image_starts_the_background_before_the_backbone_runs(scene):
    """What needs the image only (the table) begins while the backbone computes the attention."""
    image, attention = scene
    began = threading.Event()
    backbone = _GivenBackbone(attention, during=lambda: began.wait(timeout=60))
    predictor = M2N2Predictor(backbone, M2N2Config.fast())
    predictor.before_finishing = began.set  # the background thread's first act
    predictor.set_image(image)
    assert began.is_set()
    ours = _masks(predictor)

    free = M2N2Predictor(config=M2N2Config.fast())
    free.set_attention(image, attention)
    for a, b in zip(ours, _masks(free)):
        np.testing.assert_array_equal(a, b)


def test_a_backbone_of_another_size_than_announced_still_gives_the_masks(scene):
    image, attention = scene
    predictor = M2N2Predictor(_GivenBackbone(attention, resolution=8), M2N2Config.fast())
    predictor.set_image(image)
    free = M2N2Predictor(config=M2N2Config.fast())
    free.set_attention(image, attention)
    for a, b in zip(_masks(predictor), _masks(free)):
        np.testing.assert_array_equal(a, b)
    assert predictor.upsampling_table.low_shape == (16, 16)


def test_a_failing_backbone_stops_the_early_background_and_keeps_the_previous_image(scene):
    image, attention = scene
    predictor = M2N2Predictor(_GivenBackbone(attention), M2N2Config.fast())
    predictor.set_image(image)
    before = _masks(predictor)
    threads, began = [], threading.Event()

    def begin():
        threads.append(threading.current_thread())
        began.set()

    def fail():
        began.wait(timeout=60)  # the new image's background has begun
        raise MemoryError("no room for the attention")

    predictor.before_finishing = begin

    predictor.backbone = _GivenBackbone(random_attention(16, seed=9), during=fail)
    with pytest.raises(MemoryError, match="no room"):
        predictor.set_image(255 - image)
    assert len(threads) == 1
    threads[0].join(timeout=60)
    assert not threads[0].is_alive()  # cancelled: it stopped instead of waiting for an operator
    predictor.clear_cache()
    for a, b in zip(_masks(predictor), before):
        np.testing.assert_array_equal(a, b)
