"""Reading image files: formats converted, bad files refused with a message a user understands."""

import re

import numpy as np
import pytest
from PIL import Image

from m2n2 import InputError
from m2n2.image import read_image, resize_mask
from synthetic import square_image


def test_resize_mask_keeps_the_shape_of_the_region():
    mask = np.zeros((10, 10), dtype=bool)
    mask[:5] = True
    small = resize_mask(mask, (4, 6))
    assert small.shape == (4, 6) and small[:2].all() and not small[2:].any()


def test_read_image_handles_gray_rgba_and_16_bit(tmp_path):
    gray = np.tile(np.arange(0, 250, 10, dtype=np.uint8), (10, 1))
    Image.fromarray(gray).save(tmp_path / "gray.png")
    rgba = np.zeros((10, 12, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 128
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    deep = (np.linspace(0, 65535, 12 * 10).reshape(10, 12)).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")

    out = read_image(tmp_path / "gray.png")
    assert out.shape == (10, 25, 3) and out.dtype == np.uint8 and (out[..., 0] == gray).all()
    out = read_image(tmp_path / "rgba.png")
    assert out.shape == (10, 12, 3) and tuple(out[0, 0]) == (255, 127, 127)
    out = read_image(tmp_path / "deep.png")
    assert out.dtype == np.uint8 and out[0, 0, 0] == 0 and out[-1, -1, 0] == 255


def test_read_image_rejects_garbage_with_a_clear_message(tmp_path):
    (tmp_path / "notes.png").write_text("this is not an image")
    with pytest.raises(InputError, match="not an image"):
        read_image(tmp_path / "notes.png")
    image, _ = square_image()
    Image.fromarray(image).save(tmp_path / "ok.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "ok.png").read_bytes()[:200])
    with pytest.raises(InputError, match="corrupt or truncated"):
        read_image(tmp_path / "cut.png")
    with pytest.raises(InputError, match="does not exist"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(InputError, match="no image"):
        read_image(None)


@pytest.mark.parametrize("height, width", [(100, 800), (800, 100), (2, 2), (60, 80), (100, 20000), (20000, 100),
                                           (100, 801), (3, 25)])
def test_an_image_more_than_eight_times_as_long_as_it_is_thick_is_refused(height, width):
    from m2n2.image import MAX_ASPECT, check_aspect
    fits = max(height, width) <= MAX_ASPECT * min(height, width)
    if fits:
        check_aspect(height, width)
        return
    with pytest.raises(InputError) as refused:
        check_aspect(height, width)
    message = str(refused.value)
    # The size, the limit and a crop that passes the check, on one line.
    assert f"{width} x {height} pixels" in message and f"the limit is {MAX_ASPECT} times" in message
    assert "\n" not in message
    crop = re.search(r"crop it to at most (\d+) x (\d+) pixels", message)
    assert crop, message
    check_aspect(int(crop.group(2)), int(crop.group(1)))
    assert int(crop.group(1)) <= width and int(crop.group(2)) <= height
