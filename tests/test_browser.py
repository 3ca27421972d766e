"""End to end: Debian's chromium, driven by Playwright, uses the app like a person would.

The app runs in a subprocess (colour backbone, R = 32) on a free 127.0.0.1 port. The test loads
an example, clicks on the object, checks that the mask (with a visible outline), the Markov-map
heatmap and the score curve appear and that the mask covers neither nothing nor everything,
types a threshold and presses Enter, goes back to the automatic threshold, checks that a second
browser (another user) sees none of it, clicks six times 0.3 s apart (six points, none lost) and
once while the picture loads (held, then sent),
then undoes and resets.

``M2N2_SCREENSHOT=1`` also saves docs/screenshot.png (the README's picture); without it the test
writes nothing into the repository.

Without chromium the test is skipped, unless ``M2N2_REQUIRE_BROWSER`` is set (as CI does), in
which case a missing browser fails it.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT = ROOT / "docs" / "screenshot.png"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
HOW_TO_ENABLE = ("install Debian's chromium (`sudo apt-get install chromium`, or point M2N2_CHROMIUM at a "
                 "chromium binary) and the playwright Python package; CI sets M2N2_REQUIRE_BROWSER=1 so that a "
                 "missing browser fails instead of skipping")
TIMEOUT_MS = 180_000
VIEWPORT = {"width": 1500, "height": 1050}


def chromium_path() -> str | None:
    candidate = os.environ.get("M2N2_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    return candidate if candidate and os.access(candidate, os.X_OK) else None


def require_browser():
    """The chromium binary and Playwright's sync API, or skip/fail as the environment asks."""
    required = bool(os.environ.get("M2N2_REQUIRE_BROWSER"))
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    binary = chromium_path()
    if binary is None or sync_playwright is None:
        missing = "chromium" if binary is None else "the playwright package"
        if required:
            pytest.fail(f"M2N2_REQUIRE_BROWSER is set but {missing} is missing: {HOW_TO_ENABLE}")
        pytest.skip(f"browser test skipped, {missing} is missing: {HOW_TO_ENABLE}")
    return binary, sync_playwright


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def app_server(log_path: Path, *args: str, env: dict | None = None):
    """``python app.py ARGS`` on a free 127.0.0.1 port, its output in ``log_path``; yields its URL once it
    answers (fails the test if it exits or does not answer within 180 s) and stops it afterwards."""
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1", **(env or {})}
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "app.py", *args, "--server-name", "127.0.0.1",
                                    "--port", str(port)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                pytest.fail(f"the app exited with code {process.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the app did not answer within 180 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``python app.py --backbone color`` on a free port; yields its URL, kills it afterwards."""
    with app_server(tmp_path_factory.mktemp("server") / "app.log", "--backbone", "color", "--resolution", "32") as url:
        yield url


@pytest.fixture
def browser():
    """A headless Chromium (the test is skipped where none is installed), closed afterwards."""
    binary, sync_playwright = require_browser()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=binary, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def new_page(owner, url):
    """A page of ``owner`` (the browser, or one of its contexts) at ``url``, with the tests' time-out."""
    page = owner.new_page(viewport=VIEWPORT) if hasattr(owner, "new_context") else owner.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url, timeout=TIMEOUT_MS)
    return page


def open_app(browser, url):
    page = new_page(browser, url)
    page.locator("#examples button").first.wait_for()
    return page


def wait_status(page, pattern):
    """Wait until the status line matches ``pattern``; on time-out, say what the page showed."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    try:
        page.locator("#status").filter(has_text=pattern).wait_for()
    except PlaywrightTimeout:
        toasts = " | ".join(page.locator(".toast-body").all_inner_texts())
        pytest.fail(f"status never matched {pattern!r}: it says {page.locator('#status').inner_text()!r}; "
                    f"messages shown: {toasts or 'none'}")


def load_example(page, name: str):
    """Click the example whose thumbnail shows ``name`` and wait until it is prepared."""
    page.locator(f"#examples button:has(img[src*='{name}'])").click()
    wait_status(page, "0 clicks")
    page.locator("#canvas img").first.wait_for()


def image_position(page, fx: float, fy: float) -> tuple[dict, dict]:
    """The point at a fraction (fx, fy) of the displayed image (object-fit: contain aware), relative
    to the image element, and the element's box on the page."""
    image = page.locator("#canvas img").first
    # The image changes with every click (its marker is drawn at once): wait until it has loaded.
    natural = image.evaluate("""img => new Promise(resolve => {
        const done = () => resolve([img.naturalWidth, img.naturalHeight]);
        if (img.complete && img.naturalWidth) done(); else img.addEventListener("load", done, {once: true});
    })""")
    box = image.bounding_box()
    scale = min(box["width"] / natural[0], box["height"] / natural[1])
    left = (box["width"] - natural[0] * scale) / 2
    top = (box["height"] - natural[1] * scale) / 2
    return {"x": left + fx * natural[0] * scale, "y": top + fy * natural[1] * scale}, box


def click_image(page, fx: float, fy: float):
    """Click at a fraction (fx, fy) of the displayed image."""
    position, _ = image_position(page, fx, fy)
    page.locator("#canvas img").first.click(position=position)


def clicks_shown(page, count: int):
    word = "click" if count == 1 else "clicks"
    wait_status(page, re.compile(rf"\b{count} {word}\b"))


def mask_percent(page) -> float:
    match = re.search(r"mask ([\d.]+) % of the image", page.locator("#status").inner_text())
    assert match, page.locator("#status").inner_text()
    return float(match.group(1))


def shown_image(page) -> np.ndarray:
    """The overlay the canvas shows, as the browser received it (a JPEG: colours within a few levels)."""
    data = page.locator("#canvas img").first.evaluate("""async img => {
        const bytes = new Uint8Array(await (await fetch(img.src)).arrayBuffer());
        let text = ""; for (const b of bytes) text += String.fromCharCode(b); return btoa(text);
    }""")
    import base64
    return np.asarray(Image.open(BytesIO(base64.b64decode(data))).convert("RGB"))


def outline_pixels(image: np.ndarray) -> int:
    """Pixels of the two-tone outline: white with a black pixel right above, below or beside (within
    the canvas JPEG's error: views.canvas_picture)."""
    white = (image >= 215).all(axis=2)
    black = (image <= 40).all(axis=2)
    near_black = np.zeros_like(black)
    near_black[1:] |= black[:-1]
    near_black[:-1] |= black[1:]
    near_black[:, 1:] |= black[:, :-1]
    near_black[:, :-1] |= black[:, 1:]
    return int((white & near_black).sum())


def threshold_shown(page) -> str:
    match = re.search(r"threshold ([\d.]+) \((yours|adaptive)\)", page.locator("#status").inner_text())
    assert match, page.locator("#status").inner_text()
    return match.group(2)


def test_click_undo_reset_in_a_real_browser(browser, server):
    page = open_app(browser, server)
    load_example(page, "astronaut")
    before = page.locator("#canvas img").first.get_attribute("src")
    unmasked = outline_pixels(shown_image(page))  # the photo's own white-beside-black pixels

    # The click's marker is drawn by the page at once, where the click was, in the foreground's colour,
    # and the status line counts the click as waiting; both go when the click's answer (its picture) arrives.
    page.evaluate("""() => { window.__markers = []; window.__statuses = [];
        new MutationObserver(changes => { for (const change of changes) for (const node of change.addedNodes)
            if (node.classList && node.classList.contains("m2n2-waiting-marker")) {
                const box = node.getBoundingClientRect();
                window.__markers.push({x: box.left + box.width / 2, y: box.top + box.height / 2,
                                       colour: getComputedStyle(node).backgroundColor,
                                       status: document.getElementById("status").innerText});
            } }).observe(document.getElementById("canvas"), {childList: true, subtree: true});
        new MutationObserver(() => window.__statuses.push(document.getElementById("status").innerText))
            .observe(document.getElementById("status"), {childList: true, subtree: true, characterData: true}); }""")
    position, box = image_position(page, 0.30, 0.85)
    click_image(page, 0.30, 0.85)                       # the space suit
    clicks_shown(page, 1)
    markers = page.evaluate("window.__markers")
    assert len(markers) == 1 and markers[0]["colour"] == "rgb(40, 200, 60)", markers
    assert "0 clicks (+1 waiting)" in markers[0]["status"]    # counted at once, in the click's own handler
    assert abs(markers[0]["x"] - box["x"] - position["x"]) < 1.5 and abs(markers[0]["y"] - box["y"] - position["y"]) < 1.5
    assert page.locator("#canvas .m2n2-waiting-marker").count() == 0
    assert 0.5 < mask_percent(page) < 95.0
    page.locator("#heatmap img").first.wait_for()
    page.locator("#scores svg").first.wait_for()
    assert page.locator("#canvas img").first.get_attribute("src") != before
    assert page.locator("#download-mask").is_enabled()
    assert "R = 32" in page.locator("#status").inner_text()
    canvas, heatmap, scores = (page.locator(f"#{name}").bounding_box()
                               for name in ("canvas", "heatmap", "scores"))
    assert canvas["x"] + canvas["width"] <= heatmap["x"] < scores["x"]         # side by side
    assert abs(canvas["y"] - heatmap["y"]) < 5 and abs(canvas["y"] - scores["y"]) < 5
    assert outline_pixels(shown_image(page)) > unmasked + 50                    # the mask's outline
    with page.expect_download() as download:                                  # written on demand
        page.locator("#download-mask").click()
    mask = Image.open(download.value.path())
    assert mask.size == (512, 512) and 0 < (np.asarray(mask) > 0).mean() < 0.95   # the original's size
    if os.environ.get("M2N2_SCREENSHOT"):
        page.screenshot(path=str(SCREENSHOT), full_page=True)

    # A threshold typed into the slider's box applies on Enter; the button goes back to automatic.
    assert threshold_shown(page) == "adaptive"
    box = page.locator("#threshold input[type=number]")
    box.fill("0.05")
    box.press("Enter")
    wait_status(page, "threshold 0.050 (yours)")
    assert page.locator("#automatic").is_enabled()
    page.locator("#automatic").click()
    wait_status(page, "(adaptive)")
    assert not page.locator("#automatic").is_enabled()

    # Another user in another browser sees none of this and keeps their own clicks.
    other = open_app(browser, server)
    load_example(other, "coffee")
    click_image(other, 0.5, 0.5)
    clicks_shown(other, 1)
    clicks_shown(page, 1)
    assert "1 click" in page.locator("#status").inner_text()

    # Six clicks 0.3 s apart, while the first ones are still being computed: six points.
    for k in range(6):
        click_image(page, 0.05 + 0.15 * k, 0.05)
        assert page.locator("#canvas img").first.is_visible()               # no overlay hides it
        page.wait_for_timeout(300)
    clicks_shown(page, 7)
    assert "waiting" not in page.locator("#status").inner_text()
    assert page.locator("#canvas .m2n2-waiting-marker").count() == 0      # each went with its answer
    waited = [int(n) for text in page.evaluate("window.__statuses") for n in re.findall(r"\(\+(\d+) waiting\)", text)]
    assert waited and max(waited) <= 6, waited                           # counted, never more than were sent

    # A click that lands while the picture is loading (natural size 0: Gradio would drop it) is held
    # and replayed once the picture is there. The picture is made to "load" by taking its source away.
    position, box = image_position(page, 0.5, 0.95)
    image = page.locator("#canvas img").first
    image.evaluate("""img => { img.style.width = img.width + "px"; img.style.height = img.height + "px";
                               img.dataset.shown = img.src; img.removeAttribute("src"); }""")
    assert image.evaluate("img => img.naturalWidth") == 0
    page.mouse.click(box["x"] + position["x"], box["y"] + position["y"])
    page.wait_for_timeout(500)
    assert re.search(r"\b7 clicks\b", page.locator("#status").inner_text())  # held, not sent
    image.evaluate("""img => { img.src = img.dataset.shown; img.style.width = img.style.height = ""; }""")
    clicks_shown(page, 8)

    page.locator("#undo").click()
    clicks_shown(page, 7)
    page.locator("#reset").click()
    clicks_shown(page, 0)
    page.locator("#heatmap img").first.wait_for(state="detached")
    assert not page.locator("#download-mask").is_enabled()
    clicks_shown(other, 1)

    for width in (600, 420):                                                 # a phone: stacked
        page.set_viewport_size({"width": width, "height": 900})
        page.wait_for_function("""() => {
            const top = id => document.getElementById(id).getBoundingClientRect();
            return top('heatmap').top >= top('canvas').bottom && top('scores').top >= top('heatmap').bottom;
        }""")
        assert page.evaluate("document.documentElement.scrollWidth") <= width + 1   # no sideways scroll


def download(page, button: str) -> bytes:
    """Press a download button and return the file's bytes."""
    with page.expect_download() as downloaded:
        page.locator(f"#{button}").click()
    return Path(downloaded.value.path()).read_bytes()


def test_two_objects_recipe_reload_and_links_in_a_real_browser(browser, server, tmp_path):
    page = open_app(browser, server)
    load_example(page, "astronaut")
    click_image(page, 0.30, 0.85)                       # object 1: the space suit
    clicks_shown(page, 1)
    page.locator("#new-object").click()
    clicks_shown(page, 0)
    click_image(page, 0.5, 0.2)                         # object 2: the face / hair
    clicks_shown(page, 1)
    page.locator("#objects label").nth(1).wait_for()
    assert page.locator("#objects label").count() == 2
    instances = np.asarray(Image.open(BytesIO(download(page, "download-instances"))))
    assert instances.shape == (512, 512) and set(np.unique(instances)) == {0, 1, 2}
    recipe = tmp_path / "recipe.json"
    recipe.write_bytes(download(page, "download-recipe"))

    # A deep link (what the Share button copies) made now, before the page goes away.
    deep_link = page.evaluate("""async () => (await (await fetch(
        `gradio_api/deep_link?session_hash=${window.__gradio_session_hash__}`)).text()).replace(/"/g, "")""")

    page.reload()
    page.locator("#examples button").first.wait_for()
    page.locator("#share").get_by_text("Share: link, recipe").click()
    page.locator("#recipe-upload input[type=file]").set_input_files(str(recipe))
    page.locator("#load-recipe").click()
    wait_status(page, "recipe")
    page.locator("#objects label").nth(1).wait_for()
    assert page.locator("#objects label").count() == 2
    again = np.asarray(Image.open(BytesIO(download(page, "download-instances"))))
    assert np.array_equal(again, instances)             # the same two masks

    # The deep link restores the same state for whoever opens it.
    assert deep_link, "the server made no deep link"
    linked = new_page(browser, f"{server}?deep_link={deep_link}")
    wait_status(linked, "recipe")
    linked.locator("#objects label").nth(1).wait_for()
    carried = linked.locator("#recipe-text textarea").input_value()
    assert json.loads(carried) == json.loads(recipe.read_text())     # the same recipe, replayed

    # The example URL with clicks opens the example with the clicks applied.
    other = new_page(browser, f"{server}?example=astronaut&clicks=150,430,1")
    clicks_shown(other, 1)
    assert 0.5 < mask_percent(other) < 95.0
    assert outline_pixels(shown_image(other)) > 50
    other.locator("#share").get_by_text("Share: link, recipe").click()     # the link is offered there
    other.locator("#example-link").filter(has_text="example=astronaut&clicks=150,430,1").wait_for()


def test_a_deep_link_reproduces_an_uploaded_image_in_a_real_browser(browser, server, tmp_path):
    from skimage import data
    upload = tmp_path / "upload.png"  # not one of the examples: the link has to carry the image itself
    Image.fromarray(data.coffee()[::2, ::2]).save(upload)
    context = browser.new_context(viewport=VIEWPORT,
                                  permissions=["clipboard-read", "clipboard-write"])
    page = new_page(context, server)
    page.locator("#canvas input[type=file]").set_input_files(str(upload))
    wait_status(page, "0 clicks")
    click_image(page, 0.45, 0.45)                       # the cup
    clicks_shown(page, 1)
    instances = np.asarray(Image.open(BytesIO(download(page, "download-instances"))))
    assert instances.shape == (200, 300) and set(np.unique(instances)) == {0, 1}
    # The Share button itself: it asks the server for a deep link and copies the page's URL with it.
    page.locator("#share").get_by_text("Share: link, recipe").click()
    page.get_by_role("button", name="Share (copy a link to this state)").click()
    shared, deadline = "", time.monotonic() + 60
    while "deep_link=" not in shared and time.monotonic() < deadline:
        page.wait_for_timeout(200)
        shared = page.evaluate("() => navigator.clipboard.readText()")
    assert "deep_link=" in shared, f"the Share button copied {shared!r}"

    linked = new_page(context, shared)
    wait_status(linked, "recipe")
    clicks_shown(linked, 1)
    again = np.asarray(Image.open(BytesIO(download(linked, "download-instances"))))
    assert np.array_equal(again, instances)             # the same image, clicks and mask
