"""Python front end: the progress bar of `Sampler.sample(progress=True)` (rows done and pixels/s on stderr)."""

import sys
import time

__all__ = ["ProgressBar"]


class ProgressBar:
    """Rows done and pixels/s on stderr, called by the executor once per row (no Python per pixel)."""

    def __init__(self, height, width, n):
        self.h, self.w, self.n, self.out, self.clock = height, width, n, sys.stderr, time.perf_counter
        self.start = self.clock()

    def __call__(self, rows):
        elapsed = max(self.clock() - self.start, 1e-9)
        done = int(round(20 * rows / self.h))
        self.out.write(f"\r[{'#' * done}{'.' * (20 - done)}] row {rows}/{self.h}, "
                       f"{rows * self.w * self.n / elapsed:,.0f} pixels/s")
        self.out.flush()

    def close(self):
        self.out.write("\n")
        self.out.flush()
