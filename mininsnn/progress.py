"""Progress of a long loop over samples: a bar on a terminal, a plain line a minute in a log."""
from __future__ import annotations

import sys
import time

__all__ = ["Progress"]


class Progress:
    """Progress over ``total`` samples: loss, samples/s and ETA. On a terminal, a bar (tqdm's
    when installed, else a one-line bar of its own). Off one (a log file), a plain line every
    ``every`` seconds, so that a long epoch in a log shows how far it is, and a short one
    prints nothing."""

    def __init__(self, total: int, desc: str, file=None, every: float = 60.0):
        self.file = file if file is not None else sys.stdout
        self.total, self.desc, self.done = total, desc, 0
        self.t0 = time.perf_counter()
        self.every, self.next_line = every, self.t0 + every
        self.enabled = bool(getattr(self.file, "isatty", lambda: False)())
        self._bar = None
        if self.enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self._bar = tqdm(total=total, desc=desc, unit="sample", file=self.file,
                                 leave=False, dynamic_ncols=True)

    def status(self, loss: float, now: float) -> str:
        """'done/total  loss  samples/s  ETA m:ss' at time ``now``."""
        rate = self.done / max(now - self.t0, 1e-9)
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        return (f"{self.done}/{self.total}  loss {loss:.4f}  {rate:.0f} samples/s  "
                f"ETA {int(eta) // 60:d}:{int(eta) % 60:02d}")

    def update(self, n: int, loss: float) -> None:
        self.done += n
        now = time.perf_counter()
        if not self.enabled:                        # a log file: a line now and then
            if now >= self.next_line and self.done < self.total:
                self.file.write(f"  {self.desc}: {self.status(loss, now)}\n")
                self.file.flush()
                self.next_line = now + self.every
            return
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            self._bar.update(n)
            return
        width = 24
        fill = int(width * self.done / max(self.total, 1))
        self.file.write(f"\r{self.desc} [{'#' * fill}{'.' * (width - fill)}] "
                        f"{self.status(loss, now)} ")
        self.file.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.enabled:
            self.file.write("\r" + " " * 100 + "\r")
            self.file.flush()
