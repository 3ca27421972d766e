"""Agreement between methods on the same clicks: one method (the reference) drives the simulated
user, the others predict from its clicks, and each of their masks is compared with the
reference's mask by IoU. This measures how far a variant (a faster preset, say) departs from the
reference's decisions, independent of how either does against the ground truth.
"""

from __future__ import annotations

import time

import numpy as np

from ..config import MAX_CLICKS
from .protocol import InstanceResult, Method, iou, next_click, simulate


def follow(reference: Method, followers: list[Method], target: np.ndarray, ignore: np.ndarray | None = None,
           max_clicks: int = MAX_CLICKS, clicker=next_click) -> tuple[InstanceResult, dict[str, InstanceResult],
                                                                      dict[str, list[float]]]:
    """Run the simulated user on ``reference``; every follower predicts from the same clicks.

    Parameters
    ----------
    reference : Method
        Drives the clicks; its image is set already.
    followers : list of Method
        Their images are set already.
    target, ignore : numpy.ndarray
        (H, W) bool ground truth and ignore region.
    max_clicks : int
    clicker : callable
        The simulated user (see :func:`m2n2.evaluate.protocol.simulate`).

    Returns
    -------
    reference_result : InstanceResult
        The reference's own run.
    follower_results : dict
        ``{name: InstanceResult}``: each follower's IoU with the ground truth along the
        reference's clicks (carried forward like the reference's when the clicks stop).
    agreement : dict
        ``{name: [IoU of the follower's mask with the reference's mask, per click]}`` (whole
        masks, ignore pixels included).
    """
    runs = {f.name: InstanceResult() for f in followers}
    agreement: dict[str, list[float]] = {f.name: [] for f in followers}

    def on_prediction(points, labels, prediction):
        for follower in followers:
            start = time.perf_counter()
            mask = np.asarray(follower.predict(points, labels), dtype=bool)
            run = runs[follower.name]
            run.seconds.append(time.perf_counter() - start)
            run.ious.append(iou(mask, target, ignore))
            agreement[follower.name].append(iou(mask, prediction))

    result = simulate(reference, target, ignore, max_clicks, on_prediction, clicker)
    for run in runs.values():
        run.clicks = list(result.clicks)
        last = run.ious[-1] if run.ious else result.ious[-1]
        run.ious += [last] * (len(result.ious) - len(run.ious))
    return result, runs, agreement


def summarize_agreement(agreement: dict[str, dict[str, list[float]]], max_clicks: int) -> dict[str, dict]:
    """Mean, minimum and per-click statistics of the agreement IoUs.

    Parameters
    ----------
    agreement : dict
        ``agreement[method][instance_id]``: per-click IoUs with the reference.
    max_clicks : int

    Returns
    -------
    dict
        ``{method: {"masks", "mean", "min", "identical", "per_click_mean", "per_click_min"}}``:
        over every compared mask, and per click index (None past the last click made).
    """
    summary = {}
    for method, per_instance in agreement.items():
        values = [v for run in per_instance.values() for v in run]
        per_click = [[run[k] for run in per_instance.values() if len(run) > k] for k in range(max_clicks)]
        summary[method] = {
            "masks": len(values),
            "mean": float(np.mean(values)) if values else float("nan"),
            "min": float(np.min(values)) if values else float("nan"),
            "identical": int(sum(v == 1.0 for v in values)),
            "per_click_mean": [float(np.mean(c)) if c else None for c in per_click],
            "per_click_min": [float(np.min(c)) if c else None for c in per_click],
        }
    return summary


def agreement_table(summary: dict[str, dict], reference: str) -> str:
    """The agreement summary as Markdown: one row per method, then mean / min per click."""
    lines = [f"Mask IoU with {reference} on its clicks:", "",
             "| Method | Masks | Mean IoU | Min IoU | Identical |", "|---|---|---|---|---|"]
    for method, row in summary.items():
        lines.append(f"| {method} | {row['masks']} | {row['mean']:.4f} | {row['min']:.4f} | {row['identical']} |")
    for method, row in summary.items():
        cells = [f"{m:.3f}/{n:.3f}" for m, n in zip(row["per_click_mean"], row["per_click_min"]) if m is not None]
        lines.append("")
        lines.append(f"{method}, mean/min per click 1..{len(cells)}: " + " ".join(cells))
    return "\n".join(lines)
