"""Several objects per image, as state changes of a :class:`~m2n2.studio.session.Session`.

Each object keeps its own clicks, threshold override and mask; the session's ``clicks``,
``threshold`` and ``shown`` are the *current* object's, so undo, reset and the threshold slider
act on it. "Finish object" starts a new, empty object; selecting an object makes it current
again; deleting removes it. Objects are numbered by their place in the list (1..K), which is
their number in the instance PNG (later objects on top where they overlap).

Nothing here computes: these are the plain state transitions the handlers commit.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .session import SegObject, Session

#: Object k's colour is PALETTE[(k - 1) % len(PALETTE)]; the first is the single-object blue.
PALETTE = [(30, 144, 255), (255, 140, 0), (170, 60, 220), (240, 220, 30), (0, 190, 170), (230, 60, 150),
           (120, 200, 40), (150, 100, 50)]


def colour(number: int) -> tuple[int, int, int]:
    """The overlay colour of object ``number`` (1-based)."""
    return PALETTE[(number - 1) % len(PALETTE)]


def finished(session: Session) -> list[tuple[int, SegObject]]:
    """(number, object) of every object that has a mask, in order."""
    return [(number, obj) for number, obj in enumerate(session.objects, start=1) if obj.shown is not None]


def masks(session: Session) -> list[np.ndarray]:
    """The masks of the objects that have one, in order (the exports' objects 1..K)."""
    return [obj.shown.mask for _, obj in finished(session)]


def _drop_empty_current(session: Session) -> None:
    """Forget the current object when it has no click (leaving it empty would list a blank object)."""
    if not session.current.clicks and len(session.objects) > 1:
        del session.objects[session.active]
        session.active = min(session.active, len(session.objects) - 1)


def new_object(session: Session) -> None:
    """Keep the current object and start a new, empty one (it becomes current)."""
    session.require_image()
    if session.current.shown is None:
        raise InputError("click on an object first: the current object has no mask to keep yet")
    session.objects = [obj for obj in session.objects if obj.clicks]
    session.objects.append(SegObject())
    session.active = len(session.objects) - 1
    session.action = None


def select(session: Session, number: int) -> None:
    """Make object ``number`` (1-based) current."""
    session.require_image()
    if not 1 <= number <= len(session.objects):
        raise InputError(f"there is no object {number}")
    chosen = session.objects[number - 1]
    _drop_empty_current(session)
    session.active = next(i for i, obj in enumerate(session.objects) if obj is chosen)
    session.action = None


def delete(session: Session, number: int) -> None:
    """Remove object ``number`` (1-based); the last object left is emptied instead."""
    session.require_image()
    if not 1 <= number <= len(session.objects):
        raise InputError(f"there is no object {number}")
    del session.objects[number - 1]
    if not session.objects:
        session.objects = [SegObject()]
    session.active = min(session.active if session.active < number - 1 else max(session.active - 1, 0),
                         len(session.objects) - 1)
    session.action = None


def choices(session: Session) -> list[tuple[str, int]]:
    """(label, number) of every object for the app's list."""
    out = []
    for number, obj in enumerate(session.objects, start=1):
        clicks = len(obj.clicks)
        what = "new: click on it" if not clicks else f"{clicks} click{'s' if clicks != 1 else ''}"
        if obj.threshold is not None:
            what += f", threshold {obj.threshold:.3f}"
        out.append((f"Object {number} ({what})", number))
    return out
