"""What an evaluation run has done so far, image by image: merged across processes, written to
and read back from ``results.json``, and checked before a run resumes from it.

An image is the unit of work: all its objects and methods are evaluated by one process, so the
state of several processes merges by taking the union of their images.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import M2N2Error
from ..prompts import Click
from .protocol import InstanceResult

#: Bump when a change of the evaluation or of M2N2 changes per-object results (clicks, IoUs):
#: ``--resume`` then refuses results written by the older code instead of mixing the two.
RESULTS_VERSION = 2  # 2: the fast preset's first maps through the table (early_table)


class ResumeError(M2N2Error):
    """A run cannot continue from the results it was pointed at."""


@dataclass
class ImageRecord:
    """Everything the methods did on one image.

    Attributes
    ----------
    results : dict
        ``results[method][instance_id]``: InstanceResult.
    setup : dict
        ``setup[method]``: seconds of ``set_image``.
    agreement : dict
        ``agreement[method][instance_id]``: per-click mask IoUs with the reference method
        (empty unless the run measures agreement).
    """

    results: dict[str, dict[str, InstanceResult]]
    setup: dict[str, float]
    agreement: dict[str, dict[str, list[float]]] = field(default_factory=dict)


@dataclass
class RunState:
    """The finished images of a run (in the order they finished) and the images that failed."""

    images: dict[str, ImageRecord] = field(default_factory=dict)
    failures: list[dict] = field(default_factory=list)

    def add(self, name: str, record: ImageRecord) -> None:
        self.images[name] = record
        self.failures = [f for f in self.failures if f["image"] != name]

    def fail(self, name: str, error: BaseException) -> None:
        self.failures.append({"image": name, "error": f"{type(error).__name__}: {error}"})

    def merge(self, other: "RunState") -> "RunState":
        """The union of two states (``other`` wins for an image both hold)."""
        merged = RunState(dict(self.images), list(self.failures))
        for name, record in other.images.items():
            merged.add(name, record)
        merged.failures += [f for f in other.failures if f["image"] not in merged.images]
        return merged

    def ordered(self, names: list[str]) -> "RunState":
        """The same state with its images in the order of ``names`` (dataset order), so that the
        JSON of a run does not depend on which process finished an image first."""
        rank = {name: index for index, name in enumerate(names)}
        order = sorted(self.images, key=lambda name: (rank.get(name, len(rank)), name))
        failures = sorted(self.failures, key=lambda f: (rank.get(f["image"], len(rank)), f["image"]))
        return RunState({name: self.images[name] for name in order}, failures)

    def flat(self, methods: list[str]) -> tuple[dict, dict, dict]:
        """``(results[method][id], setup[method] list, agreement[method][id])`` over all images."""
        results = {m: {} for m in methods}
        setup = {m: [] for m in methods}
        agreement: dict[str, dict[str, list[float]]] = {}
        for record in self.images.values():
            for method in methods:
                results[method].update(record.results.get(method, {}))
                if method in record.setup:
                    setup[method].append(record.setup[method])
            for method, per in record.agreement.items():
                agreement.setdefault(method, {}).update(per)
        return results, setup, agreement

    def to_json(self) -> dict:
        """The per-image part of ``results.json`` (``instances`` and ``agreement`` are written
        flat, by method, beside it; see :func:`m2n2.evaluate.report.results_json`)."""
        return {name: {"instances": sorted({key for per in record.results.values() for key in per}),
                       "setup": record.setup}
                for name, record in self.images.items()}

    @classmethod
    def from_json(cls, data: dict) -> "RunState":
        """Rebuild the state from a ``results.json`` (or a process's part file)."""
        try:
            instances = data["instances"]
            agreement = (data.get("agreement") or {}).get("instances", {})
            state = cls(failures=list(data.get("failures", [])))
            for name, entry in data["images"].items():
                ids = entry["instances"]
                results = {method: {key: _instance(per[key]) for key in ids if key in per}
                           for method, per in instances.items()}
                followed = {method: {key: per[key] for key in ids if key in per}
                            for method, per in agreement.items()}
                state.images[name] = ImageRecord(results, dict(entry["setup"]),
                                                 {m: per for m, per in followed.items() if per})
        except (KeyError, TypeError, ValueError) as error:
            raise ResumeError(f"the results file lacks what a resume needs ({error!r}); it was "
                              "written by an older version or is damaged") from error
        return state


def _instance(entry: dict) -> InstanceResult:
    return InstanceResult(ious=list(entry["ious"]), seconds=list(entry["seconds"]),
                          clicks=[Click(int(x), int(y), int(bool(p))) for x, y, p in entry["clicks"]])


def check_fingerprint(found: dict | None, expected: dict, path: str | Path) -> None:
    """Refuse to resume from results made with other settings.

    Raises
    ------
    ResumeError
        Naming every setting that differs, the results version among them.
    """
    if not found:
        raise ResumeError(f"{path} has no settings fingerprint (written before --resume existed); "
                          "start a new run (another --out, or without --resume)")
    expected = json.loads(json.dumps(expected))  # compared as written: tuples become lists
    differences = []
    for key, value in expected.items():
        if found.get(key) == value:
            continue
        if key == "images":
            before = found.get(key) or []
            differences.append(f"images: {len(before)} there, {len(value)} now"
                               + (" but others" if len(before) == len(value) else "")
                               + " (another dataset, --limit or --seed)")
        else:
            differences.append(f"{key}: {found.get(key)!r} there, {value!r} now")
            if key == "results_version":
                differences[-1] += " (the code now gives other results)"
    if differences:
        raise ResumeError(f"cannot resume from {path}: it was made with other settings; "
                          + "; ".join(differences)
                          + ". Rerun with the same settings, or start a new run (another --out, or without --resume)")


def read_json(path: str | Path) -> dict:
    """A results file's data.

    Raises
    ------
    ResumeError
        Missing or unreadable.
    """
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as error:
        raise ResumeError(f"nothing to resume: {path} does not exist") from error
    except (OSError, ValueError) as error:
        raise ResumeError(f"cannot read {path}: {error}") from error
