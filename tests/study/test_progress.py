"""Progress lines and the terminal bar (study.progress), driven by a fake clock."""

import io

from medrobust.study.progress import Progress


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_pipe_gets_a_line_per_run_and_phase_lines_at_most_every_interval():
    clock, lines = Clock(), []
    p = Progress(2, lines.append, stream=io.StringIO(), every_s=30.0, clock=clock)
    p.run_started("supervised | 10% labels | seed 0")
    clock.t = 10.0
    p.phase("attack curves")  # 10 s since the last line: quiet
    clock.t = 31.0
    p.phase("worst-case sequence 1/6: apgd-ce at ε 2/255, 60 examples")
    clock.t = 40.0
    p.phase("corruptions")  # 9 s since the last line: quiet
    clock.t = 60.0
    p.run_finished("supervised | 10% labels | seed 0: clean acc 0.800 (60.0 s")
    assert lines == ["  supervised | 10% labels | seed 0: worst-case sequence 1/6: apgd-ce at ε 2/255, 60 examples "
                     "(this run 0:31, study 0:31)",
                     "[1/2] supervised | 10% labels | seed 0: clean acc 0.800 (60.0 s; elapsed 1:00, about 1:00 left)"]
    assert p.bar is None


def test_terminal_gets_a_bar_with_the_phase_and_the_same_run_lines():
    clock, lines, term = Clock(), [], Terminal()
    p = Progress(3, lines.append, stream=term, clock=clock)
    p.run_started("simclr | 10% labels | seed 1")
    p.phase("corruptions")
    assert p.bar is not None and "corruptions" in term.getvalue() and "0/3" in term.getvalue()
    clock.t = 20.0
    p.run_finished("simclr | 10% labels | seed 1: clean acc 0.700 (20.0 s")
    assert "1/3" in term.getvalue()
    assert lines == ["[1/3] simclr | 10% labels | seed 1: clean acc 0.700 (20.0 s; elapsed 0:20, about 0:40 left)"]
    p.close()
