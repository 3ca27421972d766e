"""An evaluation spread over processes: ``torchrun`` / ``accelerate launch`` (or any launcher that
sets torch.distributed's ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``).

The ranks come from torch.distributed itself, not from accelerate's ``PartialState``: under
``torchrun`` on a CPU that reports one process where torch.distributed has several (accelerate
1.15). Processes take images from one shared queue (a counter in the process group's store), so a
process that draws small images takes more of them; each image is evaluated wholly by one process,
so a spread run gives each object the same clicks and IoUs as one process does. The queue holds the
costliest images first (:func:`largest_first`): the last images handed out are small ones, so the
processes finish close together.
"""

from __future__ import annotations

import datetime
import os
import time

#: Long enough for the slowest process to load SD2 or finish its last image.
TIMEOUT = datetime.timedelta(hours=3)


def largest_first(samples: list) -> list[int]:
    """The order in which a spread run hands out ``samples``: the largest expected cost first
    (:meth:`m2n2.evaluate.datasets.Sample.expected_cost`), ties in dataset order.

    Handed out in dataset order, a large image drawn last keeps one process busy while the others
    wait; largest first, each process's last image is among the smallest, so the processes end
    within a small image of each other (the longest-processing-time rule).
    """
    costs = [sample.expected_cost() for sample in samples]
    return sorted(range(len(samples)), key=lambda index: (-costs[index], index))


class Spread:
    """This process's place among the processes of a run (one process when not launched).

    Attributes
    ----------
    rank, world_size, local_rank : int
    device : str or None
        ``cuda:LOCAL_RANK`` when CUDA is available and several processes run, else None (the
        backbone's own default).
    """

    def __init__(self) -> None:
        self.rank, self.world_size, self.local_rank = 0, 1, 0
        self.device: str | None = None
        self._objects = None  # process group for Python objects (gloo)
        self._store = None
        self._owned = False
        self._next = self._done = 0  # the counters of a lone process

    @classmethod
    def from_environment(cls) -> "Spread":
        """Join the launcher's process group, if one was started (``WORLD_SIZE`` > 1)."""
        spread = cls()
        import torch.distributed as dist
        launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
        if not dist.is_available() or not (launched or dist.is_initialized()):
            return spread
        import torch
        cuda = torch.cuda.is_available()
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if cuda:
            # Before the group starts, so that NCCL and every default "cuda" tensor use this GPU.
            spread.device = f"cuda:{local_rank % torch.cuda.device_count()}"
            torch.cuda.set_device(spread.device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)
            spread._owned = True
        spread.rank, spread.world_size, spread.local_rank = dist.get_rank(), dist.get_world_size(), local_rank
        # Python objects travel over gloo whatever the main backend (the same path on CPU and GPU).
        spread._objects = dist.new_group(backend="gloo", timeout=TIMEOUT) if cuda else dist.group.WORLD
        spread._store = dist.distributed_c10d._get_default_store()
        return spread

    @property
    def main(self) -> bool:
        """Whether this is the process that writes the merged results and prints."""
        return self.rank == 0

    @property
    def several(self) -> bool:
        return self.world_size > 1

    def take(self) -> int:
        """The next image index of the shared queue (0, 1, 2, ... across all processes)."""
        if self._store is None:
            self._next += 1
            return self._next - 1
        return int(self._store.add("m2n2-evaluate/next", 1)) - 1

    def finished(self, count: int = 1) -> int:
        """Count ``count`` images as done (0: only read); the total of all processes."""
        if self._store is None:
            self._done += count
            return self._done
        return int(self._store.add("m2n2-evaluate/done", count))

    def wait_for(self, total: int, on_change=None, every: float = 0.05) -> None:
        """Wait until ``total`` images are done by all processes, calling ``on_change(done)``."""
        done = self.finished(0)
        while done < total:
            time.sleep(every)
            now = self.finished(0)
            if now != done and on_change is not None:
                on_change(now)
            done = now

    def broadcast(self, value):
        """Rank 0's ``value``, on every process."""
        if not self.several:
            return value
        import torch.distributed as dist
        box = [value]
        dist.broadcast_object_list(box, src=0, group=self._objects)
        return box[0]

    def gather(self, value) -> list:
        """Every process's ``value``, in rank order (on every process)."""
        if not self.several:
            return [value]
        import torch.distributed as dist
        values = [None] * self.world_size
        dist.all_gather_object(values, value, group=self._objects)
        return values

    def barrier(self) -> None:
        if self.several:
            import torch.distributed as dist
            dist.barrier(group=self._objects)

    def close(self) -> None:
        """Leave the process group (if this object started it)."""
        if self._owned:
            import torch.distributed as dist
            dist.destroy_process_group()
            self._owned = False
