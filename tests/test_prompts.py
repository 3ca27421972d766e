"""m2n2.prompts: the one click type, parser and check."""

import json

import numpy as np
import pytest

from m2n2.config import MAX_CLICKS
from m2n2.errors import InputError
from m2n2.prompts import Click, as_arrays, check_clicks, check_threshold, link_text, parse_clicks


def test_click_is_frozen_and_knows_its_sign():
    click = Click(3.5, 7.0, 1)
    assert click.positive and not Click(3.5, 7.0, 0).positive
    with pytest.raises(AttributeError):
        click.x = 4.0  # frozen: a click in a list or a set cannot change under its holder
    x, y, label = click
    assert (x, y, label) == (3.5, 7.0, 1) and tuple(Click(1.0, 2.0, 0)) == (1.0, 2.0, 0)


@pytest.mark.parametrize("value", [
    [[10, 20, 1], [30.5, 40, 0], [7, 8]],
    [{"x": 10, "y": 20, "label": 1}, {"x": 30.5, "y": 40, "label": 0}, {"x": 7, "y": 8}],
    '[[10, 20, 1], [30.5, 40, 0], [7, 8]]',
    b'[[10, 20, 1], {"x": 30.5, "y": 40, "label": 0}, [7, 8]]',
    "10,20,1;30.5,40,0;7,8",
    " 10,20,1 ; 30.5,40,0 ; 7,8 ; ",
    ((10, 20, True), (30.5, 40, False), (7, 8)),
    [Click(10, 20, 1), Click(30.5, 40, 0), Click(7, 8, 1)],
])
def test_parse_clicks_reads_every_spelling_alike(value):
    clicks = parse_clicks(value)
    assert clicks == [Click(10.0, 20.0, 1), Click(30.5, 40.0, 0), Click(7.0, 8.0, 1)]
    assert all(type(c.x) is float and type(c.y) is float and type(c.label) is int for c in clicks)


@pytest.mark.parametrize("value, words", [
    ("[[1, 2, 1]", "not a JSON list"),
    ("[]", "is empty"),
    ("", "is empty"),
    (" ; ", "is empty"),
    ('{"x": 1, "y": 2}', "x,y,label"),  # not a list: read as the link form, which it is not either
    (42, "must be a list"),
    ([[1, 2, 3, 4]], "click 1"),
    ([[1, 2, 1], [1, "2", 1]], "click 2"),
    ([[True, 2, 1]], "numbers"),
    ([[1, 2, 2]], "click 1 needs the label 0 or 1 (1 foreground, 0 background), got the label 2"),
    ([[1, 2, -1]], "got the label -1"),
    ([[1, 2, "1"]], "got the label '1'"),
    ([[float("nan"), 2, 1]], "NaN or infinite"),
    ("[[Infinity, 2, 1]]", "NaN or infinite"),
    ([[10 ** 400, 2, 1]], "NaN or infinite"),
    ("1,2,1;abc", "click 2"),
    ("1,2,1;3,4,2", "click 2 needs the label 0 or 1"),
    ("1,2,1.0", "click 1"),
    ("inf,2,1", "NaN or infinite"),
    ("-5,nan,1", "NaN or infinite"),
])
def test_parse_clicks_refuses_with_what_and_the_item(value, words):
    with pytest.raises(InputError) as error:
        parse_clicks(value, what="--points number 3")
    message = str(error.value)
    assert message.startswith("--points number 3"), message
    assert words in message, message


def test_check_clicks_counts_and_places():
    clicks = parse_clicks("0,0,1;639.5,479.9,0")
    assert check_clicks(clicks, (480, 640)) == clicks
    assert check_clicks([(1, 2, 1)]) == [Click(1.0, 2.0, 1)]
    with pytest.raises(InputError, match="at least one click"):
        check_clicks([], (480, 640))
    many = [Click(1, 1, 1)] * (MAX_CLICKS + 1)
    with pytest.raises(InputError, match=f"{MAX_CLICKS + 1} clicks is more than the {MAX_CLICKS}"):
        check_clicks(many, (480, 640))
    assert len(check_clicks(many, (480, 640), max_clicks=None)) == MAX_CLICKS + 1
    with pytest.raises(InputError, match="3 clicks is more than the 2"):
        check_clicks(many[:3], max_clicks=2)


@pytest.mark.parametrize("x, y", [(-5, 2), (640, 2), (2, 480), (2, -0.5)])
def test_check_clicks_names_the_click_outside_the_image(x, y):
    clicks = [Click(1, 1, 1), Click(2, 2, 0), Click(x, y, 1)]
    with pytest.raises(InputError) as error:
        check_clicks(clicks, (480, 640))
    assert str(error.value) == (f"click 3 at (x={x:g}, y={y:g}) is outside the 640 x 480 image "
                                "(x in [0, 640), y in [0, 480))")


@pytest.mark.parametrize("x", [float("nan"), float("inf"), -float("inf")])
def test_check_clicks_says_non_finite_not_an_infinite_image(x):
    # Click itself does not validate; check_clicks must still refuse what parse_clicks would have
    with pytest.raises(InputError) as error:
        check_clicks([Click(x, 3.0, 1)], (480, 640))
    message = str(error.value)
    assert message.startswith(f"click 1 at (x={x:g}, y=3) has a coordinate that is NaN or infinite"), message
    assert "inf x" not in message and "image" not in message


def test_check_clicks_refuses_a_bad_label_of_a_hand_made_click():
    with pytest.raises(InputError, match="click 1 needs the label 0 or 1 .*, got 2"):
        check_clicks([Click(1.0, 1.0, 2)])


@pytest.mark.parametrize("value, expected", [(None, None), (0, 0.0), (1, 1.0), (0.25, 0.25),
                                             (np.float32(0.5), 0.5)])
def test_check_threshold_accepts(value, expected):
    result = check_threshold(value)
    assert result == expected
    assert result is None or type(result) is float


@pytest.mark.parametrize("value", [-0.01, 1.01, float("nan"), float("inf"), True, "0.5", [0.5]])
def test_check_threshold_refuses(value):
    with pytest.raises(InputError, match="threshold"):
        check_threshold(value)


def test_as_arrays_and_link_text_round_trip():
    clicks = [Click(10.0, 20.5, 1), Click(0.0, 3.0, 0)]
    points, labels = as_arrays(clicks)
    assert points.dtype == np.float64 and points.shape == (2, 2)
    assert labels.dtype == np.int64 and labels.tolist() == [1, 0]
    assert points.tolist() == [[10.0, 20.5], [0.0, 3.0]]
    empty_points, empty_labels = as_arrays([])
    assert empty_points.shape == (0, 2) and empty_labels.shape == (0,)
    assert link_text(clicks) == "10,20.5,1;0,3,0"
    assert parse_clicks(link_text(clicks)) == clicks
    assert parse_clicks(json.dumps([[c.x, c.y, c.label] for c in clicks])) == clicks
