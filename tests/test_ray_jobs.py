"""The Ray Jobs recipe of docs/cluster.md, run as written: a head started with `ray start
--head`, the search submitted with `ray job submit --working-dir .`, then submitted again with
the same --name, which resumes the finished run instead of starting another."""

from __future__ import annotations

import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import BIN, free_port, head_env, head_process, search_args, space_file

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def job_head():
    """A one-node cluster from `ray start --head --block` with its dashboard (the job server)."""
    env = head_env()
    dashboard = free_port()
    url = f"http://127.0.0.1:{dashboard}"

    def answers(port) -> bool:
        try:
            urllib.request.urlopen(f"{url}/api/version", timeout=2).close()
        except urllib.error.HTTPError:  # it answers (401 without the token): it is up
            return True
        except OSError:
            return False
        return True

    args = ["--num-cpus=2", "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}"]
    with head_process(args, env, answers):
        yield url, env


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
