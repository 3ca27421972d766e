"""Several objects, recipes, exports and links through the app's handlers (no browser)."""

import copy
import json
import re
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image
from starlette.datastructures import QueryParams
from synthetic import CountingBackbone, centre_of, select_event as select

import app
from m2n2 import export
from m2n2 import recipe as recipes
from m2n2 import segment as cli
from m2n2.prompts import Click
from m2n2.studio import objects, serving
from m2n2.studio.handlers import Handlers

OPTIONS = app.Options(backbone="color", resolution=16, max_side=128)
DEMO, HANDLERS = app.build(OPTIONS, serving.start(OPTIONS, CountingBackbone))
UI = HANDLERS.ui
FOREGROUND, BACKGROUND = 1, 0  # the labels the "Next click is" switch gives


class FakeRequest:
    """What the handlers read of a gr.Request: the tab and the page's query parameters."""

    def __init__(self, query: str = ""):
        self.session_hash = "tab"
        self.query_params = QueryParams(query)


@pytest.fixture
def handlers():
    return Handlers(serving.start(OPTIONS, CountingBackbone), UI, app.EXAMPLES)


def display(session, x, y):
    """Where original pixel (x, y) lies on the displayed working copy."""
    return tuple(session.geometry.original_to_display([(x, y)])[0])


@pytest.fixture
def two_objects(handlers, square_file):
    """The square loaded, object 1 = the square, object 2 = a background corner (with a background click)."""
    path, truth = square_file
    session = handlers.images.set_image({"path": path}, None)[UI.state]
    x, y = centre_of(truth)
    handlers.clicks.click(session, FOREGROUND, select(*display(session, x, y)))
    handlers.sharing.new_object(session)
    handlers.clicks.click(session, FOREGROUND, select(*display(session, 4, 4)))
    handlers.clicks.click(session, BACKGROUND, select(*display(session, x, y)))
    return session, path, truth


def instance_png_bytes(masks, shape, folder) -> bytes:
    path = Path(folder) / "expected.png"
    Image.fromarray(export.instance_map(masks, shape)).save(path)
    return path.read_bytes()


def test_objects_keep_their_clicks_and_masks(two_objects, handlers):
    session, _, truth = two_objects
    assert len(session.objects) == 2 and session.active == 1
    first, second = session.objects
    assert len(first.clicks) == 1 and len(second.clicks) == 2
    assert first.shown.mask[truth].mean() > 0.8          # object 1 is the square
    assert not second.shown.mask[truth].any()             # object 2 excludes it (background click)
    # Undo acts on the current object only.
    out = handlers.clicks.undo(session)
    assert len(session.objects[1].clicks) == 1 and len(session.objects[0].clicks) == 1
    assert out[UI.objects].choices[1][0].startswith("Object 2 (1 click")


def test_each_object_has_its_own_colour_in_the_overlay(two_objects, handlers):
    session, _, _ = two_objects
    picture = handlers.page.overlay(session).astype(float)
    plain = session.display_image.astype(float)
    size = picture.shape[1::-1]
    first, second = (np.asarray(Image.fromarray(obj.shown.mask).resize(size)) for obj in session.objects)
    assert objects.colour(1) != objects.colour(2)
    for only, number in ((first & ~second, 1), (second & ~first, 2)):
        tinted = 0.55 * plain[only] + 0.45 * np.array(objects.colour(number))
        # most of the object's pixels carry its tint (outlines and click markers aside)
        assert np.median(np.abs(picture[only] - tinted).max(axis=1)) <= 1.0


def test_select_threshold_and_delete_act_on_the_chosen_object(two_objects, handlers):
    session, _, _ = two_objects
    second = copy.deepcopy(session.objects[1].shown.mask)
    out = handlers.sharing.select_object(session, 1)
    assert session.active == 0
    assert out[UI.heatmap] is not None and out[UI.objects].value == 1     # the selected object's views
    handlers.clicks.override(session, 0.9)
    assert session.objects[0].threshold == 0.9 and session.objects[1].threshold is None
    assert np.array_equal(session.objects[1].shown.mask, second)
    handlers.sharing.delete_object(session)
    assert len(session.objects) == 1 and np.array_equal(session.objects[0].shown.mask, second)
    handlers.sharing.new_object(session)
    handlers.sharing.select_object(session, 1)  # the new, empty object is dropped, not listed
    assert len(session.objects) == 1


def test_new_object_needs_a_mask_first(handlers, square_file):
    session = handlers.images.set_image({"path": square_file[0]}, None)[UI.state]
    out = handlers.sharing.new_object(session)
    assert set(out) == {UI.state} and len(session.objects) == 1


def test_recipe_replays_to_identical_masks_in_the_api_and_the_cli(two_objects, handlers, tmp_path):
    session, path, _ = two_objects
    handlers.sharing.select_object(session, 2)
    handlers.clicks.override(session, 0.4)  # an override travels in the recipe
    masks = objects.masks(session)
    expected = instance_png_bytes(masks, session.image.shape[:2], tmp_path)
    recipe_path = Path(handlers.sharing.export_recipe(session)[UI.recipe_file].value["path"])
    recipe = recipes.Recipe.from_json(recipe_path.read_text())
    assert [obj.threshold for obj in recipe.objects] == [None, 0.4]

    # the app's own download of the instance PNG
    downloaded = Path(handlers.sharing.export_instances(session)[UI.instances_file].value["path"]).read_bytes()
    assert downloaded == expected

    # the stateless API
    instances, coco, replayed = handlers.api.segment_recipe(path, recipe_path.read_text())
    assert instance_png_bytes([instances == 1, instances == 2], instances.shape, tmp_path) == expected
    assert len(coco["annotations"]) == 2 and replayed == recipe.to_dict()

    # the command line, from a recipe
    out = tmp_path / "cli"
    assert cli.main([path, "--recipe", str(recipe_path), "--out", str(out)]) == 0
    assert (out / "instances.png").read_bytes() == expected
    for number, mask in enumerate(masks, start=1):
        assert np.array_equal(np.asarray(Image.open(out / f"mask_{number}.png")) > 0, mask)
    assert recipes.Recipe.from_json((out / "recipe.json").read_text()) == recipe

    # a fresh session loading the recipe (upload) shows the same masks
    fresh = handlers.images.set_image({"path": path}, None)[UI.state]
    handlers.sharing.load_recipe(fresh, str(recipe_path), "")
    assert [np.array_equal(a, b) for a, b in zip(objects.masks(fresh), masks)] == [True, True]


def test_cli_with_points_writes_masks_and_a_recipe_that_replays(square_file, tmp_path):
    path, truth = square_file
    x, y = centre_of(truth)
    first, second = tmp_path / "a", tmp_path / "b"
    assert cli.main([path, "--points", json.dumps([[x, y, 1]]), "--points", "[[3, 3, 1]]", "--backbone", "color",
                     "--resolution", "16", "--out", str(first)]) == 0
    recipe = recipes.Recipe.from_json((first / "recipe.json").read_text())
    assert [obj.clicks for obj in recipe.objects] == [(Click(x, y, 1),), (Click(3.0, 3.0, 1),)]
    assert cli.main([path, "--recipe", str(first / "recipe.json"), "--out", str(second)]) == 0
    for name in ("instances.png", "mask_1.png", "mask_2.png", "coco.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes()


def test_cli_reports_a_recipe_for_another_image_and_writes_nothing(square_file, tmp_path, capsys):
    path, truth = square_file
    other = tmp_path / "other.png"
    Image.open(path).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(other)
    first = tmp_path / "a"
    assert cli.main([path, "--points", "[[3, 3, 1]]", "--backbone", "color", "--resolution", "16",
                     "--out", str(first)]) == 0
    assert cli.main([str(other), "--recipe", str(first / "recipe.json"), "--out", str(tmp_path / "b")]) == 2
    assert "another image" in capsys.readouterr().err and not (tmp_path / "b").exists()
    assert cli.main([path, "--points", "[[300, 3, 1]]", "--backbone", "color", "--resolution", "16",
                     "--out", str(tmp_path / "c")]) == 2
    assert "outside" in capsys.readouterr().err and not (tmp_path / "c").exists()


@pytest.mark.parametrize("spoil, message", [
    (lambda r: r["image"].update(sha256="0" * 64), "another image"),
    (lambda r: r.update(version=recipes.VERSION + 1), "newer M2N2 Studio"),
    (lambda r: r["backbone"].update(name="Stable Diffusion 2", model="x/y"), "backbone Stable Diffusion 2"),
    (lambda r: r["objects"][0]["clicks"].append([5000, 1, 1]), "outside"),
    (lambda r: r["objects"][0]["clicks"].extend([[1, 1, 0]] * 50), "more than the 20 allowed"),
    (lambda r: r["backbone"].update(resolution=4096), "R up to"),
])
def test_a_recipe_that_does_not_fit_changes_nothing(two_objects, handlers, spoil, message):
    session, _, _ = two_objects
    data = json.loads(handlers.page.recipe_of(session).to_json())
    spoil(data)
    before = copy.deepcopy(session)
    with pytest.warns(UserWarning, match=message):
        out = handlers.sharing.load_recipe(session, None, json.dumps(data))
    assert set(out) == {UI.state}
    assert session.key == before.key and len(session.objects) == len(before.objects)
    assert all(a.clicks == b.clicks and np.array_equal(a.shown.mask, b.shown.mask)
               for a, b in zip(session.objects, before.objects))


def test_the_example_link_opens_the_example_with_its_clicks(handlers):
    name = Path(handlers.page.examples[0]).stem
    out = handlers.sharing.open_link(None, "", None, FakeRequest(f"example={name}&clicks=250,120,1;60,400,0&clicks=400,450,1"))
    session = out[UI.state]
    assert session.example == name and len(objects.finished(session)) == 2
    assert [c.label for c in session.objects[0].clicks] == [1, 0]
    # the same as replaying it with the library
    recipe = handlers.page.recipe_of(session)
    from m2n2 import M2N2Predictor
    predictor = M2N2Predictor(handlers.serving.backbones.get(recipe.backbone.resolution), recipe.config)
    predictor.set_image(session.image)
    assert all(np.array_equal(a, b) for a, b in zip(recipes.replay(predictor, recipe), objects.masks(session)))
    # and the page offers the link back
    assert f"?example={name}&clicks=250,120,1;60,400,0&clicks=400,450,1" in out[UI.link].value


def test_an_example_link_lends_the_kept_example_and_segments_it_as_the_page_does(handlers):
    handlers.images.prepare_examples()
    backbone = handlers.serving.backbones.get(OPTIONS.attention_resolution)
    calls = backbone.calls
    name = Path(handlers.page.examples[0]).stem
    linked = handlers.sharing.open_link(None, "", None, FakeRequest(f"example={name}&clicks=250,120,1"))[UI.state]
    assert backbone.calls == calls                                  # lent: no attention, no operator
    assert linked.config.early_maps == 0 and handlers.page.recipe_of(linked).config.early_maps == 0
    chosen = handlers.images.load_example(0, None)[UI.state]
    handlers.clicks.click(chosen, FOREGROUND, select(*display(chosen, 250, 120)))
    assert chosen.clicks == linked.clicks
    np.testing.assert_array_equal(chosen.shown.mask, linked.shown.mask)


def test_a_bad_link_is_reported(handlers):
    with pytest.warns(UserWarning, match="no example called 'nope'.*astronaut"):
        out = handlers.sharing.open_link(None, "", None, FakeRequest("example=nope&clicks=1,1,1"))
    assert set(out) == {UI.state}


@pytest.mark.parametrize("clicks, says", [
    ("9999,9999,1", r"in clicks=9999,9999,1, click 1 at \(x=9999, y=9999\) is outside the 512 x 512 image"),
    ("-5,10,1", r"in clicks=-5,10,1, click 1 at \(x=-5, y=10\) is outside the 512 x 512 image"),
    ("abc", r"in clicks=abc, click 1 must be x,y,label with numbers"),
    ("250,120,2", r"in clicks=250,120,2, click 1 needs the label 0 or 1"),
    ("nan,120,1", r"in clicks=nan,120,1, click 1 has a coordinate that is NaN or infinite"),
    ("250,inf,1", r"in clicks=250,inf,1, click 1 has a coordinate that is NaN or infinite"),
    (";".join(["250,120,1"] * 21), r"in clicks=250,120,1;250,120,1;.*\.\.\., 21 clicks is more than the 20 allowed"),
    ("250,120,1&clicks=abc", r"in clicks=abc, click 1 must be"),                   # the second object's
])
def test_a_link_with_bad_clicks_says_what_is_wrong_with_the_link_and_opens_the_example(handlers, clicks, says):
    name = Path(handlers.page.examples[0]).stem
    with pytest.warns(UserWarning) as warned:
        out = handlers.sharing.open_link(None, "", None, FakeRequest(f"example={name}&clicks={clicks}"))
    (message,) = [str(w.message) for w in warned if "link" in str(w.message)]
    assert message.startswith("The link's clicks cannot be used: ") and "recipe" not in message
    assert re.search(says, message) and f"The example '{name}' opens without them." in message
    assert "inf x" not in message and "nan x" not in message
    session = out[UI.state]
    assert session.has_image and session.example == name and session.clicks == [] and not objects.finished(session)


def test_a_deep_link_replays_the_recipe_it_carries(two_objects, handlers):
    session, _, _ = two_objects
    # A deep link restores the hidden recipe box of an example's state; an upload's needs its image.
    name = Path(handlers.page.examples[0]).stem
    shown = handlers.sharing.open_link(None, "", None, FakeRequest(f"example={name}&clicks=250,120,1"))
    carried = shown[UI.recipe_text].value
    assert json.loads(carried)["image"]["example"] == name
    out = handlers.sharing.open_link(None, carried, None, FakeRequest("deep_link=abc"))
    assert np.array_equal(objects.masks(out[UI.state])[0], objects.masks(shown[UI.state])[0])


def test_a_deep_link_reproduces_an_uploaded_image_from_the_copy_it_carries(two_objects, handlers):
    session, path, _ = two_objects
    carried = handlers.page.after_click(session)[UI.recipe_text].value
    assert "example" not in json.loads(carried)["image"]  # an upload: no example can stand in
    original = handlers.page.original_view(session)[UI.original]
    assert original == path                               # the hidden copy is the uploaded file
    # Without the image, nothing changes and the page says what is missing.
    with pytest.warns(UserWarning, match="load the image"):
        refused = handlers.sharing.open_link(None, carried, None, FakeRequest("deep_link=abc"))
    assert set(refused) == {UI.state}
    out = handlers.sharing.open_link(None, carried, original, FakeRequest("deep_link=abc"))
    restored = out[UI.state]
    assert restored.id != session.id and restored.source == path
    assert all(np.array_equal(a, b) for a, b in zip(objects.masks(restored), objects.masks(session)))
    # An example's state carries no copy: the recipe names the example.
    name = Path(handlers.page.examples[0]).stem
    shown = handlers.sharing.open_link(None, "", None, FakeRequest(f"example={name}&clicks=250,120,1"))
    assert handlers.page.original_view(shown[UI.state])[UI.original] is None


def test_a_click_updates_the_core_views_then_the_object_list_follows(handlers, square_file):
    session = handlers.images.set_image({"path": square_file[0]}, None)[UI.state]
    out = handlers.clicks.click_only(session, FOREGROUND, select(*display(session, 40, 30)))
    assert UI.image in out and not set(out) & set(handlers.ui.after_click)
    views = handlers.page.after_click(session)
    assert set(views) == set(handlers.ui.after_click)
    assert recipes.Recipe.from_json(views[UI.recipe_text].value) == handlers.page.recipe_of(session)


def test_the_recipe_api_refuses_a_recipe_beyond_the_limits_before_reading_the_image(two_objects, handlers):
    session, _, _ = two_objects
    data = json.loads(handlers.page.recipe_of(session).to_json())
    data["objects"][0]["clicks"].extend([[1, 1, 0]] * 50)
    with pytest.raises(gr.Error, match="more than the 20 allowed"):
        handlers.api.segment_recipe("/no/such/image.png", json.dumps(data))  # the file is never opened


def test_the_recipe_box_after_a_click_reuses_the_image_hash(two_objects, handlers, monkeypatch):
    session, _, _ = two_objects
    assert session.image_sha256 == recipes.image_hash(session.image)

    def rehash(image):
        raise AssertionError("a click hashed the whole image again")

    monkeypatch.setattr(recipes, "image_hash", rehash)
    assert handlers.page.recipe_of(session).image_hash == session.image_sha256
