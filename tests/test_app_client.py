"""Integration: the app served on 127.0.0.1, its stateless /segment endpoint called with gradio_client."""

import json
import socket

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image
from synthetic import CountingBackbone, centre_of, iou

import app
from m2n2.studio import serving


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def client():
    options = app.Options(backbone="color", resolution=16)
    demo, _ = app.build(options, serving.start(options, CountingBackbone))
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield Client(f"http://127.0.0.1:{port}/", verbose=False)
    finally:
        demo.close()


def test_segment_endpoint_returns_mask_png_and_summary(client, square_file):
    path, truth = square_file
    x, y = centre_of(truth)
    mask_file, summary = client.predict(image=handle_file(path), points=json.dumps([[x, y, 1], [3, 3, 0]]),
                                        api_name="/segment")
    mask = Image.open(mask_file)
    assert mask.mode == "L" and mask.size == (80, 60)
    assert iou(np.asarray(mask) > 127, truth) > 0.8
    assert summary["mask_fraction"] == pytest.approx((np.asarray(mask) > 127).mean(), abs=1e-6)
    assert [p["label"] for p in summary["points"]] == [1, 0]
    assert summary["backbone"].startswith("colour-affinity fallback")


def test_segment_endpoint_reports_bad_input(client, square_file):
    with pytest.raises(AppError, match="label 0 or 1"):
        client.predict(handle_file(square_file[0]), "[[1, 2, 9]]", api_name="/segment")


def test_only_the_stateless_endpoints_are_public(client):
    assert list(client.view_api(print_info=False, return_format="dict")["named_endpoints"]) == ["/segment",
                                                                                     "/segment_recipe"]


def a_recipe(path: str, **changes) -> str:
    """A recipe of the image at ``path`` (one object), with ``changes`` made to its JSON."""
    from m2n2 import recipe as recipes
    image = np.asarray(Image.open(path).convert("RGB"))
    data = recipes.make(image, CountingBackbone(16), app.Options().config, [([(40, 30, 1)], None)]).to_dict()
    for where, value in changes.items():
        section, field = where.split("__")
        data[section][field] = value
    return json.dumps(data)


@pytest.mark.parametrize("spoil", ["not json", "image__sha256", "image__width", "backbone__name", "objects__0"])
def test_a_bad_recipe_is_one_log_line_and_no_traceback(client, square_file, caplog, capfd, spoil):
    path, _ = square_file
    text = {"not json": lambda: "{not json",
            "image__sha256": lambda: a_recipe(path, image__sha256="0" * 64),            # another image
            "image__width": lambda: a_recipe(path, image__width=float("inf")),
            "backbone__name": lambda: a_recipe(path, backbone__name="sd2"),             # another backbone
            "objects__0": lambda: a_recipe(path).replace("[40, 30, 1]", "[400, 30, 1]")}[spoil]()  # off the image
    capfd.readouterr()
    with caplog.at_level("INFO", logger="m2n2.studio"):
        with pytest.raises(AppError):
            client.predict(handle_file(path), text, api_name="/segment_recipe")
    said = [record.getMessage() for record in caplog.records if "/segment_recipe" in record.getMessage()]
    assert len(said) == 1 and "\n" not in said[0], said
    err = capfd.readouterr().err
    assert "Traceback" not in err, err
