"""Segment an image from the command line, from clicks or from a recipe; write masks and the recipe.

::

    python -m m2n2.segment IMAGE --points '[[x, y, label], ...]' [--points '...'] --out DIR [--preset fast]
    python -m m2n2.segment IMAGE --recipe RECIPE.json --out DIR

Each ``--points`` is one object (x column, y row in original pixels; label 1 foreground, 0
background), as JSON or as a link's ``x,y,label;x,y,label``. With ``--points`` the settings are
the exact preset unless ``--preset`` says otherwise; a recipe keeps its own. The backbone used is
printed first (with why, when ``auto`` fell back). DIR receives ``instances.png`` (0 background, 1..K; later objects on top),
``coco.json`` (RLE masks), ``mask_<k>.png``, ``cutout_<k>.png`` and ``recipe.json``: the recipe
of what was done, which gives the same masks again with ``--recipe``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path

from . import export, recipe as recipes
from .backbones import load, names as backbone_names
from .config import M2N2Config, add_preset_argument, preset_from_args
from .errors import InputError, M2N2Error
from .image import check_aspect, read_image
from .predictor import M2N2Predictor
from .prompts import Click, check_clicks, parse_clicks


def backbone_for(recipe: recipes.Recipe, choice: str | None, model: str | None):
    """Load the backbone a recipe names by its registry key (at its R), unless ``choice`` names another one."""
    if choice is None:
        choice = recipe.backbone.registry_key
    model = model or recipe.backbone.model
    extra = {"model": model} if model and choice != "color" else {}
    return load(choice, resolution=recipe.backbone.resolution, **extra)


def parse_objects(texts: list[str]) -> list[tuple[list[Click], None]]:
    """``--points`` values -> ``(clicks, None)`` per object; raises InputError on bad input."""
    return [(parse_clicks(text, what=f"--points number {number}"), None) for number, text in enumerate(texts, start=1)]


def with_preset(config: M2N2Config, name: str) -> M2N2Config:
    """``config`` with the settings that tell the presets apart set to those of preset ``name``
    (the others, e.g. a recipe's ``rho`` or ``max_side``, kept)."""
    exact, fast, chosen = M2N2Config.preset("exact"), M2N2Config.preset("fast"), M2N2Config.preset(name)
    return config.replace(**{f.name: getattr(chosen, f.name) for f in dataclasses.fields(M2N2Config)
                             if getattr(exact, f.name) != getattr(fast, f.name)})


def describe_backbone(backbone) -> str:
    """One line: the backbone's registry key and description, and why, when ``load("auto")`` fell back."""
    line = f"backbone: {getattr(backbone, 'key', None) or backbone.name} ({backbone.description})"
    reason = getattr(backbone, "reason", None)
    return line + (f"; fallback: {reason}" if reason else "")


def run(image_path: str, out: str, points: list[str] | None = None, recipe_path: str | None = None,
        backbone: str | None = None, model: str | None = None, resolution: int | None = None,
        preset: str | None = None, say: Callable[[str], None] | None = None) -> dict[str, str]:
    """Do what the command line does; returns the written files by kind. Raises M2N2Error on bad input.

    ``preset`` None keeps a recipe's settings, and gives the exact preset with ``points``; a
    name sets the settings that tell the presets apart. ``say`` gets the lines the command
    line prints before its work (the backbone used and the preset).
    """
    image = read_image(image_path)
    check_aspect(*image.shape[:2])  # before any model loads
    if recipe_path is not None:
        recipe = recipes.Recipe.from_json(Path(recipe_path).read_text())
        recipes.check(recipe, image)  # another image fails before any model loads
        if preset is not None:
            recipe = dataclasses.replace(recipe, config=with_preset(recipe.config, preset))
        loaded = backbone_for(recipe, backbone, model)
        recipes.check(recipe, image, loaded)
    else:
        objects = parse_objects(points or [])
        for number, (clicks, _) in enumerate(objects, start=1):  # before any model loads
            try:
                check_clicks(clicks, image.shape[:2], max_clicks=None)
            except InputError as error:
                raise InputError(f"--points number {number}: {error}") from None
        config = M2N2Config.preset(preset or "exact")
        extra = {"model": model} if model and backbone != "color" else {}
        loaded = load(backbone or "auto", resolution=resolution, **extra)  # None: the backbone's default R
        example = Path(image_path).stem if Path(image_path).parent.name == "examples" else None
        recipe = recipes.make(image, loaded, config, objects, example)
        recipes.check(recipe, image, loaded)
    if not recipe.objects:
        raise InputError("nothing to segment: give --points or a recipe with objects")
    if say is not None:
        say(describe_backbone(loaded))
        say(f"preset: {recipe.config.preset_name or 'custom settings'}"
            + (" (the recipe's)" if recipe_path is not None and preset is None else ""))
    predictor = M2N2Predictor(loaded, recipe.config)
    predictor.set_image(image)
    masks = recipes.replay(predictor, recipe)
    return export.write(out, image, masks, recipe.to_json(), file_name=Path(image_path).name)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m m2n2.segment", description=__doc__.splitlines()[0])
    parser.add_argument("image", help="the image file")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--points", action="append", metavar="CLICKS",
                      help="one object's clicks: a JSON list of [x, y, label], or x,y,label;x,y,label; "
                           "repeat for more objects")
    what.add_argument("--recipe", metavar="RECIPE.json", help="replay a recipe (from the app or this command)")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the masks and the recipe")
    parser.add_argument("--backbone", default=None, choices=backbone_names(),
                        help="attention source (default: the recipe's, else auto)")
    parser.add_argument("--model", default=None,
                        help="the learned backbone's model: Hub id or local directory (default: the backbone's)")
    parser.add_argument("--resolution", type=int, default=None,
                        help="attention resolution R with --points (default: the backbone's; for SD2 128 on "
                             "CUDA, else 64)")
    add_preset_argument(parser, default=None, help_default="exact with --points, the recipe's settings with --recipe")
    args = parser.parse_args(argv)
    try:
        paths = run(args.image, args.out, args.points, args.recipe, args.backbone, args.model, args.resolution,
                    preset_from_args(args), say=print)
    except (M2N2Error, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    objects = sum(1 for kind in paths if kind.startswith("mask_"))
    print(f"{objects} object{'s' if objects != 1 else ''} written to {args.out}: "
          + ", ".join(Path(p).name for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
