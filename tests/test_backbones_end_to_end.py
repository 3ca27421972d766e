"""Every learned backbone through the paths a user takes, on a CPU: the library's ``set_image`` and
``predict``, the segment CLI and the app's ``/segment`` API.

The tests build tiny random-weight models with the real architectures (no weights are ever
downloaded), so what they check is that the paths run and give a mask, not its quality.
"""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from m2n2 import segment  # noqa: E402
from m2n2.backbones import load  # noqa: E402
from m2n2.predictor import M2N2Predictor  # noqa: E402

from tiny_dinov2 import build_tiny_dinov2  # noqa: E402
from tiny_sd1 import build_tiny_sd1  # noqa: E402
from tiny_sd2 import build_tiny_sd2  # noqa: E402

RESOLUTION = 16
#: backbone name -> builder of a tiny model folder with its real architecture
TINY_MODELS = {"sd2": build_tiny_sd2, "sd1": build_tiny_sd1, "dinov2": build_tiny_dinov2}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", params=sorted(TINY_MODELS))
def tiny(request, tmp_path_factory):
    """(backbone name, folder of its tiny model)."""
    name = request.param
    return name, str(TINY_MODELS[name](tmp_path_factory.mktemp(f"tiny-{name}")))


@pytest.fixture
def image_file(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    image[20:70, 30:90] = (200, 40, 40)
    path = tmp_path / "image.png"
    Image.fromarray(image).save(path)
    return str(path), image


def test_set_image_and_predict_on_the_cpu(tiny, image_file):
    name, folder = tiny
    backbone = load(name, model=folder, resolution=RESOLUTION)
    assert backbone.device.type == "cpu"
    predictor = M2N2Predictor(backbone)
    predictor.set_image(image_file[1])
    prediction = predictor.predict([(60, 45)], [1])
    assert prediction.mask.shape == (90, 120)
    assert prediction.mask[45, 60]  # the clicked pixel is always in its own mask
    # A second image replaces the first through the same path.
    predictor.set_image(image_file[1][::-1].copy())
    assert predictor.predict([(10, 10)], [0]).mask.shape == (90, 120)


def test_the_attention_is_an_ordinary_tensor(tiny, image_file):
    name, folder = tiny
    attention = load(name, model=folder, resolution=RESOLUTION).extract(image_file[1])
    assert not attention.is_inference()
    attention.div_(2)  # a caller may write into what it was given


def test_segment_cli_on_the_cpu(tiny, image_file, tmp_path, capsys):
    name, folder = tiny
    out = tmp_path / "out"
    code = segment.main([image_file[0], "--points", "[[60, 45, 1]]", "--backbone", name, "--model", folder,
                         "--resolution", str(RESOLUTION), "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    mask = np.asarray(Image.open(out / "mask_1.png")) > 127
    assert mask.shape == (90, 120) and mask[45, 60]
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["backbone"]["key"] == name
    # The recipe replays on the same backbone (the one it names) to the same mask.
    again = tmp_path / "again"
    assert segment.main([image_file[0], "--recipe", str(out / "recipe.json"), "--model", folder,
                         "--out", str(again)]) == 0
    assert recipe["objects"] and np.array_equal(np.asarray(Image.open(again / "mask_1.png")) > 127, mask)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_app_segment_api_on_the_cpu(tiny, image_file):
    from gradio_client import Client, handle_file

    import app
    from m2n2.studio import serving

    name, folder = tiny
    options = app.Options(backbone=name, model=folder, resolution=RESOLUTION)
    demo, _ = app.build(options, serving.start(options))
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        mask_file, summary = client.predict(image=handle_file(image_file[0]), points="[[60, 45, 1]]",
                                            api_name="/segment")
    finally:
        demo.close()
    mask = np.asarray(Image.open(mask_file)) > 127
    assert mask.shape == (90, 120) and mask[45, 60]
    assert summary["backbone"] == load(name, model=folder, resolution=RESOLUTION).description
