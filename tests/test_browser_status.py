"""The status line where the user looks (issue 23, point 6), in Chromium at a desktop's and a phone's width.

The app runs with its default backbone choice offline (``HF_HUB_OFFLINE=1``: Stable Diffusion 2
and DINOv2 cannot load, so it falls back to the colour backbone, R = 32) in a subprocess, one
server for the module. After an example is loaded and clicked, the status line must be inside
the viewport, just above or beside the image, on one line, and name the fallback once (its
reason one hover away, in the tooltip).

Skipped without chromium unless ``M2N2_REQUIRE_BROWSER`` is set (see tests/test_browser.py).
"""

import re

import pytest

from test_browser import TIMEOUT_MS, app_server, browser, click_image, clicks_shown, load_example  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.slow]

#: The most a status line may sit above or beside the image (CSS pixels) to count as "next to it".
NEAR_PX = 48


@pytest.fixture(scope="module")
def fallback_server(tmp_path_factory):
    """``python app.py`` (backbone auto, offline: the colour fallback) on a free port; yields its URL."""
    with app_server(tmp_path_factory.mktemp("server") / "app.log", "--resolution", "32", "--no-prepare-examples",
                    env={"HF_HUB_OFFLINE": "1"}) as url:
        yield url


# The status line as laid out: its box, and how many lines its text takes (the distinct tops of its
# visible text's line boxes, whatever the padding around them and the progress tracker's markup).
LAYOUT = """() => {
    const status = document.getElementById("status");
    const tops = new Set();
    const walker = document.createTreeWalker(status, NodeFilter.SHOW_TEXT);
    while (walker.nextNode()) {
        const range = document.createRange();
        range.selectNodeContents(walker.currentNode);
        for (const rect of range.getClientRects()) if (rect.width > 0 && rect.height > 0) tops.add(Math.round(rect.top));
    }
    const text = status.getBoundingClientRect(), image = document.getElementById("canvas").getBoundingClientRect();
    const box = r => ({left: r.left, top: r.top, right: r.right, bottom: r.bottom});
    return {lines: tops.size, status: box(text), image: box(image),
            viewport: {width: window.innerWidth, height: window.innerHeight}};
}"""


@pytest.mark.parametrize("width, height", [(1400, 900), (420, 900)])
def test_the_status_line_is_one_line_next_to_the_image(browser, fallback_server, width, height):
    page = browser.new_page(viewport={"width": width, "height": height})
    page.set_default_timeout(TIMEOUT_MS)
    try:
        page.goto(fallback_server, timeout=TIMEOUT_MS)
        page.locator("#examples button").first.wait_for()
        load_example(page, "astronaut")
        click_image(page, 0.30, 0.85)                       # the space suit (scrolled into view if need be)
        clicks_shown(page, 1)
        layout = page.evaluate(LAYOUT)
        status, image, viewport = layout["status"], layout["image"], layout["viewport"]
        # In sight, as the page stands after the click.
        assert 0 <= status["top"] and status["bottom"] <= viewport["height"], layout
        assert 0 <= status["left"] and status["right"] <= viewport["width"], layout
        # Next to the image: just above it (overlapping its columns), or beside it (overlapping its rows).
        overlap_x = min(status["right"], image["right"]) - max(status["left"], image["left"]) > 0
        overlap_y = min(status["bottom"], image["bottom"]) - max(status["top"], image["top"]) > 0
        above = overlap_x and 0 <= image["top"] - status["bottom"] <= NEAR_PX
        beside = overlap_y and (0 <= image["left"] - status["right"] <= NEAR_PX
                                or 0 <= status["left"] - image["right"] <= NEAR_PX)
        assert above or beside, layout
        assert layout["lines"] == 1, layout                 # one line
        text = page.locator("#status").inner_text()
        assert re.search(r"\b1 click\b", text) and "mask" in text, text   # the latest result
        # The fallback, said once; why it fell back is one hover away.
        assert len(re.findall(r"fall ?back|fell back", text, flags=re.IGNORECASE)) == 1, text
        reason = page.locator("#status [title]").first.get_attribute("title")
        assert "not available offline" in reason, reason
    finally:
        page.close()
