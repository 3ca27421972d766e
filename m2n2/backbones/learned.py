"""What the learned backbones (Stable Diffusion 2 and 1, DINOv2) share: options, the model cache,
the input resize and the attention's final normalisation.

A subclass names its weights (:class:`~m2n2.backbones.weights.Weights`), its input scale (the
image becomes ``scale * R`` pixels square) and its default R, and implements ``_load`` (once per
model, device and dtype in a process) and ``_attention`` (the N x N probabilities of one resized
image, accumulated in fp32).
"""

from __future__ import annotations

import threading

import numpy as np
import torch

from ..config import default_resolution
from ..errors import InputError
from ..image import as_rgb_uint8
from .capture import DEFAULT_CHUNK_BYTES
from .resize import resize_area
from .weights import Weights

_MODELS: dict[tuple, object] = {}
_MODELS_LOCK = threading.Lock()


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def parse_dtype(dtype: torch.dtype | str | None, device: torch.device) -> torch.dtype:
    """``dtype`` as a torch float type; default fp16 on CUDA, fp32 elsewhere."""
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype.replace("fp", "float"), None)
    if dtype is None:
        dtype = torch.float16 if device.type == "cuda" else torch.float32
    if dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise InputError(f"dtype must be float16, bfloat16 or float32, got {dtype}")
    return dtype


def normalised_rows(attention: torch.Tensor, resolution: int, what: str) -> torch.Tensor:
    """(N, N) accumulated probabilities -> (R, R, R, R) with every row summing to 1 (in place)."""
    if not torch.isfinite(attention).all():
        raise RuntimeError(f"{what} produced non-finite attention")
    attention.div_(attention.sum(dim=1, keepdim=True))
    return attention.view(resolution, resolution, resolution, resolution)


class LearnedBackbone:
    """Base of the backbones whose attention comes from a learned model.

    Parameters
    ----------
    model : str, optional
        Hub id or local folder; default the environment variable of :attr:`weights`, else its
        default model.
    resolution : int, optional
        R. Default :attr:`cuda_resolution` on CUDA when the subclass sets one, else
        :func:`m2n2.config.default_resolution` (128 on CUDA, 64 elsewhere).
    device : str or torch.device, optional
        Default CUDA when available, else CPU.
    dtype : torch.dtype or str, optional
        Default fp16 on CUDA, fp32 elsewhere.
    chunk_bytes : int
        Working memory of one chunk of attention probabilities.

    Raises
    ------
    BackboneUnavailable
        The weights cannot be had (offline, no cache, wrong id, incomplete folder...).
    InputError
        A bad option.

    Notes
    -----
    ``extract`` resizes the image it is given straight to ``input_scale * R`` pixels square with
    OpenCV's INTER_AREA, as the authors do; so it wants the original image, not the predictor's
    working copy (``wants_original``). It returns the attention on its device, fp32, shape
    (R, R, R, R), ``[i, j]`` being the map of query cell (i, j) in row-major token order.
    """

    name = "learned backbone"
    key = ""
    weights: Weights
    input_scale = 8
    #: The default R on CUDA where the authors used another (None: :func:`~m2n2.config.default_resolution`).
    cuda_resolution: int | None = None
    #: The predictor hands this backbone the original image (it resizes it itself).
    wants_original = True

    def __init__(self, model: str | None = None, resolution: int | None = None,
                 device: str | torch.device | None = None,
                 dtype: torch.dtype | str | None = None,
                 chunk_bytes: int = DEFAULT_CHUNK_BYTES):
        self.device = torch.device(device) if device is not None else default_device()
        default = default_resolution(self.device)
        if self.device.type == "cuda" and self.cuda_resolution:
            default = self.cuda_resolution
        self.resolution = int(resolution or default)
        if self.resolution < 2:
            raise InputError(f"resolution must be >= 2, got {resolution}")
        self.dtype = parse_dtype(dtype, self.device)
        self.model = self.weights.model(model)
        self.reason = None
        self.chunk_bytes = int(chunk_bytes)
        cache_key = (type(self)._load, self.model, str(self.device), str(self.dtype))
        with _MODELS_LOCK:
            if cache_key not in _MODELS:
                _MODELS[cache_key] = self._load(self.model, self.device, self.dtype)
        self._loaded = _MODELS[cache_key]
        precision = str(self.dtype).removeprefix("torch.").replace("float", "fp")
        self.description = (f"{self.name} ({self.model}), R = {self.resolution}, "
                            f"{self.device.type} {precision}")

    def _load(self, model: str, device: torch.device, dtype: torch.dtype):
        raise NotImplementedError

    def _attention(self, rgb: np.ndarray) -> torch.Tensor:
        raise NotImplementedError

    def extract(self, image) -> torch.Tensor:
        """Attention tensor of ``image`` (anything :func:`m2n2.image.as_rgb_uint8` accepts)."""
        rgb = resize_area(as_rgb_uint8(image), self.input_scale * self.resolution)
        return self._attention(rgb)
