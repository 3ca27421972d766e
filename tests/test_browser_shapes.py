"""In a real browser: inputs the app refuses, and what stays on the page when it does.

* An image too elongated to click on (a 20000 x 100 strip would be drawn a few pixels thick) is
  refused before any attention with a message that gives the limit and a crop, and the picture,
  the clicks and the status line of the image before it stay.
* A link whose clicks are wrong says what is wrong with the link and opens its example anyway.

One app server for the module (``python app.py --backbone color``, as tests/test_browser.py starts
it, whose fixtures and helpers these tests use). Skipped without chromium unless
``M2N2_REQUIRE_BROWSER`` is set.
"""

import re

import numpy as np
import pytest
from PIL import Image

from test_browser import (browser, clicks_shown, click_image, load_example, new_page, open_app,  # noqa: F401
                          server, wait_status)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def toast_saying(page, pattern):
    """The text of the toast that matches ``pattern`` (waits a minute for it)."""
    toast = page.locator(".toast-body").filter(has_text=pattern).first
    toast.wait_for(timeout=60_000)
    return toast.inner_text()


def shown_size(page) -> tuple[int, int]:
    """(width, height) of the picture the canvas shows, once loaded."""
    return tuple(page.locator("#canvas img").first.evaluate("""img => new Promise(resolve => {
        const done = () => resolve([img.naturalWidth, img.naturalHeight]);
        if (img.complete && img.naturalWidth) done(); else img.addEventListener("load", done, {once: true});
    })"""))


def test_a_long_strip_is_refused_and_the_picture_clicks_and_status_stay(browser, server, tmp_path):
    page = open_app(browser, server)
    load_example(page, "astronaut")
    click_image(page, 0.30, 0.85)                       # the space suit
    clicks_shown(page, 1)
    status = page.locator("#status").inner_text()
    assert shown_size(page) == (512, 512)

    strip = tmp_path / "strip.png"
    Image.fromarray(np.full((100, 20000, 3), 128, np.uint8)).save(strip)
    page.locator("#canvas input[type=file]").set_input_files(str(strip))
    said = toast_saying(page, "crop it")
    assert "20000 x 100 pixels" in said and "the limit is 8 times" in said and "800 x 100" in said
    # The image before it, its click and its status line are still there.
    page.wait_for_function("said => document.getElementById('status').innerText === said", arg=status)
    assert re.search(r"\b1 click\b", status)
    assert shown_size(page) == (512, 512)
    click_image(page, 0.5, 0.2)                         # and it can still be clicked on
    clicks_shown(page, 2)


def test_a_link_with_clicks_off_the_image_says_so_and_opens_the_example(browser, server):
    page = new_page(browser, f"{server}?example=astronaut&clicks=9999,9999,1")
    said = toast_saying(page, "link")
    assert "The link's clicks cannot be used" in said and "recipe" not in said
    assert "click 1 at (x=9999, y=9999) is outside the 512 x 512 image" in said
    wait_status(page, re.compile(r"\b0 clicks\b"))
    assert shown_size(page) == (512, 512)
