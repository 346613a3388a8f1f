"""Run progress for people and for logs: a rich bar on a terminal, plain lines otherwise (issue 13).

A CI log or `fxbench run ... > run.log 2>&1` gets one line every `every_shards` shards or `every_s` seconds,
whichever comes first, plus the first and the last shard; with `heartbeat`, a background timer also writes
a "still working" line every `every_s` seconds while one long shard runs, so a long run never looks hung.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta


def _clock(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))


class PlainProgress:
    """`start(total)`, `advance(battery, key, resumed)`, `note(message)`: each emits whole lines via `write`."""

    def __init__(self, write: Callable[[str], None], *, every_shards: int | None = None, every_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic, heartbeat: bool = False):
        self.write, self.every_shards, self.every_s, self.clock = write, every_shards, every_s, clock
        self.total = self.done = self.resumed = 0
        self.t0 = self.last_t = 0.0
        self.heartbeat = heartbeat
        self._stop = threading.Event()
        self._lock = threading.Lock()  # the timer and the run's thread never interleave a line
        self._thread: threading.Thread | None = None

    def start(self, total: int) -> None:
        self.total, self.t0 = total, self.clock()
        self.last_t = self.t0
        # about ten lines for a whole run unless the time interval asks for more
        self.every = self.every_shards or max(1, total // 10)
        self.write(f"progress: 0/{total} shards")
        if self.heartbeat and self._thread is None:
            self._thread = threading.Thread(target=self._beat, name="fxbench-progress", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _beat(self) -> None:
        while not self._stop.wait(self.every_s / 3):
            with self._lock:
                now = self.clock()
                if self.done < self.total and now - self.last_t >= self.every_s:
                    self.last_t = now
                    self.write(f"progress: working on shard {self.done + 1}/{self.total}, "
                               f"{_clock(now - self.t0)} elapsed")

    def advance(self, battery: str, key: str, resumed: bool) -> None:
        with self._lock:
            self._advance(battery, key, resumed)

    def _advance(self, battery: str, key: str, resumed: bool) -> None:
        self.done += 1
        self.resumed += bool(resumed)
        now = self.clock()
        due = (self.done % self.every == 0 or now - self.last_t >= self.every_s
               or self.done in (1, self.total))
        if not due:
            return
        self.last_t = now
        elapsed = now - self.t0
        pct = 100 * self.done / self.total if self.total else 100.0
        # No time-left estimate: shards of different batteries differ by 30x in cost (a clean shard took 12 s,
        # a robustness one 6 min, on the same run), so an average over the shards done misleads.
        resumed_txt = f" ({self.resumed} resumed)" if self.resumed else ""
        self.write(f"progress: {self.done}/{self.total} shards ({pct:.0f}%){resumed_txt}, last {battery} {key}, "
                   f"{_clock(elapsed)} elapsed")

    def note(self, message: str) -> None:
        with self._lock:
            self.write(f"note: {message}")
