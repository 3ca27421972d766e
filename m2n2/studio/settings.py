"""The advanced settings (temperature, rho, flood fill, R) of one session: recompute what they change.

A new R prepares the image again (attention and operator); a new temperature prepares the
operator again; rho and flood fill recompute only the Markov-maps. Before an image they are kept
for the next one.
"""

from __future__ import annotations

import time

import gradio as gr

from ..errors import M2N2Error
from . import gpu
from .clicks import ClickHandlers
from .page import WARNING_S, Page
from .priority import run_heavy
from .session import Session


class SettingsHandlers:
    """The "Apply settings" button.

    Parameters
    ----------
    page : Page
        The app's serving state, components and views.
    clicks : ClickHandlers
        Recomputes the current object with the new settings.
    """

    def __init__(self, page: Page, clicks: ClickHandlers):
        self.page, self.clicks = page, clicks

    def apply_settings(self, session: Session | None, temperature: float, rho: float, flood_fill: bool,
                       resolution: int, request: gr.Request = None, progress=gr.Progress()):
        """Advanced settings: recompute what they change, for this session only."""
        page = self.page
        options = page.options
        session = session or page.new_session()
        try:
            config = session.config.replace(temperature=float(temperature), rho=float(rho),
                                            flood_fill=bool(flood_fill))
        except M2N2Error as error:
            return page.rejected(session, str(error))
        resolution = int(resolution)
        if not 2 <= resolution <= options.highest_resolution:  # checked here too: the wiring is no guard
            return page.rejected(session, f"R = {resolution} is not offered here: this server computes at most "
                                          f"R = {options.highest_resolution} (choose one of "
                                          f"{', '.join(map(str, options.resolutions))}).")
        if not session.has_image:
            session.config, session.resolution = config, resolution
            gr.Info("Settings saved: they apply to the next image.", duration=WARNING_S)
            return {page.ui.state: session, page.ui.status: page.status(session)}
        # Honest progress: which of this change's steps runs (e.g. "0/2 steps") and what it does, not
        # a fixed percentage ("30 %" sat there for as long as the preparation took: it reports no steps).
        new_resolution = resolution != session.resolution
        steps = []
        if new_resolution:
            steps.append(f"Recomputing the attention at R = {resolution} (as long as a new image takes)…"
                         if page.serving.backbones.is_loaded(resolution) else
                         f"Loading the model (first use only) and recomputing the attention at R = {resolution}…")
        if session.clicks:
            steps.append("Preparing the operator again (new temperature) and segmenting the clicks again…"
                         if not new_resolution and config.operator_fields != session.config.operator_fields
                         else "Segmenting the clicks again…")
        if new_resolution:
            progress((0, len(steps)), desc=steps[0], unit="steps")
            start = time.perf_counter()
            key = session.next_key
            try:
                prepared = run_heavy(gpu.prepare, page.serving, key, session.image, resolution, config)
            except gr.Error as error:
                return page.rejected(session, error.message)
            session.set_resolution(prepared.working, prepared.resolution)
            session.image_seconds = time.perf_counter() - start
        if session.clicks:
            progress((len(steps) - 1, len(steps)), desc=steps[-1], unit="steps")
        return self.clicks.apply(session, session.clicks, session.threshold, "settings", config)
