"""The paper's published M2N2 row (CVPR 2025, Table 3: SD2 weights) beside a run's rows."""

from __future__ import annotations

from pathlib import Path

from .protocol import clicks_to_reach

#: NoC@85, NoC@90 and objects of M2N2 (SD2) in the paper's Table 3; objects from its dataset list
#: (DAVIS: the 345 objects of f-BRS's DAVIS345, which the authors' prepare_datasets.py converts).
PUBLISHED = {
    "grabcut": {"name": "GrabCut", "noc85": 1.62, "noc90": 1.90, "objects": 50},
    "berkeley": {"name": "Berkeley", "noc85": 2.45, "noc90": 3.88, "objects": 100},
    "sbd": {"name": "SBD", "noc85": 7.72, "noc90": 10.94, "objects": 6671},
    "davis": {"name": "DAVIS", "noc85": 4.60, "noc90": 6.72, "objects": 345},
}

#: The settings of the paper's numbers (paper 4.1, and the authors' evaluate_datasets.py).
PAPER_SETTINGS = {"resolution": 128, "max_clicks": 20, "clicker": "authors"}


def guess_dataset(path: str | Path) -> str | None:
    """Which of the paper's datasets ``path`` holds, from its name (the folder, or the folder of
    a COCO file: ``GrabCut/``, ``datasets/coco/SBD/val.json``, ``DAVIS345/``...), or None."""
    path = Path(path)
    folder = path.parent if path.suffix.lower() == ".json" else path
    name = folder.name.lower()
    for key in PUBLISHED:
        if name.startswith(key):
            return key
    return None


def comparison_table(dataset: str, results: dict, max_clicks: int, descriptions: dict[str, str],
                     settings: dict) -> str:
    """The paper's M2N2 row above the run's rows: objects, NoC@85, NoC@90 and the weights.

    Parameters
    ----------
    dataset : str
        A key of :data:`PUBLISHED`.
    results : dict
        ``results[method][instance_id]`` (InstanceResult); rows average over the objects every
        method finished, as the main table does.
    max_clicks : int
    descriptions : dict
        ``{method: what it runs on}`` (the backbone's description for M2N2 methods).
    settings : dict
        The run's ``resolution``, ``max_clicks``, ``clicker`` and ``backbone``: where they differ
        from the paper's, a note says so under the table.
    """
    paper = PUBLISHED[dataset]
    shared = set.intersection(*(set(per) for per in results.values())) if results else set()
    lines = [f"Beside the paper ({paper['name']}, M2N2 in the paper's Table 3):", "",
             "| Row | Objects | NoC@85 | NoC@90 | Weights |", "|---|---|---|---|---|",
             f"| M2N2 (paper) | {paper['objects']} | {paper['noc85']:.2f} | {paper['noc90']:.2f} | "
             "Stable Diffusion 2, R = 128 (see docs/evaluation.md for which SD2) |"]
    for method, per in results.items():
        runs = [per[key].ious for key in sorted(shared)]
        noc = [sum(clicks_to_reach(r, t, max_clicks) for r in runs) / len(runs) if runs else float("nan")
               for t in (0.85, 0.90)]
        lines.append(f"| {method} | {len(runs)} | {noc[0]:.2f} | {noc[1]:.2f} | {descriptions.get(method, '-')} |")
    notes = [f"{key} {settings.get(key)} (paper: {value})" for key, value in PAPER_SETTINGS.items()
             if settings.get(key) is not None and settings.get(key) != value]
    if not str(settings.get("backbone_description") or "").startswith("Stable Diffusion 2"):
        notes.insert(0, "weights other than SD2")
    if notes:
        lines.append("")
        lines.append("Not the paper's setting: " + "; ".join(notes) + ".")
    return "\n".join(lines)
