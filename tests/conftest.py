"""Fixtures shared by several test modules."""

import pytest
from PIL import Image

from synthetic import square_image


@pytest.fixture
def square_file(tmp_path):
    """The test square saved as a PNG: (path, ground-truth mask)."""
    image, truth = square_image()
    path = tmp_path / "square.png"
    Image.fromarray(image).save(path)
    return str(path), truth
