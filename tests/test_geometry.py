"""One geometry: original <-> working <-> attention grid <-> display, used by the predictor, the app and
the evaluation."""

import numpy as np
import pytest

from m2n2 import M2N2Config, M2N2Predictor
from m2n2.evaluate.methods import GrabCutMethod
from m2n2.geometry import Geometry
from m2n2.markov import start_states
from m2n2.studio.session import Session
from synthetic import CountingBackbone

R = 8


def corners(height, width):
    """The four corner pixels (x, y) and the attention cell (row, col) each must land in."""
    return [((0, 0), (0, 0)), ((width - 1, 0), (0, R - 1)), ((0, height - 1), (R - 1, 0)),
            ((width - 1, height - 1), (R - 1, R - 1))]


def start_cell(geometry, x, y):
    """(row, col) of the attention cell on which the Markov start state of click (x, y) is largest."""
    rows_cols = geometry.working_pixels([(x, y)])
    state = start_states(rows_cols[:, ::-1], geometry.working, R)[0].reshape(R, R)
    return tuple(int(v) for v in np.unravel_index(int(state.argmax()), (R, R)))


@pytest.mark.parametrize("height, width, max_side", [(60, 80, 1024), (300, 1200, 256), (97, 31, 50)])
def test_a_click_at_each_corner_reaches_the_corner_cell_everywhere(height, width, max_side):
    image = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)

    predictor = M2N2Predictor(CountingBackbone(R), M2N2Config.fast(max_side=max_side))
    predictor.set_image(image)
    geometry = predictor.geometry
    assert geometry == Geometry.for_image(height, width, max_side, R)

    session = Session(R, predictor.config)                       # the app: clicks on the display
    session.set_image(image, geometry.working, R, seconds=0.0)
    display_h, display_w = session.display_image.shape[:2]

    baseline = GrabCutMethod(max_side=max_side)                  # the evaluation's baselines
    baseline.set_image(image)

    for (x, y), cell in corners(height, width):
        # The predictor's own start state puts the largest share on that cell.
        assert start_cell(geometry, x, y) == cell
        # A click on the matching display corner maps to the same original corner and cell.
        dx, dy = (display_w - 1) * (x > 0), (display_h - 1) * (y > 0)
        click = session.click_at(dx, dy, 1)
        assert abs(click.x - x) <= width / display_w and abs(click.y - y) <= height / display_h
        assert tuple(geometry.working_pixels([(click.x, click.y)])[0]) == (dy, dx)
        assert start_cell(session.geometry, click.x, click.y) == cell
        # The baselines move the click onto the same working corner.
        col, row = baseline._work([(x, y)])[0]
        assert (row, col) == tuple(geometry.working_pixels([(x, y)])[0])
        assert (row in (0, geometry.working[0] - 1)) and (col in (0, geometry.working[1] - 1))


def test_maps_round_trip_and_clamp():
    geometry = Geometry((300, 400), (75, 100), 16)
    points = np.array([[123.0, 45.0], [0.0, 299.0]])
    np.testing.assert_allclose(geometry.original_to_working(points), (points + 0.5) / 4 - 0.5)  # pixel centres
    np.testing.assert_allclose(geometry.display_to_original([(-5.0, 500.0)]), [[0.0, 299.0]])
    assert geometry.shown == (75, 100) and Geometry((4, 4), (4, 4), display=(8, 8)).shown == (8, 8)
