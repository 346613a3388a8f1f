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


def _battery(label: str) -> str:
    """The battery's name in a progress label ("fxb-x robustness" from run-many -> "robustness")."""
    return label.split()[-1] if label else label


class Eta:
    """Time left, per battery: shards a battery has finished price its remaining ones (the mean of its own
    shards: shard costs differ ~30x across batteries, so never another battery's); before its first shard, the
    seconds per shard given in ``plan`` (e.g. the robustness battery's priced upper bound, ``at most``), else
    unknown. Resumed shards cost nothing and are not timed."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self.total: dict[str, int] = {}
        self.done: dict[str, int] = {}
        self.spent: dict[str, float] = {}
        self.timed: dict[str, int] = {}
        self.estimate: dict[str, float] = {}

    def plan(self, batteries: list[tuple[str, int]], estimate: dict[str, float] | None = None) -> None:
        for name, n in batteries:
            if name not in self.total:
                self.order.append(name)
            self.total[name] = self.total.get(name, 0) + n
        for name, s in (estimate or {}).items():
            self.estimate[name] = max(self.estimate.get(name, 0.0), s)

    @property
    def known(self) -> bool:
        return bool(self.order)

    def advanced(self, battery: str, resumed: bool, seconds: float) -> None:
        b = _battery(battery)
        self.done[b] = self.done.get(b, 0) + 1
        if not resumed:
            self.spent[b] = self.spent.get(b, 0.0) + seconds
            self.timed[b] = self.timed.get(b, 0) + 1

    def current(self) -> str | None:
        """The battery whose shard runs now (the first with shards left, in run order)."""
        return next((b for b in self.order if self.done.get(b, 0) < self.total[b]), None)

    def text(self) -> str:
        parts, known, bound, unknown = [], 0.0, False, []
        for b in self.order:
            left = self.total[b] - self.done.get(b, 0)
            if left <= 0:
                continue
            if self.timed.get(b):
                s = self.spent[b] / self.timed[b] * left
                parts.append(f"{b} {_clock(s)}")
            elif b in self.estimate:
                s, bound = self.estimate[b] * left, True
                parts.append(f"{b} at most {_clock(s)}")
            else:
                unknown.append(b)
                continue
            known += s
        if not parts and not unknown:
            return "ETA 0:00:00"
        head = f"ETA {'at most ' if bound and not unknown else ''}{_clock(known)}"
        if unknown:
            head = f"ETA {_clock(known)} + {', '.join(unknown)} (not timed yet)"
        return f"{head} ({'; '.join(parts)})" if len(parts) > 1 or (parts and unknown) else head


class PlainProgress:
    """`start(total)`, `advance(battery, key, resumed)`, `note(message)`: each emits whole lines via `write`."""

    def __init__(self, write: Callable[[str], None], *, every_shards: int | None = None, every_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic, heartbeat: bool = False):
        self.write, self.every_shards, self.every_s, self.clock = write, every_shards, every_s, clock
        self.total = self.done = self.resumed = 0
        self.t0 = self.last_t = self.last_done_t = 0.0
        self.eta = Eta()
        self.heartbeat = heartbeat
        self._stop = threading.Event()
        self._lock = threading.Lock()  # the timer and the run's thread never interleave a line
        self._thread: threading.Thread | None = None

    def plan(self, batteries: list[tuple[str, int]], estimate: dict[str, float] | None = None) -> None:
        """The shards each battery will run, in order (and seconds per shard where priced): lines then name
        the battery at work and an ETA."""
        self.eta.plan(batteries, estimate)

    def start(self, total: int) -> None:
        self.total, self.t0 = total, self.clock()
        self.last_t = self.last_done_t = self.t0
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
                    what = "shard"
                    if self.eta.known and self.eta.current():
                        what = f"{self.eta.current()} shard"
                    tail = f", {self.eta.text()}" if self.eta.known else ""
                    self.write(f"progress: working on {what} {self.done + 1}/{self.total}, "
                               f"{_clock(now - self.t0)} elapsed{tail}")

    def advance(self, battery: str, key: str, resumed: bool) -> None:
        with self._lock:
            self._advance(battery, key, resumed)

    def _advance(self, battery: str, key: str, resumed: bool) -> None:
        self.done += 1
        self.resumed += bool(resumed)
        now = self.clock()
        self.eta.advanced(battery, resumed, now - self.last_done_t)
        self.last_done_t = now
        due = (self.done % self.every == 0 or now - self.last_t >= self.every_s
               or self.done in (1, self.total))
        if not due:
            return
        self.last_t = now
        elapsed = now - self.t0
        pct = 100 * self.done / self.total if self.total else 100.0
        # The time left is estimated per battery (Eta): shards of different batteries differ by 30x in cost (a
        # clean shard took 12 s, a robustness one 6 min, on the same run), so one average over all misleads.
        resumed_txt = f" ({self.resumed} resumed)" if self.resumed else ""
        tail = f", {self.eta.text()}" if self.eta.known else ""
        self.write(f"progress: {self.done}/{self.total} shards ({pct:.0f}%){resumed_txt}, last {battery} {key}, "
                   f"{_clock(elapsed)} elapsed{tail}")

    def note(self, message: str) -> None:
        with self._lock:
            self.write(f"note: {message}")
