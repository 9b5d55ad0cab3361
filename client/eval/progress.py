"""A progress bar over groups: tqdm when it is installed, else a plain line per update."""

from __future__ import annotations

import sys
import time
from typing import IO


class GroupProgress:
    """`advance(n)` after each scored request; `total` and `done` count groups, not requests."""

    def __init__(
        self, total: int, done: int = 0, *, enabled: bool = True, stream: IO[str] | None = None
    ):
        self.total, self.done = total, done
        self.enabled = enabled and total > done
        self.stream = stream or sys.stderr
        self._bar = None
        self._start = time.monotonic()
        self._start_done = done
        if not self.enabled:
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:
            self._line(f"scoring {total - done} groups ({done} already in the scores file)")
            return
        self._bar = tqdm(total=total, initial=done, unit="group", desc="scoring", file=self.stream)

    def advance(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(n)
            return
        elapsed = time.monotonic() - self._start
        rate = (self.done - self._start_done) / elapsed if elapsed > 0 else 0.0
        left = f", ~{(self.total - self.done) / rate:.0f} s left" if rate > 0 else ""
        pct = 100 * self.done / self.total
        self._line(f"scored {self.done}/{self.total} groups ({pct:.0f}%, {elapsed:.0f} s{left})")

    def _line(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
