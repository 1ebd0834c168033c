"""The Ray cluster as a search sees it: its nodes (ray.nodes()), what fits on one node, tasks
that wait for resources no longer than a limit, and the data checked on every node.

A cluster's nodes share nothing unless told (not the disk, not the home folder), and a task or
a trial runs on one node: resources are counted per node, never from the cluster's totals
(0.4 GPU per trial on two 1-GPU nodes is 4 trials at a time, not 5). Nothing here waits
forever: a trial larger than every node is refused before any work, and a task or a trial that
waits for resources longer than `--resource-timeout` stops the search with what it waited for.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from ..errors import UserError

DEFAULT_RESOURCE_TIMEOUT_S = 600.0  # long enough for an autoscaler to add a node


@dataclass(frozen=True)
class Node:
    node_id: str
    address: str
    cpus: float
    gpus: float

    def describe(self) -> str:
        gpus = f" + {self.gpus:g} GPU" if self.gpus else ""
        return f"{self.address}: {self.cpus:g} CPU{gpus}"


# What a task costs before it works, on top of the work it takes over: a process that imports
# torch, scikit-learn and this package, about 5.5 s of a core on the 2-core development machine
# (docs/install.md), more while it shares the cores with other tasks starting. Tasks side by
# side are worth it only where they save more than that.
TASK_START_S = 10.0


def alive_nodes(nodes: list[dict] | None = None) -> list[Node]:
    """The cluster's live nodes (`nodes`: ray.nodes(), read now when None)."""
    if nodes is None:
        import ray

        nodes = ray.nodes()
    return [Node(n.get("NodeID", ""), n.get("NodeManagerAddress", "?"), n.get("Resources", {}).get("CPU", 0),
                 n.get("Resources", {}).get("GPU", 0)) for n in nodes if n.get("Alive", True)]


def describe(nodes: list[Node]) -> str:
    return "; ".join(n.describe() for n in nodes) or "no live node"


def trial_slots(node: Node, cpus: float, gpus: float) -> int:
    """How many trials of `cpus` CPUs and `gpus` GPUs fit on `node` at once. A GPU share below
    one is packed per GPU device (Ray never splits a trial over two), a larger one takes
    whole GPUs."""
    slots = math.floor(node.cpus / cpus + 1e-9)
    if gpus > 0:
        per_device = math.floor(1 / gpus + 1e-9) * math.floor(node.gpus) if gpus <= 1 else 0
        whole = math.floor(node.gpus / gpus + 1e-9) if gpus > 1 else 0
        slots = min(slots, per_device or whole)
    return slots


def cluster_slots(nodes: list[Node], cpus: float, gpus: float) -> int:
    """How many such trials the nodes hold at once, each within one node."""
    return sum(trial_slots(n, cpus, gpus) for n in nodes)


def concurrency(nodes: list[Node], cpus: float, gpus: float, requested: int | None, autoscale: bool = False) -> int:
    """Trials at once: what fits on the nodes, one by one, at most `requested`; a UserError
    when no node can hold one trial (Tune would wait for it forever). With `autoscale` (a
    cluster that adds nodes on demand) the nodes present are no limit: `requested` trials, or
    as many as fit now (at least one), and the autoscaler is asked for them (request_nodes)."""
    slots = cluster_slots(nodes, cpus, gpus)
    if autoscale:
        return requested or max(1, slots)
    if slots < 1:
        raise UserError(f"one trial needs {cpus:g} CPU and {gpus:g} GPU on one node, and no node has them "
                        f"({describe(nodes)}); lower --cpus-per-trial or --gpus-per-trial, or, on a cluster that adds "
                        "nodes on demand, add --autoscale")
    return min(requested, slots) if requested else slots


def bundle(cpus: float, gpus: float) -> dict:
    return {"CPU": cpus, **({"GPU": gpus} if gpus else {})}


def request_nodes(bundles: list[dict]) -> None:
    """Ask the cluster's autoscaler for room for every one of `bundles` at once (Ray's
    request_resources: it adds nodes now rather than when work waits, and keeps them while the
    request stands). An empty list withdraws the request, so idle nodes can go. Without an
    autoscaler nothing reads it."""
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=bundles)


def task_cpus(nodes: list[Node], gpu: bool, groups: int, fallback: float = 1) -> int:
    """CPUs for each reference task: with a GPU, as many as the largest node with a GPU has (at
    most 8); without, an equal share of the cluster's CPUs per group of requests, at most what
    the largest node has, so that every task fits on one node. `fallback` (a trial's CPUs) where
    no such node is there yet (an autoscaler will add it)."""
    usable = [n for n in nodes if n.gpus >= 1] if gpu else [n for n in nodes if n.cpus > 0]
    largest = int(max((n.cpus for n in usable), default=fallback))
    share = largest if gpu else int(sum(n.cpus for n in nodes)) // groups
    return max(1, min(8, largest, share))


def waited_too_long(what: str, needs: str, timeout: float) -> UserError:
    import ray

    cluster = ""
    if ray.is_initialized():
        free = ray.available_resources()
        cluster = (f" (cluster: {describe(alive_nodes())}; free now: {free.get('CPU', 0):g} CPU, {free.get('GPU', 0):g} "
                   "GPU; `ray status` shows what holds them)")
    return UserError(f"{what} waited {timeout:g} s for {needs} on one node{cluster}; free them, add a node, or raise "
                     "--resource-timeout")


TASK_RETRIES = 2  # times a task whose process or node was lost runs again (as a trial: tuner.TRIAL_RETRIES)


def remote_task(fn, **options):
    """`fn` as a Ray task for run_tasks: it first says on which node it has started, then
    returns fn's result (a generator task: the driver sees the start before the end). Ray does
    not retry it: task_results does, so that a task sent again waits for resources under the
    same limit as a new one.

    A CPU task's process stays for the search's next tasks (Ray's default), its imports done:
    starting one costs seconds of a core (torch, torchvision, scikit-learn), as much as a small
    task's work. Each task sets its own threads (runtime.limit_threads). A GPU task's process
    ends with it (max_calls=1, Ray's default for GPU tasks), which frees the GPU's memory."""
    import ray

    def task(*args):
        yield ray.get_runtime_context().get_node_id()
        yield fn(*args)

    task.__name__ = task.__qualname__ = fn.__name__
    return ray.remote(**{"max_retries": 0, **options})(task)


def run_tasks(task, calls: list[tuple], needs: str, timeout: float, on_result=None) -> list:
    """Run `task` (remote_task) once per argument tuple of `calls`; their results, in order
    (task_results)."""
    return task_results([lambda args=args: task.remote(*args) for args in calls], needs, timeout, on_result)


def task_results(submits: list, needs: str, timeout: float, on_result=None) -> list:
    """Start each of `submits` (a function that starts a task made by remote_task: its
    .remote(...)) and return their results, in order; `on_result(i, result)` as each ends.

    A UserError raised in a task is raised here as itself. A task whose process or node is lost
    (a preempted node, a killed worker) is started again, at most TASK_RETRIES times, then the
    search stops with one line. When none of the tasks runs and one still waits to start, for
    `timeout` seconds since the last one started or ended, the search stops with what they need
    (`needs`) and what the cluster has. The wait includes a worker process's start (a second or
    two): the limit is for resources, not for the work."""
    import ray

    started = [submit() for submit in submits]
    lost = [0] * len(started)
    waiting = set(range(len(started)))  # not started yet
    running: dict[int, str] = {}  # -> the node it runs on
    results: list = [None] * len(started)
    last = time.monotonic()

    def stop(error: Exception):
        for gen in started:
            ray.cancel(gen, force=True)
        raise error

    while waiting or running:
        watched = {id(started[i]): i for i in (*waiting, *running)}
        ready, _ = ray.wait([started[i] for i in watched.values()], num_returns=1, timeout=min(1.0, timeout))
        for gen in ready:
            i = watched[id(gen)]
            try:
                value = ray.get(next(gen))
            except ray.exceptions.RayTaskError as exc:  # raised by the task's own code
                stop(exc.cause if isinstance(exc.cause, UserError) else exc)
            except ray.exceptions.RayError as exc:  # its process or its node was lost
                node = running.pop(i, None)
                lost[i] += 1
                if lost[i] > TASK_RETRIES:
                    where = f", the last time on node {node_address(node)}" if node else ""
                    stop(UserError(f"a task for {needs} was lost {lost[i]} times{where} ({type(exc).__name__}); run the "
                                   "search again: it resumes where it stopped"))
                waiting.add(i)
                started[i] = submits[i]()
            else:
                if i in waiting:  # its first item: it started
                    waiting.remove(i)
                    running[i] = value
                else:
                    del running[i]
                    results[i] = value
                    if on_result:
                        on_result(i, value)
            last = time.monotonic()
        if waiting and not running and time.monotonic() - last > timeout:
            stop(waited_too_long(f"{len(waiting)} task(s)", needs, timeout))
    return results


def node_address(node_id: str) -> str:
    """A node's address as ray.nodes() knows it (the dead ones too), for messages."""
    import ray

    known = {n.get("NodeID"): n.get("NodeManagerAddress", "?") for n in ray.nodes()}
    return known.get(node_id, node_id[:12])


def nodes_that_work(nodes: list[Node], cpus: float, gpus: float) -> list[Node]:
    """The nodes the search can put work on: those that fit a trial (`cpus` and `gpus` each),
    and those that fit a reference or held-out task (a node with a whole GPU when the cluster
    has one, else any node with CPUs). A CPU-only head of a GPU cluster runs none."""
    gpu_cluster = any(n.gpus >= 1 for n in nodes)
    return [n for n in nodes
            if trial_slots(n, cpus, gpus) > 0 or (n.gpus >= 1 if gpu_cluster else n.cpus > 0)]


def check_data_on_nodes(plan, download: bool, nodes: list[Node], timeout: float) -> None:
    """Load the search's data set on every node that can run work (nodes_that_work; with
    --download, fetch it there first); a UserError naming the node where it is missing, or the
    nodes whose copies differ (their fingerprints). Trials and reference tasks load the data on
    the node they run on; this finds a node without it before hours of work, not in every trial
    there. Nodes that run no work need no data."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = remote_task(node_data, num_cpus=0)
    working = nodes_that_work(nodes, plan.cpus_per_trial, plan.gpus_per_trial or 0.0)
    answers = task_results([lambda n=n: task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n.node_id, soft=False))
                            .remote(plan.experiment, download) for n in working], "the data check", timeout)
    seen: dict[str, Node] = {}
    for node, answer in zip(working, answers):
        if "error" in answer:
            raise UserError(f"node {node.address}: {answer['error']} (every node that runs trials or reference tasks "
                            "needs the data set at the same path, or --download)")
        seen.setdefault(fingerprint_text(answer["fingerprint"]), node)
    if len(seen) > 1:
        raise UserError("the data set differs between nodes: " + "; ".join(f"{n.address} has {text}" for text, n in seen.items()))


def node_data(exp, download: bool) -> dict:
    """On one node: the data set's fingerprint, or why it cannot be loaded there."""
    from ..data.load import load_data

    try:
        return {"fingerprint": load_data(exp, "cpu", download).fingerprint}
    except UserError as exc:
        return {"error": str(exc)}


def fingerprint_text(fingerprint: dict) -> str:
    return f"{fingerprint.get('name')} ({fingerprint.get('n_train')} training images, labels {fingerprint.get('train_labels')})"
