"""Finding a learned backbone's weights: a local folder, the Hugging Face cache, then the Hub.

Every learned backbone (Stable Diffusion 2 and 1, DINOv2) loads through :meth:`Weights.load`, so
they all fail the same way when the weights cannot be had: within seconds (the Hub is probed with
a short timeout instead of letting ``from_pretrained`` retry for tens of seconds), with a one-line
``summary`` for the app's status line and details saying what was tried and how to fix it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from ..errors import BackboneUnavailable

# Seconds the Hub probe may take before the Hub counts as unreachable.
HUB_PROBE_TIMEOUT = 3.0

Parts = TypeVar("Parts")


class WeightsUnavailable(BackboneUnavailable):
    """A backbone's weights cannot be loaded; ``summary`` is a short cause for one-line UI messages."""

    def __init__(self, summary: str, details: str):
        super().__init__(f"{summary}\n{details}")
        self.summary = summary


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` forbids asking the Hub."""
    value = os.environ.get("HF_HUB_OFFLINE", "")
    if value.upper() in ("1", "ON", "YES", "TRUE"):
        return True
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(constants.HF_HUB_OFFLINE)


def looks_like_path(model: str) -> bool:
    """True for strings that cannot be a Hub id (``owner/name`` or ``name``)."""
    return (Path(model).expanduser().exists() or model.startswith((".", "~", "/"))
            or model.count("/") > 1 or "\\" in model)


def probe_hub(model: str) -> str | None:
    """Ask the Hub about ``model`` with a short timeout; the problem as text, or None if fine."""
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


@dataclass(frozen=True)
class Weights:
    """Where one kind of backbone finds its weights, and what to tell the user when it cannot.

    Parameters
    ----------
    title : str
        The model's name in messages, e.g. ``"Stable Diffusion 2"``.
    default_model : str
        Hub id used when neither ``model=`` nor the environment variable names one.
    env : str
        Environment variable that overrides the default model.
    folder : str
        What a local copy must look like (for the fix hint).
    packages : tuple of str
        Modules the loader imports (checked first, for a clear message).
    """

    title: str
    default_model: str
    env: str
    folder: str
    packages: tuple[str, ...] = ("diffusers", "transformers")

    def model(self, model: str | None = None) -> str:
        """``model``, else ``$env``, else :attr:`default_model`."""
        return str(model or os.environ.get(self.env) or self.default_model)

    def fix_hint(self) -> str:
        return ("To fix: download the weights while online "
                f"(`huggingface-cli download {self.default_model}`), or point {self.env} (or model=...) "
                f"at a local copy of {self.folder}, or use the colour-affinity fallback (backbone 'color').")

    def unavailable(self, summary: str, details: str) -> WeightsUnavailable:
        """The error for a model that loaded but is not what this backbone needs."""
        return WeightsUnavailable(summary, f"{details} {self.fix_hint()}")

    def load(self, model: str, load_parts: Callable[[str, bool], Parts]) -> Parts:
        """``load_parts(source, local_files_only)`` from a folder, the cache, then the Hub.

        Raises
        ------
        WeightsUnavailable
            Within seconds, saying what was tried and how to fix it.
        """
        self._check_packages()
        if looks_like_path(model):
            folder = Path(model).expanduser()
            if not folder.is_dir():
                raise WeightsUnavailable(f"{self.title} model folder {folder} does not exist",
                                         f"Tried the local folder {folder.resolve()}. " + self.fix_hint())
            try:
                return load_parts(str(folder), True)
            except Exception as error:
                raise WeightsUnavailable(
                    f"{self.title} model folder {folder} is incomplete or broken",
                    f"Loading {folder.resolve()} failed: {type(error).__name__}: {error}. "
                    + self.fix_hint()) from error

        from huggingface_hub import constants

        offline = hub_offline()
        tried = [f"the Hugging Face cache ({constants.HF_HUB_CACHE})"]
        try:
            return load_parts(model, True)
        except Exception as cache_error:
            if offline:
                problem = "HF_HUB_OFFLINE is set, so the Hub was not asked"
            else:
                tried.append("the Hub")
                problem = probe_hub(model)
            if problem is not None:
                summary = (f"{self.title} weights not available offline ({model})"
                           if offline or "unreachable" in problem
                           else f"{self.title} weights not available ({problem})")
                raise WeightsUnavailable(summary, (
                    f"Tried {' and '.join(tried)} for {model}: not in the cache "
                    f"({type(cache_error).__name__}); {problem}. " + self.fix_hint()
                )) from cache_error
        try:
            return load_parts(model, False)
        except Exception as error:
            raise WeightsUnavailable(
                f"downloading {self.title} ({model}) failed",
                f"Tried the cache and the Hub for {model}: {type(error).__name__}: {error}. "
                + self.fix_hint()) from error

    def _check_packages(self) -> None:
        import importlib

        for package in self.packages:
            try:
                importlib.import_module(package)
            except ImportError as error:
                raise WeightsUnavailable(
                    f"{'/'.join(self.packages)} are not installed",
                    f"{self.title} needs them ({error}). To fix: `pip install {' '.join(self.packages)}"
                    " accelerate opencv-python-headless`, or use the colour-affinity fallback "
                    "(backbone 'color').") from error
