"""Dataset readers of m2n2.evaluate on a tiny synthetic dataset written to a temporary folder."""

import json
import sys

import numpy as np
import pytest
from PIL import Image

from m2n2.evaluate.datasets import (DatasetError, decode_segmentation, objects_from_mask, open_dataset,
                                    rle_counts_to_mask, rle_string_to_counts)

HEIGHT, WIDTH = 30, 40


def synthetic_images():
    """Two images, each with two rectangles (as COCO polygons, exact on pixel edges) and a
    one-pixel ignore band round the first one."""
    rng = np.random.default_rng(1)
    data = []
    for index in range(2):
        image = rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
        boxes = [(4 + index, 5, 16, 18), (22, 8 + index, 36, 25)]  # x0, y0, x1, y1 (exclusive)
        masks = []
        for x0, y0, x1, y1 in boxes:
            mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
            mask[y0:y1, x0:x1] = True
            masks.append(mask)
        x0, y0, x1, y1 = boxes[0]
        band = np.zeros((HEIGHT, WIDTH), dtype=bool)
        band[y0 - 1:y1 + 1, x0 - 1:x1 + 1] = True
        band &= ~masks[0]
        data.append((f"img{index}", image, boxes, masks, band))
    return data


def encode_counts(mask):
    """Uncompressed COCO RLE of a bool mask (column-major runs, starting with zeros)."""
    flat = mask.T.ravel().astype(np.int8)
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    return np.diff(np.concatenate([[0], changes])).tolist()


def write_folder(root, data, instances):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for name, image, _, masks, band in data:
        Image.fromarray(image).save(root / "images" / f"{name}.png")
        if instances:
            label = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
            label[band] = 255
            for value, mask in enumerate(masks, start=1):
                label[mask] = value
            Image.fromarray(label).save(root / "masks" / f"{name}.png")
        else:  # GrabCut layout holds one object: the first rectangle
            label = np.where(masks[0], 255, np.where(band, 128, 0)).astype(np.uint8)
            Image.fromarray(label).save(root / "masks" / f"{name}.png")
    return root


def write_coco(root, data, encoding):
    root.mkdir(parents=True)
    (root / "images").mkdir()
    images, annotations = [], []
    for image_id, (name, image, boxes, masks, band) in enumerate(data, start=1):
        Image.fromarray(image).save(root / "images" / f"{name}.png")
        images.append({"id": image_id, "file_name": f"{name}.png", "height": HEIGHT, "width": WIDTH})
        for (x0, y0, x1, y1), mask in zip(boxes, masks):
            if encoding == "polygon":
                segmentation = [[x0, y0, x1, y0, x1, y1, x0, y1]]
            else:
                segmentation = {"size": [HEIGHT, WIDTH], "counts": encode_counts(mask)}
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "iscrowd": 0,
                                "segmentation": segmentation})
        annotations.append({"id": len(annotations) + 1, "image_id": image_id, "iscrowd": 1,
                            "segmentation": {"size": [HEIGHT, WIDTH], "counts": encode_counts(band)}})
    path = root / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": []}))
    return path


def load_all(samples):
    loaded = {}
    for sample in samples:
        image, objects = sample.load()
        loaded[sample.name] = (image, objects)
    return loaded


def test_grabcut_layout_reads_object_and_ignore_band(tmp_path):
    data = synthetic_images()
    samples = open_dataset(write_folder(tmp_path / "gc", data, instances=False))
    assert [s.name for s in samples] == ["img0", "img1"]
    for (name, image, _, masks, band), sample in zip(data, samples):
        loaded, objects = sample.load()
        assert np.array_equal(loaded, image)
        assert len(objects) == 1 and objects[0].id == name
        assert np.array_equal(objects[0].mask, masks[0])
        assert np.array_equal(objects[0].ignore, band)


@pytest.mark.parametrize("encoding", ["rle", "polygon"])
def test_all_readers_agree(tmp_path, encoding):
    data = synthetic_images()
    folder = load_all(open_dataset(write_folder(tmp_path / "inst", data, instances=True)))
    coco = load_all(open_dataset(write_coco(tmp_path / "coco", data, encoding)))
    assert folder.keys() == coco.keys() == {"img0", "img1"}
    for name, image, _, masks, band in data:
        for reader in (folder, coco):
            loaded, objects = reader[name]
            assert np.array_equal(loaded, image)
            assert len(objects) == 2
            for obj, mask in zip(objects, masks):
                assert np.array_equal(obj.mask, mask)
                assert np.array_equal(obj.ignore, band)


def test_auto_mode_reads_instance_ids_and_binary_masks():
    label = np.zeros((6, 6), dtype=np.uint8)
    label[1:3, 1:3] = 1
    label[4:, 4:] = 2
    label[0, :] = 255
    objects = objects_from_mask(label, "x")
    assert [o.id for o in objects] == ["x#1", "x#2"]
    assert objects[1].mask.sum() == 4 and objects[0].ignore.sum() == 6
    binary = objects_from_mask((label == 1).astype(np.uint8), "y")
    assert [o.id for o in binary] == ["y"] and binary[0].mask.sum() == 4


def test_compressed_rle_matches_pycocotools_output():
    # Encoded by pycocotools 2.0.11 from the mask below.
    expected = np.zeros((7, 9), dtype=bool)
    expected[1:5, 2:6] = True
    expected[6, :] = True
    expected[0:3, 8] = True
    counts = rle_string_to_counts("6160K30M030M030M030M5003MM")
    assert np.array_equal(rle_counts_to_mask(counts, 7, 9), expected)
    large = np.zeros((40, 60), dtype=bool)
    large[3:37, 5:50] = True
    text = "[6R16" + "0" * 87 + "]<"
    assert np.array_equal(decode_segmentation({"size": [40, 60], "counts": text}, 40, 60), large)


def test_bad_paths_give_clear_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        open_dataset(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="images/ and masks/"):
        open_dataset(tmp_path)
    root = write_folder(tmp_path / "gc", synthetic_images(), instances=False)
    (root / "masks" / "img1.png").unlink()
    with pytest.raises(DatasetError, match="img1.png"):
        open_dataset(root)
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not a COCO"):
        open_dataset(tmp_path / "broken.json")


def test_mask_of_another_size_fails_only_its_sample(tmp_path):
    root = write_folder(tmp_path / "gc", synthetic_images(), instances=False)
    Image.fromarray(np.zeros((5, 5), dtype=np.uint8)).save(root / "masks" / "img0.png")
    first, second = open_dataset(root)
    with pytest.raises(DatasetError, match="5 x 5"):
        first.load()
    assert len(second.load()[1]) == 1


def write_authors_coco(root, data, kind):
    """A dataset folder as the M2N2 authors' prepare_datasets.py writes it (format read from
    their code): ``gt.json`` with the image names as string ids and one compressed-RLE object
    per image, every non-zero mask pixel on (GrabCut, Berkeley, DAVIS...), or SBD's ``val.json``
    with integer ids and one object per non-zero value of the label image."""
    coco_mask = pytest.importorskip("pycocotools.mask")
    (root / "images").mkdir(parents=True)
    images, annotations = [], []
    for index, (name, image, _, masks, band) in enumerate(data):
        if kind == "sbd":
            image_id, file_name = index, f"{index}.png"
            label = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
            for value, mask in enumerate(masks, start=1):
                label[mask] = value
            objects = [(len(annotations) + k, label == value) for k, value in enumerate(np.unique(label)[1:])]
        else:
            image_id, file_name = name, f"{name}.png"
            label = np.where(masks[0], 255, np.where(band, 128, 0))  # GrabCut's mask: 128 = unlabelled band
            objects = [(f"{name}_foreground", label > 0)]
        Image.fromarray(image).save(root / "images" / file_name)
        images.append({"id": image_id, "width": WIDTH, "height": HEIGHT, "file_name": file_name})
        for annotation_id, mask in objects:
            rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
            annotations.append({"id": annotation_id, "image_id": image_id, "category_id": 0,
                                "segmentation": {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")},
                                "area": int(mask.sum()), "bbox": [0, 0, 1, 1], "iscrowd": 0})
    path = root / ("val.json" if kind == "sbd" else "gt.json")
    path.write_text(json.dumps({"info": {"description": kind}, "images": images,
                                "categories": [{"id": 0, "name": "foreground", "supercategory": 0}],
                                "annotations": annotations}, indent=4))
    return path


@pytest.mark.parametrize("decoder", ["pycocotools", "built-in"])
@pytest.mark.parametrize("kind", ["grabcut", "sbd"])
def test_the_authors_coco_files_load_as_they_are(tmp_path, monkeypatch, kind, decoder):
    data = synthetic_images()
    path = write_authors_coco(tmp_path / kind, data, kind)
    if decoder == "built-in":
        monkeypatch.setitem(sys.modules, "pycocotools", None)  # import fails: the built-in decoder
    for where in (path, path.parent):  # the file, or the folder that holds it and images/
        samples = open_dataset(where)
        assert len(samples) == 2
        for sample, (name, image, _, masks, band) in zip(samples, data):
            loaded, objects = sample.load()
            assert np.array_equal(loaded, image)
            expected = masks if kind == "sbd" else [masks[0] | band]  # their files keep no ignore band
            assert [o.mask.tolist() for o in objects] == [m.tolist() for m in expected]
            assert all(not o.ignore.any() for o in objects)
            assert len({o.id for o in objects}) == len(objects)


def test_images_are_read_as_everywhere_else_exif_turned_and_size_guarded(tmp_path, monkeypatch):
    """The evaluation reads images with m2n2.image.read_image, as the app and the CLI do: the EXIF
    orientation applied (as OpenCV's imread does in RITM's and the authors' evaluations) and the
    decompression-bomb guard."""
    from m2n2 import image as images
    from m2n2.errors import InputError

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    stored = np.random.default_rng(3).integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 2  # orientation: mirrored left-right, same shape
    Image.fromarray(stored).save(tmp_path / "images" / "a.jpg", exif=exif, quality=100)
    Image.fromarray(np.zeros((HEIGHT, WIDTH), np.uint8)).save(tmp_path / "masks" / "a.png")
    (sample,) = open_dataset(tmp_path)
    image, _ = sample.load()
    with Image.open(tmp_path / "images" / "a.jpg") as raw:
        as_stored = np.asarray(raw.convert("RGB"))
    np.testing.assert_array_equal(image, as_stored[:, ::-1])
    monkeypatch.setattr(images, "MAX_PIXELS", HEIGHT * WIDTH - 1)
    with pytest.raises(InputError, match="too large"):
        sample.load()
