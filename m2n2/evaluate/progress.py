"""One progress line for a run, however many processes share it: images done of all, and the
time left at the rate so far (tqdm's bar, shown by the main process only)."""

from __future__ import annotations

import sys


class Progress:
    """A bar over ``total`` images of which ``initial`` were done before (a resumed run).

    Parameters
    ----------
    total, initial : int
    enabled : bool
        False (``--no-progress``, or a process other than the main one): nothing is shown.
    """

    def __init__(self, total: int, initial: int = 0, enabled: bool = True) -> None:
        self.initial = initial
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                return
            # initial= makes the rate (and so the time left) count only this run's images.
            self.bar = tqdm(total=total, initial=initial, unit="image", dynamic_ncols=True, file=sys.stderr)

    def update(self, done: int) -> None:
        """Show ``done`` images finished in this run (all processes together)."""
        if self.bar is not None and self.initial + done > self.bar.n:
            self.bar.update(self.initial + done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def report(message: str) -> None:
    """Print a line to stderr without breaking the progress bar."""
    try:
        from tqdm import tqdm
        tqdm.write(message, file=sys.stderr)
    except ImportError:
        print(message, file=sys.stderr)
