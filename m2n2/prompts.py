"""Clicks: the one type, the one parser and the one check that the app, its API, recipes, links and
the command lines use.

A click is a position in the original image's pixels (``x`` the column, ``y`` the row; any
float) and a label (1 foreground, 0 background). Text comes in three spellings, all read by
:func:`parse_clicks`: a list of ``[x, y]``, ``[x, y, label]`` or ``{"x", "y", "label"}`` items
(label 1 when left out), that list as JSON text, and a link's ``"x,y,label;x,y,label"``.
:func:`check_clicks` then checks what needs the image (the count, and that each click lies on it).
Every refusal is an :class:`~m2n2.errors.InputError` whose message names the bad item.
"""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass

import numpy as np

from .config import MAX_CLICKS
from .errors import InputError


@dataclass(frozen=True)
class Click:
    """One click: ``x`` the column and ``y`` the row in original-image pixels; ``label`` 1
    (foreground) or 0 (background)."""

    x: float
    y: float
    label: int

    @property
    def positive(self) -> bool:
        """True for a foreground click."""
        return self.label == 1

    def __iter__(self):
        """``x, y, label = click``, as code written for ``(x, y, label)`` tuples reads it."""
        return iter((self.x, self.y, self.label))


_EXAMPLE = '[[120, 80, 1], {"x": 5, "y": 9, "label": 0}] or 120,80,1;5,9,0'


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _finite(value) -> bool:
    """A finite real number (an int too large for a float is not)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _shown(value) -> str:
    return f"{value:g}" if _is_number(value) else repr(value)


def _label(value):
    """0 or 1 from an int, a bool, or a whole float; None for anything else."""
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if _is_number(value) and value in (0, 1):
        return int(value)
    return None


def _click(item, number: int, what: str) -> Click:
    """One item of a list (``[x, y]``, ``[x, y, label]``, ``{"x", "y", "label"}`` or a Click)."""
    if isinstance(item, Click):
        x, y, label = item.x, item.y, item.label
    elif isinstance(item, dict) and "x" in item and "y" in item:
        x, y, label = item["x"], item["y"], item.get("label", 1)
    elif isinstance(item, (list, tuple)) and len(item) in (2, 3):
        x, y, label = item[0], item[1], item[2] if len(item) == 3 else 1
    else:
        raise InputError(f"{what}: click {number} must be [x, y, label] or {{\"x\", \"y\", \"label\"}}, "
                         f"got {item!r}")
    if not (_is_number(x) and _is_number(y)):
        raise InputError(f"{what}: click {number} needs numbers for x and y, got {item!r}")
    if not (_finite(x) and _finite(y)):
        raise InputError(f"{what}: click {number} has a coordinate that is NaN or infinite, got {item!r}")
    checked = _label(label)
    if checked is None:
        raise InputError(f"{what}: click {number} needs the label 0 or 1 (1 foreground, 0 background), "
                         f"got the label {label!r} in {item!r}")
    return Click(float(x), float(y), checked)


def _link_items(text: str, what: str) -> list:
    """``"x,y,label;x,y,label"`` (label optional) -> ``[x, y, label]`` lists of numbers."""
    items = []
    for number, part in enumerate(filter(None, (p.strip() for p in text.split(";"))), start=1):
        values = [v.strip() for v in part.split(",")]
        try:
            if len(values) not in (2, 3):
                raise ValueError
            item = [float(values[0]), float(values[1])]
            if len(values) == 3:
                item.append(int(values[2]))
        except ValueError:
            raise InputError(f"{what}: click {number} must be x,y,label with numbers (e.g. 250,120,1), "
                             f"got {part!r}") from None
        if not all(_finite(v) for v in item[:2]):
            raise InputError(f"{what}: click {number} has a coordinate that is NaN or infinite, got {part!r}")
        items.append(item)
    return items


def parse_clicks(value, *, what: str = "points") -> list[Click]:
    """Read clicks from any of their spellings (see the module's docstring).

    Parameters
    ----------
    value : list, str or bytes
        A list of items, that list as JSON text, or the link form ``"x,y,label;x,y,label"``.
    what : str
        What the value is called where it came from (``"--points number 2"``, ``"the link's
        clicks"``...): error messages start with it.

    Returns
    -------
    list of Click
        At least one. Not checked against an image: see :func:`check_clicks`.

    Raises
    ------
    InputError
        Not JSON nor the link form, not a list, an empty list, an item of the wrong shape, a
        coordinate that is not a finite number, or a label other than 0 and 1.
    """
    if isinstance(value, (bytes, bytearray)):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as error:
                raise InputError(f"{what} is not a JSON list such as {_EXAMPLE}: {error}") from None
        else:
            value = _link_items(text, what)
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise InputError(f"{what} must be a list of clicks such as {_EXAMPLE}, got {value!r}")
    if not value:
        raise InputError(f"{what} is empty: give at least one click, such as {_EXAMPLE}")
    return [_click(item, number, what) for number, item in enumerate(value, start=1)]


def check_clicks(clicks, size: tuple[int, int] | None = None, max_clicks: int | None = MAX_CLICKS) -> list[Click]:
    """Check clicks against a limit and an image, before any work is done for them.

    Parameters
    ----------
    clicks : iterable of Click (or ``(x, y, label)`` items)
    size : (int, int), optional
        The image's (height, width): every click must lie on it, ``0 <= x < width`` and
        ``0 <= y < height``. None checks no position (only that coordinates are finite).
    max_clicks : int or None
        The most clicks allowed (None: no limit).

    Returns
    -------
    list of Click

    Raises
    ------
    InputError
        No click, more than ``max_clicks``, a coordinate that is not finite, or a click off the
        image; the message numbers the click (from 1) and gives its position and the image's size.
    """
    clicks = [c if isinstance(c, Click) else _click(c, number, "clicks")
              for number, c in enumerate(clicks, start=1)]
    if not clicks:
        raise InputError("at least one click is needed")
    if max_clicks is not None and len(clicks) > max_clicks:
        raise InputError(f"{len(clicks)} clicks is more than the {max_clicks} allowed "
                         f"(the evaluation protocol uses at most {MAX_CLICKS}); give fewer clicks")
    for number, click in enumerate(clicks, start=1):
        if not (_is_number(click.x) and _is_number(click.y)
                and _finite(click.x) and _finite(click.y)):
            raise InputError(f"click {number} at (x={_shown(click.x)}, y={_shown(click.y)}) has a coordinate "
                             "that is NaN or infinite: coordinates must be finite numbers")
        if click.label not in (0, 1):
            raise InputError(f"click {number} needs the label 0 or 1 (1 foreground, 0 background), "
                             f"got {click.label!r}")
        if size is not None:
            height, width = int(size[0]), int(size[1])
            if not (0 <= click.x < width and 0 <= click.y < height):
                raise InputError(f"click {number} at (x={click.x:g}, y={click.y:g}) is outside the "
                                 f"{width} x {height} image (x in [0, {width}), y in [0, {height}))")
    return clicks


def check_threshold(value) -> float | None:
    """A threshold override: None stays None (the adaptive threshold); else a finite number in [0, 1].

    Raises
    ------
    InputError
        Not a number (a bool is not one), not finite, or outside [0, 1].
    """
    if value is None:
        return None
    if not _is_number(value):
        raise InputError(f"the threshold must be a number in [0, 1] or none, got {value!r}")
    if not (_finite(value) and 0.0 <= value <= 1.0):
        raise InputError(f"the threshold must lie in [0, 1], got {value!r}")
    return float(value)


def as_arrays(clicks) -> tuple[np.ndarray, np.ndarray]:
    """``(points, labels)``: (K, 2) float64 (x, y) and (K,) int64, what the predictor takes."""
    clicks = list(clicks)
    points = np.array([(c.x, c.y) for c in clicks], dtype=np.float64).reshape(-1, 2)
    labels = np.array([c.label for c in clicks], dtype=np.int64)
    return points, labels


def link_text(clicks) -> str:
    """The link form ``"x,y,label;x,y,label"`` of clicks (what :func:`parse_clicks` reads back)."""
    return ";".join(f"{c.x:g},{c.y:g},{c.label}" for c in clicks)
