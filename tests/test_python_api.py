"""docs/python-api.md's one-run example runs as written, from a folder of its own."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import cache_with_calibration

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.train
def test_the_documented_run_example_runs(tmp_path, prepared, session_cache):
    cache_with_calibration(session_cache, tmp_path / "cache")  # the models are trained as written
    text = (REPO / "docs" / "python-api.md").read_text()
    example = re.findall(r"```python\n(.*?)```", text, re.S)[0]
    # a bare environment, but the suite's thread count (one under pytest-xdist: conftest.py)
    threads = {k: os.environ[k] for k in ("OMP_NUM_THREADS",) if k in os.environ}
    proc = subprocess.run([sys.executable, "-c", example], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **threads})
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("objective ") and "forget_acc" in lines[1] and lines[2].startswith("cost: ")
    assert list((tmp_path / "cache" / "digits_mislabeled").glob("original-*.pt"))  # the cache is where it said
