"""Summaries of an evaluation run: the Markdown table, the JSON file and the mean-IoU plot."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .protocol import InstanceResult, clicks_to_reach, reached


def summarize(results: dict[str, dict[str, InstanceResult]], thresholds, max_clicks: int,
              setup: dict[str, list[float]] | None = None) -> dict[str, dict]:
    """Per-method metrics over the instances every method finished.

    Parameters
    ----------
    results : dict
        ``results[method][instance_id]``.
    thresholds : sequence of float
        IoU thresholds of the NoC columns.
    max_clicks : int
    setup : dict, optional
        ``setup[method]``: seconds of each ``set_image`` call (the per-image cost).

    Returns
    -------
    dict
        ``{method: {"instances", "noc": {t: mean NoC}, "failed": {t: count never reaching t},
        "miou": [mean IoU after click 1..max_clicks], "seconds_per_click", "seconds_per_image"}}``.
    """
    # Only instances every method finished, so that each row averages over the same objects.
    shared = set.intersection(*(set(per.keys()) for per in results.values())) if results else set()
    summary = {}
    for method, per_instance in results.items():
        runs = [per_instance[key] for key in sorted(shared)]
        seconds = [s for run in runs for s in run.seconds]
        summary[method] = {
            "instances": len(runs),
            "noc": {f"{t:.2f}": _mean([clicks_to_reach(r.ious, t, max_clicks) for r in runs]) for t in thresholds},
            "failed": {f"{t:.2f}": sum(not reached(r.ious, t, max_clicks) for r in runs) for t in thresholds},
            "miou": np.mean([r.ious for r in runs], axis=0).tolist() if runs else [],
            "seconds_per_click": _mean(seconds),
            "seconds_per_image": _mean((setup or {}).get(method, [])),
        }
    return summary


def _mean(values) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def markdown_table(summary: dict[str, dict], thresholds) -> str:
    """The summary as a Markdown table: NoC and NoF (objects that never reach the threshold)
    per threshold, mean IoU after 1 and 5 clicks, seconds per image and per click."""
    labels = [f"{round(t * 100)}" for t in thresholds]
    header = (["Method", "Objects"] + [f"NoC@{l}" for l in labels] + [f"NoF@{l}" for l in labels]
              + ["mIoU@1", "mIoU@5", "s/image", "s/click"])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, row in summary.items():
        miou = row["miou"]
        cells = ([method, str(row["instances"])]
                 + [f"{row['noc'][f'{t:.2f}']:.2f}" for t in thresholds]
                 + [str(row["failed"][f"{t:.2f}"]) for t in thresholds]
                 + [f"{miou[0]:.3f}" if miou else "-", f"{miou[4]:.3f}" if len(miou) > 4 else "-",
                    f"{row['seconds_per_image']:.2f}", f"{row['seconds_per_click']:.3f}"])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def results_json(results: dict[str, dict[str, InstanceResult]], summary: dict, failures: list[dict],
                 settings: dict, images: dict | None = None) -> dict:
    """Everything a run produced, as JSON-ready data; ``images`` (the finished images, their
    objects and set-up seconds: :meth:`m2n2.evaluate.state.RunState.to_json`) lets a run
    resume from the file."""
    per_instance = {
        method: {key: {"ious": run.ious, "seconds": run.seconds,
                       "clicks": [[c.x, c.y, c.label] for c in run.clicks]}
                 for key, run in per.items()}
        for method, per in results.items()}
    data = {"settings": settings, "summary": summary, "failures": failures, "instances": per_instance}
    if images is not None:
        data["images"] = images
    return data


def write_json(path: str | Path, data: dict) -> None:
    """Write atomically (temporary file, then rename), so an interrupted write never leaves a
    truncated file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=1))
    os.replace(temporary, path)


def plot_miou(summary: dict[str, dict], path: str | Path, title: str = "") -> None:
    """PNG of mean IoU against the number of clicks, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for method, row in summary.items():
        if row["miou"]:
            clicks = np.arange(1, len(row["miou"]) + 1)
            axes.plot(clicks, row["miou"], marker="o", markersize=3, label=f"{method} ({row['instances']})")
    axes.set_xlabel("clicks")
    axes.set_ylabel("mean IoU")
    axes.set_xticks(range(0, len(next(iter(summary.values()))["miou"]) + 1, 2) if summary else [])
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    if title:
        axes.set_title(title)
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
