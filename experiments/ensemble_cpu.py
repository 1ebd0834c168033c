"""CPU time of one unlearned per-example ensemble (N models of one method, their outputs not yet
cached) on the tiny digits experiment (width 4, 2 epochs), on one thread.

    python experiments/ensemble_cpu.py CACHE [N] [METHOD]     # e.g. /tmp/ens 6 finetune

CACHE holds the references and the N original models (trained on the first call: run it twice
and read the second line). To compare two checkouts, run each with PYTHONPATH=<checkout> on the
same CACHE, one after the other.
"""

from __future__ import annotations

import sys
import tempfile
import time

import torch

from tune_unlearn.commands import ensembles
from tune_unlearn.data.experiment import load_experiment
from tune_unlearn.pipeline import prepare
from tune_unlearn.run_config import resolve_run
from tune_unlearn.runtime import make_runtime

TINY = {"model.width": 4, "train.epochs": 2}


def main() -> None:
    cache = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 6
    method = sys.argv[3] if len(sys.argv) > 3 else "finetune"
    torch.set_num_threads(1)
    quiet = lambda message: None  # noqa: E731
    prepared = prepare(load_experiment("digits_mislabeled", TINY), make_runtime("cpu"), cache, log=quiet)
    _, ids = ensembles.reference_ensemble(prepared, cache, "original", n, quiet)
    run = resolve_run(method, "digits_mislabeled", TINY)
    with tempfile.TemporaryDirectory() as outputs:  # no cached outputs: every model is unlearned
        started = time.process_time()
        made = ensembles.unlearned_ensemble(prepared, outputs, run, method, n, ids[0], quiet)
        seconds = time.process_time() - started
    print(f"{method}, {made.new} models: {seconds:.2f} s of CPU ({ensembles.__file__})")


if __name__ == "__main__":
    main()
