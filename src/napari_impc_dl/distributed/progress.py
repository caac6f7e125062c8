"""A batch's progress for people: a bar with counts, rate and ETA on a terminal, one log line a minute otherwise.

:class:`BatchProgress` is a ``progress(done, total, stage)`` callback (the core's protocol), where
``done`` / ``total`` count the images this run computes (skipped ones are not counted) and
``stage`` says what else there is to say (failures, a huge image's blocks). On a terminal it
draws a tqdm bar (a plain one-line display when tqdm is not installed); in a log (a batch job's
output file) it writes one line every ``every_s`` seconds and one at the end.
"""

from __future__ import annotations

import sys
import time


def _duration(s: float) -> str:
    s = int(round(s))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


class BatchProgress:
    """Progress of a batch run on ``stream`` (stderr): tqdm on a terminal, a line every ``every_s`` seconds otherwise."""

    def __init__(self, stream=None, *, tty: bool | None = None, every_s: float = 60.0) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.every_s = every_s
        self.t0 = time.monotonic()
        self.last_line = self.t0
        self.bar = None
        self.done = self.total = 0
        self.stage = ""
        self._tried_tqdm = False

    def rate_and_eta(self) -> tuple[float, float | None]:
        dt = time.monotonic() - self.t0
        rate = self.done / dt if dt > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else None
        return rate, eta

    def line(self) -> str:
        rate, eta = self.rate_and_eta()
        parts = [f"batch: {self.done}/{self.total} images", f"{rate:.2f} images/s" if rate >= 0.1 else f"{rate * 60:.1f} images/min"]
        if eta is not None and self.done < self.total:
            parts.append(f"ETA {_duration(eta)}")
        if self.stage:
            parts.append(self.stage)
        return ", ".join(parts)

    def __call__(self, done: int, total: int, stage: str = "") -> None:
        first = self.total == 0 and total > 0
        self.done, self.total, self.stage = done, total, stage
        if first:
            self.t0 = self.last_line = time.monotonic()
        if self.tty:
            self._draw()
            return
        now = time.monotonic()
        if done >= total or now - self.last_line >= self.every_s:
            self.last_line = now
            print(self.line(), file=self.stream, flush=True)

    def _draw(self) -> None:
        if not self._tried_tqdm:
            self._tried_tqdm = True
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=self.total, unit="img", file=self.stream, dynamic_ncols=True, leave=False, smoothing=0.1)
            except ImportError:
                self.bar = None
        if self.bar is not None:
            self.bar.total = self.total
            self.bar.update(self.done - self.bar.n)
            self.bar.set_postfix_str(self.stage, refresh=True)
            if self.done >= self.total:
                self.close()
        else:
            self.stream.write("\r" + self.line()[:110].ljust(110))
            if self.done >= self.total:
                self.stream.write("\r" + " " * 110 + "\r")
            self.stream.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
