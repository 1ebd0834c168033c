"""Every request's references before the first trial: trained or loaded from the cache, in this
process or in Ray tasks (prepare_references), scored like trials, and how far the original is
from the retrained models (separation)."""

from __future__ import annotations

import json

from ..errors import UserError
from .plan import Plan


def prepare_references(plan: Plan, resources: dict, download: bool, local: bool) -> dict:
    """Train or load every request's references (tuning and held-out); returns them scored like
    trials (References.scored), with where they came from.

    Requests that share no cached model are prepared at the same time: without a GPU, in Ray
    tasks of an equal share of the CPUs each (on two cores, two small networks each on one thread
    train 1.6 times faster than one after the other on two threads: measured in the README).
    With a GPU, in one Ray task on it, request after request. Both kinds of task exit
    afterwards, so that their memory is free before the trials start. A local session without a
    GPU works in this process where that needs no parallel training (everything cached, or one
    group of requests): a task would start a process that imports torch and this package again
    (seconds on a small machine) for the same work."""
    from ..evaluation.references import NotCached

    groups = request_groups(plan)
    gpu = resources.get("GPU", 0) >= 1
    if local and not gpu:
        everything = [r for group in groups for r in group]
        try:  # all cached (every search after the first): no task to start
            return combined_references(plan, [references_in_process(plan, download, everything, train=len(groups) == 1)])
        except NotCached:
            pass

    import ray

    cpus = task_cpus(ray.nodes(), gpu, len(groups))
    work = [[r for group in groups for r in group]] if gpu else groups

    @ray.remote(num_cpus=cpus, num_gpus=1 if gpu else 0, max_calls=1)
    def prepare_task(plan, download, requests):
        from ..runtime import limit_threads

        limit_threads(cpus)
        return references_in_process(plan, download, requests)

    try:
        parts = ray.get([prepare_task.remote(plan, download, requests) for requests in work])
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, UserError):
            raise exc.cause from None
        raise
    return combined_references(plan, parts)


def task_cpus(nodes: list[dict], gpu: bool, groups: int) -> int:
    """CPUs for each reference task: with a GPU, as many as the largest node with a GPU has (at
    most 8); without, an equal share of the cluster's CPUs per group of requests, at most what
    the largest node has, so that every task fits on one node (`nodes`: ray.nodes())."""
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive", True)]
    usable = [r for r in alive if r.get("GPU", 0) >= 1] if gpu else alive
    largest = int(max((r.get("CPU", 0) for r in usable), default=1))
    share = largest if gpu else int(sum(r.get("CPU", 0) for r in alive)) // groups
    return max(1, min(8, largest, share))


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


def references_in_process(plan: Plan, download: bool, requests: list, train: bool = True) -> dict:
    """The references of `requests` ((role, label, experiment)), each scored like trials; with
    `train` False, NotCached when one is missing."""
    from ..files import log_stderr
    from ..pipeline import prepare
    from ..runtime import make_runtime

    runtime = make_runtime("auto")
    out = {}
    several = len(plan.tuning_experiments()) + len(plan.holdout) > 1
    for role, label, exp in requests:
        if several and train:
            log_stderr(f"references of the {'tuning' if role == 'tune' else 'held-out'} request {label} "
                       f"({exp.forget.describe()}, train seed {exp.train.seed})")
        prepared = prepare(exp, runtime, plan.cache_dir, plan.original, download, allow_training=train,
                           leakage=plan.leakage, log=log_stderr if train else lambda message: None)
        refs, data = prepared.refs, prepared.data
        out[label] = {"role": role, "baselines": refs.scored(plan.weights), "status": refs.status, "paths": refs.paths,
                      "sizes": {"train": len(data.train), "retain": len(data.retain), "forget": len(data.forget),
                                "val": len(data.val), "test": len(data.test)}}
    return {"requests": out, "device": runtime.describe()}


def combined_references(plan: Plan, parts: list[dict]) -> dict:
    """The parts' requests in the plan's order; `baselines` are the tuning requests' combined as
    a trial's objective combines them."""
    from ..evaluation.references import combine_scored

    found = {label: r for part in parts for label, r in part["requests"].items()}
    labels = [label for label, _ in plan.tuning_experiments()] + [label for label, _ in plan.holdout_experiments()]
    requests = {label: found[label] for label in labels}
    tuning = {label: r for label, r in requests.items() if r["role"] == "tune"}
    first = next(iter(tuning.values()))
    if len(tuning) == 1:
        status, paths = first["status"], first["paths"]
    else:
        status = {f"{label}/{k}": v for label, r in tuning.items() for k, v in r["status"].items()}
        paths = {f"{label}/{k}": v for label, r in tuning.items() for k, v in r["paths"].items()}
    return {"baselines": combine_scored([r["baselines"] for r in tuning.values()], plan.aggregate),
            "requests": requests, "status": status, "paths": paths,
            "device": ", ".join(dict.fromkeys(part["device"] for part in parts)), "sizes": first["sizes"]}


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
