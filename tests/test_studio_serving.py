"""What the serving process shares: backbones loaded once, prepared images under a budget, the GPU boundary."""

import numpy as np
import pytest
import torch

from m2n2 import InputError, M2N2Config
from m2n2.studio import gpu, serving
from m2n2.studio.serving import Backbones, LiveSessions, PredictorStore, StoreMiss, tensor_bytes
from synthetic import CountingBackbone, centre_of, iou, record_leap_threads, square_image

OPTIONS = serving.Options(backbone="color", resolution=16)
FAST = M2N2Config.fast()


@pytest.fixture
def started():
    return serving.start(OPTIONS, CountingBackbone)


def prepared(started, key="s/1", config=FAST, image=None):
    image = square_image()[0] if image is None else image
    return gpu.prepare(started, key, image, 16, config)


def test_backbones_load_each_resolution_once():
    made = []
    backbones = Backbones(lambda r: made.append(r) or CountingBackbone(r))
    assert not backbones.is_loaded(16)
    first = backbones.get(16)
    assert backbones.get(16) is first and made == [16] and backbones.is_loaded(16)
    assert backbones.get(8) is not first and made == [16, 8]


def test_a_job_names_its_serving_which_crosses_the_boundary_as_a_reference(started):
    import pickle
    job = gpu.SegmentJob("s/1", np.array([[1.0, 1.0]]), np.array([1]), None, FAST)
    job.serving = started
    crossed = pickle.loads(pickle.dumps(job))
    assert crossed.serving is started                                  # the worker's own copy (a fork's)
    assert len(pickle.dumps(started)) < 200                            # never its store or backbones
    other = serving.start(OPTIONS, CountingBackbone)
    assert pickle.loads(pickle.dumps(other)) is other and other is not started
    with pytest.raises(Exception, match="serving.start"):              # a process that never started it
        serving._find(-1)


def test_prepare_keeps_the_operator_on_the_device_and_returns_plain_numbers(started):
    result = prepared(started)
    assert result.working == (60, 80) and result.resolution == 16 and result.seconds > 0
    predictor = started.store.get("s/1")
    assert predictor.operator.dtype == torch.float16 and predictor.backbone is None
    assert predictor.operator.device == started.backbones.get(16).device
    assert result.memory_bytes >= 256 * 256 * 2                       # the fp16 operator at R = 16


@pytest.mark.parametrize("click_threads", [1, 2])
def test_an_images_background_preparation_gets_the_clicks_threads(monkeypatch, click_threads):
    """The leap's products (the fast preset's background work) run on the threads a click gets,
    not only on the job's one torch thread."""
    leaps_of = record_leap_threads(monkeypatch)  # a job's torch threads: one (the app's default)
    started = serving.start(serving.Options(backbone="color", resolution=16, click_threads=click_threads),
                            CountingBackbone)
    prepared(started)
    predictor = started.store.get("s/1")
    predictor.wait_prepared()
    assert leaps_of(predictor) == [("m2n2-finish-preparation", click_threads)]


def test_the_exact_preset_keeps_the_fp32_operator(started):
    prepared(started, config=M2N2Config())
    assert started.store.get("s/1").operator.dtype == torch.float32


def test_segment_finds_the_square_and_the_operator_never_moves(started):
    _, truth = square_image()
    prepared(started)
    operator = started.store.get("s/1").operator
    result = gpu.segment(started, "s/1", np.array([centre_of(truth)]), np.array([1]), None, FAST)
    assert iou(result.mask, truth) > 0.8 and not result.last.overridden
    # same tensor: no copy per click (the background thread may have attached the leap meanwhile)
    assert started.store.get("s/1").operator.transposed is operator.transposed
    wide = gpu.segment(started, "s/1", np.array([centre_of(truth)]), np.array([1]), 1.0, FAST)
    assert wide.last.overridden and wide.mask.sum() > result.mask.sum()


def test_segment_reports_a_missing_image_instead_of_failing(started):
    assert gpu.segment(started, "nobody/1", np.array([[1.0, 1.0]]), np.array([1]), None, FAST) is None


def test_user_errors_cross_the_boundary_with_their_message(started):
    import gradio as gr
    prepared(started)
    with pytest.raises(gr.Error, match="outside"):
        gpu.segment(started, "s/1", np.array([[500.0, 1.0]]), np.array([1]), None, FAST)
    with pytest.raises(gr.Error, match="too small"):
        gpu.prepare(started, "s/2", np.zeros((1, 1, 3), np.uint8), 16, FAST)
    assert "s/1" in started.store                                     # a failed new image keeps the old one


def test_store_evicts_least_recently_used_over_budget(started):
    store = PredictorStore(budget_bytes=1)
    for key in ("a/1", "b/1"):
        prepared(started, key)
        store.put(key, started.store.get(key))
    assert "a/1" not in store and "b/1" in store and len(store) == 1  # the newest always stays
    with pytest.raises(StoreMiss):
        store.get("a/1")


def test_a_session_keeps_one_image_and_drop_frees_it(started):
    prepared(started, "s/1")
    prepared(started, "s/2")
    assert "s/1" not in started.store and "s/2" in started.store
    assert started.store.drop_session("s") and len(started.store) == 0


def test_memory_grows_with_cached_maps(started):
    before = prepared(started).memory_bytes
    after = gpu.segment(started, "s/1", np.array([[10.0, 10.0]]), np.array([1]), None, FAST).memory_bytes
    assert after >= before + 60 * 80 * 4                               # one cached Markov-map


def test_tensor_bytes_counts_shared_storage_once():
    t = torch.zeros(100)
    a = np.zeros(50)
    assert tensor_bytes({"x": t, "y": t[10:], "z": [a, a[5:]]}) == 400 + 400


def test_tensor_bytes_counts_memory_held_outside_tensors():
    class Holder:
        def __init__(self):
            self.t = torch.zeros(100)

        def opaque_nbytes(self):
            return 1000

    assert tensor_bytes([Holder()]) == 400 + 1000


def test_tensor_bytes_counts_every_attribute_and_the_store_keeps_no_backbone(started):
    class Holder:
        def __init__(self):
            self.backbone = torch.zeros(100)                          # no name is special any more

    assert tensor_bytes(Holder()) == 400
    prepared(started)
    predictor = started.store.get("s/1")
    assert predictor.backbone is None                                  # lent for the preparation only
    predictor.backbone = started.backbones.get(16)
    with pytest.raises(ValueError, match="keeps no backbone"):
        started.store.put("s/2", predictor)
    assert "s/2" not in started.store


def test_live_sessions_end_frees_the_image(started):
    prepared(started, "s/1")
    live = LiveSessions(started.store)
    live.track("tab-1", "s")
    assert len(live) == 1 and live.end("tab-1") and "s/1" not in started.store
    assert not live.end("tab-1")


def test_exports_are_full_size_and_end_session_removes_them(started):
    import os

    from PIL import Image

    from m2n2.studio.clicks import ClickHandlers
    from m2n2.studio.images import ImageHandlers
    from m2n2.studio.page import Page
    from m2n2.studio.session import Session, Shown
    from m2n2.studio.sharing import SharingHandlers
    from m2n2.studio.ui import UI

    ui = UI(**{name: name for name in ("state", "image", "heatmap", "scores", "mask_button", "cutout_button",
                                        "threshold", "automatic", "status", "mask_file", "cutout_file")})
    page = Page(started, ui)
    sharing = SharingHandlers(page, ClickHandlers(page), ImageHandlers(page))
    image, truth = square_image()
    session = Session(16, FAST)
    session.set_image(image, (60, 80), 16, seconds=0.1)
    session.shown = Shown(truth, 0.5, False)
    offered = [sharing.export_mask(session)["mask_file"], sharing.export_cutout(session)["cutout_file"]]
    mask_path, cutout_path = (os.path.join(serving.export_dir(session.id), name) for name in ("mask.png", "cutout.png"))
    for path, button in zip((mask_path, cutout_path), offered):
        assert Image.open(button.value["path"]).tobytes() == Image.open(path).tobytes()   # the file offered
    np.testing.assert_array_equal(np.asarray(Image.open(mask_path)), truth.astype(np.uint8) * 255)
    cut = np.asarray(Image.open(cutout_path))
    assert cut.shape == (60, 80, 4)
    np.testing.assert_array_equal(cut[..., :3], image)
    np.testing.assert_array_equal(cut[..., 3], truth.astype(np.uint8) * 255)
    serving.end_session(started.store, session.id)
    assert not any(map(os.path.exists, (mask_path, cutout_path)))


def test_the_only_spaces_gpu_is_in_gpu_py():
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    users = sorted(str(p.relative_to(root)) for p in [*root.glob("m2n2/**/*.py"), root / "app.py"]
                   if "spaces.GPU" in p.read_text() or "import spaces" in p.read_text())
    assert users == ["m2n2/studio/gpu.py"]
    # one decorated function: spaces keeps a worker pool per decorated function (see gpu.py)
    assert (root / "m2n2/studio/gpu.py").read_text().count("@spaces.GPU") == 1


def test_off_spaces_the_gpu_decorator_returns_the_function_itself():
    import spaces

    def work(x: int) -> int:
        return x + 1

    assert spaces.GPU(duration=5)(work) is work and spaces.GPU(work) is work


def test_what_a_click_sends_across_the_boundary_is_small(started):
    import pickle
    result = prepared(started)
    assert len(pickle.dumps(result)) < 1024                           # prepare returns a few numbers
    image = square_image()[0]
    job = gpu.SegmentJob("s/1", np.array([[10.0, 10.0]] * 20), np.array([1] * 20), 0.4, FAST, image, 16)
    job.ended = ("gone",) * 256                                       # the most ended sessions it carries
    # twenty clicks and the session's image (for a worker without it): no operator, no tensor
    assert len(pickle.dumps(job)) < image.nbytes + 16384
    assert _tensors_in(job) == []


def test_a_click_brings_back_only_the_mask_and_the_last_points_arrays(started):
    prepared(started)
    points, labels = np.array([[10.0, 10.0], [40.0, 30.0], [60.0, 20.0]]), np.array([0, 1, 0])
    result = gpu.segment(started, "s/1", points, labels, None, FAST)
    assert result.last.markov_map is not None and result.last.score is not None
    predictor = started.store.get("s/1")
    full = predictor.predict(points, labels)
    assert np.array_equal(result.mask, full.mask) and np.array_equal(result.last.markov_map, full.points[-1].markov_map)


def test_the_exact_preset_is_the_default_with_cuda_and_the_fast_one_without(monkeypatch):
    # The budget is given: its default would ask the (patched, absent) GPU for its memory.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert serving.Options(budget_bytes=2**30).config == M2N2Config()
    assert serving.Options(budget_bytes=2**30, preset="fast").config == M2N2Config.fast()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    # and on a CPU a smaller working copy: the upsampling's cost grows with the side's fourth power
    assert serving.Options(budget_bytes=2**30).config == M2N2Config.fast(max_side=640)
    assert serving.Options(budget_bytes=2**30, preset="exact").config == M2N2Config(max_side=640)
    with pytest.raises(InputError, match="exact, fast"):
        serving.Options(budget_bytes=2**30, preset="faithful")
    assert serving.Options(budget_bytes=2**30, max_side=800).config.max_side == 800


def _tensors_in(obj, seen=None):
    """Every torch tensor reachable from ``obj`` (dataclasses, containers)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return []
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in _tensors_in(v, seen)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in _tensors_in(v, seen)]
    if hasattr(obj, "__dict__"):
        return [t for v in vars(obj).values() for t in _tensors_in(v, seen)]
    return []


@pytest.mark.parametrize("torch_stages", [False, True], ids=["numpy-stages", "device-stages"])
def test_only_numpy_arrays_cross_the_boundary_and_the_device_state_stays(started, monkeypatch, torch_stages):
    # On ZeroGPU the results are pickled out of the GPU worker: a tensor there would be a
    # device tensor leaving it. The device path (as on CUDA, here with CPU tensors) must bring
    # back numpy arrays only, and keep the operator and the cached maps in the worker's store.
    import pickle
    from m2n2 import predictor as predictor_module
    original = predictor_module.M2N2Predictor.__init__

    def with_stages(self, *args, **kwargs):
        original(self, *args, **{**kwargs, "torch_stages": torch_stages})

    monkeypatch.setattr(predictor_module.M2N2Predictor, "__init__", with_stages)
    _, truth = square_image()
    prepared(started, config=M2N2Config())
    predictor = started.store.get("s/1")
    operator = predictor.operator.transposed.data_ptr()
    points, labels = [centre_of(truth)], [1]
    for k in range(3):
        result = gpu.segment(started, "s/1", np.array(points), np.array(labels), None, M2N2Config())
        assert _tensors_in(result) == [] and isinstance(result.mask, np.ndarray)
        assert isinstance(result.last.markov_map, np.ndarray) and isinstance(result.last.score, np.ndarray)
        assert len(pickle.dumps(result)) < 64 * result.mask.size  # mask, one map and its curves
        points.append((5.0 + 10 * k, 5.0))
        labels.append(0)
    assert iou(result.mask, truth) > 0.8
    assert predictor.operator.transposed.data_ptr() == operator and predictor.cached_points == 3
    cached = next(iter(predictor._maps.values())).markov_map
    assert isinstance(cached, torch.Tensor) == torch_stages  # device-path maps stay on the device


def test_the_budget_counts_the_sessions_own_arrays(started):
    prepared(started, "s/1")
    prepared(started, "t/1")
    one, two = started.store.get("s/1"), started.store.get("t/1")
    for predictor in (one, two):  # their sizes grow until the background preparation has finished
        predictor.wait_prepared()
    size = tensor_bytes(one)
    store = PredictorStore(budget_bytes=int(2.5 * size))
    store.put("s/1", one)
    store.put("t/1", two)
    assert len(store) == 2
    # A session's image and masks cannot be set aside: the older prepared image makes room.
    store.note_session("u", size)
    assert "s/1" not in store and "t/1" in store and store.session_bytes == size
    store.forget_session("u")
    assert store.session_bytes == 0
    store.put("s/1", one)
    assert len(store) == 2



def test_a_preparation_first_makes_room_for_what_it_will_hold(started):
    prepared(started, "s/1")
    one = started.store.get("s/1")
    one.wait_prepared()  # the leap and table are added in the background: the size counts them
    size = tensor_bytes(one)
    store = PredictorStore(budget_bytes=3 * size)
    store.put("s/1", one)
    store.put("t/1", one)
    store.reserve(size)                                 # fits beside both
    assert len(store) == 2
    store.reserve(2 * size)                             # does not: the least recently used goes
    assert "s/1" not in store and "t/1" in store
    store.reserve(4 * size)                             # even the last one goes for a preparation
    assert len(store) == 0


def test_a_reservation_is_held_until_its_preparation_ends(started):
    prepared(started, "s/1")
    one = started.store.get("s/1")
    one.wait_prepared()  # the leap and table are added in the background: the size counts them
    size = tensor_bytes(one)
    store = PredictorStore(budget_bytes=3 * size)
    with store.reserving(size):
        with store.reserving(size):                     # a second preparation sees the first one's room
            assert store.reserved_bytes == 2 * size
            store.put("s/1", one)                       # fits: 3 sizes
            store.put("t/1", one)                       # does not: s/1 goes, the running preparations stay
            assert "s/1" not in store and "t/1" in store
        assert store.reserved_bytes == size
    assert store.reserved_bytes == 0
    store.put("s/1", one)
    store.put("u/1", one)
    assert len(store) == 3                              # the room is free again
    with pytest.raises(RuntimeError):
        with store.reserving(size):
            raise RuntimeError("the preparation failed")
    assert store.reserved_bytes == 0


def test_the_stateless_api_is_counted_while_it_runs(started, monkeypatch):
    seen = []
    reserving = started.store.reserving

    def recording(nbytes):
        seen.append(nbytes)
        return reserving(nbytes)

    monkeypatch.setattr(started.store, "reserving", recording)
    image, truth = square_image()
    gpu.segment_image(started, image, np.array([centre_of(truth)]), np.array([1]), 16, FAST)
    assert seen and seen[0] > 0 and started.store.reserved_bytes == 0


def test_preparation_bytes_grow_with_r_and_the_table():
    from m2n2 import M2N2Config
    from m2n2.studio.serving import preparation_bytes
    fast, exact = M2N2Config.fast(max_side=640), M2N2Config(max_side=640)
    assert preparation_bytes(480, 640, 64, exact) == 3 * 64 ** 4 * 4
    assert preparation_bytes(480, 640, 64, fast) == 4 * 64 ** 4 * 4 + 2 * 480 * 640 * 256  # with the leap
    assert preparation_bytes(4800, 6400, 64, fast) == preparation_bytes(480, 640, 64, fast)  # the working copy
    assert preparation_bytes(480, 640, 32, exact) == preparation_bytes(480, 640, 64, exact) // 16
    leaping = exact.replace(markov_leap=fast.markov_leap)
    assert preparation_bytes(480, 640, 64, leaping) == preparation_bytes(480, 640, 64, exact) + 64 ** 4 * 4
