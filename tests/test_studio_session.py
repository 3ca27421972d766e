"""Per-user state as plain data: clicks in original pixels, validation, no model, cheap to pickle."""

import copy
import pickle

import numpy as np
import pytest
import torch

from m2n2 import InputError, M2N2Config, NotReadyError
from m2n2.prompts import Click
from m2n2.studio.session import Session, Shown
from synthetic import square_image


@pytest.fixture
def session():
    image, _ = square_image(300, 400)
    s = Session(16, M2N2Config.fast(max_side=100))
    s.set_image(image, (75, 100), 16, seconds=0.5)
    return s


def test_click_before_an_image_says_what_to_do():
    s = Session(16)
    with pytest.raises(NotReadyError, match="upload an image or pick an example"):
        s.click_at(1, 1, 1)
    assert s.clicks == [] and not s.has_image


def test_a_click_on_the_display_lands_in_original_pixels(session):
    assert session.display_image.shape == (75, 100, 3)
    click = session.click_at(99, 74, 1)                       # the last displayed pixel: its centre
    assert click == Click(397.5, 297.5, 1)                    # is the centre of its 4 x 4 original pixels
    np.testing.assert_allclose(session.geometry.original_to_display([(click.x, click.y)]), [[99, 74]])


@pytest.mark.parametrize("label, x", [(2, 10.0), (1, float("inf"))])
def test_a_bad_click_is_refused(session, label, x):
    with pytest.raises(InputError):
        session.click_at(x, 10, label)


@pytest.mark.parametrize("bad", [1.5, -0.1, float("nan")])
def test_bad_override_is_refused(session, bad):
    session.clicks = [Click(1, 1, 1)]
    with pytest.raises(InputError, match="threshold must lie in"):
        session.check_override(bad)
    assert session.check_override(0.7) == 0.7 and session.check_override(None) is None


def test_override_without_clicks_is_refused(session):
    with pytest.raises(InputError, match="click on the image first"):
        session.check_override(0.5)


def test_a_new_image_forgets_clicks_and_changes_the_key(session):
    session.clicks, session.threshold = [Click(1, 1, 1)], 0.3
    key = session.key
    session.set_image(square_image()[0], (60, 80), 16, seconds=0.1)
    assert session.clicks == [] and session.threshold is None and session.key != key
    assert session.geometry.original == (60, 80)


def test_session_is_plain_data_without_tensors_or_model(session):
    session.clicks = [Click(10.0, 20.0, 1)]
    session.shown = Shown(np.zeros((300, 400), bool), 0.4, False)
    data = pickle.dumps(session)
    assert b"torch" not in data and b"Backbone" not in data and b"Predictor" not in data
    for clone in (pickle.loads(data), copy.deepcopy(session)):
        assert clone.clicks == session.clicks and clone.clicks is not session.clicks
        assert clone.key == session.key
    assert not any(isinstance(v, torch.Tensor) for v in vars(session).values())


def test_a_new_resolution_keeps_the_image_and_clicks_under_a_new_key(session):
    session.clicks = [Click(10.0, 20.0, 1)]
    key, image = session.key, session.image
    session.set_resolution((75, 100), 32)
    assert session.key != key and session.resolution == 32 and session.geometry.resolution == 32
    assert session.image is image and session.clicks == [Click(10.0, 20.0, 1)]
    assert session.geometry.original == (300, 400) and session.geometry.working == (75, 100)
