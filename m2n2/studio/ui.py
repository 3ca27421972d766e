"""The components the handlers update, by name: every handler returns a dict keyed by them.

``app.py`` builds the components and names them here; the handlers never see the layout.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The "Next click is" switch: (what it shows, the click's label). The handlers get the label.
MODES = [("Foreground (green)", 1), ("Background (red)", 0)]


@dataclass(kw_only=True)
class UI:
    """The components the handlers update (built by ``app.py``; the optional ones may be left out)."""

    state: object
    image: object
    heatmap: object
    scores: object
    mask_button: object
    cutout_button: object
    threshold: object
    automatic: object
    status: object
    # Downloads (hidden buttons that hand a written file to the browser).
    mask_file: object = None
    cutout_file: object = None
    instances_file: object = None
    coco_file: object = None
    recipe_file: object = None
    # The buttons that export every finished object (enabled once there is one).
    instances_button: object = None
    coco_button: object = None
    recipe_button: object = None
    # Several objects and sharing.
    objects: object = None
    recipe_text: object = None  # hidden: the current recipe, which a deep link carries
    link: object = None
    original: object = None  # hidden: the uploaded file, so that a deep link carries the image

    @property
    def core(self) -> list:
        """What a click updates at once: the state, the picture, the buttons, the status."""
        return [self.state, self.image, self.mask_button, self.cutout_button, self.threshold, self.automatic,
                self.status]

    @property
    def plots(self) -> list:
        """The latest click's heatmap and score curve (they follow a click in a second event)."""
        return [self.heatmap, self.scores]

    @property
    def share(self) -> list:
        """The object list, recipe box, example link and the exports of every object (they follow a
        click in a second event)."""
        return [c for c in (self.objects, self.recipe_text, self.link, *self.export_buttons) if c is not None]

    @property
    def after_click(self) -> list:
        """What the event that follows a click updates: the plots, then the object list, recipe, link
        and exports."""
        return self.plots + self.share

    @property
    def export_buttons(self) -> list:
        """The buttons that export every finished object (instance PNG, COCO JSON, recipe)."""
        return [c for c in (self.instances_button, self.coco_button, self.recipe_button) if c is not None]

    @property
    def outputs(self) -> list:
        """Every component a full update touches (the files are written only when asked for)."""
        return self.core + self.plots + self.share
