"""Every request's references before the first trial: trained or loaded from the cache, in this
process or in Ray tasks (prepare_references), scored like trials, and how far the original is
from the retrained models (separation)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UserError
from ..files import atomic_write
from .cluster import TASK_START_S, Node, remote_task, run_tasks, task_cpus
from .plan import Plan

if TYPE_CHECKING:  # torch: imported where the references are made, not by the command line
    from ..evaluation.references import References


PINNED_FILE = "references.pt"  # in the run: the references the search started with (pin_references)


def pin_references(run_dir: Path, summary: dict, for_trials: dict[str, References]) -> None:
    """Keep in the run what its trials were scored against: every request's references for
    trials (the original's weights, every model's metrics, confidences and prices) and their
    summary. A resume uses these, not whatever the cache holds by then: after a lost cache the
    references would be retrained, and a GPU does not train the same models twice."""
    import torch

    blob = {"summary": summary, "for_trials": {label: dataclasses.asdict(r) for label, r in for_trials.items()}}
    atomic_write(run_dir / PINNED_FILE, lambda tmp: torch.save(blob, tmp))


def pinned_references(run_dir: Path) -> tuple[dict, dict[str, References]] | None:
    """The references pin_references kept in `run_dir`, or None where it has none (a run
    started before they were kept)."""
    path = run_dir / PINNED_FILE
    if not path.is_file():
        return None
    import torch

    from ..evaluation.references import References

    try:
        blob = torch.load(path, map_location="cpu", weights_only=False)  # the run's own file, written above
        return blob["summary"], {label: References(**r) for label, r in blob["for_trials"].items()}
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same answer
        raise UserError(f"{path} is unreadable ({type(exc).__name__}: {exc}); the references this search was "
                        "scored against are lost: start a new search (another --name)") from None


def check_same_references(saved: dict, summary: dict, run_dir: Path) -> None:
    """A resume of a run that kept no references (older runs) prepares them again: refuse when
    they do not score as the first start's did (a lost cache, retrained elsewhere)."""
    def scores(baselines: dict) -> str:
        return json.dumps({split: {"original": b["original"]["objective"], "retrained": b["retrained"]["objectives"]}
                           for split, b in baselines.items()}, sort_keys=True, default=str)

    if scores(saved["baselines"]) != scores(summary["baselines"]):
        raise UserError(f"the references prepared for this resume differ from those {run_dir} started with (its "
                        "cached models were lost and trained again, or come from another machine): its finished "
                        "trials were scored against other models; restore the cache, or start a new search")


def prepare_references(plan: Plan, nodes: list[Node], gpu: bool, download: bool, local: bool,
                       timeout: float) -> tuple[dict, dict[str, References]]:
    """Train or load every request's references (tuning and held-out), on a GPU where `gpu`.
    Returns them scored like
    trials (References.scored), with where they came from, and label -> the request's
    References for trials (References.for_trials), which reach the trials through Ray's object
    store: a trial on any node needs no cache, only the data set.

    Requests that share no cached model are prepared at the same time: without a GPU, in Ray
    tasks of an equal share of the CPUs each (on two cores, two small networks each on one thread
    train 1.6 times faster than one after the other on two threads: measured in docs/results-2026-11.md).
    With a GPU, in one Ray task on it, request after request. Both kinds of task exit
    afterwards, so that their memory is free before the trials start. A local session without a
    GPU works in this process where parallel training would not pay (everything cached, one
    group of requests, or training forecast to take less than starting the tasks): a task starts
    a process that imports torch and this package again (seconds on a small machine) for the
    same work. On a cluster the tasks run where Ray puts them and write the cache on that node;
    what the search needs of it comes back through Ray."""
    groups = request_groups(plan)
    if local and not gpu and (len(groups) == 1 or not parallel_training_pays(plan, groups, download)):
        everything = [r for group in groups for r in group]
        return combined_references(plan, [references_in_process(plan, download, everything)])

    cpus = task_cpus(nodes, gpu, len(groups), fallback=plan.cpus_per_trial)
    work = [[r for group in groups for r in group]] if gpu else groups
    # --original is a file on the driver's node: the tasks get its bytes
    original = None if local or plan.original is None else original_bytes(plan.original)
    task = remote_task(reference_task, num_cpus=cpus, num_gpus=1 if gpu else 0)
    needs = f"a reference task ({cpus} CPU{' + 1 GPU' if gpu else ''})"
    parts = run_tasks(task, [(plan, download, requests, cpus, original) for requests in work], needs, timeout)
    return combined_references(plan, parts)


def parallel_training_pays(plan: Plan, groups: list, download: bool) -> bool:
    """Whether training the request groups in parallel tasks saves more than starting them
    costs: at best they save the training of every group but the longest (group_seconds).
    Without a GPU only: a GPU trains every request in one task."""
    seconds = group_seconds(plan, groups, download)
    return sum(seconds) - max(seconds) > TASK_START_S


def group_seconds(plan: Plan, groups: list, download: bool) -> list[float]:
    """A forecast of each request group's training time here, from the work to train and the
    device's prices (evaluation.references.untrained_seconds): a model that two requests of a
    group share (their original) is trained once, and counted once."""
    from ..data.load import load_data
    from ..evaluation.references import untrained_seconds
    from ..runtime import make_runtime

    runtime = make_runtime("auto")  # as references_in_process
    threads = max(1, int(plan.cpus_per_trial))
    seconds = []
    for group in groups:
        counted: set = set()
        seconds.append(sum(untrained_seconds(exp, load_data(exp, runtime.device, download), runtime, plan.cache_dir,
                                             plan.original, threads, counted=counted) for _, _, exp in group))
    return seconds


def original_bytes(path: str) -> tuple[str, bytes]:
    """The name and content of the --original file, for tasks on nodes that may not have it."""
    if not Path(path).is_file():
        raise UserError(f"no such checkpoint: {path}")
    return Path(path).name, Path(path).read_bytes()


def reference_task(plan: Plan, download: bool, requests: list, cpus: int, original: tuple[str, bytes] | None) -> dict:
    """In a Ray task: references_in_process on as many threads as the task has CPUs, with the
    driver's --original written to this node's temporary folder first."""
    from ..runtime import limit_threads

    limit_threads(cpus)
    if original is not None:
        name, blob = original
        # not a folder named tune_unlearn: in a command's working directory it would shadow an
        # editable install of the package
        folder = Path(tempfile.gettempdir()) / "tune-unlearn" / f"original-{hashlib.sha256(blob).hexdigest()[:16]}"
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / name, lambda tmp: Path(tmp).write_bytes(blob))
        plan = dataclasses.replace(plan, original=str(folder / name))
    return references_in_process(plan, download, requests)


def request_groups(plan: Plan) -> list[list[tuple[str, str, object]]]:
    """Every request as (role, label, experiment), in groups that share no cached model: two
    requests share one when their original models are the same (same training seed, and the
    same forget set where the original depends on it) or a retrained model (same forget set and
    training seed). Order kept: tuning requests first."""
    from ..evaluation.references import forget_key, retrain_seeds

    requests = [("tune", label, exp) for label, exp in plan.tuning_experiments()]
    requests += [("holdout", label, exp) for label, exp in plan.holdout_experiments()]

    def models(exp) -> set:
        forget = json.dumps(forget_key(exp.forget), sort_keys=True, default=str)
        own = exp.forget.corrective or exp.train.original == "transfer" or plan.original is not None
        out = {("original", exp.train.seed, forget if own else None)}
        return out | {("retrain", seed, forget) for seed in retrain_seeds(exp)}

    groups: list[tuple[set, list]] = []
    for request in requests:
        need = models(request[2])
        joined = [g for g in groups if g[0] & need]
        merged = (set(need).union(*(g[0] for g in joined)), [r for g in joined for r in g[1]] + [request])
        groups = [g for g in groups if not any(g is j for j in joined)] + [merged]
    order = {label: i for i, (_, label, _) in enumerate(requests)}
    return sorted((sorted(g[1], key=lambda r: order[r[1]]) for g in groups), key=lambda g: order[g[0][1]])


def references_in_process(plan: Plan, download: bool, requests: list) -> dict:
    """The references of `requests` ((role, label, experiment)), each scored like trials."""
    from ..files import log_stderr
    from ..pipeline import prepare
    from ..runtime import make_runtime

    runtime = make_runtime("auto")
    out = {}
    several = len(plan.tuning_experiments()) + len(plan.holdout) > 1
    for role, label, exp in requests:
        if several:
            log_stderr(f"references of the {'tuning' if role == 'tune' else 'held-out'} request {label} "
                       f"({exp.forget.describe()}, train seed {exp.train.seed})")
        # Costs priced as a trial runs: on the threads its CPUs give it (limit_threads)
        prepared = prepare(exp, runtime, plan.cache_dir, plan.original, download, leakage=plan.leakage,
                           log=log_stderr, threads=max(1, int(plan.cpus_per_trial)))
        refs, data = prepared.refs, prepared.data
        out[label] = {"role": role, "baselines": refs.scored(plan.weights), "status": refs.status, "paths": refs.paths,
                      "sizes": {"train": len(data.train), "retain": len(data.retain), "forget": len(data.forget),
                                "val": len(data.val), "test": len(data.test)},
                      "for_trials": refs.for_trials()}
    return {"requests": out, "device": runtime.describe()}


def combined_references(plan: Plan, parts: list[dict]) -> tuple[dict, dict[str, References]]:
    """The parts' requests in the plan's order (`baselines` are the tuning requests' combined
    as a trial's objective combines them), and each request's References for trials."""
    from ..evaluation.references import combine_scored

    found = {label: r for part in parts for label, r in part["requests"].items()}
    labels = [label for label, _ in plan.tuning_experiments()] + [label for label, _ in plan.holdout_experiments()]
    for_trials = {label: found[label].pop("for_trials") for label in labels}
    requests = {label: found[label] for label in labels}
    tuning = {label: r for label, r in requests.items() if r["role"] == "tune"}
    first = next(iter(tuning.values()))
    if len(tuning) == 1:
        status, paths = first["status"], first["paths"]
    else:
        status = {f"{label}/{k}": v for label, r in tuning.items() for k, v in r["status"].items()}
        paths = {f"{label}/{k}": v for label, r in tuning.items() for k, v in r["paths"].items()}
    summary = {"baselines": combine_scored([r["baselines"] for r in tuning.values()], plan.aggregate),
               "requests": requests, "status": status, "paths": paths,
               "device": ", ".join(dict.fromkeys(part["device"] for part in parts)), "sizes": first["sizes"]}
    return summary, for_trials


def separation(refs: dict) -> str:
    """How far the original model is from the retrained ones on the validation split, in units
    of their spread, per tuning request, with a warning when no measure reaches 2 (nothing
    visible to unlearn)."""
    tuning = {label: r["baselines"] for label, r in refs["requests"].items() if r["role"] == "tune"}
    lines, flat, alone = [], [], False
    for label, baselines in tuning.items():
        val = baselines["val"]
        distances = val["original"]["distances"]
        n = val["reference"]["n_models"]
        parts = ", ".join(f"{name.removesuffix('_gap')} {d:.1f}" for name, d in distances.items())
        where = f" (request {label})" if len(tuning) > 1 else ""
        lines.append(f"original vs the {n} retrained models{where} (|difference| / their spread, validation split): {parts}")
        flat.append(max(distances.values()) < 2)
        alone = alone or n < 2
    if any(flat):
        lines.append("warning: the original model is within 2 spreads of the retrained models on every measure"
                     + (" for some requests" if len(flat) > 1 and not all(flat) else "")
                     + ": this benchmark sees nothing to unlearn, and the search will mostly tune noise")
    if alone:
        lines.append("warning: one retrained model has no spread; gaps are measured in units of the 1-point floor")
    return "\n".join(lines)
