"""The Ray Jobs recipe of docs/cluster.md, run as written: a head started with `ray start
--head`, the search submitted with `ray job submit --working-dir .`, then submitted again with
the same --name, which resumes the finished run instead of starting another."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import search_args, space_file

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # this environment's `ray` and `tune-unlearn`
CURRENT_CLUSTER = Path("/tmp/ray/ray_current_cluster")  # where `ray start` says which cluster ray.init() joins


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def job_head():
    """A one-node cluster from `ray start --head --block` with its dashboard (the job server), on
    free ports; stopped by ending that command, not by `ray stop`, which would also stop every
    other Ray on the machine (the test session's own among them)."""
    # Ray 2.60's token authentication: the head makes or reads ~/.ray/auth_token, and the job CLI
    # sends it only in token mode (docs/cluster.md)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    before = CURRENT_CLUSTER.read_text() if CURRENT_CLUSTER.exists() else None
    dashboard = free_port()
    ports = {"--port": free_port(), "--dashboard-port": dashboard, "--ray-client-server-port": free_port(),
             "--dashboard-agent-listen-port": free_port(), "--dashboard-agent-grpc-port": free_port(),
             "--metrics-export-port": free_port(), "--runtime-env-agent-port": free_port()}
    cmd = [str(BIN / "ray"), "start", "--head", "--block", "--num-cpus=2", "--include-dashboard=true",
           "--dashboard-host=127.0.0.1", "--disable-usage-stats", *(f"{k}={v}" for k, v in ports.items())]
    head = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.time() + 90
        while True:
            assert head.poll() is None, "ray start --head ended"
            try:
                urllib.request.urlopen(f"{url}/api/version", timeout=2).close()
                break
            except urllib.error.HTTPError:  # it answers (401 without the token): it is up
                break
            except OSError:
                pass
            assert time.time() < deadline, "the head's job server did not answer"
            time.sleep(0.5)
        yield url, env
    finally:
        head.terminate()
        head.wait(timeout=60)
        if before is None:
            CURRENT_CLUSTER.unlink(missing_ok=True)
        else:
            CURRENT_CLUSTER.write_text(before)


def test_a_search_submitted_as_a_ray_job_runs_and_a_resubmitted_one_resumes(job_head, tmp_path, session_cache):
    url, env = job_head
    cache = tmp_path / "cache"
    shutil.copytree(session_cache, cache)
    path = space_file(tmp_path, num_samples=2, fixed={"mask_epochs": 1})
    # docs/cluster.md's recipe, with this test's tiny search and absolute storage and cache paths
    # (inside a job a relative --storage-path is refused: it would land in the job's unpacked copy)
    submit = [str(BIN / "ray"), "job", "submit", "--address", url, "--working-dir", str(REPO), "--",
              "tune-unlearn", "search", "--space", path, *search_args(tmp_path, cache, "job")]
    first = subprocess.run(submit, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0 and "succeeded" in first.stdout + first.stderr, first.stdout[-4000:] + first.stderr[-2000:]
    run_dir = tmp_path / "runs" / "job"
    finals = {p: p.stat().st_mtime_ns for p in run_dir.glob("trial_*/final_result.json")}
    assert len(finals) == 2
    rows = [r for r in (run_dir / "results.csv").read_text().splitlines()[1:] if ",TERMINATED," in r]
    assert len(rows) == 2

    again = subprocess.run(submit, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "succeeded" in again.stdout + again.stderr, again.stdout[-4000:] + again.stderr[-2000:]
    assert f"resuming {run_dir}" in again.stdout + again.stderr
    assert {p: p.stat().st_mtime_ns for p in run_dir.glob("trial_*/final_result.json")} == finals  # nothing ran again
