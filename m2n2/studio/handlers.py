"""The app's event handlers: plain methods returning dicts keyed by component (testable without a browser).

Each handler validates its input, calls the GPU boundary (:mod:`m2n2.studio.gpu`) with plain
arguments, and only then commits the result to the session, so a failure leaves the session
exactly as it was. Errors the user caused become a warning toast and change nothing else.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np

from ..errors import M2N2Error
from ..geometry import Geometry
from ..image import read_image
from . import gpu, views
from .api import parse_points, summarize
from .examples import ExampleCache
from .limits import check_points, log_user_error
from .priority import click_running, run_heavy
from .serving import Serving, end_session, export_dir, tensor_bytes
from .session import Click, Session, Shown
from .sharing import SharingHandlers

FOREGROUND, BACKGROUND = "Foreground (green)", "Background (red)"


@dataclass
class UI:
    """The components the handlers update (built by ``app.py``)."""

    state: object
    image: object
    heatmap: object
    scores: object
    mask_button: object
    cutout_button: object
    threshold: object
    automatic: object
    status: object
    mask_file: object = None
    cutout_file: object = None
    # Several objects and sharing (m2n2.studio.sharing); None where an app leaves them out.
    objects: object = None
    recipe_text: object = None
    link: object = None
    instances_file: object = None
    coco_file: object = None
    recipe_file: object = None
    original: object = None  # hidden: the uploaded file, so that a deep link carries the image

    @property
    def outputs(self) -> list:
        """Every component a full update touches (the files are written only when asked for)."""
        return [self.state, self.image, self.heatmap, self.scores, self.mask_button, self.cutout_button,
                self.threshold, self.automatic, self.status] + [
                    c for c in (self.objects, self.recipe_text, self.link) if c is not None]


class Handlers(SharingHandlers):
    """Event handlers of one app (objects, recipes, exports and links: :class:`SharingHandlers`).

    Parameters
    ----------
    serving : Serving
        The process's options, backbones and prepared images (:func:`m2n2.studio.serving.start`).
    ui : UI
        The components the returned dicts are keyed by.
    examples : list of str
        Paths of the example images, in the order the app lists them.
    """

    def __init__(self, serving: Serving, ui: UI, examples: list[str] = ()):
        self.serving, self.ui, self.examples = serving, ui, list(examples)
        self.options = serving.options
        self._example_cache: ExampleCache | None = None
        self.example_keeping: threading.Thread | None = None  # the latest example being kept (tests join it)

    @property
    def example_cache(self) -> ExampleCache | None:
        """Prepared examples shared by the sessions (with the current store); None on ZeroGPU,
        whose predictors live in its workers."""
        if os.environ.get("SPACES_ZERO_GPU"):
            return None
        if self._example_cache is None or self._example_cache.store is not self.serving.store:
            self._example_cache = ExampleCache(self.serving.store)
        return self._example_cache

    # ------------------------------------------------------------------ helpers
    def new_session(self) -> Session:
        """An empty session (no image yet) with the app's settings."""
        return Session(self.options.attention_resolution, self.options.config)

    def status(self, session: Session | None) -> str:
        """The status line for ``session`` (None: a new visitor)."""
        session = session or self.new_session()
        backbones = self.serving.backbones
        if not backbones.is_loaded(session.resolution):
            return views.status_line(backbone=None, resolution=session.resolution)
        backbone = backbones.get(session.resolution)
        shown = session.shown
        return views.status_line(
            backbone=backbone.description, resolution=session.resolution, reason=getattr(backbone, "reason", None),
            image_seconds=session.image_seconds if session.has_image else None, action=session.action,
            clicks=len(session.clicks) if session.has_image else None, pending=len(session.pending),
            mask_fraction=float(shown.mask.mean()) if shown is not None else None,
            threshold=(shown.threshold, shown.overridden) if shown is not None else None,
            memory_bytes=session.memory_bytes if session.has_image else None)

    def overlay(self, session: Session) -> np.ndarray | None:
        """The working copy with every object's mask and the current object's clicks (pending too)."""
        return self.overlay_objects(session)

    def render(self, session: Session, last=None) -> dict:
        """Every view of the session; ``last`` is the latest click's PointResult (None: no clicks)."""
        ui = self.ui
        # Every change of a session is drawn: count its arrays against the memory budget here.
        self.serving.store.note_session(session.id, tensor_bytes(session))
        clicked = last is not None and session.shown is not None
        out = {ui.state: session, ui.image: self.overlay(session), ui.heatmap: None, ui.scores: None,
               ui.status: self.status(session)}
        if clicked:
            point = session.geometry.original_to_display([(session.clicks[-1].x, session.clicks[-1].y)])[0]
            out[ui.heatmap] = views.heatmap_figure(last.markov_map, tuple(point), last.label)
            out[ui.scores] = views.score_figure(last, len(session.clicks))
        out[ui.mask_button] = gr.Button(interactive=clicked)
        out[ui.cutout_button] = gr.Button(interactive=clicked)
        # Shown to the slider's step (0.001); the status line and the plot give the exact value.
        out[ui.threshold] = gr.Slider(value=round(session.shown.threshold, 3) if clicked else 0.5, interactive=clicked)
        out[ui.automatic] = gr.Button(interactive=clicked and session.shown.overridden)
        out.update(self.render_objects(session, out))
        return out

    def rejected(self, session: Session | None, message: str, restore_image: bool = False) -> dict:
        """Warn and change nothing (but show the session's image again over a rejected upload)."""
        log_user_error("the app", message)
        gr.Warning(message)
        out = {self.ui.state: session}
        if restore_image:
            out[self.ui.image] = self.overlay(session) if session is not None else None
        return out

    def _track(self, session: Session, request) -> None:
        if request is not None:
            self.serving.live.track(request.session_hash, session.id)

    def _segment(self, session: Session, clicks: list[Click], threshold: float | None, config=None):
        """Segment ``clicks`` on the session's prepared image (preparing it again if the store lost it)."""
        config = config or session.config
        points = np.array([(c.x, c.y) for c in clicks], dtype=np.float64).reshape(-1, 2)
        labels = np.array([c.label for c in clicks], dtype=np.int64)
        with click_running():  # the preparation of other users' images waits meanwhile
            # The session's copy goes along: a GPU process without the prepared image (evicted for
            # memory, or a fresh ZeroGPU worker) prepares it again within this call.
            result = gpu.segment(session.key, points, labels, threshold, config, session.image, session.resolution)
        if result.prepared is not None:
            gr.Info(f"Your image's attention was computed again ({result.prepared.seconds:.1f} s): it had been "
                    "set aside to make room for other visitors, or a new GPU process took over. Your clicks "
                    "were kept.")
        return result

    def _apply(self, session: Session, clicks: list[Click], threshold: float | None, action: str,
               config=None) -> dict:
        """Segment, then commit clicks, override, settings and the result to the session."""
        start, key = time.perf_counter(), session.key
        try:
            result = self._segment(session, clicks, threshold, config) if clicks else None
        except gr.Error as error:
            return self.rejected(session, error.message)
        if session.key != key:  # a new image (its own queue) was committed meanwhile: this result is stale
            return self.rejected(session, "A new image arrived while this was computed; click on it again.")
        session.clicks, session.threshold = clicks, threshold
        if config is not None:
            session.config = config
        session.action = (action, time.perf_counter() - start)
        if result is None:
            session.shown = None
            return self.render(session)
        session.shown = Shown(result.mask, float(result.last.threshold), bool(result.last.overridden))
        session.memory_bytes = result.memory_bytes
        return self.render(session, result.last)

    @staticmethod
    def _usable(session: Session | None) -> bool:
        return session is not None and session.has_image

    # ------------------------------------------------------------------ image
    def _prepare(self, key: str, array: np.ndarray, session: Session, example: str | None) -> gpu.Prepared:
        """Prepare ``array`` under ``key``: a copy of the kept example when there is one, else
        from scratch (an example is then kept for the next choice, off this request)."""
        cache, store = self.example_cache, self.serving.store
        if example is None or cache is None:
            return run_heavy(gpu.prepare, key, array, session.resolution, session.config)
        start = time.perf_counter()
        predictor = cache.lend(example, session.resolution, session.config)
        if predictor is not None:
            store.put(key, predictor)
            return gpu.Prepared(tuple(predictor.image.shape[:2]), predictor.resolution,
                                time.perf_counter() - start, store.update_size(key))
        prepared = run_heavy(gpu.prepare, key, array, session.resolution, session.config)
        if key in store:
            self.example_keeping = threading.Thread(
                target=cache.keep, args=(example, session.resolution, session.config, store.get(key)),
                name="m2n2-keep-example", daemon=True)
            self.example_keeping.start()
        return prepared

    def prepare_examples(self) -> dict[str, float]:
        """Prepare and keep every example at the app's settings (at start, on a background thread);
        returns each one's seconds."""
        if self.example_cache is None:
            return {}
        resolution, config, store = self.options.attention_resolution, self.options.config, self.serving.store

        def prepared(path):
            key = f"example-start/{Path(path).stem}"
            try:
                run_heavy(gpu.prepare, key, read_image(path), resolution, config)
                return store.get(key)
            finally:
                store.drop_session("example-start")

        start = time.perf_counter()
        seconds = self.example_cache.prepare(self.examples, resolution, config, prepared)
        logging.getLogger(__name__).info(
            "prepared %d of %d examples at start in %.1f s (%.0f MiB kept)", len(seconds), len(self.examples),
            time.perf_counter() - start, self.example_cache.bytes / 2**20)
        return seconds

    def set_image(self, image, session: Session | None, request: gr.Request = None, progress=gr.Progress(),
                  example: str | None = None):
        """A new image (a path, or an upload's raw payload): attention, operator, no clicks.

        ``example``: the path of the example chosen (its prepared copy is used when kept)."""
        session = session or self.new_session()
        path = image.get("path") if isinstance(image, dict) else image
        try:
            array = read_image(path)
        except M2N2Error as error:
            return self.rejected(session, f"This file cannot be used: {error}", restore_image=True)
        if not self.serving.backbones.is_loaded(session.resolution):
            progress(0.05, desc="Loading the model (first use only)…")
            try:
                self.serving.backbones.get(session.resolution)
            except M2N2Error as error:
                return self.rejected(session, f"The model cannot be loaded: {error}", restore_image=True)
        progress(0.3, desc="Extracting attention and preparing the operator…")
        key = session.next_key
        try:
            prepared = self._prepare(key, array, session, example)
        except gr.Error as error:
            return self.rejected(session, f"This image cannot be used: {error.message}", restore_image=True)
        progress(0.9, desc="Drawing…")
        session.set_image(array, prepared.working, prepared.resolution, prepared.seconds)
        session.source = str(path) if path else None
        session.memory_bytes = prepared.memory_bytes
        self._track(session, request)
        return self.render(session)

    def load_example(self, index: int, session: Session | None, request: gr.Request = None,
                     progress=gr.Progress()):
        """Example number ``index`` (of the examples the handlers were given)."""
        before = session.key if session is not None else None
        out = self.set_image(self.examples[index], session, request, progress, example=self.examples[index])
        if out[self.ui.state] is not None and out[self.ui.state].has_image and out[self.ui.state].key != before:
            out[self.ui.state].example = Path(self.examples[index]).stem
            out.update(self.render_objects(out[self.ui.state]))
        return out

    def clear(self, session: Session | None):
        """The image was removed (its x button): free its prepared state, keep the settings."""
        session = session or self.new_session()
        end_session(self.serving.store, session.id)
        session.forget_image()
        return self.render(session)

    # ------------------------------------------------------------------ clicks
    def mark(self, session: Session | None, mode: str, evt: gr.SelectData):
        """At once, before any computing: the click's marker on the image (it waits its turn)."""
        if not self._usable(session):
            return {}
        try:
            click = session.click_at(float(evt.index[0]), float(evt.index[1]), 1 if mode == FOREGROUND else 0)
        except M2N2Error:
            return {}
        session.pending.append(click)
        return {self.ui.state: session, self.ui.image: self.overlay(session), self.ui.status: self.status(session)}

    def click(self, session: Session | None, mode: str, evt: gr.SelectData, request: gr.Request = None):
        """A click on the image, labelled by the foreground/background switch; runs in arrival order."""
        if not self._usable(session):
            return self.rejected(session, "Upload an image or pick an example first, then click on it.")
        try:
            click = session.click_at(float(evt.index[0]), float(evt.index[1]), 1 if mode == FOREGROUND else 0)
        except M2N2Error as error:
            return self.rejected(session, str(error))
        if click in session.pending:
            session.pending.remove(click)
        if len(session.clicks) >= self.options.max_points:
            return self.rejected(session, f"This image has {len(session.clicks)} clicks, the most one may have "
                                          "(the evaluation protocol stops at 20): undo or reset to go on.")
        self._track(session, request)
        return self._apply(session, [*session.clicks, click], None, "click")

    def undo(self, session: Session | None, request: gr.Request = None):
        """Remove the latest click (and any threshold override)."""
        if not self._usable(session):
            return self.rejected(session, "Upload an image or pick an example first, then click on it.")
        if not session.clicks:
            return self.rejected(session, "There is no click to undo.")
        return self._apply(session, session.clicks[:-1], None, "undo")

    def reset(self, session: Session | None):
        """Remove every click (no GPU work: the image and its operator stay)."""
        if not self._usable(session):
            return self.rejected(session, "There is nothing to reset yet.")
        session.clear_clicks()
        return self.render(session)

    # ------------------------------------------------------------------ threshold
    def override(self, session: Session | None, threshold: float, request: gr.Request = None):
        """The slider (released, or its box confirmed with Enter): use ``threshold`` for the latest click."""
        if not self._usable(session):
            return self.rejected(session, "Upload an image or pick an example first, then click on it.")
        try:
            threshold = session.check_override(float(threshold))
        except (M2N2Error, TypeError, ValueError) as error:
            return self.rejected(session, str(error))
        if session.shown is not None and session.threshold == threshold:
            return {}  # the same value again (e.g. the slider set by the app itself): nothing to do
        return self._apply(session, session.clicks, threshold, "threshold")

    def automatic(self, session: Session | None, request: gr.Request = None):
        """Back to the latest click's adaptive threshold."""
        if not self._usable(session):
            return self.rejected(session, "Upload an image or pick an example first, then click on it.")
        try:
            session.check_override(None)
        except M2N2Error as error:
            return self.rejected(session, str(error))
        return self._apply(session, session.clicks, None, "threshold")

    # ------------------------------------------------------------------ downloads
    def _export(self, session: Session | None, which: str) -> dict:
        if not self._usable(session) or session.shown is None:
            return self.rejected(session, "Click on the image first: there is no mask to download yet.")
        mask_path, cutout_path = views.write_exports(export_dir(session.id), session.image, session.shown.mask,
                                                     which=which)
        if which == "mask":
            return {self.ui.mask_file: gr.DownloadButton(value=mask_path)}
        return {self.ui.cutout_file: gr.DownloadButton(value=cutout_path)}

    def export_mask(self, session: Session | None) -> dict:
        """Write the mask (PNG, original size, 0/255) now that it is asked for."""
        return self._export(session, "mask")

    def export_cutout(self, session: Session | None) -> dict:
        """Write the RGBA cut-out (original size) now that it is asked for."""
        return self._export(session, "cutout")

    # ------------------------------------------------------------------ settings
    def apply_settings(self, session: Session | None, temperature: float, rho: float, flood_fill: bool,
                       resolution: int, request: gr.Request = None, progress=gr.Progress()):
        """Advanced settings: recompute what they change, for this session only."""
        session = session or self.new_session()
        try:
            config = session.config.replace(temperature=float(temperature), rho=float(rho),
                                            flood_fill=bool(flood_fill))
        except M2N2Error as error:
            return self.rejected(session, str(error))
        resolution = int(resolution)
        if not 2 <= resolution <= self.options.highest_resolution:  # checked here too: the wiring is no guard
            return self.rejected(session, f"R = {resolution} is not offered here: this server computes at most "
                                          f"R = {self.options.highest_resolution} (choose one of "
                                          f"{', '.join(map(str, self.options.resolutions))}).")
        if not session.has_image:
            session.config, session.resolution = config, resolution
            gr.Info("Settings saved: they apply to the next image.")
            return {self.ui.state: session, self.ui.status: self.status(session)}
        if resolution != session.resolution:
            if not self.serving.backbones.is_loaded(resolution):
                progress(0.05, desc="Loading the model at the new resolution (first use only)…")
            progress(0.3, desc=f"Recomputing the attention at R = {resolution}…")
            start = time.perf_counter()
            key = session.next_key
            try:
                prepared = run_heavy(gpu.prepare, key, session.image, resolution, config)
            except gr.Error as error:
                return self.rejected(session, error.message)
            session.version += 1
            session.resolution = prepared.resolution
            session.geometry = Geometry(session.geometry.original, prepared.working, prepared.resolution)
            session.image_seconds = time.perf_counter() - start
        elif config.operator_fields != session.config.operator_fields:
            progress(0.3, desc="Preparing the operator again (new temperature)…")
        return self._apply(session, session.clicks, session.threshold, "settings", config)

    # ------------------------------------------------------------------ API and lifecycle
    def segment(self, image: str, points: str):
        """Stateless API: an image file and a JSON list of points -> mask PNG and a summary.

        ``points`` is a JSON list of ``[x, y, label]`` or ``{"x", "y", "label"}`` in original
        pixels (x column, y row; label 1 foreground, 0 background).
        """
        try:
            xy, labels = parse_points(points)
            check_points(xy, (np.inf, np.inf), self.options.max_points)  # the count, before decoding
            array = read_image(image)
            check_points(xy, array.shape, self.options.max_points)       # the positions, before any attention
        except M2N2Error as error:
            log_user_error("/segment", str(error))
            raise gpu.user_error(error) from None
        try:
            prediction, description = run_heavy(gpu.segment_image, array, xy, labels,
                                                self.options.attention_resolution, self.options.config,
                                                self.options.job_seconds)
        except gr.Error as error:
            log_user_error("/segment", error.message)
            raise
        return prediction.mask.astype("uint8") * 255, summarize(prediction, description)

    def end_session(self, request: gr.Request):
        """The tab was closed: free its prepared image now rather than when ``gr.State`` expires."""
        self.serving.live.end(request.session_hash)

    def release_state(self, session: Session | None) -> None:
        """``gr.State`` delete callback: the session expired or its tab is gone."""
        if session is not None:
            end_session(self.serving.store, session.id)
            self.serving.store.forget_session(session.id)
