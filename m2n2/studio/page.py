"""What every handler shares: the serving state, the components, and the page drawn from a session.

A :class:`Page` turns a :class:`~m2n2.studio.session.Session` into the dict of component
updates a handler returns (:meth:`Page.render`), warns without changing anything
(:meth:`Page.rejected`), and owns the session's lifecycle (a closed tab, an expired state). The
handlers of :mod:`.images`, :mod:`.clicks`, :mod:`.sharing`, :mod:`.settings` and :mod:`.api`
each hold the one page of their app.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import gradio as gr
import numpy as np

from .. import recipe as recipes
from ..prompts import link_text
from ..threads import abandoned, beside, joined, using_threads
from . import objects, views
from .limits import log_user_error
from .serving import Options, Serving, end_session, tensor_bytes
from .session import Session
from .ui import UI

#: Seconds a warning stays (Gradio's default, 10, kept it over the score plot longer than it takes to read).
WARNING_S = 6


def link_query(session: Session) -> str | None:
    """The query string (``?example=...&clicks=...``) that opens this example with these clicks."""
    if session.example is None:
        return None
    parts = [f"example={quote(session.example)}"]
    for _, obj in objects.finished(session):
        parts.append("clicks=" + quote(link_text(obj.clicks), safe=",;"))
    return "?" + "&".join(parts)


class Page:
    """The serving state, the components and the examples of one app, and the views of a session.

    Parameters
    ----------
    serving : Serving
        The process's options, backbones and prepared images (:func:`m2n2.studio.serving.start`).
    ui : UI
        The components the returned dicts are keyed by.
    examples : list of str
        Paths of the example images, in the order the app lists them.
    """

    def __init__(self, serving: Serving, ui: UI, examples=()):
        self.serving, self.ui, self.examples = serving, ui, list(examples)

    @property
    def options(self) -> Options:
        return self.serving.options

    def new_session(self) -> Session:
        """An empty session (no image yet) with the app's settings."""
        return Session(self.options.attention_resolution, self.options.config)

    @staticmethod
    def usable(session: Session | None) -> bool:
        """Whether ``session`` has an image to click on."""
        return session is not None and session.has_image

    def example_named(self, name: str | None) -> str | None:
        """The path of the example called ``name`` (its file's stem), or None."""
        return next((path for path in self.examples if Path(path).stem == name), None) if name else None

    def track(self, session: Session, request) -> None:
        """Remember the tab's session, so that closing the tab frees its image (:meth:`end_session`)."""
        if request is not None:
            self.serving.live.track(request.session_hash, session.id)

    # ------------------------------------------------------------------ views
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
            name=getattr(backbone, "name", None),
            image_seconds=session.image_seconds if session.has_image else None, action=session.action,
            clicks=len(session.clicks) if session.has_image else None,
            mask_fraction=float(shown.mask.mean()) if shown is not None else None,
            threshold=(shown.threshold, shown.overridden) if shown is not None else None,
            memory_bytes=session.memory_bytes if session.has_image else None)

    def overlay(self, session: Session) -> np.ndarray | None:
        """The working copy with every object in its colour, the current one outlined with its clicks
        (a waiting click's marker is the page's own: static/page.js)."""
        if not session.has_image:
            return None
        geometry = session.geometry
        clicks = session.clicks
        points = geometry.original_to_display([(c.x, c.y) for c in clicks]) if clicks else np.zeros((0, 2))
        others = [(obj.shown.mask, objects.colour(number)) for number, obj in objects.finished(session)
                  if number != session.active + 1]
        mask = session.shown.mask if session.shown is not None else None
        return views.overlay(session.display_image, mask, points, [c.label for c in clicks],
                             colour=objects.colour(session.active + 1), others=others)

    def render(self, session: Session, last=None, shared: bool = True) -> dict:
        """Every view of the session; ``last`` is the latest click's PointResult (None: no clicks).

        ``shared=False`` (a click's own event) leaves out the plots and the object list, recipe and
        link: :meth:`after_click` draws and sends them once the mask is shown (``session.plots``)."""
        ui = self.ui
        # Every change of a session is drawn: count its arrays against the memory budget here.
        self.serving.store.note_session(session.id, tensor_bytes(session))
        clicked = last is not None and session.shown is not None
        out = {ui.state: session, ui.image: None, ui.status: self.status(session)}
        session.plots = None
        if clicked:
            point = session.geometry.original_to_display([(session.clicks[-1].x, session.clicks[-1].y)])[0]
            plots = views.ClickPlots(last, tuple(point), len(session.clicks))
            if shared:
                # With a click's threads, the helper draws the plots while this thread draws the picture.
                with using_threads(self.options.click_threads):
                    pending = beside(plots)
                    try:
                        out[ui.image] = self.overlay(session)
                    except BaseException:
                        abandoned(pending)
                        raise
                    joined(pending, plots)
            else:  # off the mask's path: after_click draws them (15 ms of a core, 512 x 512)
                out[ui.image] = self.overlay(session)
            session.plots = plots
        else:
            out[ui.image] = self.overlay(session)
        out[ui.mask_button] = gr.Button(interactive=clicked)
        out[ui.cutout_button] = gr.Button(interactive=clicked)
        # Shown to the slider's step (0.001); the status line and the plot give the exact value.
        out[ui.threshold] = gr.Slider(value=round(session.shown.threshold, 3) if clicked else 0.5, interactive=clicked)
        out[ui.automatic] = gr.Button(interactive=clicked and session.shown.overridden)
        if shared:
            out.update(self.plot_views(session))
            out.update(self.render_shared(session, out))
        return out

    def plot_views(self, session: Session | None) -> dict:
        """The latest click's heatmap and score curve, drawn now if no event has yet (empty without one)."""
        plots = session.plots if session is not None else None
        heatmap, scores = plots() if plots is not None else (None, None)
        return {self.ui.heatmap: heatmap, self.ui.scores: scores}

    def render_shared(self, session: Session | None, rendered: dict | None = None) -> dict:
        """The object list, the recipe text (for deep links) and the example link of ``session``.

        ``rendered`` is the rest of the update (its buttons get their labels named)."""
        ui, out = self.ui, {}
        has = self.usable(session)
        # A deep link stores the buttons as last updated: name their labels, or they come back as "Run".
        for button in (ui.mask_button, ui.cutout_button, ui.automatic):
            update = (rendered or {}).get(button)
            # (inside an event Gradio keeps an update's arguments, not its attributes)
            args = getattr(update, "constructor_args", None) or {}
            if isinstance(update, gr.Button) and "interactive" in args:
                out[button] = gr.Button(value=button.value, interactive=args["interactive"])
        finished = has and bool(objects.finished(session))
        for button in ui.export_buttons:  # nothing to export before the first object (named: deep links)
            out[button] = gr.Button(value=button.value, interactive=finished)
        if ui.objects is not None:
            out[ui.objects] = gr.Radio(choices=objects.choices(session) if has else [],
                                       value=session.active + 1 if has else None)
        if ui.recipe_text is not None:
            # As a component (not a bare value), so that Gradio's deep link records it under its own id.
            out[ui.recipe_text] = gr.Textbox(value=self.recipe_of(session).to_json() if finished else "")
        if ui.link is not None:
            query = link_query(session) if finished else None
            out[ui.link] = gr.Markdown(
                value=f"Link to this example with these clicks: [{query}]({query})" if query else "")
        return out

    def after_click(self, session: Session | None) -> dict:
        """What follows a click's own event: its plots, then the object list, recipe box, example
        link and exports (a click's own event sends only what shows its mask: the page's picture
        and status come sooner without the plots' HTML, about 0.1 MB)."""
        out = self.plot_views(session)
        shared = self.render_shared(session) if session is not None else {}
        out.update({key: value for key, value in shared.items() if key in self.ui.share})
        return out

    def original_view(self, session: Session | None) -> dict:
        """The hidden copy of an uploaded image (None for an example, which a recipe names)."""
        has = self.usable(session) and not session.example
        return {self.ui.original: session.source if has else None}

    def recipe_of(self, session: Session) -> recipes.Recipe:
        """The recipe of the session's finished objects."""
        backbone = self.serving.backbones.get(session.resolution)
        done = [(obj.clicks, obj.threshold) for _, obj in objects.finished(session)]
        return recipes.make(session.image, backbone, session.config, done, session.example, session.image_sha256)

    def rejected(self, session: Session | None, message: str, restore_image: bool = False) -> dict:
        """Warn and change nothing (but show the session's image again over a rejected upload)."""
        log_user_error("the app", message)
        gr.Warning(message, duration=WARNING_S)
        out = {self.ui.state: session}
        if restore_image:
            out[self.ui.image] = self.overlay(session) if session is not None else None
        return out

    # ------------------------------------------------------------------ lifecycle
    def end_session(self, request: gr.Request):
        """The tab was closed: free its prepared image now rather than when ``gr.State`` expires."""
        self.serving.live.end(request.session_hash)

    def release_state(self, session: Session | None) -> None:
        """``gr.State`` delete callback: the session expired or its tab is gone."""
        if session is not None:
            end_session(self.serving.store, session.id)
            self.serving.store.forget_session(session.id)
