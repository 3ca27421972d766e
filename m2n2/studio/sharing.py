"""Several objects, recipes, links and downloads.

* objects: finish / new object, select, delete (the session's side: :mod:`m2n2.studio.objects`);
* downloads: the current mask and cut-out, the instance PNG, COCO JSON and the recipe of every
  object, each written when its button is pressed;
* recipes: loaded from a file or pasted text, applied only when they fit (same image by hash,
  same backbone, a format this code reads, points inside the image): a bad recipe changes nothing;
* links: ``?example=NAME&clicks=x,y,label;x,y,label`` (one ``clicks`` per object) opens an
  example with its clicks, and Gradio's deep link (``gr.DeepLinkButton``) carries the current
  recipe in a hidden text box that :meth:`SharingHandlers.open_link` applies on load.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import gradio as gr
import numpy as np
from PIL import Image

from .. import export, recipe as recipes
from ..errors import InputError, M2N2Error
from ..image import read_image
from ..prompts import check_clicks, parse_clicks
from . import gpu, objects
from .clicks import NO_IMAGE, ClickHandlers
from .examples import example_config
from .images import ImageHandlers
from .limits import check_recipe_limits, log_user_error
from .page import Page
from .priority import run_heavy
from .serving import export_dir
from .session import SegObject, Session, Shown


def link_clicks(texts: list[str], size: tuple[int, int], max_clicks: int) -> list[list]:
    """The clicks of a link's ``clicks`` parameters (one per object) on an image of ``size``.

    Raises
    ------
    InputError
        Too many objects, or a ``clicks`` value that does not parse, has too many clicks or a
        click off the image; the message quotes that value (shortened) so the link can be fixed.
    """
    if len(texts) > max_clicks:
        raise InputError(f"the link has {len(texts)} clicks= values (one per object), more than the "
                         f"{max_clicks} allowed")
    out = []
    for text in texts:
        shown = text if len(text) <= 40 else text[:37] + "..."
        try:
            out.append(check_clicks(parse_clicks(text, what="the value"), size, max_clicks))
        except InputError as error:
            raise InputError(f"in clicks={shown}, {str(error).removeprefix('the value: ')}") from None
    return out


class SharingHandlers:
    """Objects, recipes, links and downloads.

    Parameters
    ----------
    page : Page
        The app's serving state, components and views.
    clicks : ClickHandlers
        Recomputes the object made current.
    images : ImageHandlers
        Prepares a recipe's image (a kept example is lent, not prepared again).
    """

    def __init__(self, page: Page, clicks: ClickHandlers, images: ImageHandlers):
        self.page, self.clicks, self.images = page, clicks, images

    def check_recipe_limits(self, recipe: recipes.Recipe) -> None:
        """:func:`check_recipe_limits` with this server's limits."""
        options = self.page.options
        check_recipe_limits(recipe, options.max_points, options.highest_resolution)

    # ------------------------------------------------------------------ objects
    def _object_action(self, session: Session | None, change, *args) -> dict:
        page = self.page
        if not page.usable(session):
            return page.rejected(session, NO_IMAGE)
        try:
            change(session, *args)
        except M2N2Error as error:
            return page.rejected(session, str(error))
        if session.clicks:  # show the now current object's heatmap and scores (its maps are cached)
            return self.clicks.apply(session, session.clicks, session.threshold, "select")
        return page.render(session, None)

    def new_object(self, session: Session | None):
        """Keep the current object; the next clicks start a new one."""
        return self._object_action(session, objects.new_object)

    def select_object(self, session: Session | None, number):
        """Make the chosen object current (undo, reset and threshold act on it)."""
        if number is None or (self.page.usable(session) and int(number) == session.active + 1):
            return {}
        return self._object_action(session, objects.select, int(number))

    def delete_object(self, session: Session | None):
        """Delete the current object."""
        if not self.page.usable(session):
            return self.page.rejected(session, "There is no object to delete.")
        return self._object_action(session, objects.delete, session.active + 1)

    # ------------------------------------------------------------------ recipes
    def apply_recipe(self, session: Session | None, recipe: recipes.Recipe, request=None, progress=None,
                     upload: str | None = None) -> dict:
        """Replay ``recipe`` into the session; bad: nothing changes.

        The image is the session's own when the recipe was made for it, else ``upload`` (a file
        a deep link carried), else the example the recipe names."""
        page = self.page
        session = session or page.new_session()
        image, example, source = None, session.example, session.source
        try:
            if session.has_image and session.image_sha256 == recipe.image_hash:
                image = session.image
            elif upload:
                image, example, source = read_image(upload), None, str(upload)
            elif page.example_named(recipe.example):
                image, example = read_image(page.example_named(recipe.example)), recipe.example
        except M2N2Error as error:
            return page.rejected(session, f"This recipe's image cannot be used: {error}")
        try:
            self.check_recipe_limits(recipe)
            recipes.check(recipe, image if image is not None else (session.image if session.has_image else None))
            if image is None:
                raise InputError("load the image this recipe was made for first (upload it), then load the recipe")
            backbone = page.serving.backbones.get(recipe.backbone.resolution)
            recipes.check(recipe, image, backbone)
        except M2N2Error as error:
            return page.rejected(session, f"This recipe cannot be used: {error}")
        start = time.perf_counter()
        fresh = image is not session.image
        key = session.next_key if fresh or recipe.backbone.resolution != session.resolution else session.key
        wanted = [(obj.points, obj.labels, obj.threshold) for obj in recipe.objects]
        try:
            prepared = None
            if key != session.key:
                if progress is not None:
                    progress(0.3, desc="Preparing the recipe's image…")
                prepared = self.images.prepare(key, image, recipe.backbone.resolution, recipe.config,
                                               page.example_named(example))
            # The image goes along: a GPU process that lacks it prepares it again within the call.
            results = run_heavy(gpu.segment_objects, page.serving, key, wanted, recipe.config, image,
                                recipe.backbone.resolution) if wanted else []
        except gr.Error as error:
            return page.rejected(session, f"This recipe cannot be used: {error.message}")
        # Everything worked: commit.
        if fresh:
            session.set_image(image, prepared.working, prepared.resolution, prepared.seconds)
            session.source = source if example is None else None
        elif prepared is not None:
            session.set_resolution(prepared.working, prepared.resolution)
        session.example, session.config = example, recipe.config
        session.objects = [SegObject(list(obj.clicks), obj.threshold,
                                     Shown(result.mask, float(result.last.threshold), bool(result.last.overridden)))
                           for obj, result in zip(recipe.objects, results)] or [SegObject()]
        session.active = len(session.objects) - 1
        session.action = ("recipe", time.perf_counter() - start)
        if results:
            session.memory_bytes = results[-1].memory_bytes
        page.track(session, request)
        return page.render(session, results[-1].last if results else None)

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
            return self.page.rejected(session, f"This recipe cannot be used: {error}")
        return self.apply_recipe(session, recipe, request, progress)

    def open_link(self, session: Session | None, recipe_text: str, original: str | None = None,
                  request: gr.Request = None, progress=gr.Progress()):
        """On page load: apply ``?example=...&clicks=...``, or a deep link's recipe (on the uploaded
        image the link carries, or the example the recipe names); else just the status."""
        page = self.page
        params = request.query_params if request is not None else {}
        if params.get("example"):
            return self._open_example_link(session, params.get("example"), params.getlist("clicks"), request,
                                           progress)
        if params.get("deep_link") and recipe_text and recipe_text.strip():
            try:
                recipe = recipes.Recipe.from_json(recipe_text)
            except M2N2Error as error:
                return page.rejected(session, f"This link cannot be used: {error}")
            return self.apply_recipe(session, recipe, request, progress, upload=original)
        return {page.ui.status: page.status(session)}

    def _open_example_link(self, session: Session | None, name: str, texts: list[str], request, progress) -> dict:
        """``?example=NAME&clicks=...``: the example with the link's clicks (one ``clicks`` per object).

        Bad clicks are the link's fault, and the message says so and what is wrong; the example
        then opens without them (its clicks are the only part of the link that failed)."""
        page = self.page
        path = page.example_named(name)
        if path is None:
            names = ", ".join(Path(p).stem for p in page.examples)
            return page.rejected(session, f"The link names no example called {name!r} (the examples: {names}).")
        try:
            image = read_image(path)
            backbone = page.serving.backbones.get(page.options.attention_resolution)
        except M2N2Error as error:
            return page.rejected(session, f"The link's example {name!r} cannot be opened: {error}")
        config = example_config((session or page.new_session()).config)
        try:
            objects_clicks = link_clicks(texts, image.shape[:2], page.options.max_points)
        except InputError as error:
            log_user_error("a link", str(error))
            gr.Warning(f"The link's clicks cannot be used: {error}. The example {name!r} opens without them.")
            objects_clicks = []
        recipe = recipes.make(image, backbone, config, [(c, None) for c in objects_clicks], name)
        return self.apply_recipe(session, recipe, request, progress)

    # ------------------------------------------------------------------ downloads
    def _download(self, session: Session | None, component, name: str, write) -> dict:
        """Write ``name`` into the session's folder with ``write(path)`` and offer it on ``component``."""
        folder = export_dir(session.id)
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, name)
        write(path)
        return {component: gr.DownloadButton(value=path)}

    def _refused(self, session: Session | None, component, message: str) -> dict:
        """Warn, and empty ``component`` (the event's one output), so that the script that follows
        the event hands the browser no file: no earlier one either."""
        self.page.rejected(session, message)  # (its state update is not among this event's outputs)
        return {component: gr.DownloadButton(value=None)}

    def _no_mask(self, session: Session | None, component) -> dict | None:
        if not self.page.usable(session) or session.shown is None:
            return self._refused(session, component, "Click on the image first: there is no mask to download yet.")
        return None

    def _no_object(self, session: Session | None, component) -> dict | None:
        if not self.page.usable(session) or not objects.finished(session):
            return self._refused(session, component, "Click on the image first: there is no object to export yet.")
        return None

    def export_mask(self, session: Session | None) -> dict:
        """Write the current mask (PNG, original size, 0/255) now that it is asked for."""
        def write(path):
            Image.fromarray(np.asarray(session.shown.mask, dtype=np.uint8) * 255).save(path, compress_level=1)
        button = self.page.ui.mask_file
        return self._no_mask(session, button) or self._download(session, button, "mask.png", write)

    def export_cutout(self, session: Session | None) -> dict:
        """Write the RGBA cut-out (original size) now that it is asked for (a 12-megapixel one takes
        about a second, so never before)."""
        def write(path):
            Image.fromarray(export.cutout(session.image, session.shown.mask), "RGBA").save(path, compress_level=1)
        button = self.page.ui.cutout_file
        return self._no_mask(session, button) or self._download(session, button, "cutout.png", write)

    def export_instances(self, session: Session | None) -> dict:
        """Write the instance PNG (0 background, 1..K, later objects on top)."""
        def write(path):
            Image.fromarray(export.instance_map(objects.masks(session), session.image.shape[:2])).save(path)
        button = self.page.ui.instances_file
        return self._no_object(session, button) or self._download(session, button, "instances.png", write)

    def export_coco(self, session: Session | None) -> dict:
        """Write the COCO JSON (RLE masks)."""
        def write(path):
            with open(path, "w") as file:
                json.dump(export.coco(objects.masks(session), file_name=f"{session.example or 'image'}.png"), file)
        button = self.page.ui.coco_file
        return self._no_object(session, button) or self._download(session, button, "coco.json", write)

    def export_recipe(self, session: Session | None) -> dict:
        """Write the recipe JSON."""
        def write(path):
            with open(path, "w") as file:
                file.write(self.page.recipe_of(session).to_json())
        button = self.page.ui.recipe_file
        return self._no_object(session, button) or self._download(session, button, "recipe.json", write)
