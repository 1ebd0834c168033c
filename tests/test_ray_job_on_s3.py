"""docs/cluster.md's Ray Jobs recipe as written, with the run on cloud storage: a head from `ray
start --head`, the search submitted with `ray job submit --working-dir . -- tune-unlearn search
--name ... --storage-path s3://...`, where the bucket is a real S3-protocol server (moto's server
mode on localhost), reached through pyarrow as a user's bucket would be. The job's driver is
killed outright after two trials (a lost head: no chance to upload anything more), this machine's
copy and model cache go with it, and the same submission again resumes from the URI alone with
the references the search started with, those of its held-out request among them (the held-out
runs, Ray tasks on the cluster, score against them); the finished run is then exported and
reported from the URI. One search for both features: each search costs this suite many seconds."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import BIN, copy_cache, free_port, head_env, head_process, processes_with, search_args, space_file

pytest.importorskip("moto")

REPO = Path(__file__).resolve().parent.parent
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture
def s3_endpoint():
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-p", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.time() < deadline and server.poll() is None, "moto's S3 server did not start"
            time.sleep(0.2)
    yield f"127.0.0.1:{port}"
    server.terminate()
    server.wait(10)


@pytest.fixture
def bucket(s3_endpoint, monkeypatch, tmp_path):
    """s3://<a new bucket>/runs?endpoint_override=...: a storage path as a user writes one."""
    import pyarrow.fs as pafs

    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("TUNE_UNLEARN_CACHE", str(tmp_path / "cache-of-this-machine"))  # the staging copies live here
    name = f"b{time.time_ns()}"
    query = f"endpoint_override={s3_endpoint}&scheme=http&region=us-east-1"
    fs, _ = pafs.FileSystem.from_uri(f"s3://{name}?{query}&allow_bucket_creation=true")
    fs.create_dir(name)
    return f"s3://{name}/runs?{query}", fs, f"{name}/runs"


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


def remote_files(fs, root):
    import pyarrow.fs as pafs

    return {i.path[len(root) + 1:] for i in fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
            if i.type == pafs.FileType.File}


def read(fs, path):
    with fs.open_input_stream(path) as f:
        return f.read().decode()


def test_a_search_submitted_as_a_ray_job_to_s3_survives_its_driver_and_a_resubmitted_job_resumes_from_the_uri(
        job_head, bucket, tmp_path, session_cache):
    url, env = job_head
    uri, fs, root = bucket
    cache = tmp_path / "models"
    copy_cache(session_cache, cache)
    space = space_file(tmp_path, num_samples=4, fixed={"mask_epochs": 1})
    # The job's processes get the bucket's credentials and their cache folder from the job's
    # runtime environment, as a user's would; absolute paths (inside a job a relative path lands
    # in the job's unpacked copy of the working folder); the bucket, not search_args' folder, is
    # the storage path (the last --storage-path given). The requests are the benchmark test's, whose
    # models the session's cache holds once that test has run.
    job_env = {**CREDENTIALS, "TUNE_UNLEARN_CACHE": os.environ["TUNE_UNLEARN_CACHE"]}
    submit = [str(BIN / "ray"), "job", "submit", "--address", url, "--working-dir", str(REPO),
              "--runtime-env-json", json.dumps({"env_vars": job_env}), "--",
              "tune-unlearn", "search", "--space", space,
              *search_args(tmp_path, cache, "cloud", "--holdout", "seed=1", "--holdout-top", "1",
                          experiment="digits_mislabeled"), "--storage-path", uri]
    first = subprocess.Popen(submit, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    while sum(p.endswith("final_result.json") for p in remote_files(fs, f"{root}/cloud")) < 2:
        assert first.poll() is None and time.time() < deadline, "the job ended or stalled before two trials finished"
        time.sleep(0.5)
    # the job's driver (and the shell the job server started it with): the processes besides
    # `ray job submit` whose command names this space file
    driver = [pid for pid in processes_with(space.encode()) if pid != first.pid]
    assert driver, "no driver process found"
    for pid in driver:
        os.kill(pid, signal.SIGKILL)
    out, _ = first.communicate(timeout=120)
    assert first.returncode != 0, out[-3000:]  # the job failed with its driver
    before = {p: read(fs, f"{root}/cloud/{p}") for p in remote_files(fs, f"{root}/cloud") if p.endswith("final_result.json")}
    assert 2 <= len(before) < 4 and {"search.json", "references.pt", "optuna.db"} <= remote_files(fs, f"{root}/cloud")
    shutil.rmtree(Path(os.environ["TUNE_UNLEARN_CACHE"]) / "staging")
    shutil.rmtree(cache)

    again = subprocess.run(submit, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    out = again.stdout + again.stderr
    assert again.returncode == 0 and "succeeded" in out, out[-4000:]
    assert "resuming s3://" in out and "references: the ones this search started with" in out
    assert not list(cache.rglob("*.pt"))  # nothing trained again: the references came from the bucket
    files = remote_files(fs, f"{root}/cloud")
    assert {"results.csv", "best_config.yaml", "timings.json"} <= files
    for path, text in before.items():  # finished before the loss: not run again
        assert read(fs, f"{root}/cloud/{path}") == text
    rows = [line for line in read(fs, f"{root}/cloud/results.csv").splitlines()[1:] if "TERMINATED" in line]
    assert len(rows) == 4
    # A trial that ended after Tune last copied its state into the run (Tune's sync period) is
    # unknown to Tune on the resume; the study counts it, so no trial runs in its place.
    assert sum(p.endswith("final_result.json") for p in files) == 4
    holdout = json.loads(read(fs, f"{root}/cloud/holdout.json"))
    assert [c["name"] for c in holdout["configs"]] == ["rank 1", "defaults"]
    assert all(c["holdout_objective"] is not None for c in holdout["configs"]), holdout

    # export and report from the URI alone, on a machine with no copy
    shutil.rmtree(Path(os.environ["TUNE_UNLEARN_CACHE"]) / "staging")
    from tune_unlearn.commands.export import main as export_main
    from tune_unlearn.commands.report import main as report_main

    run_uri = uri.replace("/runs?", "/runs/cloud?")
    assert export_main([run_uri, "--top", "2"]) == 0
    assert report_main([run_uri]) == 0
    files = remote_files(fs, f"{root}/cloud")
    assert {"top2.yaml", "report/index.html", "report/report.md"} <= files
