"""A public demo's limits: refused before any work, one log line, separate queues, a memory budget."""

import json
import logging
import socket

import gradio as gr
import numpy as np
import pytest
from PIL import Image
from synthetic import CountingBackbone, centre_of, iou, square_image, select_event as select

import app
from m2n2 import InputError, M2N2Config
from m2n2.prompts import check_clicks
from m2n2.studio import gpu, limits, serving
from m2n2.studio.handlers import Handlers
from m2n2.studio.serving import PredictorStore

OPTIONS = app.Options(backbone="color", resolution=16, max_resolution=32, max_points=3, max_side=256)
DEMO, HANDLERS = app.build(OPTIONS, serving.start(OPTIONS, CountingBackbone))
STATE = HANDLERS.ui.state
FOREGROUND = 1  # the label the "Next click is" switch gives


@pytest.fixture
def handlers():
    return Handlers(serving.start(OPTIONS, CountingBackbone), HANDLERS.ui, app.EXAMPLES)


def attention_runs(handlers) -> int:
    return handlers.serving.backbones.get(16).calls


def test_parse_bytes_reads_units_and_refuses_nonsense():
    assert limits.parse_bytes("512MiB") == 512 * 2**20
    assert limits.parse_bytes("2g") == 2 * 2**30 and limits.parse_bytes("1.5GB") == 1_500_000_000
    assert limits.parse_bytes(4096) == 4096
    for bad in ("lots", "12 parsecs", "0", "-3GiB"):
        with pytest.raises(ValueError):
            limits.parse_bytes(bad)


def test_default_budget_is_a_share_of_the_host():
    budget = limits.default_memory_budget(cuda=False)
    assert 0 < budget <= limits.host_memory_bytes() // 4 + 1


def test_on_zerogpu_the_budget_covers_the_gpu_slice_without_touching_cuda(monkeypatch):
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    monkeypatch.setattr(limits, "host_memory_bytes", lambda: 2**40)
    monkeypatch.setattr(limits.torch.cuda, "get_device_properties", lambda *a: pytest.fail("touched CUDA"))
    monkeypatch.setenv("ZEROGPU_CUDA_TOTAL_MEMORY", str(10 * 2**30))
    assert limits.default_memory_budget() == int(0.4 * 10 * 2**30)
    monkeypatch.delenv("ZEROGPU_CUDA_TOTAL_MEMORY")
    assert limits.default_memory_budget() == int(0.4 * limits.ZEROGPU_MEMORY)  # spaces' default slice
    monkeypatch.setattr(limits, "host_memory_bytes", lambda: 2**30)
    assert limits.default_memory_budget() == 2**30 // 4                          # and the host's rule


def test_check_clicks_refuses_too_many_and_outside_points():
    # The app's limits are the library's check (m2n2.prompts), with the server's count.
    check_clicks([[0, 0], [79, 59]], (60, 80), max_clicks=2)
    with pytest.raises(InputError, match="3 clicks is more than the 2"):
        check_clicks([[1, 1]] * 3, (60, 80), max_clicks=2)
    with pytest.raises(InputError, match=r"click 2 at \(x=80, y=3\) is outside the 80 x 60 image"):
        check_clicks([[1, 1], [80, 3]], (60, 80))
    with pytest.raises(InputError, match="NaN or infinite"):
        check_clicks([[np.nan, 1]], (60, 80))


def test_resolutions_offered_stop_at_the_devices_maximum():
    assert limits.default_max_resolution(cuda=False) == 64 and limits.default_max_resolution(cuda=True) == 128
    assert OPTIONS.resolutions == [16, 32]
    assert app.Options(resolution=64, max_resolution=128).resolutions == [32, 48, 64, 96, 128]
    assert app.Options(resolution=96, max_resolution=64).highest_resolution == 96    # an explicit R is allowed


def test_deadline_stops_between_stages():
    limits.Deadline(None).check("anything")
    deadline = limits.Deadline(1e-9)
    with pytest.raises(limits.JobTooLong, match="stopped after .* before point 6"):
        deadline.check("point 6")


def test_api_refuses_too_many_points_before_any_attention(handlers, square_file, caplog):
    before = attention_runs(handlers)
    with caplog.at_level(logging.INFO, "m2n2.studio"), pytest.raises(gr.Error, match="4 clicks is more than the 3"):
        handlers.api.segment(square_file[0], json.dumps([[1, 1, 1]] * 4))
    assert attention_runs(handlers) == before
    lines = [r for r in caplog.records if "user error" in r.getMessage()]
    assert len(lines) == 1 and lines[0].exc_info is None and "/segment" in lines[0].getMessage()


def test_api_refuses_outside_points_before_any_attention(handlers, square_file):
    before = attention_runs(handlers)
    with pytest.raises(gr.Error, match="outside the 80 x 60 image") as raised:
        handlers.api.segment(square_file[0], "[[10, 10, 1], [500, 2, 0]]")
    assert attention_runs(handlers) == before
    assert raised.value.print_exception is False                       # no traceback in the server log


def test_api_still_segments_within_the_limits(handlers, square_file):
    path, truth = square_file
    mask, summary = handlers.api.segment(path, json.dumps([[*centre_of(truth), 1], [3, 3, 0], [76, 56, 0]]))
    assert iou(mask > 0, truth) > 0.8 and len(summary["points"]) == 3


def test_api_work_stops_at_its_time_bound(handlers):
    image, truth = square_image()
    points = np.array([centre_of(truth)] * 2 + [(3.0 + i, 3.0) for i in range(10)])
    labels = np.array([1, 1] + [0] * 10)
    with pytest.raises(gr.Error, match="stopped after") as raised:
        gpu.segment_image(handlers.serving, image, points, labels, 16, M2N2Config.fast(), seconds=1e-9)
    assert raised.value.print_exception is False
    prediction, _ = gpu.segment_image(handlers.serving, image, points, labels, 16, M2N2Config.fast(), seconds=600)
    assert len(prediction.points) == 12 and prediction.timings["markov"] > 0   # staged maps are counted


def test_staged_api_work_gives_the_same_mask_as_one_call(handlers):
    image, truth = square_image()
    points = np.array([centre_of(truth), (3.0, 3.0), (70.0, 50.0), (30.0, 25.0), (5.0, 50.0), (60.0, 8.0),
                       (33.0, 28.0)])
    labels = np.array([1, 0, 0, 1, 0, 0, 1])
    staged, _ = gpu.segment_image(handlers.serving, image, points, labels, 16, M2N2Config.fast(), seconds=600)
    from m2n2 import M2N2Predictor
    predictor = M2N2Predictor(handlers.serving.backbones.get(16), M2N2Config.fast())
    predictor.set_image(image)
    np.testing.assert_array_equal(staged.mask, predictor.predict(points, labels).mask)


@pytest.fixture
def loaded(handlers, square_file):
    session = handlers.images.set_image({"path": square_file[0]}, None)[STATE]
    # The image's background preparation done: a warning raised while another thread is inside
    # warnings.catch_warnings (not thread-safe) could escape pytest.warns.
    handlers.serving.store.get(session.key).wait_prepared()
    return session, square_file[1]


def test_clicks_per_image_are_bounded_with_a_message(handlers, loaded):
    session, truth = loaded
    for x in (30, 32, 34):
        session = handlers.clicks.click(session, FOREGROUND, select(x, 25))[STATE]
    with pytest.warns(UserWarning, match="3 clicks, the most one may have.*undo or reset"):
        out = handlers.clicks.click(session, FOREGROUND, select(36, 25))
    # Nothing computed or committed; the status is drawn again (the page's marker goes as the event ends).
    ui = HANDLERS.ui
    assert set(out) == {STATE, ui.status} and len(out[STATE].clicks) == 3
    assert "3 clicks" in out[ui.status] and "waiting" not in out[ui.status]


def test_settings_refuse_a_resolution_above_the_maximum_before_any_work(handlers, loaded):
    session, _ = loaded
    before = attention_runs(handlers)
    with pytest.warns(UserWarning, match="at most R = 32"):
        out = handlers.settings.apply_settings(session, 0.65, 0.3, True, 64)
    assert out[STATE].resolution == 16 and attention_runs(handlers) == before


def test_an_evicted_session_keeps_its_clicks_and_is_prepared_again_with_a_message(handlers, square_file, capsys):
    path, truth = square_file
    handlers.serving.store.budget_bytes = 1                       # room for one prepared image only
    first = handlers.images.set_image({"path": path}, None)[STATE]
    first = handlers.clicks.click(first, FOREGROUND, select(*centre_of(truth)))[STATE]
    second = handlers.images.set_image({"path": path}, None)[STATE]
    assert first.key not in handlers.serving.store and second.key in handlers.serving.store
    capsys.readouterr()
    out = handlers.clicks.click(first, FOREGROUND, select(10, 10))
    said = capsys.readouterr().out                                # gr.Info outside a request: printed
    assert "set aside to make room" in said and "clicks were kept" in said
    assert len(out[STATE].clicks) == 2 and first.key in handlers.serving.store


def test_a_result_for_a_replaced_image_is_not_committed(handlers, loaded, monkeypatch):
    session, truth = loaded
    segment = gpu.segment

    def new_image_meanwhile(*args):
        result = segment(*args)
        session.version += 1                                      # what a new image in its own queue does
        return result

    monkeypatch.setattr(gpu, "segment", new_image_meanwhile)
    with pytest.warns(UserWarning, match="new image arrived"):
        out = handlers.clicks.click(session, FOREGROUND, select(*centre_of(truth)))
    assert out[STATE].clicks == [] and out[STATE].shown is None


def test_store_evicts_to_the_budget_and_logs_each(caplog):
    started = serving.start(OPTIONS, CountingBackbone)
    sizes = []
    store = PredictorStore(budget_bytes=10**12)
    for key in ("a/1", "b/1", "c/1"):
        gpu.prepare(started, key, square_image()[0], 16, M2N2Config.fast())
        started.store.get(key).wait_prepared()  # its size once the background part is in
        store.put(key, started.store.get(key))
        sizes.append(store.bytes)
    store.budget_bytes = sizes[1] + 1                             # two fit, three do not
    with caplog.at_level(logging.INFO, "m2n2.studio"):
        store.update_size("c/1")
    assert "a/1" not in store and "b/1" in store and "c/1" in store and store.bytes <= store.budget_bytes
    assert sum("set aside" in r.getMessage() for r in caplog.records) == 1


def test_heavy_work_clicks_and_the_api_have_separate_queues():
    queues = {fn.name: fn.concurrency_id for fn in DEMO.fns.values()}
    assert queues["click_only"] == queues["undo"] == queues["override"] == queues["new_object"] == "click"
    assert queues["set_image"] == queues["load_example"] == queues["apply_settings"] == "image"
    assert queues["load_recipe"] == queues["open_link"] == "image"  # both prepare an image
    assert queues["segment"] == queues["segment_recipe"] == "api"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_uploads_over_the_size_limit_are_refused(tmp_path):
    from gradio_client import Client, handle_file
    options = app.Options(backbone="color", resolution=16, max_file_size="2kb")
    demo, _ = app.build(options, serving.start(options, CountingBackbone))
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                max_file_size=options.max_file_size)
    try:
        big = tmp_path / "big.png"
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(big)
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        with pytest.raises(Exception, match="(?i)size"):                # the client reads the limit
            client.predict(handle_file(str(big)), "[[1, 1, 1]]", api_name="/segment")
        import httpx                                                   # and the server enforces it
        with open(big, "rb") as file:
            answer = httpx.post(f"http://127.0.0.1:{port}/gradio_api/upload", files={"files": file})
        assert answer.status_code == 413
    finally:
        demo.close()
