"""A stand-in for how ``spaces`` 0.51 runs ``@spaces.GPU`` functions on ZeroGPU, without a GPU.

It follows ``spaces/zero/wrappers.py`` (``regular_function_wrapper``): every decorated function
has its *own* workers (one GPU index here); a call computes its duration (a number, or a
callable given the call's arguments), takes that function's worker, reuses it only if it is
alive (the GPU is always idle here: calls come one at a time), else forks a new one from the
calling process (``multiprocessing``'s fork context); it sends the pickled arguments through a
queue, the worker runs the function in its loop and sends the pickled result (or the exception)
back; a ``gr.Error`` is raised again in the caller. :func:`replace_workers` ends every worker,
as ZeroGPU does when the GPU was busy or the worker died: the next call forks afresh.

Run as a script, it plays a visitor's session on the app through this stand-in (``scenario``)
and prints what happened as JSON; ``tests/test_zerogpu.py`` runs it in a subprocess (a fork of
the test runner, with its threads, could hang).
"""

from __future__ import annotations

import json
import multiprocessing
import sys
import traceback
from functools import partial, wraps
from pathlib import Path

_context = multiprocessing.get_context("fork")
_forked = False
_all_workers: list[dict] = []
#: (function name, seconds) of every call's requested duration, in the calling process.
requested: list[tuple[str, object]] = []


class _Worker:
    def __init__(self, task):
        self.args, self.results = _context.Queue(), _context.Queue()
        self.process = _context.Process(target=_loop, args=(task, self.args, self.results), daemon=True)
        self.process.start()


def _loop(task, args, results) -> None:
    global _forked
    _forked = True
    while True:
        call_args, call_kwargs = args.get()
        try:
            results.put(("ok", task(*call_args, **call_kwargs)))
        except Exception as error:  # noqa: BLE001 - every failure goes back, as spaces does
            import gradio as gr
            results.put(("error", error if isinstance(error, gr.Error) else traceback.format_exc()))


def GPU(task=None, *, duration=None, size=None):  # noqa: N802 - spaces' name
    """``spaces.GPU`` as ZeroGPU runs it (see the module's note)."""
    if task is None:
        return partial(GPU, duration=duration, size=size)
    workers: dict[int, _Worker] = {}
    _all_workers.append(workers)

    @wraps(task)
    def handler(*args, **kwargs):
        if _forked:
            return task(*args, **kwargs)
        requested.append((task.__name__, duration(*args, **kwargs) if callable(duration) else duration))
        worker = workers.pop(0, None)
        if worker is None or not worker.process.is_alive():
            worker = _Worker(task)
        worker.args.put((args, kwargs))
        kind, value = worker.results.get()
        workers[0] = worker
        if kind == "error":
            if isinstance(value, str):
                raise RuntimeError(f"ZeroGPU worker error:\n{value}")
            raise value
        return value

    return handler


def replace_workers() -> None:
    """End every worker: the next call of each function forks a fresh one."""
    for workers in _all_workers:
        for worker in workers.values():
            worker.process.kill()
            worker.process.join()
        workers.clear()


def scenario(folder: Path) -> dict:
    """A visitor's session on the app, through this stand-in; what each step got."""
    import spaces
    spaces.GPU = GPU  # before the app imports its GPU boundary

    import numpy as np
    from PIL import Image
    from synthetic import iou, select_event, square_image

    import app
    from m2n2 import recipe as recipes
    from m2n2.studio import gpu, serving
    FOREGROUND = 1  # the label the "Next click is" switch gives

    options = app.Options(backbone="color", resolution=16, max_side=256)
    demo, handlers = app.build(options, serving.start(options))
    state = handlers.ui.state
    image, truth = square_image()
    path = folder / "square.png"
    Image.fromarray(image).save(path)
    rows, cols = np.nonzero(truth)
    centre = (float(cols.mean()), float(rows.mean()))

    def shown(out):
        session = out[state]
        return None if session.shown is None else round(iou(session.shown.mask, truth), 3)

    report = {}
    session = handlers.images.set_image({"path": str(path)}, None)[state]
    out = handlers.clicks.click(session, FOREGROUND, select_event(*centre))
    report["first_click_iou"] = shown(out)
    out = handlers.clicks.click(out[state], FOREGROUND, select_event(centre[0] + 3, centre[1] + 2))
    report["second_click_iou"] = shown(out)
    replace_workers()
    out = handlers.clicks.click(out[state], FOREGROUND, select_event(centre[0] - 3, centre[1] - 2))
    report["click_after_new_worker_iou"] = shown(out)
    session = out[state]

    made = recipes.make(session.image, handlers.serving.backbones.get(session.resolution), session.config,
                        [([(x, y, 1) for x, y in [centre]], None)], None)
    try:
        out = handlers.sharing.apply_recipe(session, made)
        report["recipe_ious"] = [None if obj.shown is None else round(iou(obj.shown.mask, truth), 3)
                                 for obj in out[state].objects]
    except Exception as error:  # noqa: BLE001 - the report says what broke
        report["recipe_ious"] = f"{type(error).__name__}: {error}"
    session = out[state]

    # An ended session: the GPU process frees its prepared image at its next job.
    points, labels = np.array([centre]), np.array([1])
    report["held_before_end"] = gpu.segment(handlers.serving, session.key, points, labels, None, session.config) is not None
    handlers.page.release_state(session)
    report["held_after_end"] = gpu.segment(handlers.serving, session.key, points, labels, None, session.config) is not None
    report["requested"] = requested
    replace_workers()
    return report


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    print(json.dumps(scenario(Path(sys.argv[1]))))
