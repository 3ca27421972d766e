"""Fixtures shared by several test modules."""

import pytest
import torch
from PIL import Image

from synthetic import square_image


@pytest.fixture
def square_file(tmp_path):
    """The test square saved as a PNG: (path, ground-truth mask)."""
    image, truth = square_image()
    path = tmp_path / "square.png"
    Image.fromarray(image).save(path)
    return str(path), truth


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module's tests (use with ``pytestmark = pytest.mark.usefixtures``).

    Tiny models' operations are too small to gain from threads, and on a busy machine OpenMP's
    spin-waiting made test_backbone_sd2.py take 92 s with 2 threads against 9 s with 1.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
