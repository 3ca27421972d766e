"""Exceptions raised by M2N2 Studio.

Every error a user can cause derives from :class:`M2N2Error`, so an app can catch one type and
show its message; input errors are also ``ValueError`` so plain Python code reads naturally.
"""


class M2N2Error(Exception):
    """Base class of every error M2N2 Studio raises on purpose."""


class InputError(M2N2Error, ValueError):
    """Bad input from the caller: an image, a point, a label or an attention tensor."""


class NotReadyError(M2N2Error, RuntimeError):
    """An operation needs state that is not there yet (e.g. ``predict`` before ``set_image``)."""


class BackboneUnavailable(M2N2Error, RuntimeError):
    """An attention backbone cannot be loaded (weights missing, offline, wrong id...)."""
