"""A new image: an upload, an example (prepared once and lent: :mod:`.examples`), or none.

Preparing an image (attention, operator) is the app's heavy work: it runs on a low-priority
thread that yields to clicks (:mod:`.priority`), and the session takes the image only once it is
prepared, so a refused file leaves the session as it was.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import gradio as gr
import numpy as np

from ..config import M2N2Config
from ..errors import M2N2Error
from ..image import check_aspect, read_image
from . import gpu
from .examples import ExampleCache, example_config
from .page import Page
from .priority import run_heavy
from .serving import end_session
from .session import Session


class ImageHandlers:
    """Upload, example and clear.

    Parameters
    ----------
    page : Page
        The app's serving state, components and views.
    """

    def __init__(self, page: Page):
        self.page = page
        self._example_cache: ExampleCache | None = None
        self.example_keeping: threading.Thread | None = None  # the latest example being kept (tests join it)

    @property
    def example_cache(self) -> ExampleCache | None:
        """Prepared examples shared by the sessions (with the current store); None on ZeroGPU,
        whose predictors live in its workers."""
        if os.environ.get("SPACES_ZERO_GPU"):
            return None
        store = self.page.serving.store
        if self._example_cache is None or self._example_cache.store is not store:
            self._example_cache = ExampleCache(store)
        return self._example_cache

    def prepare(self, key: str, array: np.ndarray, resolution: int, config: M2N2Config,
                example: str | None = None) -> gpu.Prepared:
        """Prepare ``array`` under ``key`` at R = ``resolution`` with ``config``: a copy of the kept
        example (the path ``example``) when there is one, else from scratch (an example is then
        kept for the next choice, off this request)."""
        serving, cache = self.page.serving, self.example_cache
        if example is None or cache is None:
            return run_heavy(gpu.prepare, serving, key, array, resolution, config)
        start = time.perf_counter()
        predictor = cache.lend(example, resolution, config)
        if predictor is not None:
            serving.store.put(key, predictor)
            return gpu.Prepared(tuple(predictor.image.shape[:2]), predictor.resolution,
                                time.perf_counter() - start, serving.store.update_size(key))
        prepared = run_heavy(gpu.prepare, serving, key, array, resolution, config)
        if key in serving.store:
            self.example_keeping = threading.Thread(
                target=cache.keep, args=(example, resolution, config, serving.store.get(key)),
                name="m2n2-keep-example", daemon=True)
            self.example_keeping.start()
        return prepared

    def prepare_examples(self) -> dict[str, float]:
        """Prepare and keep every example at the app's settings (at start, on a background thread);
        returns each one's seconds."""
        cache = self.example_cache
        if cache is None:
            return {}
        serving = self.page.serving
        options, store, examples = serving.options, serving.store, self.page.examples
        resolution, config = options.attention_resolution, example_config(options.config)

        def prepared(path):
            key = f"example-start/{Path(path).stem}"
            try:
                run_heavy(gpu.prepare, serving, key, read_image(path), resolution, config)
                return store.get(key)
            finally:
                store.drop_session("example-start")

        start = time.perf_counter()
        seconds = cache.prepare(examples, resolution, config, prepared)
        logging.getLogger(__name__).info(
            "prepared %d of %d examples at start in %.1f s (%.0f MiB kept)", len(seconds), len(examples),
            time.perf_counter() - start, cache.bytes / 2**20)
        return seconds

    def set_image(self, image, session: Session | None, request: gr.Request = None, progress=gr.Progress(),
                  example: str | None = None):
        """A new image (a path, or an upload's raw payload): attention, operator, no clicks.

        ``example``: the path of the example chosen (its prepared copy is used when kept)."""
        page = self.page
        session = session or page.new_session()
        path = image.get("path") if isinstance(image, dict) else image
        try:
            array = read_image(path)
            check_aspect(*array.shape[:2])  # before any attention: a thin strip could not be clicked on
        except M2N2Error as error:
            return page.rejected(session, f"This file cannot be used: {error}", restore_image=True)
        backbones = page.serving.backbones
        if not backbones.is_loaded(session.resolution):
            progress(0.05, desc="Loading the model (first use only)…")
            try:
                backbones.get(session.resolution)
            except M2N2Error as error:
                return page.rejected(session, f"The model cannot be loaded: {error}", restore_image=True)
        progress(0.3, desc="Extracting attention and preparing the operator…")
        key = session.next_key
        # The preset's early maps for an upload, none for an example (kept prepared: .examples).
        config = session.config.replace(early_maps=page.options.config.early_maps)
        if example is not None:
            config = example_config(config)
        try:
            prepared = self.prepare(key, array, session.resolution, config, example)
        except gr.Error as error:
            return page.rejected(session, f"This image cannot be used: {error.message}", restore_image=True)
        progress(0.9, desc="Drawing…")
        session.set_image(array, prepared.working, prepared.resolution, prepared.seconds)
        session.config = config
        session.source = str(path) if path else None
        session.memory_bytes = prepared.memory_bytes
        page.track(session, request)
        return page.render(session)

    def load_example(self, index: int, session: Session | None, request: gr.Request = None,
                     progress=gr.Progress()):
        """Example number ``index`` (of the examples the page lists)."""
        page = self.page
        before = session.key if session is not None else None
        path = page.examples[index]
        out = self.set_image(path, session, request, progress, example=path)
        session = out[page.ui.state]
        if session is not None and session.has_image and session.key != before:
            session.example = Path(path).stem
            out.update(page.render_shared(session))
        return out

    def restore(self, session: Session | None):
        """The canvas emptied itself without a clear: Gradio refused a file in the browser (over the
        size limit: its own toast said so) and sent no upload. Show the session's picture again, so
        that it matches the plots and status (after a real clear, queued before this: nothing)."""
        page = self.page
        return {page.ui.image: page.overlay(session) if page.usable(session) else None}

    def clear(self, session: Session | None):
        """The image was removed (its x button): free its prepared state, keep the settings."""
        session = session or self.page.new_session()
        end_session(self.page.serving.store, session.id)
        session.forget_image()
        return self.page.render(session)
