"""M2N2 Studio: click on a photo, get a mask from a diffusion model's attention (M2N2, CVPR 2025).

Layout and wiring only: the handlers live in :mod:`m2n2.studio.handlers` (one class per job), the
per-user state in :mod:`m2n2.studio.session`, the one GPU boundary in :mod:`m2n2.studio.gpu`, the
pictures in :mod:`m2n2.studio.views` and the page's script in ``static/page.js``. Runs as a Hugging
Face Space (ZeroGPU or a dedicated GPU) and locally::

    python app.py [--backbone auto|sd2|sd1|dinov2|color] [--model ID_OR_DIR] [--resolution R]
                  [--preset exact|fast] [--server-name 0.0.0.0] [--port 7860] [--share]
"""

import argparse
import logging
import os
import threading
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import numpy as np

from m2n2.backbones import names as backbone_names
from m2n2.config import MAX_CLICKS, add_preset_argument, preset_from_args
from m2n2.predictor import warm_up
from m2n2.studio import limits, views
from m2n2.studio import serving as studio
from m2n2.studio.handlers import Handlers
from m2n2.studio.ui import MODES, UI

EXAMPLES = sorted(str(path) for path in (Path(__file__).parent / "examples").glob("*.jpg"))
RESOLUTIONS = list(limits.RESOLUTIONS)
SESSION_TTL_S = 3600
CSS = (".m2n2-hidden {display: none !important}"
       " #threshold:has(input:disabled) {opacity: 0.55}"  # disabled (no click yet) looks it, as buttons do
       " #examples button[data-name]::after {content: attr(data-name); display: block; font-size: var(--text-sm)}"
       + views.STATUS_CSS + views.CSS)  # the status line's, the heatmap's and the score curve's style
HEAD = f"<script>\n{(Path(__file__).parent / 'static' / 'page.js').read_text()}</script>"
Options = studio.Options
#: Run in the page when a click's event ends (answered or refused): its marker and its "waiting" go.
CLICK_ANSWERED = "() => window.m2n2ClickAnswered && window.m2n2ClickAnswered()"
#: The download buttons (kind: label); each writes its file when pressed (mask and cut-out: the current object's).
DOWNLOADS = {"mask": "Download mask (PNG)", "cutout": "Download cut-out (RGBA PNG)",
             "instances": "Instance PNG (all objects)", "coco": "COCO JSON (all objects)", "recipe": "Recipe (JSON)"}


#: What the title says each backbone's attention is. Only SD2 is the paper's backbone (its numbers are SD2's).
SOURCES = {"color": "a colour-affinity stand-in for Stable Diffusion 2 attention",
           "sd2": "Stable Diffusion 2 attention (the paper's backbone)",
           "sd1": "Stable Diffusion 1 attention (the paper's numbers are for Stable Diffusion 2)",
           "dinov2": "DINOv2 attention (the paper's numbers are for Stable Diffusion 2)"}


def heading(options: Options) -> str:
    """The page's title line: says which attention the app uses, as far as it is known before loading."""
    source = SOURCES.get(options.backbone) or (
        "Stable Diffusion 2 attention (the paper's backbone), or DINOv2's or a colour-affinity fallback when its "
        "weights cannot be loaded; the status line says which")
    return (f"## M2N2 Studio: training-free interactive segmentation from {source}\n"
            "Upload an image or pick an example, then click on the object. Each click is labelled by the "
            "foreground/background switch.")


def build(options: Options, serving: studio.Serving | None = None) -> tuple[gr.Blocks, Handlers]:
    """The Gradio app and its handlers; ``serving`` defaults to :func:`m2n2.studio.serving.start`."""
    serving = serving or studio.start(options)
    with gr.Blocks(title="M2N2 Studio", delete_cache=(3600, 3600)) as demo:
        ui, controls = layout(options)
        handlers = Handlers(serving, ui, EXAMPLES)
        wire(demo, ui, controls, handlers, options.concurrency)
    demo.queue(max_size=64)
    quieter_queue(demo)
    return demo, handlers


#: How often Gradio's queue looks for new events while it has none (seconds; Gradio's own is 0.001).
QUEUE_POLL_S = 0.005
#: How often it looks for progress to send (Gradio's own is 0.01).
PROGRESS_POLL_S = 0.05


def quieter_queue(demo: gr.Blocks) -> None:
    """Let the queue's loops wake 200 and 20 times a second instead of 1000 and 100.

    Each wake-up takes a core (and the GIL) from whatever runs: on a 2-core host, a click's two
    threads. Measured here: the server idle 3.7 -> 1.1 % of a core. An event waits at most 5 ms
    more to start. Gradio has no setting for this, so its queue's attributes are set; where a
    Gradio version lacks them nothing changes (``tests/test_app.py`` checks they exist).
    """
    queue = getattr(demo, "_queue", None)
    for name, seconds in (("sleep_when_free", QUEUE_POLL_S), ("progress_update_sleep_when_free", PROGRESS_POLL_S)):
        if queue is not None and hasattr(queue, name):
            setattr(queue, name, seconds)


def quick_canvas(component: gr.Image) -> None:
    """Let ``component`` encode the handlers' pictures (numpy) as ``views.canvas_picture`` says."""
    postprocess = component.postprocess

    def quick(value):
        return postprocess(views.canvas_picture(value) if isinstance(value, np.ndarray) else value)

    component.postprocess = quick


def layout(options: Options) -> tuple[UI, SimpleNamespace]:
    """Lay out the page (inside a ``gr.Blocks``): the components the handlers update, and the other
    controls (inputs only) by name."""
    config, c = options.config, SimpleNamespace()
    image = gr.Image(label="Image: click to segment (each object in its own colour, the current one outlined)",
                     type="filepath", format=views.CANVAS_FORMAT, image_mode=None, sources=["upload", "clipboard"], interactive=True, elem_id="canvas",
                     render=False)
    quick_canvas(image)
    gr.Markdown(heading(options))
    state = gr.State(None, time_to_live=SESSION_TTL_S)
    c.examples = gr.Dataset(label="Examples (public domain / CC0, from scikit-image)", components=[image],
                            samples=[[path] for path in EXAMPLES], type="index", elem_id="examples")
    # Just above the image at every width (the columns stack on a phone, the image first): progress
    # and the latest result where the user looks.
    status = gr.HTML(elem_id="status", padding=False)
    with gr.Row(equal_height=False):
        with gr.Column(min_width=320):
            image.render()
            with gr.Row():
                c.mode = gr.Radio(MODES, value=MODES[0][1], label="Next click is", elem_id="mode", scale=2)
                with gr.Column(scale=1, min_width=140):
                    c.undo = gr.Button("↶ Undo last click", size="sm", elem_id="undo")
                    c.reset = gr.Button("Reset clicks", size="sm", elem_id="reset")
        with gr.Column(min_width=320):
            heatmap = gr.HTML(elem_id="heatmap")  # drawn by the browser (views.heatmap_view)
        with gr.Column(min_width=320):
            scores = gr.HTML(elem_id="scores")  # drawn by the browser (views.score_view)
            threshold = gr.Slider(0.0, 1.0, value=0.5, step=0.001, interactive=False, elem_id="threshold",
                                  buttons=[], label="Threshold of the latest click (drag, or type and "
                                                    "press Enter: explore the object hierarchy)")
            automatic = gr.Button("↺ Back to the automatic threshold", size="sm", interactive=False,
                                  elem_id="automatic")
    # The current recipe: what a deep link carries and restores (hidden; the download gives it).
    recipe_text = gr.Textbox(elem_id="recipe-text", elem_classes=["m2n2-hidden"], show_label=False)
    # The uploaded image itself (hidden), so that a deep link reproduces an upload, not only an example.
    original = gr.Image(type="filepath", interactive=False, elem_id="original-image",
                        elem_classes=["m2n2-hidden"], show_label=False)
    with gr.Row(equal_height=True):
        objects = gr.Radio([], label="Objects (each in its own colour; undo, reset and the threshold act on "
                                     "the selected one)", elem_id="objects", scale=3)
        with gr.Column(scale=1, min_width=180):
            c.new_object = gr.Button("✓ Finish object / new object", size="sm", elem_id="new-object")
            c.delete_object = gr.Button("Delete selected object", size="sm", elem_id="delete-object")
    with gr.Row():
        # The buttons write the file when pressed, then a hidden DownloadButton hands it to the browser.
        # Each is enabled once there is something to export (the handlers' warning is the safety net).
        buttons = {kind: gr.Button(label, size="sm", interactive=False,
                                   elem_id=f"download-{kind}") for kind, label in DOWNLOADS.items()}
        files = {kind: gr.DownloadButton(elem_id=f"{kind}-file", elem_classes=["m2n2-hidden"])
                 for kind in DOWNLOADS}
    c.downloads = buttons
    c.restore = gr.Button(elem_id="restore-image", elem_classes=["m2n2-hidden"])  # pressed by the change event
    with gr.Accordion("Share: link, recipe", open=False, elem_id="share"):
        with gr.Row():
            gr.DeepLinkButton("Share (copy a link to this state)", size="sm")
            link = gr.Markdown(elem_id="example-link")
        with gr.Row():
            c.recipe_upload = gr.File(label="Recipe file (.json)", file_types=[".json"], type="filepath",
                                      elem_id="recipe-upload", height=120)
            c.recipe_paste = gr.Textbox(label="…or paste a recipe", lines=4, elem_id="recipe-paste")
        c.load_recipe = gr.Button("Load recipe (on its example, or on the uploaded image it was made for)",
                                  elem_id="load-recipe")
    with gr.Accordion("Advanced settings", open=False):
        with gr.Row():
            c.settings = [gr.Slider(0.1, 2.0, value=config.temperature, step=0.05, label="Temperature τ"),
                          gr.Slider(0.05, 0.95, value=config.rho, step=0.05,
                                    label="Relative probability threshold ρ"),
                          gr.Checkbox(value=config.flood_fill, label="Flood fill"),
                          gr.Dropdown(options.resolutions, value=options.attention_resolution,
                                      label="Attention resolution R")]
        gr.Markdown("Changing the **resolution** or the **temperature** recomputes the attention (as long "
                    "as a new image takes); ρ and flood fill recompute only the Markov-maps.")
        c.apply = gr.Button("Apply settings")
    with gr.Row(visible=False):  # the stateless API's two endpoints: (inputs, outputs, button) each
        api_image, api_points = gr.File(label="image", type="filepath"), gr.Textbox(label="points")
        c.api_segment = ([api_image, api_points], [gr.Image(label="mask", type="numpy", format="png", image_mode="L"),
                                                   gr.JSON(label="summary")], gr.Button())
        api_recipe = gr.Textbox(label="recipe")
        c.api_recipe = ([api_image, api_recipe], [gr.Image(label="instances", type="numpy", format="png",
                                                           image_mode="L"),
                                                  gr.JSON(label="coco"), gr.JSON(label="recipe")], gr.Button())
    ui = UI(state=state, image=image, heatmap=heatmap, scores=scores, mask_button=buttons["mask"],
            cutout_button=buttons["cutout"], threshold=threshold, automatic=automatic, status=status,
            **{f"{kind}_file": file for kind, file in files.items()}, objects=objects, recipe_text=recipe_text,
            link=link, original=original, instances_button=buttons["instances"], coco_button=buttons["coco"],
            recipe_button=buttons["recipe"])
    return ui, c


def wire(demo: gr.Blocks, ui: UI, c: SimpleNamespace, handlers: Handlers, concurrency: int) -> None:
    """Connect the page's events to the handlers (inside the ``gr.Blocks``)."""
    page, images, clicks = handlers.page, handlers.images, handlers.clicks
    sharing, settings, api = handlers.sharing, handlers.settings, handlers.api
    # Gradio deep-copies its config, this callback included, on every page load (GET /config): a
    # function is copied as itself, a bound method with its page and all that the page holds.
    ui.state.delete_callback = lambda session: page.release_state(session)
    state, outputs = ui.state, ui.outputs
    # Three queues, so that one user's heavy work never holds another's click: per-image work (a new
    # image, settings), per-click work (clicks, undo, threshold; a user's clicks run in order) and the API.
    gpu = {"concurrency_id": "click", "concurrency_limit": concurrency, "api_visibility": "private"}
    heavy = {**gpu, "concurrency_id": "image", "concurrency_limit": 1}
    # Progress on the status line only: the image, plots and slider stay visible while working.
    quiet = {"show_progress": "minimal", "show_progress_on": [ui.status]}
    shown_on = {"show_progress_on": [ui.image, ui.status]}
    demo.load(page.status, state, ui.status, api_visibility="private", queue=False)
    # After every change of image: the hidden copy of an upload, for deep links.
    keep_original = {"fn": page.original_view, "inputs": state, "outputs": ui.original, "queue": False,
                     "show_progress": "hidden", "api_visibility": "private"}
    demo.load(sharing.open_link, [state, ui.recipe_text, ui.original], outputs, **shown_on, **heavy
              ).then(**keep_original)
    ui.image.upload(images.set_image, [ui.image, state], outputs, preprocess=False, **shown_on, **heavy
                    ).then(**keep_original)
    ui.image.clear(images.clear, state, outputs, **heavy).then(**keep_original)
    # A file Gradio refuses in the browser (too large) empties the canvas with no upload or clear event,
    # only "change" to nothing: then (in the browser, no request otherwise) the session's picture comes back.
    ui.image.change(None, ui.image, None, js="(value) => { if (value == null) "
                                             "document.getElementById('restore-image').click(); }")
    c.restore.click(images.restore, state, ui.image, show_progress="hidden", **heavy)
    c.examples.click(images.load_example, [c.examples, state], outputs, **shown_on, **heavy).then(**keep_original)
    # A click's marker and "waiting" show at once, drawn by the page (static/page.js) with no request, so the
    # click's own event leaves at once; it waits its turn (none is dropped) and its end takes them away.
    clicked = ui.image.select(clicks.click_only, [state, c.mode], ui.core, trigger_mode="multiple", **gpu, **quiet)
    clicked.then(page.after_click, state, ui.after_click, queue=False, show_progress="hidden", api_visibility="private")
    clicked.then(None, js=CLICK_ANSWERED)
    clicked.failure(None, js=CLICK_ANSWERED)  # (Gradio runs .then only after a success)
    c.undo.click(clicks.undo, state, outputs, trigger_mode="multiple", **gpu, **quiet)
    c.reset.click(clicks.reset, state, outputs, **gpu, **quiet)  # in the queue: after the clicks before it
    # The typed value as sent (no preprocessing): the handler refuses an empty or out-of-range box.
    ui.threshold.release(clicks.override, [state, ui.threshold], outputs, trigger_mode="always_last",
                         preprocess=False, **gpu, **quiet)
    ui.automatic.click(clicks.automatic, state, outputs, **gpu, **quiet)
    c.apply.click(settings.apply_settings, [state, *c.settings], outputs, show_progress_on=[ui.status], **heavy)
    c.new_object.click(sharing.new_object, state, outputs, **gpu, **quiet)
    c.delete_object.click(sharing.delete_object, state, outputs, **gpu, **quiet)
    ui.objects.select(sharing.select_object, [state, ui.objects], outputs, **gpu, **quiet)
    c.load_recipe.click(sharing.load_recipe, [state, c.recipe_upload, c.recipe_paste], outputs, **shown_on,
                        **heavy).then(**keep_original)
    for kind, button in c.downloads.items():
        file = getattr(ui, f"{kind}_file")
        button.click(getattr(sharing, f"export_{kind}"), state, file, api_visibility="private",
                     show_progress="hidden").then(None, js=f"() => document.getElementById('{file.elem_id}').click()")
    for fn, (inputs, results, button) in ((api.segment, c.api_segment), (api.segment_recipe, c.api_recipe)):
        button.click(fn, inputs, results, api_name=fn.__name__, concurrency_id="api", concurrency_limit=1)
    demo.unload(page.end_session)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="auto", choices=backbone_names(),
                        help="attention source: 'auto' uses Stable Diffusion 2 when it can, else DINOv2, else the "
                             "colour fallback (docs/backbones.md)")
    parser.add_argument("--model", default=None,
                        help="the learned backbone's model: Hub id or local directory (default: the backbone's)")
    parser.add_argument("--resolution", type=int, default=None, choices=RESOLUTIONS,
                        help="attention resolution R (default: 128 with a GPU, 64 on a CPU)")
    parser.add_argument("--max-resolution", type=int, default=None, choices=RESOLUTIONS,
                        help="largest R users may choose (default: 128 with a GPU, 64 on a CPU, where more "
                             "takes a minute per image)")
    parser.add_argument("--max-side", type=int, default=None,
                        help="longer images are segmented at a copy this long, masks stay full size (default: "
                             "1024 with a GPU, 640 on a CPU)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads of each job (default 1: on a small host one core per job serves several "
                             "users best, and lets the clicks' queue keep a core while images are prepared)")
    parser.add_argument("--click-threads", type=int, default=None,
                        help="threads of a click's Markov chain and upsampling, and of an image's background "
                             "preparation (default 2 where the host has two cores: images being prepared wait while a "
                             "click runs; 1 keeps each on one core)")
    parser.add_argument("--server-name", default=None, help="address to listen on, e.g. 0.0.0.0 (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default 7860 or the next free one)")
    parser.add_argument("--share", action="store_true", help="create a temporary public gradio.live link")
    parser.add_argument("--concurrency", type=int, default=1,
                        help="click jobs that may run at once (default 1; new images and the API have a queue each)")
    parser.add_argument("--memory-budget", type=limits.parse_bytes, default=None,
                        help="memory all sessions' prepared images may hold together, e.g. 4GiB (default: a "
                             "quarter of the host's memory, at most 40%% of the GPU's); over it the least recently "
                             "used are set aside and prepared again on their next click")
    parser.add_argument("--no-prepare-examples", action="store_true",
                        help="do not prepare the examples at start (each is then prepared on its first choice)")
    parser.add_argument("--max-points", type=int, default=MAX_CLICKS,
                        help=f"points per API request and clicks per image (default {MAX_CLICKS})")
    parser.add_argument("--max-file-size", default=limits.MAX_FILE_SIZE,
                        help=f"largest upload, e.g. 20mb (default {limits.MAX_FILE_SIZE})")
    add_preset_argument(parser, default=None, help_default="exact with CUDA, fast on a CPU")
    return parser.parse_args(argv)


def options_from_args(args: argparse.Namespace) -> Options:
    """The app's options from its command line (:func:`parse_args`)."""
    given = {"budget_bytes": args.memory_budget} if args.memory_budget else {}  # else the options' defaults
    if args.click_threads is not None:
        given["click_threads"] = max(1, args.click_threads)
    return Options(backbone=args.backbone, model=args.model, resolution=args.resolution, max_side=args.max_side,
                   concurrency=args.concurrency, preset=preset_from_args(args), max_resolution=args.max_resolution,
                   max_points=args.max_points, max_file_size=args.max_file_size, threads=args.threads, **given)


def at_start(handlers: Handlers, options: Options, examples: bool) -> None:
    """Work done once, in the background: the click's compiled kernels, the library's and the
    picture's (else the first visitor's first click compiles them: seconds on a fresh install),
    then the examples, clickable at once."""
    seconds = warm_up(options.config) + views.warm_up()
    logging.getLogger("m2n2.studio").info("compiled the click's kernels in %.1f s", seconds)
    if examples:
        handlers.images.prepare_examples()


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    args = parse_args(argv)
    options = options_from_args(args)
    logging.getLogger("m2n2.studio").info(
        "limits: R up to %d, %d points per request, uploads up to %s, memory budget %.0f MiB, images segmented "
        "at up to %d px, %d CPU thread(s) per job, %d per click's Markov chain", options.highest_resolution,
        options.max_points, options.max_file_size, options.budget_bytes / 2**20, options.working_side, options.threads,
        options.click_threads)
    serving = studio.start(options)
    if os.environ.get("SPACES_ZERO_GPU"):
        # ZeroGPU forks its GPU workers from this process: the model must be loaded before that.
        serving.backbones.get(options.attention_resolution)
    demo, handlers = build(options, serving)
    threading.Thread(target=at_start, args=(handlers, options, not args.no_prepare_examples),
                     name="m2n2-at-start", daemon=True).start()  # the server answers meanwhile
    demo.launch(server_name=args.server_name, server_port=args.port, share=args.share, show_error=True, css=CSS,
                head=HEAD, footer_links=["api", "gradio"], max_file_size=options.max_file_size)


if __name__ == "__main__":
    main()
