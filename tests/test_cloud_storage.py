"""A run kept on cloud storage: a real S3-protocol server (moto's server mode) on localhost,
reached through pyarrow as a user's s3:// bucket would be. A search there finishes, is exported
and reported from its URI, survives its driver being killed, and resumes from the URI alone
with the references it started with."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import space_file, tiny_args

pytest.importorskip("moto")
pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parent.parent
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def s3_endpoint():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
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


def remote_files(fs, root):
    import pyarrow.fs as pafs

    return {i.path[len(root) + 1:] for i in fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
            if i.type == pafs.FileType.File}


def read(fs, path):
    with fs.open_input_stream(path) as f:
        return f.read().decode()


def search_cmd(tmp_path, uri, cache, name, address, *more):
    return [sys.executable, "-m", "tune_unlearn.search", "--space", space_file(tmp_path, num_samples=5),
            "--max-concurrent", "1", "--address", address, "--storage-path", uri, "--name", name, "--cache-dir",
            str(cache), "--holdout", "none", "--reseeds", "1", *tiny_args("digits"), *more]


def test_a_search_on_s3_survives_its_driver_and_resumes_from_the_uri(ray_address, bucket, tmp_path, session_cache):
    uri, fs, root = bucket
    cache = tmp_path / "models"
    shutil.copytree(session_cache, cache)
    cmd = search_cmd(tmp_path, uri, cache, "cloud", ray_address)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    # The head is lost once two trials are in the bucket: the driver is killed outright (no
    # chance to upload anything more), and this machine's copy and model cache go with it.
    while sum(p.endswith("final_result.json") for p in remote_files(fs, f"{root}/cloud")) < 2:
        assert proc.poll() is None and time.time() < deadline, "the search ended or stalled before two trials finished"
        time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    before = {p: read(fs, f"{root}/cloud/{p}") for p in remote_files(fs, f"{root}/cloud") if p.endswith("final_result.json")}
    assert {"search.json", "references.pt", "optuna.db"} <= remote_files(fs, f"{root}/cloud")
    shutil.rmtree(Path(os.environ["TUNE_UNLEARN_CACHE"]) / "staging")
    shutil.rmtree(cache)

    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "resuming s3://" in done.stdout and "references: the ones this search started with" in done.stdout
    assert not list(cache.rglob("*.pt"))  # nothing trained again: the references came from the bucket
    files = remote_files(fs, f"{root}/cloud")
    assert {"results.csv", "best_config.yaml", "timings.json"} <= files
    for path, text in before.items():  # finished before the loss: not run again
        assert read(fs, f"{root}/cloud/{path}") == text
    rows = [line for line in read(fs, f"{root}/cloud/results.csv").splitlines()[1:] if "TERMINATED" in line]
    assert len(rows) == 5
    # A trial that ended after Tune last copied its state into the run (Tune's sync period) is
    # unknown to Tune on the resume; the study counts it, so no trial runs in its place.
    assert sum(p.endswith("final_result.json") for p in files) == 5

    # export and report from the URI alone, on a machine with no copy
    shutil.rmtree(Path(os.environ["TUNE_UNLEARN_CACHE"]) / "staging")
    from tune_unlearn.commands.export import main as export_main
    from tune_unlearn.commands.report import main as report_main

    run_uri = uri.replace("/runs?", "/runs/cloud?")
    assert export_main([run_uri, "--top", "2"]) == 0
    assert report_main([run_uri]) == 0
    files = remote_files(fs, f"{root}/cloud")
    assert {"top2.yaml", "report/index.html", "report/report.md"} <= files

