"""Real Tune searches with the Optuna searcher on tiny data (one Ray session for all)."""

import csv
import json
import math
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

from conftest import cache_with_calibration, copy_cache, search_args, space_file
from tune_unlearn.commands import search
from tune_unlearn.errors import UserError
from tune_unlearn.search.results import load_run
from tune_unlearn.commands.export import main as export_main
from tune_unlearn.commands.report import main as report_main
from tune_unlearn.commands.run import main as run_main

REPO = Path(__file__).resolve().parent.parent
COMPONENTS = ("retain_gap", "forget_gap", "heldout_gap", "mia_gap", "cost_ratio")


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def trial_rows(path):
    """results.csv without its baseline rows (the original and the retrained models)."""
    return [r for r in read_csv(path) if r["status"] != "BASELINE"]


def summary_iterator(path):
    return EventFileLoader(path).Load()


def reports(trial_dir):
    return [json.loads(line) for line in (Path(trial_dir) / "result.json").read_text().splitlines()]


def test_search_runs_every_trial_reports_finite_objectives_and_exports(finished_search, capsys):
    run_dir = finished_search
    rows = trial_rows(run_dir / "results.csv")
    assert len(rows) == 3 and {r["status"] for r in rows} == {"TERMINATED"}
    assert set(rows[0]) >= {"trial_id", "status", "lam", "decay", "ft_epochs", "retain_acc", "forget_acc",
                            "val_acc", "mia", "time_s", "cost", "objective", *COMPONENTS,
                            "test_acc", "test_mia", "test_objective",
                            "forget_true_acc", "forget_true_gap"}  # the default experiment is corrective
    assert "asr" not in rows[0] and "leak_gap" not in rows[0]  # only where measured
    pids = set()
    for trial_dir in run_dir.glob("trial_*"):
        lines = reports(trial_dir)
        config = json.loads((trial_dir / "params.json").read_text())
        assert len(lines) == 1  # nothing reads per-epoch reports under FIFO: one report, at the end
        r = lines[0]
        assert math.isfinite(r["objective"]) and all(math.isfinite(r[c]) for c in COMPONENTS)
        assert "val_acc" in r and math.isfinite(r["forget_true_gap"])
        assert r["final"] == 1 and "mask_zero_share" in r and "test_acc" in r
        pids.add(r["pid"])
        # The method's own logs, every epoch of both phases: history.json and TensorBoard curves
        history = json.loads((trial_dir / "history.json").read_text())
        assert [h["phase"] for h in history] == ["mask"] * 2 + ["finetune"] * config["ft_epochs"]
        assert list(trial_dir.glob("events.out.tfevents.*"))  # Tune's TensorBoard logger
        curves = {}
        for event in summary_iterator(str(next(trial_dir.glob("events.out.tfevents.*.method_logs")))):
            for value in event.summary.value:
                curves.setdefault(value.tag, []).append(event.step)
        assert curves["mask/mask_ce"] == [1, 2] and curves["finetune/loss"] == list(range(1, config["ft_epochs"] + 1))
    assert len(pids) <= 2 < len(rows)  # trial actors are reused: no new process per trial
    timings = json.loads((run_dir / "timings.json").read_text())  # where the search's time went
    for figures in timings.values():
        assert set(figures) == {"plan", "ray_start", "references", "tuner", "trials", "reseed", "holdout", "export", "summary",
                                "ray_stop"}
        assert all(v >= 0 for v in figures.values())
    best = yaml.safe_load((run_dir / "best_config.yaml").read_text())
    chosen = load_run(run_dir).ranked()[0]  # on the mean over seeds of the two best (test_reseed.py)
    top = next(r for r in rows if r["trial_id"] == chosen.trial_id)
    assert best["result"]["trial_id"] == top["trial_id"] and best["method"] == "selective"
    assert best["hparams"]["mask_epochs"] == 2 and best["experiment_overrides"]["model.width"] == 4
    assert best["metrics"]["objective"] == pytest.approx(float(top["objective"])) and "val_acc" in best["metrics"]
    assert best["test_metrics"]["test_acc"] == pytest.approx(float(top["test_acc"]))
    assert best["test_metrics"]["mia"] == pytest.approx(float(top["test_mia"]))
    assert best["test_metrics"]["forget_true_acc"] == pytest.approx(float(top["forget_true_acc"]))
    saved = json.loads((run_dir / "search.json").read_text())
    assert saved["num_samples"] == 3 and saved["reference"]["n_models"] == 3
    assert saved["reference"]["val_acc"] > 0 and "val_acc_sd" in saved["reference"] and "test_acc_sd" in saved["reference_test"]
    assert math.isfinite(saved["original_objective"])


def completed_trials(run_dir, storage=None):
    """The finished trials of a search's Optuna study, read from its optuna.db (or `storage`) as
    a user would."""
    study = optuna.load_study(study_name=run_dir.name, storage=storage or f"sqlite:///{run_dir / 'optuna.db'}")
    return study, study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))


SAMPLER_CLASSES = {"tpe": "TPESampler", "nsga2": "NSGAIISampler", "nsga3": "NSGAIIISampler", "gp": "GPSampler",
                   "random": "RandomSampler"}


def assert_sampler_saved_for_resume(run_dir, sampler, seed, database=None):
    """search.json and Tune's saved searcher state name the sampler (pickled as its name and
    seed: study.NamedSampler), and the study holds the finished trials."""
    saved = json.loads((run_dir / "search.json").read_text())
    assert saved["sampler"] == sampler and saved["seed"] == seed and saved["study_name"] == run_dir.name
    state = pickle.loads(next(run_dir.glob("searcher-state-*.pkl")).read_bytes())
    assert state["_sampler"].name == sampler and type(state["_sampler"].sampler).__name__ == SAMPLER_CLASSES[sampler]
    return completed_trials(run_dir, database)


def test_the_optuna_study_persists_in_the_run_directory(finished_search, capsys):
    rows = trial_rows(finished_search / "results.csv")
    study, done = completed_trials(finished_search)
    assert len(done) == len(study.trials) == 3 and study.metric_names == ["objective"]
    by_params = {(round(float(r["lam"]), 12), round(float(r["decay"]), 12), int(r["ft_epochs"])): r for r in rows}
    for t in done:
        row = by_params[(round(t.params["lam"], 12), round(t.params["decay"], 12), t.params["ft_epochs"])]
        assert t.value == pytest.approx(float(row["objective"]))
    capsys.readouterr()
    assert export_main([str(finished_search)]) == 0
    assert f"optuna-dashboard sqlite:///{finished_search.resolve() / 'optuna.db'}" in capsys.readouterr().out


def test_the_baselines_are_scored_beside_the_trials(finished_search, capsys):
    rows = read_csv(finished_search / "results.csv")
    baselines = {r["trial_id"]: r for r in rows if r["status"] == "BASELINE"}
    assert set(baselines) == {"original", "retrained-0", "retrained-1", "retrained-2"}
    original = baselines["original"]
    assert float(original["time_s"]) == 0 and float(original["cost_ratio"]) == 0 and original["test_objective"] != ""
    assert all(math.isfinite(float(baselines[f"retrained-{i}"]["objective"])) for i in range(3))
    capsys.readouterr()
    assert export_main([str(finished_search)]) == 0
    table = capsys.readouterr().out
    assert "retrained (3)" in table and "original" in table and "test obj." in table


def test_export_round_trip_into_run_config(finished_search, capsys, session_cache, tmp_path):
    capsys.readouterr()
    assert export_main([str(finished_search), "--top", "2", "--format", "json"]) == 0
    out = capsys.readouterr().out
    assert "retrained" in out and "tensorboard --logdir" in out
    top2 = json.loads((finished_search / "top2.json").read_text())
    assert len(top2) == 2 and top2[0]["result"]["over_seeds"]["mean"] >= top2[1]["result"]["over_seeds"]["mean"]
    best = yaml.safe_load((finished_search / "best_config.yaml").read_text())
    assert best["replay"]["threads"] == 1 and best["replay"]["device"] == "cpu (1 threads)"  # one CPU per trial
    threads = torch.get_num_threads()
    # The replay runs on the trial's one thread by itself (this process has more), and gives its number exactly
    assert run_main(["--config", str(finished_search / "best_config.yaml"), "--cache-dir", str(session_cache)]) == 0
    assert torch.get_num_threads() == threads
    captured = capsys.readouterr()
    rerun = json.loads(captured.out)
    assert rerun["hparams"] == best["hparams"]
    assert rerun["replay"]["same"] and rerun["objective"] == best["replay"]["objective"] == best["result"]["objective"]
    assert "the search's trial gave the same" in captured.err
    for key in ("retain_acc", "forget_acc", "val_acc", "mia"):
        assert rerun["metrics"][key] == pytest.approx(best["metrics"][key], abs=1e-6), key
    assert rerun["test_metrics"]["test_acc"] == pytest.approx(best["test_metrics"]["test_acc"], abs=1e-6)
    # A trial that gave another number (here: as if it had run elsewhere) is named as differing
    best["replay"]["objective"] -= 0.5
    other = tmp_path / "elsewhere.yaml"
    other.write_text(yaml.safe_dump(best))
    assert run_main(["--config", str(other), "--cache-dir", str(session_cache)]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["replay"]["same"] is False
    assert "the search's trial gave" in captured.err and "(difference +0.5)" in captured.err


def test_a_diverging_trial_fails_with_its_reason_and_the_search_goes_on(ray_address, tmp_path, session_cache, capsys):
    path = space_file(tmp_path, num_samples=2, params={"decay": {"type": "uniform", "low": 0.0, "high": 0.5}},
                      fixed={"mask_epochs": 2, "ft_epochs": 1, "ft_lr": 1e12})
    # Also: a file:// storage path is the folder it names
    storage = ["--storage-path", (tmp_path / "runs").as_uri()]
    assert search.main(["--space", path, *search_args(tmp_path, session_cache, "nan"), *storage]) == 0
    rows = trial_rows(tmp_path / "runs" / "nan" / "results.csv")
    assert len(rows) == 2  # the second trial ran after the first failed
    assert all(r["status"] == "ERROR" and "diverged" in r["error"] and "nan" in r["error"] for r in rows)
    assert "failed trial" in capsys.readouterr().out


def test_a_trial_on_a_node_without_the_data_stops_the_search_in_one_line(ray_address, prepared, tmp_path):
    """A node an autoscaler adds after the search's own data check: the first trial there
    cannot load the data (here: another copy than the references were made on), and the search
    stops naming the node instead of failing every trial placed there."""
    import dataclasses

    from ray import tune

    from tune_unlearn.evaluation.objective import Weights
    from tune_unlearn.search.progress import NodeDataWatch
    from tune_unlearn.search.trainable import TrialJob, unlearning_trial
    from tune_unlearn.search.tuner import fit

    other_copy = dataclasses.replace(prepared.refs.for_trials(), fingerprint={"name": "elsewhere"})
    job = TrialJob(prepared.experiment, str(tmp_path), "selective", {}, Weights(), seed=0, cpus=1,
                   requests=(("r", prepared.experiment),), references={"r": other_copy})
    tuner = tune.Tuner(tune.with_parameters(unlearning_trial, job=job), param_space={"decay": 0.5},
                       tune_config=tune.TuneConfig(num_samples=3, max_concurrent_trials=1),
                       run_config=tune.RunConfig(storage_path=str(tmp_path), name="nodata", callbacks=[NodeDataWatch()]))
    with pytest.raises(UserError, match=r"^node [\d.]+: the data set here .* is not the one the references were made "
                                        r"on .*; the search stopped: run it again once the node has it, it resumes$"):
        fit(tuner)  # as the driver runs it: Tune itself would raise a TuneError with a traceback
    assert len(list((tmp_path / "nodata").glob("unlearning_trial_*"))) == 1  # one trial, not trial after trial


def test_multi_objective_exports_a_pareto_front(multi_objective_search):
    run_dir = multi_objective_search
    saved = json.loads((run_dir / "search.json").read_text())
    assert saved["objectives"] == {c: "min" for c in ("retain_gap", "forget_gap", "heldout_gap", "mia_gap",
                                                      "forget_true_gap", "asr_gap", "leak_gap", "example_gap",
                                                      "cost_ratio")}
    assert {"pl_forget_acc", "forget_true_acc", "asr"} <= set(saved["reference"])  # the backdoor's measures
    rows = {r["trial_id"]: r for r in trial_rows(run_dir / "results.csv")}
    front = read_csv(run_dir / "pareto.csv")
    assert front and all(rows[r["trial_id"]]["status"] == "TERMINATED" for r in front)
    signs = {c: -1 for c in saved["objectives"]}
    finished = [r for r in rows.values() if r["status"] == "TERMINATED"]
    for f in front:  # nothing finished dominates a front member
        fv = [signs[c] * float(f[c]) for c in signs]
        for o in finished:
            ov = [signs[c] * float(o[c]) for c in signs]
            assert not (all(a >= b for a, b in zip(ov, fv)) and any(a > b for a, b in zip(ov, fv)))


def test_bad_input_stops_before_ray_starts(tmp_path, capsys, monkeypatch):
    def no_ray(*args, **kwargs):
        raise AssertionError("Ray must not start on bad input")

    from tune_unlearn.search import driver

    monkeypatch.setattr(driver, "start_ray", no_ray)
    cases = [
        (["--space", "nope"], "unknown search space 'nope'"),
        (["--space", "default", "--method", "other"], "unknown method 'other'"),
        (["--space", "default", "--experiment", "fmnist", "--data-dir", str(tmp_path)], "apt-get install dataset-fashion-mnist"),
        (["--space", "default", "--num-samples", "0"], "--num-samples must be >= 1"),
        (["--space", "default", "--gpus-per-trial", "-1"], "--gpus-per-trial must be >= 0"),
        (["--space", "default", "--weight", "speed=2"], "unknown objective weight 'speed'"),
        (["--space", "default", "--multi-objective", "--scheduler", "asha"], "--scheduler asha cannot be used with --multi-objective"),
        (["--space", "default", "--retrained-models", "0"], "retrained_models must be >= 1, got 0"),
        (["--space", "default", "--exp-set", "dataset.val_fraction=1"], "val_fraction must lie in (0, 1), got 1.0"),
        (["--resume", "--storage-path", str(tmp_path / "none")], "--resume: no search to resume"),
        (["--space", "default", "--sampler", "nsga2"], "--sampler nsga2 is a multi-objective genetic algorithm"),
        (["--space", "default", "--sampler", "nsga3"], "add --multi-objective"),
        (["--space", "default", "--requests", "speed=1"], "unknown request key 'speed'; allowed: seed, classes"),
        (["--space", "default", "--holdout", "seed=1"], "held-out request seed1 makes the same forget set and models"),
        (["--space", "default", "--experiment", "digits_class", "--requests", "seed=1", "seed=2"],
         "a forget seed chooses nothing: use classes="),
        (["--space", "default", "--holdout-top", "0"], "--holdout-top must be >= 1"),
        (["--space", "default", "--storage-path", "nosuch://bucket/x"],
         "--storage-path nosuch://bucket/x: Unrecognized filesystem type in URI"),
        (["--space", "default", "--address", "ray://head:10001"], "Ray Client (ray://) is not supported"),
        (["--space", "default", "--resource-timeout", "0"], "--resource-timeout must be > 0 seconds, got 0"),
        (["--space", "default", "--autoscale"], "--autoscale needs a cluster (--address or $RAY_ADDRESS)"),
        (["--space", "default", "--optuna-storage", "db-host/optuna"], "--optuna-storage 'db-host/optuna': not a database URL"),
        (["--space", "default", "--optuna-storage", "postgresql://tuner:secret@db/optuna"],
         "--optuna-storage postgresql://tuner:***@db/optuna: a password in the URL would be saved in the run's files"),
        (["--space", "default", "--optuna-storage", f"sqlite:///{tmp_path}/no/such/folder/x.db"],
         "cannot open it (OperationalError"),
    ]
    from tune_unlearn.search.options import dashboard_missing

    if dashboard_missing():  # without the dashboard extra (as in CI): said before Ray starts, not by Ray
        cases.append((["--space", "default", "--dashboard"], "--dashboard needs the dashboard extra"))
    for args, message in cases:
        assert search.main(args) == 2, args
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (args, err)
    assert not Path("nosuch:").exists()  # a URI never becomes a local folder named after its scheme
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")  # Ray's own variable is read like --address
    assert search.main(["--space", "default"]) == 2 and "RAY_ADDRESS ray://head:10001" in capsys.readouterr().err


def test_a_ray_address_where_no_cluster_answers_is_refused_in_one_line_at_once(tmp_path, capsys, monkeypatch):
    """Nothing listening at --address: refused before ray.init, which would wait about 20 s and
    end in a traceback; a server that is no gRPC server (the dashboard's port given for the
    GCS's): refused before ray.init, which would retry for minutes; a gRPC server that is no
    cluster to join: ray.init's ConnectionError, said in one line."""
    import http.server
    import socket
    import threading

    import ray

    def no_init(*args, **kwargs):
        raise AssertionError("ray.init must not be called for an address where nothing listens")

    monkeypatch.setattr(ray, "init", no_init)
    args = ["--space", "default", "--storage-path", str(tmp_path / "runs")]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: a connection is refused
        started = time.time()
        assert search.main([*args, "--address", f"127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err
    assert time.time() - started < 10 and err.count("\n") == 1, err
    assert err.startswith(f"error: Ray address 127.0.0.1:{port} (--address or $RAY_ADDRESS): no Ray cluster answers there (")

    quiet = type("Quiet", (http.server.BaseHTTPRequestHandler,), {"log_message": lambda *args: None})
    web = http.server.HTTPServer(("127.0.0.1", 0), quiet)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    try:
        address = "127.0.0.1:%d" % web.server_address[1]
        started = time.time()
        assert search.main([*args, "--address", address]) == 2
    finally:
        web.shutdown()
    err = capsys.readouterr().err
    assert time.time() - started < 10 and err.count("\n") == 1, err
    assert err.startswith(f"error: Ray address {address} (--address or $RAY_ADDRESS): something answers there, but "
                          "not a Ray cluster's GCS, which speaks gRPC (it said ") and "not the dashboard's (8265)" in err

    asked = []

    def refused(*args, **kwargs):
        asked.append(kwargs)
        raise ConnectionError("Could not connect to the GCS at that address.\n(details Ray logs)")

    monkeypatch.setattr(ray, "init", refused)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        address = "127.0.0.1:%d" % listener.getsockname()[1]

        def answer_as_grpc():  # the first thing a gRPC server sends: an (empty) SETTINGS frame
            connection, _ = listener.accept()
            with connection:
                connection.sendall(bytes.fromhex("000000040000000000"))
                connection.recv(64)

        threading.Thread(target=answer_as_grpc, daemon=True).start()
        assert search.main([*args, "--address", address]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: Ray address {address} (--address or $RAY_ADDRESS): could not join the cluster there: "
                   "Could not connect to the GCS at that address.\n")
    # the package's folder goes to the cluster's workers (found from the module, not from
    # tune_unlearn.__file__, which a `tune_unlearn` folder in the working directory can empty)
    import tune_unlearn.search

    assert asked[0]["runtime_env"]["py_modules"] == [str(Path(tune_unlearn.search.__file__).resolve().parent.parent)]


def forget_in_tune_state(run_dir, trial_id):
    """What a hard kill of the driver can leave: Tune's last saved state (trials, the count of
    trials created, the searcher's) older than a trial that then finished, whose folder and
    Optuna trial exist."""
    from ray import cloudpickle

    for path in run_dir.glob("experiment_state-*.json"):
        state = json.loads(path.read_text())
        state["trial_data"] = [t for t in state["trial_data"] if json.loads(t[0])["trial_id"] != trial_id]
        path.write_text(json.dumps(state))
    for path in run_dir.glob("search_gen_state-*.json"):
        state = cloudpickle.loads(path.read_bytes())
        state["counter"] -= 1
        # Tune's concurrency limit (--max-concurrent) keeps the trials it let start: a state saved
        # before the trial existed does not hold it (left there, the resume would wait for ever for
        # a trial Tune does not know, as it did when the interruption came before Tune had
        # processed the trial's end)
        limiter = state.get("name:ConcurrencyLimiter")
        if limiter and trial_id in limiter["live_trials"]:
            limiter["live_trials"].discard(trial_id)
            limiter["num_unfinished_live_trials"] -= 1
        path.write_bytes(cloudpickle.dumps(state))
    for path in run_dir.glob("searcher-state-*.pkl"):
        state = pickle.loads(path.read_bytes())
        del state["_ot_trials"][trial_id]
        state["_completed_trials"].discard(trial_id)
        path.write_bytes(pickle.dumps(state))


def test_resume_after_ctrl_c_runs_no_trial_twice(ray_address, tmp_path, session_cache, capsys):
    """Interrupt a search (SIGINT, as Ctrl-C) after two trials finished, resume it by name, and
    check that the finished trials were not run again and the rest completed. The cache is lost
    in between: the resume scores against the references the search started with, kept in the
    run, and trains nothing. One finished trial is then taken out of Tune's saved state, as a
    hard kill can leave it: the resume counts it, runs no trial in its place, and reports it.
    The search interrupted is a command of its own (it gets the signal) that joins this session's
    Ray through $RAY_ADDRESS, as --address would (its references then come from a Ray task, as
    on a cluster); the resume runs here.
    Its sampler is GP (TPE runs in every other search here, NSGA-II in the shared
    multi-objective one; test_searcher.py pickles and restores every sampler), with the study in
    a database of its own, as a database server would hold it (--optuna-storage): the resume
    rebuilds the sampler from Tune's saved state and continues that study."""
    space = space_file(tmp_path, num_samples=5)
    run_dir = tmp_path / "runs" / "resume"
    cache = tmp_path / "cache"
    copy_cache(session_cache, cache)
    database = f"sqlite:///{tmp_path / 'server.db'}"
    sampler = ["--sampler", "gp", "--seed", "3", "--optuna-storage", database]
    args = ["--space", space, *sampler, *search_args(tmp_path, cache, "resume")]
    cmd = [sys.executable, "-m", "tune_unlearn.search", *args]
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_ADDRESS": ray_address}
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    while len(list(run_dir.glob("*/final_result.json"))) < 2:
        assert proc.poll() is None and time.time() < deadline, "the search ended or stalled before two trials finished"
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    finished_before = {p.parent.name: (p.read_text(), p.stat().st_mtime_ns) for p in run_dir.glob("*/final_result.json")}
    assert 2 <= len(finished_before) < 5, out
    assert "interrupted" in out
    assert report_main([str(run_dir)]) == 0  # a report of the interrupted search says so
    page = (run_dir / "report" / "index.html").read_text()
    assert "(interrupted)" in page and "INTERRUPTED" in page and "--resume" in page

    pinned = torch.load(run_dir / "references.pt", weights_only=False)
    last_finished = max(finished_before, key=lambda name: finished_before[name][1]).removeprefix("trial_")
    forget_in_tune_state(run_dir, last_finished)
    shutil.rmtree(cache)
    capsys.readouterr()
    assert search.main(args) == 0
    resumed = capsys.readouterr()
    assert "resuming" in resumed.out and "references: the ones this search started with" in resumed.out
    assert "training the" not in resumed.err and not list(cache.rglob("*.pt"))  # nothing trained again
    assert pinned["for_trials"].keys() == {"seed0"}  # what the first start kept: the one tuning request's
    rows = trial_rows(run_dir / "results.csv")
    assert len(rows) == 5 and {r["status"] for r in rows} == {"TERMINATED"}
    assert len(list(run_dir.glob("trial_*"))) == 5 and last_finished in {r["trial_id"] for r in rows}
    for name, (final, written) in finished_before.items():  # a trial run again would write its file again
        path = run_dir / name / "final_result.json"
        assert path.read_text() == final and path.stat().st_mtime_ns == written, f"{name} ran again"
        # Reported before the interruption or, from its file, after; when Tune had logged the report
        # but not saved the trial's end, it is logged twice and read once.
        logged = [r for r in reports(run_dir / name) if r.get("final") == 1]
        assert 1 <= len(logged) <= 2 and {r["objective"] for r in logged} == {json.loads(final)["objective"]}
        [trial] = [t for t in load_run(run_dir).trials if Path(t.path).name == name]
        assert [r.get("final") for r in trial.history].count(1) == 1
    # The resumed search continued the same Optuna study, in the database: five trials, none
    # twice, none left open, with the sampler it started with
    assert not (run_dir / "optuna.db").exists()
    study, done = assert_sampler_saved_for_resume(run_dir, "gp", 3, database)
    assert len(done) == 5 and len({tuple(sorted(t.params.items())) for t in done}) == 5
    assert [t for t in study.trials if t.state != optuna.trial.TrialState.COMPLETE] == []
    assert sorted(t.value for t in done) == pytest.approx(sorted(float(r["objective"]) for r in rows))
    # a new search of the same name elsewhere would continue this study: refused before Ray
    other = ["--space", space, *sampler, *search_args(tmp_path / "elsewhere", cache, "resume")]
    assert search.main(other) == 2
    assert "already holds a study named 'resume' (another search's)" in capsys.readouterr().err


def test_a_resume_without_kept_references_refuses_other_ones(finished_search, tmp_path, capsys):
    """A run that kept no references (started before they were kept) prepares them again on a
    resume, and refuses in one line when they do not score as its first start's did."""
    run_dir = tmp_path / "runs" / "fifo"
    shutil.copytree(finished_search, run_dir)
    (run_dir / "references.pt").unlink()
    saved = json.loads((run_dir / "search.json").read_text())
    saved["baselines"]["val"]["original"]["objective"] -= 1.0  # as if the original had been another model
    (run_dir / "search.json").write_text(json.dumps(saved))
    capsys.readouterr()
    assert search.main(["--storage-path", str(tmp_path / "runs"), "--name", "fifo"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: the references prepared for this resume differ from those")
    assert "restore the cache, or start a new search" in err[-1]


def test_asha_compares_trials_at_equal_evaluated_epochs(ray_address, tmp_path, session_cache, capsys):
    path = space_file(tmp_path, num_samples=4, params={"lam": {"type": "loguniform", "low": 1e-8, "high": 1e-4},
                                                       "ft_epochs": {"type": "int", "low": 1, "high": 3}})
    args = ["--space", path, "--scheduler", "asha", *search_args(tmp_path, session_cache, "asha", experiment="digits_mislabeled")]
    assert search.main(args) == 0
    out = capsys.readouterr().out
    assert "original vs the 3 retrained models" in out  # the separation, before the trials
    rows = trial_rows(tmp_path / "runs" / "asha" / "results.csv")
    assert len(rows) == 4 and {r["status"] for r in rows} <= {"TERMINATED", "EARLY_STOPPED"}
    for trial_dir in (tmp_path / "runs" / "asha").glob("trial_*"):
        lines = reports(trial_dir)
        epochs = [r["epoch"] for r in lines if r["final"] == 0]
        assert epochs == list(range(1, len(epochs) + 1))  # the rung clock: evaluated epochs so far
        if lines[-1]["final"] == 1:  # the full evaluation counts as the last evaluated epoch, not one more
            assert lines[-1]["epoch"] == len(epochs)


def test_the_genetic_sampler_runs_a_multi_objective_search_and_is_saved_for_resume(multi_objective_search):
    study, done = assert_sampler_saved_for_resume(multi_objective_search, "nsga2", 3)
    objectives = json.loads((multi_objective_search / "search.json").read_text())["objectives"]
    assert len(done) == 4 and len(study.directions) == len(objectives) == 9  # the backdoor's 6 gaps, leak, example, cost


def test_a_search_over_two_requests_holds_one_out_and_reports_it_beside_tuning(ray_address, prepared, session_cache,
                                                                                tmp_path, capsys, monkeypatch):
    """Two tuning requests, two trials, one held-out request: each trial runs on both and the
    searcher sees only their mean; after the trials the best configuration and the defaults run
    on the held-out request, and best_config.yaml, the summary, the report and MLflow say how
    they did there. Every request's references are trained once, before the trials. MLflow gets
    every trial's run, with a metric history per evaluated epoch (--report-every-epoch)."""
    mlflow = pytest.importorskip("mlflow")
    # Its own cache: every reference below is made by this search
    cache = cache_with_calibration(session_cache, tmp_path / "cache")
    path = space_file(tmp_path, num_samples=2)
    args = ["--space", path, *search_args(tmp_path, cache, "req", "--requests", "seed=0", "seed=1", "--holdout", "seed=2",
                                          "--holdout-top", "1", "--mlflow", "--report-every-epoch",
                                          experiment="digits_mislabeled")]
    assert search.main(args) == 0
    out = capsys.readouterr().out
    run_dir = tmp_path / "runs" / "req"
    assert f"mlflow ui --backend-store-uri sqlite:///{run_dir.resolve() / 'mlflow.db'}" in out
    saved = json.loads((run_dir / "search.json").read_text())
    assert [r["label"] for r in saved["requests"]] == ["seed0", "seed1"] and [r["label"] for r in saved["holdout"]] == ["seed2"]
    refs = saved["request_references"]
    assert {k: r["role"] for k, r in refs.items()} == {"seed0": "tune", "seed1": "tune", "seed2": "holdout"}
    assert all(s == "trained" for r in refs.values() for s in r["status"].values())
    # One original and three retrained models per request, each trained once (trials never train)
    files = sorted(cache.glob("digits_mislabeled/*.pt"))
    assert len([f for f in files if f.name.startswith("original-")]) == 3 and len(files) == 12

    rows = trial_rows(run_dir / "results.csv")
    assert len(rows) == 2
    for row in rows:
        per_request = [float(row["seed0/objective"]), float(row["seed1/objective"])]
        assert float(row["objective"]) == pytest.approx(sum(per_request) / 2)
        assert "seed2/objective" not in row and math.isfinite(float(row["example_gap"]))
    # The searcher holds the two tuning objectives of each trial and nothing about seed2
    study, done = completed_trials(run_dir)
    assert len(study.trials) == 2 and sorted(t.value for t in done) == pytest.approx(sorted(float(r["objective"]) for r in rows))
    assert not any("seed2" in str(t.user_attrs) + str(t.system_attrs) + str(t.params) for t in study.trials)

    holdout = json.loads((run_dir / "holdout.json").read_text())
    assert holdout["requests"] == ["seed2"] and [c["name"] for c in holdout["configs"]] == ["rank 1", "defaults"]
    best = yaml.safe_load((run_dir / "best_config.yaml").read_text())
    ranked = max(rows, key=lambda r: float(r["objective"]))
    assert best["result"]["trial_id"] == ranked["trial_id"] == holdout["configs"][0]["trial_id"]  # chosen on tuning alone
    assert best["requests"]["tuned_on"] == ["seed0", "seed1"]
    assert best["requests"]["objectives"]["seed1"]["objective"] == pytest.approx(float(ranked["seed1/objective"]))
    held = best["holdout"]["requests"]["seed2"]["test_objective"]
    assert math.isfinite(held) and best["holdout"]["objective"] == pytest.approx(held)
    assert math.isfinite(best["holdout"]["defaults_objective"]) and len(best["holdout"]["baselines"]["seed2"]["retrained"]) == 3
    assert "held-out requests" in out and "held-out obj." in out and "seed2" in out
    # MLflow (its default store is in the run directory): every trial's run, with its parameters,
    # final metrics and one objective per evaluated epoch of the first request; the best config
    # and the held-out objective on the best trial's run
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{run_dir / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("req").experiment_id])
    by_id = {r["trial_id"]: r for r in rows}
    assert sorted(r.data.tags["trial_id"] for r in runs) == sorted(by_id)
    for run in runs:
        row = by_id[run.data.tags["trial_id"]]
        assert run.info.status == "FINISHED" and float(run.data.params["lam"]) == pytest.approx(float(row["lam"]))
        assert run.data.metrics["objective"] == pytest.approx(float(row["objective"]))  # the final result
        history = client.get_metric_history(run.info.run_id, "objective")
        assert len(history) == int(row["ft_epochs"]) + 1  # each fine-tuning epoch, then the final report
        artifacts = [a.path for a in client.list_artifacts(run.info.run_id)]
        assert artifacts == (["best_config.yaml"] if row["trial_id"] == ranked["trial_id"] else [])
        if row["trial_id"] == ranked["trial_id"]:
            assert run.data.metrics["holdout_objective"] == pytest.approx(held)
    assert (run_dir / "mlartifacts").is_dir()
    assert report_main([str(run_dir)]) == 0
    assert "Tuning against held-out requests" in (run_dir / "report" / "report.md").read_text()

    # Running the finished search again trains nothing and runs nothing on the held-out request again
    stamps = {f: f.stat().st_mtime for f in cache.rglob("*")}
    capsys.readouterr()
    assert search.main(args) == 0
    assert "running the" not in capsys.readouterr().out
    assert json.loads((run_dir / "holdout.json").read_text())["results"] == holdout["results"]
    assert {f: f.stat().st_mtime for f in cache.rglob("*")} == stamps

    # A held-out phase that fails leaves the export of the trials behind
    def failing(*args, **kwargs):
        raise UserError("held-out runs failed")

    monkeypatch.setattr("tune_unlearn.search.holdout.run_holdout", failing)
    for name in ("results.csv", "best_config.yaml", "holdout.json"):
        (run_dir / name).unlink()
    assert search.main(args) == 2
    assert "held-out runs failed" in capsys.readouterr().err
    assert (run_dir / "results.csv").is_file() and (run_dir / "best_config.yaml").is_file()


def test_inside_a_ray_job_a_relative_storage_path_is_refused(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")  # as Ray's job supervisor starts an entrypoint
    assert search.main(["--space", "default", "--holdout", "none"]) == 2
    err = capsys.readouterr().err
    assert "--storage-path runs: inside a Ray job a relative path lands in the job's working folder" in err
    assert err.count("\n") == 1
    from tune_unlearn.search.options import check_job_storage

    check_job_storage(str(tmp_path))  # an absolute path, or a URI, is where the user wants it
    check_job_storage("s3://bucket/runs")


def test_the_rayjob_example_runs_a_search_that_a_retried_job_resumes():
    """examples/rayjob.yaml: its entrypoint is a search the parser takes, with a fixed --name and
    a storage path that survives the job."""
    import shlex

    from tune_unlearn.commands.search import parse_options
    from tune_unlearn.search.options import check_job_storage

    job = yaml.safe_load((REPO / "examples" / "rayjob.yaml").read_text())
    assert job["kind"] == "RayJob" and job["spec"]["backoffLimit"] >= 1
    words = shlex.split(job["spec"]["entrypoint"])
    assert words[:2] == ["tune-unlearn", "search"]
    options = parse_options(words[2:])
    assert options.name and options.storage_path.startswith("s3://")
    check_job_storage(options.storage_path)
