"""Progress: a tqdm bar on a terminal, plain lines otherwise."""

import io

from tune_unlearn import progress_bar
from tune_unlearn.progress_bar import Progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_plain_lines_off_a_terminal(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    with Progress("original", 10, "epoch") as bar:
        for i in range(10):
            bar.update(text=f"loss {i}")
    lines = err.getvalue().splitlines()
    assert lines == [f"[tune_unlearn]   original: epoch {n}/10: loss {n - 1}" for n in (2, 4, 6, 8, 10)]
    assert bar.bar is None


def test_unknown_lengths_log_at_most_every_interval(monkeypatch):
    logged = []
    clock = iter([0.0, 1.0, 31.0, 32.0])
    monkeypatch.setattr(progress_bar.time, "monotonic", lambda: next(clock))
    bar = Progress("selective", None, "epoch", log=logged.append)
    for _ in range(3):
        bar.update()
    assert logged == ["  selective: epoch 2"]


def test_a_bar_on_a_terminal(monkeypatch):
    err = Terminal()
    monkeypatch.setattr("sys.stderr", err)
    with Progress("compare", 3, "run") as bar:
        assert bar.bar is not None
        for _ in range(3):
            bar.update(text="seed 0: selective")
    assert "compare" in err.getvalue() and "3/3" in err.getvalue() and "[tune_unlearn]" not in err.getvalue()
    silenced = Progress("original", 3, "epoch", log=lambda message: None)  # a silenced caller: no bar
    assert silenced.bar is None
