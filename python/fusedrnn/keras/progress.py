"""Progress of an epoch on the terminal: a tqdm bar when tqdm is importable, otherwise one line
rewritten in place (at most ten times a second), as Keras' progress bar; verbose=2 prints one
line per epoch, verbose=0 nothing."""

from __future__ import annotations

import sys
import time

__all__ = ["Progress"]

_MIN_INTERVAL = 0.1  # seconds between redraws of the plain line


def _fmt_logs(logs) -> str:
    return " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())


class Progress:
    def __init__(self, verbose, epoch, epochs, steps, stream=None):
        self.verbose, self.steps = verbose, steps
        self.label = f"Epoch {epoch + 1}/{epochs}"
        self.stream = sys.stdout if stream is None else stream
        self.bar = None
        self.done = 0
        self.start = self._last = time.perf_counter()
        if verbose == 1:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=steps, desc=self.label, unit="batch", leave=True,
                                file=sys.stderr, dynamic_ncols=True)
            else:
                print(self.label, file=self.stream, flush=True)

    def update(self, logs):
        self.done += 1
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items()}, refresh=False)
            self.bar.update(1)
        elif self.verbose == 1:
            now = time.perf_counter()
            if now - self._last >= _MIN_INTERVAL or self.done == self.steps:
                self._last = now
                self._line(logs, end="")

    def _line(self, logs, end):
        filled = 30 * self.done // max(self.steps, 1)
        bar = "=" * filled + (">" if filled < 30 else "") + "." * max(29 - filled, 0)
        elapsed = time.perf_counter() - self.start
        print(f"\r{self.done}/{self.steps} [{bar}] - {elapsed:.1f}s - {_fmt_logs(logs)}",
              end=end, file=self.stream, flush=True)

    def close(self, logs):
        if self.bar is not None:
            self.bar.set_postfix_str(_fmt_logs(logs), refresh=True)
            self.bar.close()
        elif self.verbose == 1:
            self._line(logs, end="\n")
        elif self.verbose:
            print(f"{self.label} - {time.perf_counter() - self.start:.1f}s - {_fmt_logs(logs)}",
                  file=self.stream, flush=True)
