"""The click loop: each click's mask in turn; undo, reset and the threshold.

A click's marker and its "waiting" count are the page's own (static/page.js): no request
is made for them, so the click itself leaves at once.

Each handler validates its input, computes through the GPU boundary (:mod:`m2n2.studio.gpu`)
and only then commits the result to the session (:meth:`ClickHandlers.apply`), so a failure
leaves the session exactly as it was. Handlers of other jobs (objects, settings) recompute the
current object through :meth:`ClickHandlers.apply` too.
"""

from __future__ import annotations

import time

import gradio as gr

from ..errors import M2N2Error
from ..config import MAX_CLICKS
from ..prompts import Click, as_arrays
from ..threads import using_threads
from . import gpu
from .page import Page
from .priority import click_running
from .session import Session, Shown

NO_IMAGE = "Upload an image or pick an example first, then click on it."


class ClickHandlers:
    """Clicks, undo, reset and the threshold of the current object.

    Parameters
    ----------
    page : Page
        The app's serving state, components and views.
    """

    def __init__(self, page: Page):
        self.page = page

    def segment(self, session: Session, clicks: list[Click], threshold: float | None, config=None):
        """Segment ``clicks`` on the session's prepared image (preparing it again if the store lost it)."""
        config = config or session.config
        points, labels = as_arrays(clicks)
        # The preparation of other users' images waits meanwhile, so the click may take both cores.
        with click_running(), using_threads(self.page.options.click_threads):
            # The session's copy goes along: a GPU process without the prepared image (evicted for
            # memory, or a fresh ZeroGPU worker) prepares it again within this call.
            result = gpu.segment(self.page.serving, session.key, points, labels, threshold, config, session.image,
                                 session.resolution)
        if result.prepared is not None:
            gr.Info(f"Your image's attention was computed again ({result.prepared.seconds:.1f} s): it had been "
                    "set aside to make room for other visitors, or a new GPU process took over. Your clicks "
                    "were kept.")
        return result

    def apply(self, session: Session, clicks: list[Click], threshold: float | None, action: str,
              config=None, shared: bool = True) -> dict:
        """Segment, then commit clicks, override, settings and the result to the session
        (``shared``: with the object list, recipe and link, see :meth:`Page.render`)."""
        page = self.page
        start, key = time.perf_counter(), session.key
        try:
            result = self.segment(session, clicks, threshold, config) if clicks else None
        except gr.Error as error:
            return page.rejected(session, error.message)
        if session.key != key:  # a new image (its own queue) was committed meanwhile: this result is stale
            return page.rejected(session, "A new image arrived while this was computed; click on it again.")
        session.clicks, session.threshold = clicks, threshold
        if config is not None:
            session.config = config
        session.action = (action, time.perf_counter() - start)
        if result is None:
            session.shown = None
            return page.render(session, shared=shared)
        session.shown = Shown(result.mask, float(result.last.threshold), bool(result.last.overridden))
        session.memory_bytes = result.memory_bytes
        return page.render(session, result.last, shared=shared)

    # ------------------------------------------------------------------ clicks
    def click(self, session: Session | None, label: int, evt: gr.SelectData, request: gr.Request = None,
              shared: bool = True):
        """A click on the image, labelled ``label`` (1 foreground, 0 background); runs in arrival order.

        Refused (limit, an error, a new image meanwhile): a warning, and nothing else changes (the
        page's marker goes when the event ends: ``CLICK_ANSWERED`` in app.py)."""
        page = self.page
        if not page.usable(session):
            return self._refused(session, NO_IMAGE)
        try:
            click = session.click_at(float(evt.index[0]), float(evt.index[1]), label)
        except M2N2Error as error:
            return self._refused(session, str(error))
        limit = page.options.max_points
        if len(session.clicks) >= limit:
            return self._refused(session, f"This image has {len(session.clicks)} clicks, the most one may have "
                                          f"(the evaluation protocol stops at {MAX_CLICKS}): undo or reset to go on.")
        page.track(session, request)
        out = self.apply(session, [*session.clicks, click], None, "click", shared=shared)
        if page.ui.image not in out:  # refused in apply (an error, or a new image meanwhile)
            out.update(self._refused(session, None))
        return out

    def _refused(self, session: Session | None, message: str | None) -> dict:
        """Warn (unless ``message`` is None: :meth:`apply` warned) and draw the status line again."""
        page = self.page
        out = page.rejected(session, message) if message is not None else {page.ui.state: session}
        out[page.ui.status] = page.status(session)
        return out

    def click_only(self, session: Session | None, label: int, evt: gr.SelectData, request: gr.Request = None):
        """A click, updating what shows its mask only (:attr:`UI.core`): more outputs on this rapid
        event let the browser drop clicks made while the picture reloads (measured with
        tests/test_browser.py), and the plots' HTML delays the picture; the plots, object list and
        recipe follow in :meth:`Page.after_click`."""
        out = self.click(session, label, evt, request, shared=False)
        following = self.page.ui.after_click
        return {key: value for key, value in out.items() if key not in following}

    def undo(self, session: Session | None, request: gr.Request = None):
        """Remove the latest click (and any threshold override)."""
        page = self.page
        if not page.usable(session):
            return page.rejected(session, NO_IMAGE)
        if not session.clicks:
            return page.rejected(session, "There is no click to undo.")
        return self.apply(session, session.clicks[:-1], None, "undo")

    def reset(self, session: Session | None):
        """Remove every click (no GPU work: the image and its operator stay)."""
        if not self.page.usable(session):
            return self.page.rejected(session, "There is nothing to reset yet.")
        session.clear_clicks()
        return self.page.render(session)

    # ------------------------------------------------------------------ threshold
    def override(self, session: Session | None, threshold, request: gr.Request = None):
        """The slider (released, or its box confirmed with Enter): use ``threshold`` for the latest click.

        ``threshold`` comes as the browser sent it (the event skips Gradio's range check, whose error
        would leave the box at 0 or 1): an empty box or a value outside [0, 1] is refused with a
        warning and the box shows the current threshold again, rather than clamped and applied (a
        typed 5 is a slip, not a wish for an empty mask)."""
        page = self.page
        if not page.usable(session):
            return page.rejected(session, NO_IMAGE)
        try:
            if threshold is None or isinstance(threshold, bool) or str(threshold).strip() == "":
                raise ValueError("type a threshold between 0 and 1, then press Enter")
            threshold = session.check_override(float(threshold))
        except (M2N2Error, TypeError, ValueError) as error:
            out = page.rejected(session, f"Threshold not changed: {error}.")
            if session.shown is not None:  # the box shows the threshold in use again
                out[page.ui.threshold] = gr.Slider(value=round(session.shown.threshold, 3))
            return out
        if session.shown is not None and session.threshold == threshold:
            return {}  # the same value again (e.g. the slider set by the app itself): nothing to do
        return self.apply(session, session.clicks, threshold, "threshold")

    def automatic(self, session: Session | None, request: gr.Request = None):
        """Back to the latest click's adaptive threshold."""
        page = self.page
        if not page.usable(session):
            return page.rejected(session, NO_IMAGE)
        try:
            session.check_override(None)
        except M2N2Error as error:
            return page.rejected(session, str(error))
        return self.apply(session, session.clicks, None, "threshold")
