"""Exports of several objects' masks that other tools read: instance map, COCO JSON, cut-outs.

Overlaps are resolved by one rule everywhere: **later objects lie on top** (object k + 1 wins a
pixel that objects k and k + 1 both cover), as when the objects were drawn in order. The
instance PNG and the COCO masks both follow it, so decoding the COCO JSON gives back exactly
the instance map's objects.
"""

from __future__ import annotations

import json
import os

import numpy as np
from PIL import Image


def instance_map(masks, shape: tuple[int, int] | None = None) -> np.ndarray:
    """(H, W) uint8 (uint16 beyond 255 objects): 0 background, k for object k (1-based), later on top."""
    masks = [np.asarray(m, dtype=bool) for m in masks]
    if shape is None:
        if not masks:
            raise ValueError("instance_map needs a shape when there are no masks")
        shape = masks[0].shape
    out = np.zeros(shape, dtype=np.uint8 if len(masks) < 256 else np.uint16)
    for number, mask in enumerate(masks, start=1):
        if mask.shape != tuple(shape):
            raise ValueError(f"mask {number} has shape {mask.shape}, expected {tuple(shape)}")
        out[mask] = number
    return out


def visible_masks(masks) -> list[np.ndarray]:
    """Each object's pixels as the instance map shows them (overlaps go to the later object)."""
    masks = list(masks)
    if not masks:
        return []
    instances = instance_map(masks)
    return [instances == number for number in range(1, len(masks) + 1)]


def cutout(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(H, W, 4) uint8 RGBA: the image with alpha 255 inside ``mask`` and 0 outside.

    The one cut-out of the package: the exports and the app's download (:mod:`m2n2.studio.views`)
    both use it.

    Parameters
    ----------
    image : numpy.ndarray
        (H, W, 3) uint8.
    mask : numpy.ndarray
        (H, W) boolean mask of the same size (else ValueError).
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask {mask.shape} and image {image.shape[:2]} differ in size")
    return np.concatenate([image, mask.astype(np.uint8)[..., None] * 255], axis=2)


def coco(masks, file_name: str = "image.png", image_id: int = 1, category: str = "object") -> dict:
    """A COCO-style dict: one image, one category, one annotation per object with an RLE mask.

    Masks are run-length encoded by pycocotools (``iscrowd`` 0, ``counts`` as text), from the
    objects' visible pixels (later objects on top), with their area and bounding box
    ``[x, y, width, height]``. ``pycocotools.mask.decode`` of an annotation's segmentation gives
    that object's pixels of :func:`instance_map` back.
    """
    from pycocotools import mask as coco_mask  # only the exports need it

    visible = visible_masks(masks)
    if not visible:
        raise ValueError("there is no object to export")
    height, width = visible[0].shape
    annotations = []
    for number, mask in enumerate(visible, start=1):
        rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        annotations.append({"id": number, "image_id": image_id, "category_id": 1, "segmentation": rle,
                            "area": int(mask.sum()), "bbox": [float(v) for v in coco_mask.toBbox(rle)],
                            "iscrowd": 0})
    return {"images": [{"id": image_id, "file_name": file_name, "width": int(width), "height": int(height)}],
            "categories": [{"id": 1, "name": category}],
            "annotations": annotations}


def write(folder: str, image: np.ndarray, masks, recipe_json: str | None = None, file_name: str = "image.png",
          cutouts: bool = True) -> dict[str, str]:
    """Write every export of ``masks`` on ``image`` into ``folder``; returns their paths by kind.

    Files: ``instances.png`` (0 background, 1..K), ``coco.json``, ``mask_<k>.png`` (0/255 per
    object, its full mask), ``cutout_<k>.png`` (RGBA) and, given ``recipe_json``, ``recipe.json``.
    """
    os.makedirs(folder, exist_ok=True)
    masks = [np.asarray(m, dtype=bool) for m in masks]
    paths = {"instances": os.path.join(folder, "instances.png"), "coco": os.path.join(folder, "coco.json")}
    Image.fromarray(instance_map(masks, image.shape[:2])).save(paths["instances"])
    with open(paths["coco"], "w") as file:
        json.dump(coco(masks, file_name), file)
    for number, mask in enumerate(masks, start=1):
        paths[f"mask_{number}"] = os.path.join(folder, f"mask_{number}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(paths[f"mask_{number}"])
        if cutouts:
            paths[f"cutout_{number}"] = os.path.join(folder, f"cutout_{number}.png")
            Image.fromarray(cutout(image, mask), "RGBA").save(paths[f"cutout_{number}"], compress_level=1)
    if recipe_json is not None:
        paths["recipe"] = os.path.join(folder, "recipe.json")
        with open(paths["recipe"], "w") as file:
            file.write(recipe_json)
    return paths
