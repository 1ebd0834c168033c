"""Where the test suite's time goes: each test's wall time and the machine's busy CPU time
while it ran (Linux, /proc/stat), by test and by file, most CPU first.

    python experiments/suite_cpu.py                      # the slow tier, in one process
    python experiments/suite_cpu.py tests/test_search.py # any pytest arguments

Run it in one process on an otherwise idle machine: the CPU counted is the whole machine's, so
it includes what a test starts (Ray's processes, trial actors, subprocesses) and nothing of
another test only when no other test runs beside it. Under `-n 2` the suite's wall time is
about its CPU time over the two cores (they are ~95% busy), so these figures say what a change
would save there.
"""

from __future__ import annotations

import os
import sys
import time
from collections import defaultdict

import pytest


def busy_seconds() -> float:
    """The machine's non-idle CPU time since boot, in core-seconds."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle, iowait = fields[3], fields[4]
    return (sum(fields) - idle - iowait) / os.sysconf("SC_CLK_TCK")


class Recorder:
    def __init__(self):
        self.rows: list[tuple[str, float, float]] = []

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        wall, cpu = time.time(), busy_seconds()
        yield
        self.rows.append((item.nodeid, time.time() - wall, busy_seconds() - cpu))


def main(argv: list[str]) -> int:
    recorder = Recorder()
    status = pytest.main(argv or ["-q", "-p", "no:cacheprovider", "-m", "slow"], plugins=[recorder])
    rows = sorted(recorder.rows, key=lambda r: -r[2])
    by_file: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    for nodeid, wall, cpu in rows:
        totals = by_file[nodeid.split("::")[0]]
        totals[0] += 1
        totals[1] += wall
        totals[2] += cpu
    print(f"\n{len(rows)} tests: {sum(r[1] for r in rows):.0f} s, {sum(r[2] for r in rows):.0f} core-s busy")
    print(f"\n{'core-s':>7} {'wall s':>7}  test")
    for nodeid, wall, cpu in rows[:30]:
        print(f"{cpu:7.1f} {wall:7.1f}  {nodeid}")
    print(f"\n{'core-s':>7} {'wall s':>7} {'tests':>5}  file")
    for path, (count, wall, cpu) in sorted(by_file.items(), key=lambda item: -item[1][2]):
        print(f"{cpu:7.1f} {wall:7.1f} {count:5d}  {path}")
    return int(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
