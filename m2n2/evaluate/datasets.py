"""Readers of interactive segmentation benchmarks.

Every reader returns a list of :class:`Sample`: one image and a way to load it with its
objects, so a run touches one image at a time and a broken file fails only its own sample.

Layouts
-------
- Folder (GrabCut, Berkeley and any custom set): ``ROOT/images/NAME.{jpg,png,...}`` and
  ``ROOT/masks/NAME.png``. See :func:`objects_from_mask` for how mask values are read.
- COCO: an instances JSON file (``images``, ``annotations`` with polygon or RLE
  ``segmentation``); every annotation that is not a crowd is one object, crowd regions are
  ignored. pycocotools is used when installed, else a built-in decoder. The M2N2 authors'
  ``prepare_datasets.py`` writes this format as they publish their benchmarks:
  ``datasets/coco/<Name>/gt.json`` (GrabCut, Berkeley, DAVIS, BraTS20, OAI-ZIB: string image
  and annotation ids, one compressed-RLE object per image, every non-zero mask pixel on, so
  GrabCut's unlabelled band counts as object and nothing is ignored) and
  ``datasets/coco/SBD/val.json`` (integer ids, one object per non-zero value of the mask
  torchvision's SBDataset gives), each with the images in ``images/`` beside it. A folder with
  ``images/`` and one of :data:`COCO_FILES` (and no ``masks/``) is read as that file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from ..errors import M2N2Error
from ..image import read_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
MASK_MODES = ("auto", "binary", "instances")
IGNORE_BINARY = 128     # GrabCut's unlabelled band
IGNORE_INSTANCES = 255  # PASCAL VOC / SBD's "void"
#: Annotation files of a dataset folder in the authors' COCO layout, in the order they are tried.
COCO_FILES = ("gt.json", "val.json")


class DatasetError(M2N2Error, ValueError):
    """A dataset path or file that cannot be read as a benchmark."""


@dataclass
class Instance:
    """One object to segment.

    Attributes
    ----------
    id : str
        Unique in the dataset: the image name, plus ``#k`` when an image has several objects.
    mask : numpy.ndarray
        (H, W) bool ground truth.
    ignore : numpy.ndarray or None
        (H, W) bool pixels left out of IoU and never clicked.
    """

    id: str
    mask: np.ndarray
    ignore: np.ndarray | None = None


@dataclass
class Sample:
    """One image of a dataset, loaded on demand by :meth:`load`."""

    name: str
    loader: Callable[[], tuple[np.ndarray, list[Instance]]]
    #: The work this sample is likely to take, comparable across one dataset's samples (pixels x
    #: objects where the objects are known without loading), read without decoding the image.
    cost: Callable[[], float] | None = None

    def load(self) -> tuple[np.ndarray, list[Instance]]:
        """Return the RGB uint8 image (H, W, 3) and its objects."""
        return self.loader()

    def expected_cost(self) -> float:
        """:attr:`cost`'s estimate; 0 when there is none or the file cannot be read (the
        sample's load then reports the problem)."""
        if self.cost is None:
            return 0.0
        try:
            return float(self.cost())
        except (OSError, ValueError, KeyError, TypeError):
            return 0.0


def pixel_count(path: Path) -> int:
    """Width x height of an image file, from its header."""
    with Image.open(path) as image:
        return image.width * image.height


def open_dataset(path: str | Path, masks: str = "auto", images: str | Path | None = None) -> list[Sample]:
    """Read a dataset, guessing its layout from ``path``.

    Parameters
    ----------
    path : str or pathlib.Path
        A folder with ``images/`` and ``masks/``, a COCO ``.json`` file, or a folder with
        ``images/`` and ``gt.json`` or ``val.json`` (the M2N2 authors' layout).
    masks : {"auto", "binary", "instances"}
        How folder masks are read (see :func:`objects_from_mask`).
    images : str or pathlib.Path, optional
        COCO only: the folder of the images (default: ``images/`` beside the JSON file if it
        exists, else the JSON file's folder).

    Raises
    ------
    DatasetError
        The path does not exist or has neither layout.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise DatasetError(f"dataset path {str(path)!r} does not exist")
    if path.is_file() and path.suffix.lower() == ".json":
        return read_coco(path, images)
    if path.is_dir() and (path / "images").is_dir() and (path / "masks").is_dir():
        return read_folder(path, masks)
    coco = [path / name for name in COCO_FILES if (path / name).is_file()]
    if path.is_dir() and coco:
        return read_coco(coco[0], images)
    raise DatasetError(f"{str(path)!r} is neither a folder with images/ and masks/ subfolders, "
                       f"nor a COCO annotation .json file, nor a folder with {' or '.join(COCO_FILES)}")


def read_folder(root: str | Path, masks: str = "auto") -> list[Sample]:
    """Read the ``images/`` + ``masks/`` layout, one sample per image, sorted by name.

    Raises
    ------
    DatasetError
        No images, or images without a mask.
    """
    if masks not in MASK_MODES:
        raise DatasetError(f"mask mode must be one of {MASK_MODES}, got {masks!r}")
    root = Path(root)
    image_paths = sorted(p for p in (root / "images").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not image_paths:
        raise DatasetError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {root / 'images'}")
    mask_paths = {p.stem: p for p in (root / "masks").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    missing = [p.name for p in image_paths if p.stem not in mask_paths]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise DatasetError(f"{len(missing)} image(s) in {root / 'images'} have no mask of the same "
                           f"name in {root / 'masks'}: {shown}")

    def loader(image_path: Path, mask_path: Path) -> Callable[[], tuple[np.ndarray, list[Instance]]]:
        def load() -> tuple[np.ndarray, list[Instance]]:
            image = read_image(image_path)
            label = read_label(mask_path)
            if label.shape != image.shape[:2]:
                raise DatasetError(f"{mask_path.name} is {label.shape[1]} x {label.shape[0]} but its "
                                   f"image is {image.shape[1]} x {image.shape[0]}")
            return image, objects_from_mask(label, image_path.stem, masks)
        return load

    return [Sample(p.stem, loader(p, mask_paths[p.stem]), lambda p=p: pixel_count(p))
            for p in image_paths]


def read_label(path: Path) -> np.ndarray:
    """A mask file as a 2-D integer array (palette PNGs give their indices)."""
    with Image.open(path) as image:
        label = np.asarray(image)
    if label.ndim == 3:
        # Grey masks saved as RGB(A): the colour channels must agree.
        if not (np.all(label[..., 0] == label[..., 1]) and np.all(label[..., 0] == label[..., 2])):
            raise DatasetError(f"{path.name}: colour masks are not supported; save ids as grey values")
        label = label[..., 0]
    return label


def objects_from_mask(label: np.ndarray, name: str, mode: str = "auto") -> list[Instance]:
    """Split a label image into objects.

    Parameters
    ----------
    label : numpy.ndarray
        (H, W) integers.
    name : str
        Image name, the base of the instance ids.
    mode : {"auto", "binary", "instances"}
        ``"binary"``: one object, every non-zero value but 128 (GrabCut's ignore band).
        ``"instances"``: one object per value other than 0 and 255 (VOC's ignore value), ids
        ``name#value``. ``"auto"``: binary if all values lie in {0, 1, 128, 255}, else
        instances.

    Returns
    -------
    list of Instance
        Empty if the mask holds no object.
    """
    values = set(np.unique(label).tolist())
    if mode == "auto":
        mode = "binary" if values <= {0, 1, IGNORE_BINARY, 255} else "instances"
    if mode == "binary":
        ignore = label == IGNORE_BINARY
        mask = (label != 0) & ~ignore
        return [Instance(name, mask, ignore)] if mask.any() else []
    ignore = label == IGNORE_INSTANCES
    return [Instance(f"{name}#{value}", label == value, ignore)
            for value in sorted(values - {0, IGNORE_INSTANCES})]


def read_coco(json_path: str | Path, images: str | Path | None = None) -> list[Sample]:
    """Read COCO instance annotations, one sample per image that has an object.

    Raises
    ------
    DatasetError
        Unreadable JSON, missing keys, or a missing image folder.
    """
    json_path = Path(json_path)
    try:
        data = json.loads(json_path.read_text())
        image_entries = {entry["id"]: entry for entry in data["images"]}
        annotations = sorted(data["annotations"], key=lambda a: _id_order(a["id"]))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DatasetError(f"{json_path} is not a COCO annotation file: {error!r}") from error
    if images is None:
        images = json_path.parent / "images" if (json_path.parent / "images").is_dir() else json_path.parent
    images = Path(images)
    if not images.is_dir():
        raise DatasetError(f"COCO image folder {str(images)!r} does not exist")

    per_image: dict[int, list[dict]] = {}
    for annotation in annotations:
        per_image.setdefault(annotation["image_id"], []).append(annotation)

    def loader(entry: dict, anns: list[dict]) -> Callable[[], tuple[np.ndarray, list[Instance]]]:
        def load() -> tuple[np.ndarray, list[Instance]]:
            image = read_image(images / entry["file_name"])
            height, width = image.shape[:2]
            ignore = np.zeros((height, width), dtype=bool)
            for ann in anns:
                if ann.get("iscrowd", 0):
                    ignore |= decode_segmentation(ann["segmentation"], height, width)
            stem = Path(entry["file_name"]).stem
            objects = [Instance(f"{stem}#{ann['id']}", decode_segmentation(ann["segmentation"], height, width),
                                ignore) for ann in anns if not ann.get("iscrowd", 0)]
            return image, [obj for obj in objects if obj.mask.any()]
        return load

    def cost(entry: dict, anns: list[dict]) -> Callable[[], float]:
        def estimate() -> float:
            pixels = (entry["width"] * entry["height"] if "width" in entry and "height" in entry
                      else pixel_count(images / entry["file_name"]))
            return pixels * sum(1 for ann in anns if not ann.get("iscrowd", 0))
        return estimate

    return [Sample(Path(image_entries[image_id]["file_name"]).stem, loader(image_entries[image_id], anns),
                   cost(image_entries[image_id], anns))
            for image_id, anns in sorted(per_image.items(), key=lambda item: _id_order(item[0]))
            if any(not ann.get("iscrowd", 0) for ann in anns)]


def _id_order(value) -> tuple:
    """Sort key of a COCO id: numbers in numeric order, then strings (the authors' files use
    integer ids for SBD and the image names for the others)."""
    return (isinstance(value, str), value if isinstance(value, (int, float)) else str(value))


def decode_segmentation(segmentation, height: int, width: int) -> np.ndarray:
    """A COCO ``segmentation`` (polygons, uncompressed or compressed RLE) as (H, W) bool."""
    try:
        from pycocotools import mask as coco_mask
    except ImportError:
        coco_mask = None
    if coco_mask is not None:
        if isinstance(segmentation, list):
            rle = coco_mask.merge(coco_mask.frPyObjects(segmentation, height, width))
        elif isinstance(segmentation["counts"], list):
            rle = coco_mask.frPyObjects(segmentation, height, width)
        else:
            rle = segmentation
        return coco_mask.decode(rle).astype(bool)
    if isinstance(segmentation, list):
        return _polygons_to_mask(segmentation, height, width)
    counts = segmentation["counts"]
    if isinstance(counts, str):
        counts = rle_string_to_counts(counts)
    return rle_counts_to_mask(counts, height, width)


def _polygons_to_mask(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    """Rasterise COCO polygons (flat x, y lists); pixel centres inside are on. pycocotools'
    rasteriser differs from this by at most a thin band along the outline."""
    from skimage.draw import polygon as fill_polygon

    mask = np.zeros((height, width), dtype=bool)
    for flat in polygons:
        xy = np.asarray(flat, dtype=float).reshape(-1, 2)
        # COCO coordinates put pixel centres at +0.5; skimage puts them at integers.
        rows, cols = fill_polygon(xy[:, 1] - 0.5, xy[:, 0] - 0.5, shape=(height, width))
        mask[rows, cols] = True
    return mask


def rle_counts_to_mask(counts: list[int], height: int, width: int) -> np.ndarray:
    """Uncompressed COCO RLE (alternating runs of 0 and 1, column-major) as (H, W) bool."""
    if sum(counts) != height * width:
        raise DatasetError(f"RLE covers {sum(counts)} pixels, the image has {height * width}")
    values = np.arange(len(counts)) % 2 == 1
    return np.repeat(values, counts).reshape((width, height)).T


def rle_string_to_counts(text: str) -> list[int]:
    """Decode COCO's compressed RLE string into run lengths.

    Each run is a signed number in 5-bit groups, least significant first, every character
    ``48 + group`` with bit 0x20 meaning "more groups follow" and bit 0x10 of the last group the
    sign; from the third run on, the value is a difference to the run two places before.
    """
    counts: list[int] = []
    position = 0
    while position < len(text):
        value, shift, more = 0, 0, True
        while more:
            group = ord(text[position]) - 48
            value |= (group & 0x1F) << shift
            more = bool(group & 0x20)
            position += 1
            shift += 5
            if not more and group & 0x10:
                value |= -1 << shift
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts
