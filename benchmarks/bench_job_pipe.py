"""Time a click's job takes through a pipe to a forked worker, as ZeroGPU sends it (the image goes along).

A click's :class:`m2n2.studio.gpu.SegmentJob` carries the session's image (for a worker that
lacks the prepared image); this sends jobs through a ``multiprocessing`` fork-context queue to a
worker that answers at once, and prints the median round trip per image size::

    python benchmarks/bench_job_pipe.py
"""

import multiprocessing
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from m2n2 import M2N2Config  # noqa: E402
from m2n2.studio.gpu import SegmentJob  # noqa: E402

_context = multiprocessing.get_context("fork")


def _answer(jobs, answers) -> None:
    while True:
        answers.put(jobs.get().image.shape)


def main() -> None:
    jobs, answers = _context.Queue(), _context.Queue()
    worker = _context.Process(target=_answer, args=(jobs, answers), daemon=True)
    worker.start()
    for height, width in ((768, 1024), (3000, 4000)):
        image = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
        times = []
        for _ in range(7):
            job = SegmentJob("s/1", np.zeros((20, 2)), np.ones(20, np.int64), None, M2N2Config(), image, 128)
            start = time.perf_counter()
            jobs.put(job)
            answers.get()
            times.append(time.perf_counter() - start)
        print(f"{width} x {height}: image {image.nbytes / 2**20:.1f} MiB, "
              f"round trip median {statistics.median(times) * 1000:.1f} ms")
    worker.kill()


if __name__ == "__main__":
    main()
