"""Floating-point modes of the CPU for M2N2's stages."""

from __future__ import annotations

import contextlib
import threading

import torch


_SUBNORMAL = 1e-40  # below fp32's smallest normal, 1.2e-38


def flushing_denormals() -> bool:
    """Whether this thread's CPU flushes subnormal floats to zero now (FTZ/DAZ).

    torch can set the mode (``torch.set_flush_denormal``) but not read it, so a subnormal is
    multiplied by one: it comes back as 0 exactly when the mode is on.
    """
    return float(torch.tensor([_SUBNORMAL], dtype=torch.float32) * 1.0) == 0.0


@contextlib.contextmanager
def denormals_flushed(enabled: bool = True):
    """Flush subnormal floats to zero (FTZ/DAZ) on this thread's CPU while the block runs.

    Subnormals (magnitudes below 1.2e-38 in fp32) are common in M2N2: about 7 % of a sharpened,
    balanced operator's entries and the far cells of early Markov states. x86 CPUs compute with
    them more slowly than with normal numbers; GPUs do not slow down. Flushing changes values
    only below 1.2e-38, far under the Markov threshold's resolution. The mode found on entry is
    restored on exit (IEEE, torch's default, unless the caller had set another), so blocks nest.

    Parameters
    ----------
    enabled : bool
        False runs the block with IEEE arithmetic (subnormals kept), for exact results.
    """
    previous = flushing_denormals()
    if previous == enabled or not torch.set_flush_denormal(enabled):  # False: the CPU lacks FTZ/DAZ
        yield
        return
    try:
        yield
    finally:
        torch.set_flush_denormal(previous)


_fp32_lock = threading.Lock()
_fp32_users = 0
_fp32_saved: tuple | None = None


def _tf32_settings() -> list[tuple[object, str, object]]:
    """(object, attribute, full-fp32 value) of the TF32 switches: torch's per-backend
    ``fp32_precision`` where it has them (torch >= 2.9: reading the legacy ``allow_tf32`` raises
    once a caller has used them), else the legacy flags."""
    cuda, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    if hasattr(cudnn, "conv") and hasattr(cudnn.conv, "fp32_precision"):
        return [(cuda, "fp32_precision", "ieee"), (cudnn.conv, "fp32_precision", "ieee")]
    return [(cuda, "allow_tf32", False), (cudnn, "allow_tf32", False)]


@contextlib.contextmanager
def full_fp32():
    """No TF32 in CUDA's fp32 matrix products and convolutions while the block runs.

    TF32 keeps 10 of fp32's 23 mantissa bits of the inputs. PyTorch allows it by default for
    cuDNN's convolutions (torch 2.13: ``torch.backends.cudnn.conv.fp32_precision`` is "tf32",
    ``torch.backends.cudnn.allow_tf32`` True; matrix products default to full fp32, but a
    caller may have allowed TF32), and the Sobel gradient is an fp32 convolution whose values
    are quantised to 1/1024 steps: a TF32 kernel could move the edge score, hence the threshold,
    against the CPU. Every stage whose values feed a threshold, a flood fill or a score runs
    inside this guard (:class:`~m2n2.M2N2Predictor`'s preparation and ``predict``, and the
    Sobel gradient itself).

    The settings are process-wide: the first of overlapping blocks (threads) sets full fp32 and
    the last one restores what was set before. On a CPU they change nothing.
    """
    global _fp32_users, _fp32_saved
    with _fp32_lock:
        if _fp32_users == 0:
            settings = _tf32_settings()
            _fp32_saved = [(owner, name, getattr(owner, name)) for owner, name, _ in settings]
            for owner, name, value in settings:
                setattr(owner, name, value)
        _fp32_users += 1
    try:
        yield
    finally:
        with _fp32_lock:
            _fp32_users -= 1
            if _fp32_users == 0:
                for owner, name, value in _fp32_saved:
                    setattr(owner, name, value)
