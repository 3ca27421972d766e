"""Prepared examples: an example is prepared once and every session that chooses it gets a copy.

Choosing an example used to prepare it again for each choice (the attention, the operator and,
with the fast preset, the leap and the upsampling table: seconds on a CPU). The kept
predictor shares its prepared tensors with the sessions' copies
(:meth:`~m2n2.predictor.M2N2Predictor.shared_copy`), so a choice costs only the session's own
state. The kept examples count against the memory budget (as one more "session" of the
:class:`~m2n2.studio.serving.PredictorStore`) and may take at most :data:`BUDGET_SHARE` of it;
past that an example is prepared per choice, as before.

An example is segmented with ``early_maps`` = 0 (:func:`example_config`): the server keeps it
prepared (the leap and the table built), so none of its maps needs to go without them, and its
first click is as quick as the next ones. The rule depends on the image only: an example that is
not kept yet (chosen before the start-up preparation reached it, or over the share) is prepared
with that setting too, before it can be clicked.
"""

from __future__ import annotations

import logging
import threading
import time

from ..config import M2N2Config
from ..errors import M2N2Error
from ..predictor import M2N2Predictor
from .serving import PredictorStore, tensor_bytes

log = logging.getLogger(__name__)

#: The most of the memory budget the kept examples may hold together.
BUDGET_SHARE = 0.5
#: The key they are counted under in the store's budget.
STORE_KEY = "examples"


def example_config(config: M2N2Config) -> M2N2Config:
    """The settings an example is segmented with: ``config`` with ``early_maps`` = 0.

    ``early_maps`` lets an image's first maps go without the parts of its preparation that are
    still being built; a kept example has them all, so its first map takes the leap and the
    table like every later one (about 0.3 s instead of 1.5 to 2 s for the astronaut on a CPU).
    """
    return config.replace(early_maps=0)


class ExampleCache:
    """Prepared example images by (path, R, settings).

    Parameters
    ----------
    store : PredictorStore
        Whose budget the kept examples count against.
    """

    def __init__(self, store: PredictorStore):
        self.store = store
        self._items: dict[tuple, tuple[M2N2Predictor, int]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(path: str, resolution: int, config: M2N2Config) -> tuple:
        # A kept example is fully prepared, whatever ``early_maps`` its maps are made with.
        return str(path), int(resolution), example_config(config)

    def lend(self, path: str, resolution: int, config: M2N2Config) -> M2N2Predictor | None:
        """A session's own copy of the prepared example (with ``config``), or None when it is not kept."""
        with self._lock:
            item = self._items.get(self._key(path, resolution, config))
        if item is None:
            return None
        copy = item[0].shared_copy()
        copy.set_config(config)  # at most ``early_maps`` differs: nothing is recomputed
        return copy

    def keep(self, path: str, resolution: int, config: M2N2Config, predictor: M2N2Predictor) -> bool:
        """Keep a prepared example (waits for its background preparation); False when over the share."""
        try:
            template = predictor.shared_copy()
        except (M2N2Error, MemoryError) as error:  # its background preparation failed: not kept
            log.warning("example %s not kept: %s", path, error)
            return False
        template.backbone = None  # the store never keeps the model
        if template.config.uses_dense_filter:
            template.prepare_weight_sums()  # for the maps made with the dense filter
        size = tensor_bytes(template)
        with self._lock:
            key = self._key(path, resolution, config)
            if key in self._items:
                return True
            held = sum(size for _, size in self._items.values())
            if held + size > BUDGET_SHARE * self.store.budget_bytes:
                log.info("example %s not kept: %.0f MiB over the examples' share of the memory budget",
                         path, (held + size) / 2**20)
                return False
            self._items[key] = (template, size)
            held += size
        self.store.note_session(STORE_KEY, held)
        return True

    def prepare(self, paths, resolution: int, config: M2N2Config, prepare) -> dict[str, float]:
        """Prepare and keep every example in turn (at start); ``prepare(path)`` returns a prepared
        predictor. Returns each example's seconds; stops at the first one over the share."""
        seconds = {}
        for path in paths:
            start = time.perf_counter()
            if self.lend(path, resolution, config) is None and not self.keep(path, resolution, config, prepare(path)):
                break
            seconds[str(path)] = time.perf_counter() - start
        return seconds

    @property
    def bytes(self) -> int:
        """What the kept examples hold together."""
        with self._lock:
            return sum(size for _, size in self._items.values())

    def __len__(self) -> int:
        return len(self._items)
