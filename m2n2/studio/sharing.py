"""Handlers for several objects, recipes, exports and links (mixed into :class:`~m2n2.studio.handlers.Handlers`).

* objects: finish / new object, select, delete (see :mod:`m2n2.studio.objects`);
* exports: instance PNG, COCO JSON, the recipe, written when their button is pressed;
* recipes: loaded from a file or pasted text, applied only when they fit (same image by hash,
  same backbone, a format this code reads, points inside the image): a bad recipe changes nothing;
* links: ``?example=NAME&clicks=x,y,label;x,y,label`` (one ``clicks`` per object) opens an
  example with its clicks, and Gradio's deep link (``gr.DeepLinkButton``) carries the current
  recipe in a hidden text box that :meth:`SharingHandlers.open_link` applies on load.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from urllib.parse import quote

import gradio as gr
import numpy as np

from .. import export, recipe as recipes
from ..errors import InputError, M2N2Error
from ..geometry import Geometry
from ..image import read_image
from . import gpu, objects, views
from .priority import run_heavy
from .serving import export_dir
from .session import Click, SegObject, Session, Shown


def link_query(session: Session) -> str | None:
    """The query string (``?example=...&clicks=...``) that opens this example with these clicks."""
    if session.example is None:
        return None
    parts = [f"example={quote(session.example)}"]
    for _, obj in objects.finished(session):
        parts.append("clicks=" + quote(";".join(f"{c.x:g},{c.y:g},{c.label}" for c in obj.clicks), safe=",;"))
    return "?" + "&".join(parts)


def parse_clicks(text: str) -> list[tuple[float, float, int]]:
    """``"x,y,label;x,y,label"`` (label optional, 1) -> clicks; raises InputError."""
    clicks = []
    for item in filter(None, (part.strip() for part in str(text).split(";"))):
        values = item.split(",")
        try:
            if len(values) not in (2, 3):
                raise ValueError
            x, y = float(values[0]), float(values[1])
            label = int(values[2]) if len(values) == 3 else 1
        except ValueError:
            raise InputError(f"a click in the link must be x,y,label (e.g. 250,120,1), got {item!r}") from None
        if label not in (0, 1):
            raise InputError(f"a click's label must be 0 or 1, got {item!r}")
        clicks.append((x, y, label))
    if not clicks:
        raise InputError("the link's clicks parameter is empty")
    return clicks


class SharingHandlers:
    """Object, recipe, export and link handlers; expects the attributes of ``Handlers``."""

    # ------------------------------------------------------------------ views
    def render_objects(self, session: Session, rendered: dict | None = None) -> dict:
        """The object list, the recipe text (for deep links) and the example link of ``session``.

        ``rendered`` is the rest of the update (its buttons get their labels named)."""
        ui, out = self.ui, {}
        has = session is not None and session.has_image
        # A deep link stores the buttons as last updated: name their labels, or they come back as "Run".
        for button in (ui.mask_button, ui.cutout_button, ui.automatic):
            update = (rendered or {}).get(button)
            # (inside an event Gradio keeps an update's arguments, not its attributes)
            args = getattr(update, "constructor_args", None) or {}
            if isinstance(update, gr.Button) and "interactive" in args:
                out[button] = gr.Button(value=button.value, interactive=args["interactive"])
        if getattr(ui, "objects", None) is not None:
            out[ui.objects] = gr.Radio(choices=objects.choices(session) if has else [],
                                       value=session.active + 1 if has else None)
        if getattr(ui, "recipe_text", None) is not None:
            # As a component (not a bare value), so that Gradio's deep link records it under its own id.
            out[ui.recipe_text] = gr.Textbox(
                value=self.recipe_of(session).to_json() if has and objects.finished(session) else "")
        if getattr(ui, "link", None) is not None:
            query = link_query(session) if has and objects.finished(session) else None
            out[ui.link] = gr.Markdown(
                value=f"Link to this example with these clicks: [{query}]({query})" if query else "")
        return out

    @property
    def share_outputs(self) -> list:
        """The object list, recipe box and example link (what :meth:`share_views` updates)."""
        return [c for c in (self.ui.objects, self.ui.recipe_text, self.ui.link) if c is not None]

    def original_view(self, session: Session | None) -> dict:
        """The hidden copy of an uploaded image (None for an example, which a recipe names)."""
        has = session is not None and session.has_image and not session.example
        return {self.ui.original: session.source if has else None}

    def share_views(self, session: Session | None) -> dict:
        """Only the object list, recipe box and example link (refreshed after a click)."""
        out = self.render_objects(session) if session is not None else {}
        return {key: value for key, value in out.items() if key in self.share_outputs}

    def click_only(self, session: Session | None, mode: str, evt: gr.SelectData, request: gr.Request = None):
        """A click, updating the core views only: more outputs on this rapid event let the browser drop
        clicks made while the picture reloads (measured with tests/test_browser.py); the object list
        and recipe follow in :meth:`share_views`."""
        out = self.click(session, mode, evt, request)
        return {key: value for key, value in out.items() if key not in self.share_outputs}

    def overlay_objects(self, session: Session) -> np.ndarray | None:
        """The working copy with every object in its colour, the current one outlined with its clicks."""
        if not session.has_image:
            return None
        geometry = session.geometry
        clicks = session.clicks + session.pending
        points = geometry.original_to_display([(c.x, c.y) for c in clicks]) if clicks else np.zeros((0, 2))
        others = [(obj.shown.mask, objects.colour(number)) for number, obj in objects.finished(session)
                  if number != session.active + 1]
        mask = session.shown.mask if session.shown is not None else None
        return views.overlay(session.display_image, mask, points, [c.label for c in clicks],
                             colour=objects.colour(session.active + 1), others=others)

    # ------------------------------------------------------------------ recipes
    def recipe_of(self, session: Session) -> recipes.Recipe:
        """The recipe of the session's finished objects."""
        backbone = self.serving.backbones.get(session.resolution)
        done = [([(c.x, c.y, c.label) for c in obj.clicks], obj.threshold) for _, obj in objects.finished(session)]
        return recipes.make(session.image, backbone, session.config, done, session.example, session.image_sha256)

    def _example_named(self, name: str | None) -> str | None:
        return next((path for path in self.examples if Path(path).stem == name), None) if name else None

    def check_recipe_limits(self, recipe: recipes.Recipe) -> None:
        """Refuse a recipe beyond the public limits (clicks, objects, R) before any work.

        A recipe replays every click of every object, so without this one request could
        carry thousands of Markov-maps or ask a CPU for R = 128.
        """
        limit = self.options.max_points
        if len(recipe.objects) > limit:
            raise InputError(f"the recipe has {len(recipe.objects)} objects, more than the {limit} allowed")
        for number, obj in enumerate(recipe.objects, 1):
            if len(obj.clicks) > limit:
                raise InputError(f"object {number} of the recipe has {len(obj.clicks)} clicks, "
                                 f"more than the {limit} allowed")
        if recipe.backbone.resolution > self.options.highest_resolution:
            raise InputError(f"the recipe asks for R = {recipe.backbone.resolution}; this server allows "
                             f"R up to {self.options.highest_resolution}")

    def apply_recipe(self, session: Session | None, recipe: recipes.Recipe, request=None, progress=None,
                     upload: str | None = None) -> dict:
        """Replay ``recipe`` into the session; bad: nothing changes.

        The image is the session's own when the recipe was made for it, else ``upload`` (a file
        a deep link carried), else the example the recipe names."""
        session = session or self.new_session()
        image, example, source = None, session.example, session.source
        try:
            if session.has_image and session.image_sha256 == recipe.image_hash:
                image = session.image
            elif upload:
                image, example, source = read_image(upload), None, str(upload)
            elif self._example_named(recipe.example):
                image, example = read_image(self._example_named(recipe.example)), recipe.example
        except M2N2Error as error:
            return self.rejected(session, f"This recipe's image cannot be used: {error}")
        try:
            self.check_recipe_limits(recipe)
            recipes.check(recipe, image if image is not None else (session.image if session.has_image else None))
            if image is None:
                raise InputError("load the image this recipe was made for first (upload it), then load the recipe")
            backbone = self.serving.backbones.get(recipe.backbone.resolution)
            recipes.check(recipe, image, backbone)
        except M2N2Error as error:
            return self.rejected(session, f"This recipe cannot be used: {error}")
        start = time.perf_counter()
        fresh = image is not session.image
        key = session.next_key if fresh or recipe.backbone.resolution != session.resolution else session.key
        wanted = [(obj.points, obj.labels, obj.threshold) for obj in recipe.objects]
        try:
            prepared = None
            if key != session.key:
                if progress is not None:
                    progress(0.3, desc="Preparing the recipe's image…")
                prepared = run_heavy(gpu.prepare, key, image, recipe.backbone.resolution, recipe.config)
            # The image goes along: a GPU process that lacks it prepares it again within the call.
            results = run_heavy(gpu.segment_objects, key, wanted, recipe.config, image,
                                recipe.backbone.resolution) if wanted else []
        except gr.Error as error:
            return self.rejected(session, f"This recipe cannot be used: {error.message}")
        # Everything worked: commit.
        if fresh:
            session.set_image(image, prepared.working, prepared.resolution, prepared.seconds)
            session.source = source if example is None else None
        elif prepared is not None:
            session.version += 1
            session.resolution = prepared.resolution
            session.geometry = Geometry(session.geometry.original, prepared.working, prepared.resolution)
        session.example, session.config = example, recipe.config
        session.objects = [SegObject([Click(x, y, label) for x, y, label in obj.clicks], obj.threshold,
                                     Shown(result.mask, float(result.last.threshold), bool(result.last.overridden)))
                           for obj, result in zip(recipe.objects, results)] or [SegObject()]
        session.active, session.pending = len(session.objects) - 1, []
        session.action = ("recipe", time.perf_counter() - start)
        if results:
            session.memory_bytes = results[-1].memory_bytes
        self._track(session, request)
        return self.render(session, results[-1].last if results else None)

    def load_recipe(self, session: Session | None, file, text: str, request: gr.Request = None,
                    progress=gr.Progress()):
        """A recipe from the upload box (else the pasted text) is applied to the image it names."""
        try:
            if file:
                path = file.get("path") if isinstance(file, dict) else file
                source = Path(path).read_bytes()
            elif text and text.strip():
                source = text
            else:
                raise InputError("upload a recipe file or paste a recipe's JSON first")
            recipe = recipes.Recipe.from_json(source)
        except (M2N2Error, OSError) as error:
            return self.rejected(session, f"This recipe cannot be used: {error}")
        return self.apply_recipe(session, recipe, request, progress)

    def open_link(self, session: Session | None, recipe_text: str, original: str | None = None,
                  request: gr.Request = None, progress=gr.Progress()):
        """On page load: apply ``?example=...&clicks=...``, or a deep link's recipe (on the uploaded
        image the link carries, or the example the recipe names); else just the status."""
        params = request.query_params if request is not None else {}
        if params.get("example"):
            name = params.get("example")
            path = self._example_named(name)
            if path is None:
                return self.rejected(session, f"The link names no example called {name!r}.")
            try:
                clicks = [parse_clicks(text) for text in params.getlist("clicks")]
                image = read_image(path)
                backbone = self.serving.backbones.get(self.options.attention_resolution)
                recipe = recipes.make(image, backbone, (session or self.new_session()).config,
                                      [(c, None) for c in clicks], name)
            except M2N2Error as error:
                return self.rejected(session, f"This link cannot be used: {error}")
            return self.apply_recipe(session, recipe, request, progress)
        if params.get("deep_link") and recipe_text and recipe_text.strip():
            try:
                recipe = recipes.Recipe.from_json(recipe_text)
            except M2N2Error as error:
                return self.rejected(session, f"This link cannot be used: {error}")
            return self.apply_recipe(session, recipe, request, progress, upload=original)
        return {self.ui.status: self.status(session)}

    # ------------------------------------------------------------------ objects
    def _object_action(self, session: Session | None, change, *args) -> dict:
        if not self._usable(session):
            return self.rejected(session, "Upload an image or pick an example first, then click on it.")
        try:
            change(session, *args)
        except M2N2Error as error:
            return self.rejected(session, str(error))
        if session.clicks:  # show the now current object's heatmap and scores (its maps are cached)
            return self._apply(session, session.clicks, session.threshold, "select")
        return self.render(session, None)

    def new_object(self, session: Session | None):
        """Keep the current object; the next clicks start a new one."""
        return self._object_action(session, objects.new_object)

    def select_object(self, session: Session | None, number):
        """Make the chosen object current (undo, reset and threshold act on it)."""
        if number is None or (self._usable(session) and int(number) == session.active + 1):
            return {}
        return self._object_action(session, objects.select, int(number))

    def delete_object(self, session: Session | None):
        """Delete the current object."""
        if not self._usable(session):
            return self.rejected(session, "There is no object to delete.")
        return self._object_action(session, objects.delete, session.active + 1)

    # ------------------------------------------------------------------ exports
    def _export_objects(self, session: Session | None, kind: str) -> dict:
        if not self._usable(session) or not objects.finished(session):
            return self.rejected(session, "Click on the image first: there is no object to export yet.")
        folder = export_dir(session.id)
        os.makedirs(folder, exist_ok=True)
        masks = objects.masks(session)
        if kind == "instances":
            path = os.path.join(folder, "instances.png")
            from PIL import Image
            Image.fromarray(export.instance_map(masks, session.image.shape[:2])).save(path)
        elif kind == "coco":
            import json
            path = os.path.join(folder, "coco.json")
            with open(path, "w") as file:
                json.dump(export.coco(masks, file_name=f"{session.example or 'image'}.png"), file)
        else:
            path = os.path.join(folder, "recipe.json")
            with open(path, "w") as file:
                file.write(self.recipe_of(session).to_json())
        return {getattr(self.ui, f"{kind}_file"): gr.DownloadButton(value=path)}

    def export_instances(self, session: Session | None) -> dict:
        """Write the instance PNG (0 background, 1..K, later objects on top)."""
        return self._export_objects(session, "instances")

    def export_coco(self, session: Session | None) -> dict:
        """Write the COCO JSON (RLE masks)."""
        return self._export_objects(session, "coco")

    def export_recipe(self, session: Session | None) -> dict:
        """Write the recipe JSON."""
        return self._export_objects(session, "recipe")

    # ------------------------------------------------------------------ API
    def segment_recipe(self, image: str, recipe_text: str):
        """Stateless API: an image file and a recipe -> instance PNG, COCO JSON and the recipe replayed."""
        try:
            recipe = recipes.Recipe.from_json(recipe_text)
            self.check_recipe_limits(recipe)  # before the image is even decoded
            array = read_image(image)
            recipes.check(recipe, array)
        except M2N2Error as error:
            raise gr.Error(str(error)) from None
        masks, _ = run_heavy(gpu.replay_image, array, recipe)
        if not masks:
            raise gr.Error("the recipe has no object")
        return export.instance_map(masks, array.shape[:2]), export.coco(masks), recipe.to_dict()
