"""M2N2 Studio: click on a photo, get a mask from Stable Diffusion 2 attention (CVPR 2025).

Layout and wiring only: the per-user logic lives in :mod:`m2n2.session` and the pictures in
:mod:`m2n2.viz`. Runs as a Hugging Face Space (ZeroGPU or a dedicated GPU) and locally::

    python app.py [--backbone auto|sd2|color] [--model ID_OR_DIR] [--resolution R]
                  [--server-name 0.0.0.0] [--port 7860] [--share]
"""

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import spaces
import torch

from m2n2 import M2N2Config, M2N2Error
from m2n2.backbones import load
from m2n2.session import (LiveSessions, Session, get_backbone, is_backbone_loaded, parse_points, read_image,
                          register_backbones, segment_once, summarize)

BACKBONE_KEY = "app"
EXAMPLES = sorted(str(path) for path in (Path(__file__).parent / "examples").glob("*.jpg"))
RESOLUTIONS = [32, 48, 64, 96, 128]
SESSION_TTL_S = 3600
FOREGROUND, BACKGROUND = "Foreground (green)", "Background (red)"
CSS = "#status {min-height: 2.5em}"  # the line keeps its height while it changes


@dataclass(frozen=True)
class Options:
    """How the app runs (the command line's flags)."""

    backbone: str = "auto"
    model: str | None = None
    resolution: int | None = None
    max_side: int = 1024
    concurrency: int = 1
    faithful: bool = False

    @property
    def attention_resolution(self) -> int:
        """R: as given, else 128 (the paper's) with a GPU and 64 on a CPU."""
        return self.resolution or (128 if torch.cuda.is_available() else 64)

    @property
    def config(self) -> M2N2Config:
        """Settings of new sessions and of the API, with the working-copy cap.

        The fast preset by default (a click in well under a second on a CPU); ``--faithful``
        gives the paper's exact numerics (dense upsampling: seconds per click on a CPU).
        """
        base = M2N2Config() if self.faithful else M2N2Config.fast()
        return base.replace(max_side=self.max_side)


live_sessions = LiveSessions()


# ---------------------------------------------------------------------------- GPU work
def _gpu_seconds(session: Session, method: str, *args) -> int:
    """GPU time to book on ZeroGPU: a new image or new settings run the backbone, a click does not."""
    return 120 if method in ("set_image", "update_settings") else 30


@spaces.GPU(duration=_gpu_seconds)
def _on_gpu(session: Session, method: str, *args):
    """Run ``session.<method>(*args)`` where the GPU is (a ZeroGPU worker on Spaces).

    Returns ``(session, result, error)``: errors the user caused come back as a message, since
    ZeroGPU would replace their text with a generic one. The session must be returned because
    ZeroGPU works on a pickled copy.
    """
    try:
        return session, getattr(session, method)(*args), None
    except M2N2Error as error:
        return session, None, str(error)


@spaces.GPU(duration=120)
def _segment_on_gpu(options: Options, image, points, labels):
    """Stateless segmentation on the GPU; returns ``(prediction, backbone description, error)``."""
    backbone = get_backbone(BACKBONE_KEY, options.attention_resolution)
    try:
        return segment_once(backbone, options.config, image, points, labels), backbone.description, None
    except M2N2Error as error:
        return None, backbone.description, str(error)


# ---------------------------------------------------------------------------- handlers
def _outputs(session: Session, views):
    """Component updates for ``views`` (a :class:`m2n2.session.Views`)."""
    clicked = views.threshold is not None
    return (session, views.overlay, views.heatmap, views.scores,
            gr.DownloadButton(value=views.mask_path, interactive=clicked),
            gr.DownloadButton(value=views.cutout_path, interactive=clicked),
            gr.Slider(value=views.threshold if clicked else 0.5, interactive=clicked),
            gr.Button(interactive=clicked), views.status)


def _rejected(session: Session | None, message: str, restore_image: bool = False):
    """Warn and change nothing (but show the session's image again over a rejected upload)."""
    gr.Warning(message)
    keep = (gr.skip(),) * 8
    if restore_image:
        keep = (session.view if session is not None else None,) + keep[1:]
    return (session,) + keep


def _run(session: Session | None, method: str, *args, request: gr.Request = None):
    """Call a session method on the GPU and turn its result into component updates."""
    if session is None or not session.has_image:
        return _rejected(session, "Upload an image or pick an example first, then click on it.")
    session, result, error = _on_gpu(session, method, *args)
    if request is not None:
        live_sessions.track(request.session_hash, session)
    if error is not None:
        return _rejected(session, error)
    return _outputs(session, session.render(result))


class Handlers:
    """The app's event handlers (plain methods, so tests can call them without a browser).

    Parameters
    ----------
    options : Options
        How the app runs; new sessions use its backbone key and resolution.
    """

    def __init__(self, options: Options):
        self.options = options

    def new_session(self) -> Session:
        """An empty session (no image yet)."""
        return Session(BACKBONE_KEY, self.options.attention_resolution, self.options.config)

    def set_image(self, image, session: Session | None, request: gr.Request = None, progress=gr.Progress()):
        """A new image (a path, or an upload's raw payload): attention, operator, no clicks."""
        session = session or self.new_session()
        try:
            array = read_image(image.get("path") if isinstance(image, dict) else image)
        except M2N2Error as error:
            return _rejected(session, f"This file cannot be used: {error}", restore_image=True)
        if not is_backbone_loaded(session.backbone_key, session.resolution):
            progress(0.05, desc="Loading the model (first use only)…")
        progress(0.3, desc="Extracting attention and preparing the operator…")
        session, _, error = _on_gpu(session, "set_image", array)
        if request is not None:
            live_sessions.track(request.session_hash, session)
        if error is not None:
            return _rejected(session, f"This image cannot be used: {error}", restore_image=True)
        return _outputs(session, session.render(None))

    def load_example(self, index: int, session: Session | None, request: gr.Request = None,
                     progress=gr.Progress()):
        """Example number ``index`` (of :data:`EXAMPLES`)."""
        return self.set_image(EXAMPLES[index], session, request, progress)

    def click(self, session: Session | None, mode: str, evt: gr.SelectData, request: gr.Request = None):
        """A click on the image, labelled by the foreground/background switch."""
        x, y = evt.index
        return _run(session, "click", float(x), float(y), 1 if mode == FOREGROUND else 0, request=request)

    def undo(self, session: Session | None, request: gr.Request = None):
        """Remove the latest click."""
        return _run(session, "undo", request=request)

    def reset(self, session: Session | None):
        """Remove every click (no GPU work: the image and its operator stay)."""
        if session is None or not session.has_image:
            return _rejected(session, "There is nothing to reset yet.")
        session.reset()
        return _outputs(session, session.render(None))

    def override(self, session: Session | None, threshold: float, request: gr.Request = None):
        """The slider: use ``threshold`` for the latest click."""
        return _run(session, "override_threshold", float(threshold), request=request)

    def automatic(self, session: Session | None, request: gr.Request = None):
        """Back to the latest click's adaptive threshold."""
        return _run(session, "override_threshold", None, request=request)

    def apply_settings(self, session: Session | None, temperature: float, rho: float, flood_fill: bool,
                       resolution: int, request: gr.Request = None, progress=gr.Progress()):
        """Advanced settings: recompute what they change, for this session only."""
        session = session or self.new_session()
        try:
            config = session.config.replace(temperature=float(temperature), rho=float(rho),
                                            flood_fill=bool(flood_fill))
        except M2N2Error as error:
            return _rejected(session, str(error))
        if not session.has_image:
            session.update_settings(config, int(resolution))
            gr.Info("Settings saved: they apply to the next image.")
            return (session,) + (gr.skip(),) * 7 + (session.status(),)
        progress(0.2, desc="Applying the settings (recomputing what they change)…")
        session, prediction, error = _on_gpu(session, "update_settings", config, int(resolution))
        if request is not None:
            live_sessions.track(request.session_hash, session)
        if error is not None:
            return _rejected(session, error)
        return _outputs(session, session.render(prediction))

    def clear(self, session: Session | None):
        """The image was removed (its x button): free the session."""
        if session is not None:
            session.close()
        return (None, None, None, None, gr.DownloadButton(value=None, interactive=False),
                gr.DownloadButton(value=None, interactive=False), gr.Slider(value=0.5, interactive=False),
                gr.Button(interactive=False), self.new_session().status())

    def segment(self, image: str, points: str):
        """Stateless API: an image file and a JSON list of points -> mask PNG and a summary.

        ``points`` is a JSON list of ``[x, y, label]`` or ``{"x", "y", "label"}`` in original
        pixels (x column, y row; label 1 foreground, 0 background).
        """
        try:
            array = read_image(image)
            xy, labels = parse_points(points)
        except M2N2Error as error:
            raise gr.Error(str(error)) from None
        prediction, description, error = _segment_on_gpu(self.options, array, xy, labels)
        if error is not None:
            raise gr.Error(error)
        return prediction.mask.astype("uint8") * 255, summarize(prediction, description)

    @staticmethod
    def end_session(request: gr.Request):
        """The tab was closed: free its session now rather than when ``gr.State`` expires."""
        live_sessions.end(request.session_hash)


def _release_state(session: Session | None) -> None:
    """``gr.State`` delete callback: the session expired or its tab is gone."""
    if session is not None:
        session.close()


# ---------------------------------------------------------------------------- layout
def build_demo(options: Options) -> gr.Blocks:
    """The Gradio app. Register the backbone first (see :func:`register`)."""
    handlers = Handlers(options)
    config = options.config
    with gr.Blocks(title="M2N2 Studio", delete_cache=(3600, 3600)) as demo:
        image = gr.Image(label="Image: click to segment (mask in blue)", type="filepath", image_mode=None,
                         sources=["upload", "clipboard"], interactive=True, elem_id="canvas", render=False)
        gr.Markdown("## M2N2 Studio: training-free interactive segmentation from Stable Diffusion 2 "
                    "attention\nUpload an image or pick an example, then click on the object. Each click "
                    "is labelled by the foreground/background switch.")
        state = gr.State(None, time_to_live=SESSION_TTL_S, delete_callback=_release_state)
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
                                      label="Threshold of the latest click (drag: explore the object hierarchy)")
                automatic = gr.Button("Automatic threshold", size="sm", interactive=False, elem_id="automatic")
        status = gr.Markdown(Session(BACKBONE_KEY, options.attention_resolution).status(), elem_id="status")
        with gr.Row():
            mask_file = gr.DownloadButton("Download mask (PNG)", size="sm", interactive=False,
                                          elem_id="download-mask")
            cutout_file = gr.DownloadButton("Download cut-out (RGBA PNG)", size="sm", interactive=False,
                                            elem_id="download-cutout")
        with gr.Accordion("Advanced settings", open=False):
            with gr.Row():
                temperature = gr.Slider(0.1, 2.0, value=config.temperature, step=0.05, label="Temperature τ")
                rho = gr.Slider(0.05, 0.95, value=config.rho, step=0.05, label="Relative probability threshold ρ")
                flood_fill = gr.Checkbox(value=config.flood_fill, label="Flood fill")
                resolution = gr.Dropdown(sorted({*RESOLUTIONS, options.attention_resolution}),
                                         value=options.attention_resolution,
                                         label="Attention resolution R")
            gr.Markdown("Changing the **resolution** or the **temperature** recomputes the attention (as long "
                        "as a new image takes); ρ and flood fill recompute only the Markov-maps.")
            apply = gr.Button("Apply settings")
        with gr.Row(visible=False):
            api_image = gr.File(label="image", type="filepath")
            api_points = gr.Textbox(label="points")
            api_mask = gr.Image(label="mask", type="numpy", format="png", image_mode="L")
            api_summary = gr.JSON(label="summary")
            api_button = gr.Button()

        outputs = [state, image, heatmap, scores, mask_file, cutout_file, threshold, automatic, status]
        gpu = {"concurrency_id": "gpu", "concurrency_limit": options.concurrency, "api_visibility": "private"}
        image.upload(handlers.set_image, [image, state], outputs, preprocess=False, **gpu)
        image.clear(handlers.clear, state, outputs, api_visibility="private")
        examples.click(handlers.load_example, [examples, state], outputs, **gpu)
        image.select(handlers.click, [state, mode], outputs, **gpu)
        undo.click(handlers.undo, state, outputs, **gpu)
        reset.click(handlers.reset, state, outputs, api_visibility="private")
        threshold.release(handlers.override, [state, threshold], outputs, **gpu)
        automatic.click(handlers.automatic, state, outputs, **gpu)
        apply.click(handlers.apply_settings, [state, temperature, rho, flood_fill, resolution], outputs, **gpu)
        api_button.click(handlers.segment, [api_image, api_points], [api_mask, api_summary], api_name="segment",
                         concurrency_id="gpu", concurrency_limit=options.concurrency)
        demo.unload(handlers.end_session)
    demo.queue(max_size=64)
    return demo


def register(options: Options) -> None:
    """Register the backbone factory (the model loads on first use, once per process)."""
    extra = {"model": options.model} if options.model else {}
    register_backbones(BACKBONE_KEY, lambda resolution: load(options.backbone, resolution=resolution, **extra))
    if os.environ.get("SPACES_ZERO_GPU"):
        # ZeroGPU forks its GPU workers from this process: the model must be loaded before that.
        get_backbone(BACKBONE_KEY, options.attention_resolution)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="auto", choices=["auto", "sd2", "color"],
                        help="attention source: 'auto' uses Stable Diffusion 2 when it can, else the colour fallback")
    parser.add_argument("--model", default=None, help="Stable Diffusion 2 model id or local directory")
    parser.add_argument("--resolution", type=int, default=None, choices=RESOLUTIONS,
                        help="attention resolution R (default: 128 with a GPU, 64 on a CPU)")
    parser.add_argument("--faithful", action="store_true",
                        help="the paper's exact numerics (fp32 operator, dense upsampling) instead of the fast preset")
    parser.add_argument("--max-side", type=int, default=1024,
                        help="longer images are segmented at a copy this long (masks stay full size)")
    parser.add_argument("--server-name", default=None, help="address to listen on, e.g. 0.0.0.0 (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default 7860 or the next free one)")
    parser.add_argument("--share", action="store_true", help="create a temporary public gradio.live link")
    parser.add_argument("--concurrency", type=int, default=1, help="GPU jobs that may run at once (default 1)")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    options = Options(backbone=args.backbone, model=args.model, resolution=args.resolution,
                      max_side=args.max_side, concurrency=args.concurrency,
                      faithful=args.faithful)
    register(options)
    build_demo(options).launch(server_name=args.server_name, server_port=args.port, share=args.share,
                               show_error=True, css=CSS, footer_links=["api", "gradio"])


if __name__ == "__main__":
    main()
