"""M2N2 Studio: click on a photo, get a mask from a diffusion model's attention (M2N2, CVPR 2025).

Layout and wiring only: the handlers live in :mod:`m2n2.studio.handlers`, the per-user state in
:mod:`m2n2.studio.session`, the one GPU boundary in :mod:`m2n2.studio.gpu` and the pictures in
:mod:`m2n2.studio.views`. Runs as a Hugging Face Space (ZeroGPU or a dedicated GPU) and locally::

    python app.py [--backbone auto|sd2|sd1|dinov2|color] [--model ID_OR_DIR] [--resolution R]
                  [--server-name 0.0.0.0] [--port 7860] [--share]
"""

import argparse
import logging
import os
import threading
from pathlib import Path

import gradio as gr

from m2n2.backbones import names as backbone_names
from m2n2.studio import limits
from m2n2.studio import serving as studio
from m2n2.studio.handlers import BACKGROUND, FOREGROUND, UI, Handlers

EXAMPLES = sorted(str(path) for path in (Path(__file__).parent / "examples").glob("*.jpg"))
RESOLUTIONS = list(limits.RESOLUTIONS)
SESSION_TTL_S = 3600
CSS = ("#status {min-height: 2.5em}"  # the line keeps its height while it changes
       " .m2n2-hidden {display: none !important}")
HEAD = """<script>
// The slider's number box sends its value when it loses focus; Enter should do the same.
document.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && event.target.matches("#threshold input[type=number]")) event.target.blur();
});
// Gradio finds a click's pixel from the image's natural size, which is 0 while a new picture (the
// next marker or mask) loads: such a click would be dropped. Hold it until the picture is there,
// then replay it on the picture shown by then (Gradio 6 may have swapped the element meanwhile).
document.addEventListener("click", (event) => {
  const img = event.target instanceof HTMLImageElement && event.target.closest("#canvas") ? event.target : null;
  if (!img || (img.complete && img.naturalWidth)) return;
  event.stopPropagation();
  event.preventDefault();
  const {clientX, clientY} = event;
  const replay = () => {
    const shown = document.querySelector("#canvas img");
    if (!shown) return;
    if (!(shown.complete && shown.naturalWidth)) return shown.addEventListener("load", replay, {once: true});
    shown.dispatchEvent(new MouseEvent("click", {bubbles: true, cancelable: true, clientX, clientY}));
  };
  img.addEventListener("load", replay, {once: true});
}, true);
</script>"""
Options = studio.Options


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
    config = options.config
    with gr.Blocks(title="M2N2 Studio", delete_cache=(3600, 3600)) as demo:
        image = gr.Image(label="Image: click to segment (mask in blue, outlined)", type="filepath", format="png",
                         image_mode=None, sources=["upload", "clipboard"], interactive=True, elem_id="canvas",
                         render=False)
        gr.Markdown(heading(options))
        state = gr.State(None, time_to_live=SESSION_TTL_S)
        examples = gr.Dataset(label="Examples (public domain / CC0, from scikit-image)", components=[image],
                              samples=[[path] for path in EXAMPLES], type="index", elem_id="examples")
        with gr.Row(equal_height=False):
            with gr.Column(min_width=320):
                image.render()
                with gr.Row():
                    mode = gr.Radio([FOREGROUND, BACKGROUND], value=FOREGROUND, label="Next click is",
                                    elem_id="mode", scale=2)
                    with gr.Column(scale=1, min_width=140):
                        undo = gr.Button("↶ Undo last click", size="sm", elem_id="undo")
                        reset = gr.Button("Reset clicks", size="sm", elem_id="reset")
            with gr.Column(min_width=320):
                heatmap = gr.Plot(show_label=False, elem_id="heatmap")
            with gr.Column(min_width=320):
                scores = gr.Plot(show_label=False, elem_id="scores")
                threshold = gr.Slider(0.0, 1.0, value=0.5, step=0.001, interactive=False, elem_id="threshold",
                                      buttons=[], label="Threshold of the latest click (drag, or type and "
                                                        "press Enter: explore the object hierarchy)")
                automatic = gr.Button("↺ Back to the automatic threshold", size="sm", interactive=False,
                                      elem_id="automatic")
        status = gr.Markdown(elem_id="status")
        # The current recipe: what a deep link carries and restores (hidden; the download gives it).
        recipe_text = gr.Textbox(elem_id="recipe-text", elem_classes=["m2n2-hidden"], show_label=False)
        # The uploaded image itself (hidden), so that a deep link reproduces an upload, not only an example.
        original = gr.Image(type="filepath", interactive=False, elem_id="original-image",
                            elem_classes=["m2n2-hidden"], show_label=False)
        with gr.Row(equal_height=True):
            objects_list = gr.Radio([], label="Objects (each in its own colour; undo, reset and the threshold act on "
                                              "the selected one)", elem_id="objects", scale=3)
            with gr.Column(scale=1, min_width=180):
                new_object = gr.Button("✓ Finish object / new object", size="sm", elem_id="new-object")
                delete_object = gr.Button("Delete selected object", size="sm", elem_id="delete-object")
        with gr.Row():
            # The buttons write the file when pressed, then a hidden DownloadButton hands it to the browser.
            mask_button = gr.Button("Download mask (PNG)", size="sm", interactive=False, elem_id="download-mask")
            cutout_button = gr.Button("Download cut-out (RGBA PNG)", size="sm", interactive=False,
                                      elem_id="download-cutout")
            instances_button = gr.Button("Instance PNG (all objects)", size="sm", elem_id="download-instances")
            coco_button = gr.Button("COCO JSON (all objects)", size="sm", elem_id="download-coco")
            recipe_button = gr.Button("Recipe (JSON)", size="sm", elem_id="download-recipe")
            mask_file = gr.DownloadButton(elem_id="mask-file", elem_classes=["m2n2-hidden"])
            cutout_file = gr.DownloadButton(elem_id="cutout-file", elem_classes=["m2n2-hidden"])
            instances_file = gr.DownloadButton(elem_id="instances-file", elem_classes=["m2n2-hidden"])
            coco_file = gr.DownloadButton(elem_id="coco-file", elem_classes=["m2n2-hidden"])
            recipe_file = gr.DownloadButton(elem_id="recipe-file", elem_classes=["m2n2-hidden"])
        with gr.Accordion("Share: link, recipe", open=False, elem_id="share"):
            with gr.Row():
                gr.DeepLinkButton("Share (copy a link to this state)", size="sm")
                link = gr.Markdown(elem_id="example-link")
            with gr.Row():
                recipe_upload = gr.File(label="Recipe file (.json)", file_types=[".json"], type="filepath",
                                        elem_id="recipe-upload", height=120)
                recipe_paste = gr.Textbox(label="…or paste a recipe", lines=4, elem_id="recipe-paste")
            load_recipe = gr.Button("Load recipe (on its example, or on the uploaded image it was made for)",
                                    elem_id="load-recipe")
        with gr.Accordion("Advanced settings", open=False):
            with gr.Row():
                temperature = gr.Slider(0.1, 2.0, value=config.temperature, step=0.05, label="Temperature τ")
                rho = gr.Slider(0.05, 0.95, value=config.rho, step=0.05, label="Relative probability threshold ρ")
                flood_fill = gr.Checkbox(value=config.flood_fill, label="Flood fill")
                resolution = gr.Dropdown(options.resolutions,
                                         value=options.attention_resolution, label="Attention resolution R")
            gr.Markdown("Changing the **resolution** or the **temperature** recomputes the attention (as long "
                        "as a new image takes); ρ and flood fill recompute only the Markov-maps.")
            apply = gr.Button("Apply settings")
        with gr.Row(visible=False):
            api_image = gr.File(label="image", type="filepath")
            api_points = gr.Textbox(label="points")
            api_mask = gr.Image(label="mask", type="numpy", format="png", image_mode="L")
            api_summary = gr.JSON(label="summary")
            api_button = gr.Button()
            api_recipe = gr.Textbox(label="recipe")
            api_instances = gr.Image(label="instances", type="numpy", format="png", image_mode="L")
            api_coco = gr.JSON(label="coco")
            api_replayed = gr.JSON(label="recipe")
            api_recipe_button = gr.Button()

        ui = UI(state, image, heatmap, scores, mask_button, cutout_button, threshold, automatic, status,
                mask_file, cutout_file, objects=objects_list, recipe_text=recipe_text, link=link,
                instances_file=instances_file, coco_file=coco_file, recipe_file=recipe_file, original=original)
        handlers = Handlers(serving, ui, EXAMPLES)
        state.delete_callback = handlers.release_state
        outputs = ui.outputs
        # Three queues, so that one user's heavy work never holds another's click: per-image work (a new
        # image, settings), per-click work (clicks, undo, threshold; a user's clicks run in order) and the API.
        gpu = {"concurrency_id": "click", "concurrency_limit": options.concurrency, "api_visibility": "private"}
        heavy = {**gpu, "concurrency_id": "image", "concurrency_limit": 1}
        # Progress on the status line only: the image, plots and slider stay visible while working.
        quiet = {"show_progress": "minimal", "show_progress_on": [status]}
        demo.load(handlers.status, state, status, api_visibility="private", queue=False)
        # After every change of image: the hidden copy of an upload, for deep links.
        keep_original = {"fn": handlers.original_view, "inputs": state, "outputs": original, "queue": False,
                         "show_progress": "hidden", "api_visibility": "private"}
        demo.load(handlers.open_link, [state, recipe_text, original], outputs, show_progress_on=[image, status],
                  **heavy).then(**keep_original)
        image.upload(handlers.set_image, [image, state], outputs, preprocess=False, show_progress_on=[image, status],
                     **heavy).then(**keep_original)
        image.clear(handlers.clear, state, outputs, **heavy).then(**keep_original)
        examples.click(handlers.load_example, [examples, state], outputs, show_progress_on=[image, status],
                       **heavy).then(**keep_original)
        # A click shows its marker at once (no queue), then waits its turn; none is dropped.
        image.select(handlers.mark, [state, mode], [state, image, status], queue=False, show_progress="hidden",
                     trigger_mode="multiple", api_visibility="private")
        image.select(handlers.click_only, [state, mode], ui.outputs[:9], trigger_mode="multiple", **gpu, **quiet).then(
            handlers.share_views, state, handlers.share_outputs, queue=False, show_progress="hidden",
            api_visibility="private")
        undo.click(handlers.undo, state, outputs, trigger_mode="multiple", **gpu, **quiet)
        reset.click(handlers.reset, state, outputs, **gpu, **quiet)  # in the queue: after the clicks before it
        threshold.release(handlers.override, [state, threshold], outputs, trigger_mode="always_last", **gpu, **quiet)
        automatic.click(handlers.automatic, state, outputs, **gpu, **quiet)
        apply.click(handlers.apply_settings, [state, temperature, rho, flood_fill, resolution], outputs,
                    show_progress_on=[status], **heavy)
        new_object.click(handlers.new_object, state, outputs, **gpu, **quiet)
        delete_object.click(handlers.delete_object, state, outputs, **gpu, **quiet)
        objects_list.select(handlers.select_object, [state, objects_list], outputs, **gpu, **quiet)
        load_recipe.click(handlers.load_recipe, [state, recipe_upload, recipe_paste], outputs,
                          show_progress_on=[image, status], **heavy).then(**keep_original)
        for button, export, file, elem in ((mask_button, handlers.export_mask, mask_file, "mask-file"),
                                           (cutout_button, handlers.export_cutout, cutout_file, "cutout-file"),
                                           (instances_button, handlers.export_instances, instances_file,
                                            "instances-file"),
                                           (coco_button, handlers.export_coco, coco_file, "coco-file"),
                                           (recipe_button, handlers.export_recipe, recipe_file, "recipe-file")):
            button.click(export, state, file, api_visibility="private", show_progress="hidden").then(
                None, js=f"() => document.getElementById('{elem}').click()")
        api_button.click(handlers.segment, [api_image, api_points], [api_mask, api_summary], api_name="segment",
                         concurrency_id="api", concurrency_limit=1)
        api_recipe_button.click(handlers.segment_recipe, [api_image, api_recipe],
                                [api_instances, api_coco, api_replayed], api_name="segment_recipe",
                                concurrency_id="api", concurrency_limit=1)
        demo.unload(handlers.end_session)
    demo.queue(max_size=64)
    return demo, handlers


def build_demo(options: Options) -> gr.Blocks:
    """The Gradio app (see :func:`build`)."""
    return build(options)[0]


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
    parser.add_argument("--faithful", action="store_true",
                        help="the paper's exact numerics (fp32 operator, every Markov step, dense upsampling) "
                             "instead of the fast preset (the default with CUDA)")
    parser.add_argument("--max-side", type=int, default=None,
                        help="longer images are segmented at a copy this long, masks stay full size (default: "
                             "1024 with a GPU, 640 on a CPU)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads of each job (default 1: on a small host one core per job serves several "
                             "users best, and lets the clicks' queue keep a core while images are prepared)")
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
    parser.add_argument("--max-points", type=int, default=limits.MAX_POINTS,
                        help=f"points per API request and clicks per image (default {limits.MAX_POINTS})")
    parser.add_argument("--max-file-size", default=limits.MAX_FILE_SIZE,
                        help=f"largest upload, e.g. 20mb (default {limits.MAX_FILE_SIZE})")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    args = parse_args(argv)
    budget = {"budget_bytes": args.memory_budget} if args.memory_budget else {}
    options = Options(backbone=args.backbone, model=args.model, resolution=args.resolution,
                      max_side=args.max_side, concurrency=args.concurrency, faithful=True if args.faithful else None,
                      max_resolution=args.max_resolution, max_points=args.max_points,
                      max_file_size=args.max_file_size, threads=args.threads, **budget)
    logging.getLogger("m2n2.studio").info(
        "limits: R up to %d, %d points per request, uploads up to %s, memory budget %.0f MiB, images segmented "
        "at up to %d px, %d CPU thread(s) per job", options.highest_resolution, options.max_points,
        options.max_file_size, options.budget_bytes / 2**20, options.working_side, options.threads)
    serving = studio.start(options)
    if os.environ.get("SPACES_ZERO_GPU"):
        # ZeroGPU forks its GPU workers from this process: the model must be loaded before that.
        serving.backbones.get(options.attention_resolution)
    demo, handlers = build(options, serving)
    if not args.no_prepare_examples:  # examples clickable at once; the server answers meanwhile
        threading.Thread(target=handlers.prepare_examples, name="m2n2-prepare-examples", daemon=True).start()
    demo.launch(server_name=args.server_name, server_port=args.port, share=args.share,
                                      show_error=True, css=CSS, head=HEAD, footer_links=["api", "gradio"],
                                      max_file_size=options.max_file_size)


if __name__ == "__main__":
    main()
