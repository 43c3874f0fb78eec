"""Progress a person can follow while a study runs.

One line per finished run (with elapsed time and an estimate of the time left, :func:`progress_note`), plus, when
stderr is a terminal, a tqdm bar over the runs whose postfix shows the current run's phase (pre-training, attack
curves, worst-case sequence step, corruptions); when it is not a terminal (CI logs, ``nohup``), a phase line at most
every ``every_s`` seconds, so a long run still shows where it is without flooding the log.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


def progress_note(done: int, total: int, elapsed: float) -> str:
    """``"elapsed 1:02, about 2:05 left"``: the runs still to do at the mean time of those done (runs differ, so
    the estimate is rough); ``"elapsed 1:02, done"`` after the last one."""
    if done >= total:
        return f"elapsed {_clock(elapsed)}, done"
    return f"elapsed {_clock(elapsed)}, about {_clock(elapsed / done * (total - done))} left"


class Progress:
    """The study's progress over ``total`` runs, reported through ``log`` (and a tqdm bar on a terminal)."""

    def __init__(self, total: int, log: Callable[[str], None], stream=None, every_s: float = 30.0,
                 clock: Callable[[], float] = time.perf_counter):
        stream = sys.stderr if stream is None else stream
        self.total, self.log, self.every_s, self.clock = total, log, every_s, clock
        self.start = self.last_line = clock()
        self.done, self.label, self.run_start = 0, "", self.start
        self.bar = None
        if getattr(stream, "isatty", lambda: False)() and total:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="run", file=stream, dynamic_ncols=True, leave=False)

    def run_started(self, label: str) -> None:
        self.label, self.run_start = label, self.clock()
        if self.bar is not None:
            self.bar.set_description_str(label)

    def phase(self, message: str) -> None:
        """The current run entered a phase (``"attack curves"``): on the bar, or a line when ``every_s`` passed."""
        now = self.clock()
        if self.bar is not None:
            self.bar.set_postfix_str(message)
        elif now - self.last_line >= self.every_s:
            self.say(f"  {self.label}: {message} (this run {_clock(now - self.run_start)}, study "
                     f"{_clock(now - self.start)})")

    def say(self, line: str) -> None:
        self.last_line = self.clock()
        if self.bar is not None:
            self.bar.clear()
        self.log(line)
        if self.bar is not None:
            self.bar.refresh()

    def run_finished(self, line: str) -> None:
        """Count the run and print ``line`` with the elapsed time and the estimate of what is left."""
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
        self.say(f"[{self.done}/{self.total}] {line}; {progress_note(self.done, self.total, self.clock() - self.start)})")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
