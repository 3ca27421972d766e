"""What the serving process keeps for everyone: options, loaded backbones, prepared images, live tabs.

* :class:`Options`: how the app runs (the command line's flags).
* :class:`Backbones`: each backbone loaded once per process (Stable Diffusion 2 is gigabytes) and
  shared by every user, loaded on first use.
* :class:`PredictorStore`: each session's prepared image (an :class:`m2n2.M2N2Predictor` with
  its operator, left on the compute device between clicks), least recently used first out when
  the memory budget is exceeded. An evicted image is prepared again from the session's copy.
* :class:`LiveSessions`: the session of each browser tab, so closing a tab frees its image at once.
* :class:`Serving`: all of these, made by :func:`start` and handed to every GPU job
  (:mod:`m2n2.studio.gpu`) by the handlers.
"""

from __future__ import annotations

import ctypes
import hashlib
import hmac
import logging
import os
import secrets
import shutil
import threading
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from gradio.utils import get_upload_folder

from ..backbones import load
from ..config import MAX_CLICKS, PRESETS, M2N2Config, default_resolution
from ..errors import InputError, NotReadyError
from ..geometry import Geometry
from ..predictor import M2N2Predictor
from . import limits

log = logging.getLogger("m2n2.studio")

@dataclass(frozen=True)
class Options:
    """How the app runs (the command line's flags)."""

    backbone: str = "auto"
    model: str | None = None
    resolution: int | None = None
    max_side: int | None = None  # None: 1024 with CUDA, 640 on a CPU (see ``working_side``)
    concurrency: int = 1
    preset: str | None = None  # "exact" or "fast"; None: exact with CUDA, fast on a CPU (see ``config``)
    budget_bytes: int = field(default_factory=lambda: limits.default_memory_budget())  # from the host
    max_resolution: int | None = None
    max_points: int = MAX_CLICKS  # points per API request and clicks per image
    max_file_size: str = limits.MAX_FILE_SIZE
    job_seconds: float = limits.JOB_SECONDS
    threads: int | None = None  # torch's CPU threads per job, set by start() (None: torch's default)
    # Threads of a click's Markov products and upsampling, and of an image's background preparation
    # (m2n2.threads.using_threads): the other core is otherwise idle or runs heavy work that waits at
    # its pause points while a click runs.
    click_threads: int = field(default_factory=lambda: min(2, os.cpu_count() or 1))

    def __post_init__(self):
        if self.preset is not None and self.preset not in PRESETS:
            raise InputError(f"unknown preset {self.preset!r}; the presets are {', '.join(PRESETS)}")

    @property
    def attention_resolution(self) -> int:
        """R: as given, else :func:`m2n2.config.default_resolution` (128 with CUDA, 64 on a CPU)."""
        return self.resolution or default_resolution()

    @property
    def working_side(self) -> int:
        """The longest side images are segmented at: ``max_side``, else 1024 with CUDA and 640
        on a CPU, where the upsampling's window grows with the side squared (docs/performance.md)."""
        return self.max_side or (1024 if torch.cuda.is_available() else 640)

    @property
    def highest_resolution(self) -> int:
        """The largest R users may choose: ``max_resolution``, else what the device does in
        reasonable time (:func:`~m2n2.studio.limits.default_max_resolution`), never below R."""
        return max(self.max_resolution or limits.default_max_resolution(), self.attention_resolution)

    @property
    def resolutions(self) -> list[int]:
        """The resolutions the settings offer."""
        return limits.offered_resolutions(self.highest_resolution, self.attention_resolution)

    @property
    def config(self) -> M2N2Config:
        """Settings of new sessions and of the API, with the working-copy cap.

        ``preset`` names them; by default the exact one with CUDA (dense upsampling and the fp32
        operator cost little on a GPU, where every per-click stage runs) and the fast one on a
        CPU (a click in well under a second there).
        """
        preset = self.preset or ("exact" if torch.cuda.is_available() else "fast")
        return M2N2Config.preset(preset, max_side=self.working_side)


class Backbones:
    """Backbones loaded on first use, one per attention resolution, shared by every session.

    Parameters
    ----------
    factory : callable
        ``factory(resolution) -> Backbone``; called at most once per resolution.
    """

    def __init__(self, factory: Callable[[int], object]):
        self.factory = factory
        self.loaded: dict[int, object] = {}
        self.lock = threading.Lock()

    @classmethod
    def from_options(cls, options: Options) -> "Backbones":
        """Backbones of the kind ``options`` names (``--backbone``, ``--model``)."""
        extra = {"model": options.model} if options.model else {}  # the colour backbone takes no model
        return cls(lambda resolution: load(options.backbone, resolution=resolution, **extra))

    def get(self, resolution: int):
        """The backbone at ``resolution``, loading it first if needed (and logging a fallback's reason)."""
        resolution = int(resolution)
        with self.lock:
            if resolution not in self.loaded:
                backbone = self.factory(resolution)
                if getattr(backbone, "reason", None):
                    log.warning("M2N2 Studio fell back: %s", backbone.reason)
                log.info("loaded %s", backbone.description)
                self.loaded[resolution] = backbone
            return self.loaded[resolution]

    def is_loaded(self, resolution: int) -> bool:
        """Whether :meth:`get` returns at once (no model to load first)."""
        return int(resolution) in self.loaded


def tensor_bytes(obj, _seen: set | None = None) -> int:
    """Bytes of every numpy array and torch tensor reachable from ``obj`` (each counted once).

    Follows dicts, lists, tuples, sets and objects' ``__dict__``; a tensor counts its whole
    storage, so views are not double counted; an object's ``opaque_nbytes()``, where it has
    one, adds memory held outside tensors (FBGEMM's packed operator). This is the memory an
    object pins, not counting small Python objects. Everything reachable counts: a predictor
    measured with its backbone counts the model too (the store keeps none, see
    :meth:`PredictorStore.put`).
    """
    seen = set() if _seen is None else _seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        storage = obj.untyped_storage()
        key = ("storage", storage.data_ptr(), obj.device.type)
        if key in seen:
            return 0
        seen.add(key)
        return storage.nbytes()
    if isinstance(obj, np.ndarray):
        base = obj.base if isinstance(obj.base, np.ndarray) else None
        return tensor_bytes(base, seen) if base is not None else obj.nbytes
    if isinstance(obj, dict):
        return sum(tensor_bytes(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple, set, frozenset)):
        return sum(tensor_bytes(v, seen) for v in obj)
    if isinstance(obj, type):
        return 0
    if hasattr(obj, "__dict__"):
        opaque = obj.opaque_nbytes() if callable(getattr(obj, "opaque_nbytes", None)) else 0
        return opaque + sum(tensor_bytes(v, seen) for v in vars(obj).values())
    slots = [name for cls in type(obj).__mro__ for name in getattr(cls, "__slots__", ())]
    return sum(tensor_bytes(getattr(obj, name, None), seen) for name in slots)


class PredictorStore:
    """Prepared images by key, least recently used evicted first when over ``budget_bytes``.

    The budget covers the sessions' own arrays too (their images and masks, noted with
    :meth:`note_session`): they cannot be set aside, so the prepared images make room for them.
    The predictor that was used last is never evicted, so one image always fits.
    """

    def __init__(self, budget_bytes: int | None = None):
        self.budget_bytes = int(budget_bytes or limits.default_memory_budget())
        self._items: OrderedDict[str, tuple[M2N2Predictor, int]] = OrderedDict()
        self._sessions: dict[str, int] = {}
        self._reserved = 0  # bytes held by preparations under way (see reserving)
        self.ended = EndedSessions()  # what GPU processes are told to free (see end_session)
        self._lock = threading.Lock()

    def note_session(self, session_id: str, nbytes: int) -> None:
        """Count ``nbytes`` held by a session's state (image, masks) against the budget."""
        with self._lock:
            self._sessions[session_id] = int(nbytes)
            evicted = self._evict()
        if evicted:
            release_memory()

    def reserve(self, nbytes: int) -> None:
        """Make room for work about to hold ``nbytes`` (a preparation): set images aside until it fits."""
        with self._lock:
            evicted = self._evict(extra=int(nbytes), keep=0)
        if evicted:
            release_memory()

    @contextmanager
    def reserving(self, nbytes: int):
        """Hold room for ``nbytes`` while the block runs (a preparation, an API request).

        Unlike :meth:`reserve`, the room stays counted until the block ends, so concurrent
        preparations each see what the others will hold, not the same free room."""
        nbytes = int(nbytes)
        with self._lock:
            self._reserved += nbytes
            evicted = self._evict(keep=0)
        if evicted:
            release_memory()
        try:
            yield
        finally:
            with self._lock:
                self._reserved -= nbytes

    @property
    def reserved_bytes(self) -> int:
        """Bytes held for preparations under way."""
        with self._lock:
            return self._reserved

    def forget_session(self, session_id: str) -> None:
        """The session's state is gone (its ``gr.State`` expired): stop counting it."""
        with self._lock:
            self._sessions.pop(session_id, None)

    @property
    def session_bytes(self) -> int:
        """Bytes of the sessions' own arrays, as last noted."""
        with self._lock:
            return sum(self._sessions.values())

    def put(self, key: str, predictor: M2N2Predictor) -> None:
        """Keep ``predictor`` under ``key`` (replacing other images of the same session).

        The predictor must hold no backbone: the model is shared by every session and lent to a
        predictor for one call only (``m2n2.studio.gpu``), so it is neither kept nor counted here."""
        if getattr(predictor, "backbone", None) is not None:
            raise ValueError("the store keeps no backbone: set the predictor's backbone to None first")
        session = key.split("/")[0]
        with self._lock:
            freed = [k for k in self._items if k.split("/")[0] == session]
            for old in freed:
                del self._items[old]
            self._items[key] = (predictor, tensor_bytes(predictor))
            freed += self._evict()
        if freed:
            release_memory()

    def get(self, key: str) -> M2N2Predictor:
        """The predictor under ``key``; raises :class:`StoreMiss` when it is not (or no longer) here."""
        with self._lock:
            if key not in self._items:
                raise StoreMiss(key)
            self._items.move_to_end(key)
            return self._items[key][0]

    def update_size(self, key: str) -> int:
        """Measure again what ``key`` holds (its cached maps grow with clicks); return the bytes."""
        with self._lock:
            if key not in self._items:
                return 0
            predictor = self._items[key][0]
            self._items[key] = (predictor, tensor_bytes(predictor))
            evicted = self._evict()
            size = self._items[key][1] if key in self._items else 0
        if evicted:
            release_memory()
        return size

    def drop_session(self, session_id: str) -> bool:
        """Forget every image of ``session_id``; returns whether there was one."""
        with self._lock:
            keys = [k for k in self._items if k.split("/")[0] == session_id]
            for key in keys:
                del self._items[key]
        if keys:
            release_memory()
        return bool(keys)

    def _evict(self, extra: int = 0, keep: int = 1) -> list[str]:
        """Drop least recently used images until the rest (and ``extra``) fit the budget, keeping
        the ``keep`` most recent; returns their keys."""
        evicted = []
        total = sum(size for _, size in self._items.values()) + sum(self._sessions.values()) + self._reserved + extra
        while len(self._items) > keep and total > self.budget_bytes:
            key, (_, size) = self._items.popitem(last=False)
            total -= size
            evicted.append(key)
            log.info("set aside the prepared image of session %s (%.0f MiB) for the memory budget: "
                     "%d images hold %.0f of %.0f MiB", key, size / 2**20, len(self._items),
                     total / 2**20, self.budget_bytes / 2**20)
        return evicted

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    @property
    def bytes(self) -> int:
        """Bytes held by every prepared image together."""
        with self._lock:
            return sum(size for _, size in self._items.values())


def preparation_bytes(height: int, width: int, resolution: int, config: M2N2Config) -> int:
    """About the most memory preparing an image holds at once: the attention and the operator
    being built (N x N fp32 each), the prepared operator (4 bytes per entry: fp32, or fp16 with
    FBGEMM's packed copy), with ``markov_leap`` its power (4 bytes per entry again: measured
    +45 MiB of peak at R = 64) and, with ``jbu_table``, the table and its build (256 bytes per
    working pixel each)."""
    working = Geometry.for_image(height, width, config.max_side).working
    entries = resolution ** 4
    table = working[0] * working[1] * 256 if config.jbu_table else 0
    leap = entries * 4 if config.markov_leap > 1 else 0
    return 3 * entries * 4 + leap + 2 * table


def release_memory() -> None:
    """Give freed memory back to the system (glibc keeps freed heap pages otherwise; a few ms).

    An evicted operator's large blocks go back at once, but the many mid-sized arrays of its
    maps and tables stay in the allocator's arenas, and the process's memory would not shrink.
    """
    if torch.cuda.is_initialized():  # never the first CUDA call (ZeroGPU's web process must not make one)
        torch.cuda.empty_cache()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


class StoreMiss(NotReadyError):
    """The prepared image of a session is not in this process's store (evicted, or another worker)."""


#: Per-process secret that names the sessions' export folders (see :func:`export_dir`).
_EXPORT_SECRET = secrets.token_bytes(32)


def export_dir(session_id: str) -> str:
    """The folder of a session's downloadable files, inside Gradio's cache.

    Gradio serves every file of its cache to whoever has its URL, and a file offered from
    elsewhere is *copied* into the cache, where that copy outlives the session until Gradio's
    ``delete_cache`` sweeps it (an hour or two later). Written here, the offered file is the one
    served, so :func:`end_session` (the tab closed, or its state expired) deletes what was
    served too. The folder's name is a keyed hash of the session id, as unguessable as Gradio's
    own cache paths, and says nothing about the session.
    """
    name = hmac.new(_EXPORT_SECRET, session_id.encode(), hashlib.sha256).hexdigest()
    return os.path.join(get_upload_folder(), "m2n2-exports", name)


class EndedSessions:
    """The ids of the sessions ended lately, newest last (at most ``size``).

    On ZeroGPU the prepared images live in the GPU worker, not in the web process where a
    session ends: every GPU job carries this list, and the worker frees what it still holds of
    them (device memory included) before its work."""

    def __init__(self, size: int = 256):
        self._ids: deque[str] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, session_id: str) -> None:
        with self._lock:
            if session_id not in self._ids:
                self._ids.append(session_id)

    def recent(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(self._ids)


class LiveSessions:
    """The session id of each browser tab, so that closing the tab frees its image at once.

    ``gr.State`` keeps a closed tab's value for an hour (in case the user comes back); the app
    calls :meth:`end` from ``demo.unload`` to free the heavy part sooner.
    """

    def __init__(self, store: PredictorStore):
        self.store = store
        self._tabs: dict[str, str] = {}
        self._lock = threading.Lock()

    def track(self, tab: str, session_id: str) -> None:
        """Remember ``session_id`` as the session of browser tab ``tab``."""
        with self._lock:
            self._tabs[tab] = session_id

    def end(self, tab: str) -> bool:
        """Free the prepared image and files of ``tab``'s session; returns whether it had an image."""
        with self._lock:
            session_id = self._tabs.pop(tab, None)
        return session_id is not None and end_session(self.store, session_id)

    def __len__(self) -> int:
        with self._lock:
            return len(self._tabs)


def end_session(store: PredictorStore, session_id: str) -> bool:
    """Free a session's prepared image and its exported files; returns whether it had an image.

    The GPU processes free theirs at their next job (see :class:`EndedSessions`)."""
    shutil.rmtree(export_dir(session_id), ignore_errors=True)
    store.ended.add(session_id)
    return store.drop_session(session_id)


#: Every Serving of this process by its token; a GPU job names its Serving by token (see
#: :meth:`Serving.__reduce__`), so that a ZeroGPU worker, a fork of this process, finds its own copy.
_started: weakref.WeakValueDictionary[int, "Serving"] = weakref.WeakValueDictionary()


@dataclass(eq=False)
class Serving:
    """Everything one serving process shares between sessions (made by :func:`start`).

    It crosses a process boundary by reference: pickled, it is its token, and unpickled in a
    fork of the process that started it (a ZeroGPU worker), it is that fork's copy; the model,
    the store and the prepared images never cross."""

    options: Options
    backbones: Backbones
    store: PredictorStore
    live: LiveSessions

    def __post_init__(self):
        _started[id(self)] = self

    def __reduce__(self):
        return _find, (id(self),)


def _find(token: int) -> Serving:
    """The Serving pickled as ``token`` (see :meth:`Serving.__reduce__`)."""
    try:
        return _started[token]
    except KeyError:
        raise NotReadyError("this process has no such serving state: a GPU worker must be forked after "
                            "m2n2.studio.serving.start()") from None


def start(options: Options, factory: Callable[[int], object] | None = None) -> Serving:
    """Set up a serving state (backbones load lazily); returns it.

    ``factory(resolution) -> Backbone`` replaces the backbone ``options`` names (tests use it).
    """
    if options.threads:
        torch.set_num_threads(max(1, int(options.threads)))
    backbones = Backbones(factory) if factory is not None else Backbones.from_options(options)
    store = PredictorStore(options.budget_bytes)
    return Serving(options, backbones, store, LiveSessions(store))
