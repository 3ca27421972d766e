"""The app's event handlers, by job; each returns a dict keyed by component (testable without a browser).

* :class:`~m2n2.studio.images.ImageHandlers`: a new image (upload, example, clear);
* :class:`~m2n2.studio.clicks.ClickHandlers`: the click loop (click, undo, reset, threshold);
* :class:`~m2n2.studio.sharing.SharingHandlers`: objects, recipes, links and downloads;
* :class:`~m2n2.studio.settings.SettingsHandlers`: the advanced settings;
* :class:`~m2n2.studio.api.ApiHandlers`: the stateless API;
* :class:`~m2n2.studio.page.Page`: what they share (the serving state, the components, the
  views of a session, its lifecycle).

Errors the user caused become a warning toast and change nothing else.
"""

from __future__ import annotations

from .api import ApiHandlers
from .clicks import ClickHandlers
from .images import ImageHandlers
from .page import Page
from .serving import Serving
from .settings import SettingsHandlers
from .sharing import SharingHandlers
from .ui import UI


class Handlers:
    """Every handler of one app, by job, over one :class:`Page`.

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
        self.page = Page(serving, ui, examples)
        self.images = ImageHandlers(self.page)
        self.clicks = ClickHandlers(self.page)
        self.sharing = SharingHandlers(self.page, self.clicks, self.images)
        self.settings = SettingsHandlers(self.page, self.clicks)
        self.api = ApiHandlers(self.page, self.images)

    @property
    def ui(self) -> UI:
        return self.page.ui

    @property
    def serving(self) -> Serving:
        return self.page.serving
