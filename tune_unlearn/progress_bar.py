"""Progress of long loops (reference training, compare, an unlearning run's epochs): a tqdm bar
when stderr is a terminal, plain lines on stderr otherwise (CI logs, Ray workers, files), so
that logs stay readable where nobody watches a bar.

    with Progress("training the original model", total=20, unit="epoch") as bar:
        for epoch in range(20):
            ...
            bar.update(text=f"loss {loss:.4f}")

Plain lines come at most five per loop of known length (every total/5 steps, and the last),
and at most one every `interval_s` seconds for loops of unknown length.
"""

from __future__ import annotations

import sys
import time
from typing import Callable


def on_terminal() -> bool:
    return sys.stderr.isatty()


def say(message: str) -> None:
    """One line on stderr, above any bar on screen."""
    line = f"[tune_unlearn] {message}"
    if on_terminal():
        from tqdm import tqdm

        tqdm.write(line, file=sys.stderr)
    else:
        print(line, file=sys.stderr, flush=True)


class Progress:
    def __init__(self, desc: str, total: int | None = None, unit: str = "step", log: Callable[[str], None] | None = None,
                 interval_s: float = 30.0, leave: bool = True, lines: bool = True):
        """`log`: where plain lines go (default: `say`); a bar is shown only on a terminal and
        with the default log (a caller that silences its log gets no bar either). `lines=False`:
        no plain lines (the caller logs its own)."""
        self.desc, self.total, self.unit, self.interval_s = desc, total, unit, interval_s
        self.log = log or say
        self.lines = lines
        self.done = 0
        self.every = max(1, total // 5) if total else None
        self.last_line = time.monotonic()
        self.bar = None
        if log is None and on_terminal():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=unit, leave=leave, file=sys.stderr, dynamic_ncols=True)

    def update(self, n: int = 1, text: str = "") -> None:
        self.done += n
        if self.bar is not None:
            if text:
                self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(n)  # redraws, with the text
            return
        if not self.lines:
            return
        now = time.monotonic()
        if self.total:
            due = self.done % self.every == 0 or self.done == self.total
        else:
            due = now - self.last_line >= self.interval_s
        if due:
            self.last_line = now
            of = f"/{self.total}" if self.total else ""
            self.log(f"  {self.desc}: {self.unit} {self.done}{of}" + (f": {text}" if text else ""))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
