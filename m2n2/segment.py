"""Segment an image from the command line, from clicks or from a recipe; write masks and the recipe.

::

    python -m m2n2.segment IMAGE --points '[[x, y, label], ...]' [--points '...'] --out DIR
    python -m m2n2.segment IMAGE --recipe RECIPE.json --out DIR

Each ``--points`` is one object (x column, y row in original pixels; label 1 foreground, 0
background). DIR receives ``instances.png`` (0 background, 1..K; later objects on top),
``coco.json`` (RLE masks), ``mask_<k>.png``, ``cutout_<k>.png`` and ``recipe.json``: the recipe
of what was done, which gives the same masks again with ``--recipe``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import export, recipe as recipes
from .backbones import load, names as backbone_names
from .config import M2N2Config
from .errors import M2N2Error
from .image import read_image
from .predictor import M2N2Predictor


def backbone_for(recipe: recipes.Recipe, choice: str | None, model: str | None):
    """Load the backbone a recipe names (at its R), unless ``choice`` names another one."""
    if choice is None:
        choice = recipe.backbone.registry_key
    model = model or recipe.backbone.model
    extra = {"model": model} if model and choice != "color" else {}
    return load(choice, resolution=recipe.backbone.resolution, **extra)


def parse_objects(texts: list[str]) -> list[tuple[list, None]]:
    """``--points`` values -> ``(clicks, None)`` per object; raises M2N2Error on bad input."""
    from .errors import InputError

    objects = []
    for number, text in enumerate(texts, start=1):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as error:
            raise InputError(f"--points number {number} is not JSON such as '[[120, 80, 1]]': {error}") from None
        if not isinstance(items, list) or not items:
            raise InputError(f"--points number {number} must be a non-empty list of [x, y, label]")
        clicks = []
        for item in items:
            if isinstance(item, list) and len(item) == 2:
                item = [*item, 1]
            if (not isinstance(item, list) or len(item) != 3 or item[2] not in (0, 1)
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in item[:2])):
                raise InputError(f"--points number {number}: each point must be [x, y, label], got {item!r}")
            clicks.append((float(item[0]), float(item[1]), int(item[2])))
        objects.append((clicks, None))
    return objects


def run(image_path: str, out: str, points: list[str] | None = None, recipe_path: str | None = None,
        backbone: str | None = None, model: str | None = None, resolution: int | None = None,
        fast: bool = False) -> dict[str, str]:
    """Do what the command line does; returns the written files by kind. Raises M2N2Error on bad input."""
    image = read_image(image_path)
    if recipe_path is not None:
        recipe = recipes.Recipe.from_json(Path(recipe_path).read_text())
        recipes.check(recipe, image)  # another image fails before any model loads
        loaded = backbone_for(recipe, backbone, model)
        recipes.check(recipe, image, loaded)
    else:
        config = M2N2Config.fast() if fast else M2N2Config()
        extra = {"model": model} if model and backbone != "color" else {}
        loaded = load(backbone or "auto", resolution=resolution or 64, **extra)
        example = Path(image_path).stem if Path(image_path).parent.name == "examples" else None
        recipe = recipes.make(image, loaded, config, parse_objects(points or []), example)
        recipes.check(recipe, image, loaded)
    if not recipe.objects:
        from .errors import InputError
        raise InputError("nothing to segment: give --points or a recipe with objects")
    predictor = M2N2Predictor(loaded, recipe.config)
    predictor.set_image(image)
    masks = recipes.replay(predictor, recipe)
    return export.write(out, image, masks, recipe.to_json(), file_name=Path(image_path).name)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m m2n2.segment", description=__doc__.splitlines()[0])
    parser.add_argument("image", help="the image file")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--points", action="append", metavar="JSON",
                      help="one object's clicks as a JSON list of [x, y, label]; repeat for more objects")
    what.add_argument("--recipe", metavar="RECIPE.json", help="replay a recipe (from the app or this command)")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the masks and the recipe")
    parser.add_argument("--backbone", default=None, choices=backbone_names(),
                        help="attention source (default: the recipe's, else auto)")
    parser.add_argument("--model", default=None,
                        help="the learned backbone's model: Hub id or local directory (default: the backbone's)")
    parser.add_argument("--resolution", type=int, default=None, help="attention resolution R with --points (64)")
    parser.add_argument("--fast", action="store_true",
                        help="with --points: the app's fast preset (M2N2Config.fast()) instead of the paper's numerics")
    args = parser.parse_args(argv)
    try:
        paths = run(args.image, args.out, args.points, args.recipe, args.backbone, args.model, args.resolution,
                    args.fast)
    except (M2N2Error, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    objects = sum(1 for kind in paths if kind.startswith("mask_"))
    print(f"{objects} object{'s' if objects != 1 else ''} written to {args.out}: "
          + ", ".join(Path(p).name for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
