"""A plug-in method for the GPU suite's out-of-memory check: selective forgetting at its
defaults (one fine-tuning epoch) whose only searched hyperparameter, `hog_gib`, asks the GPU
for that many GiB before unlearning. 4096 GiB exceeds any GPU, so those trials hit a real
`torch.cuda.OutOfMemoryError` from PyTorch's allocator; the search must record them as failed
with that reason and finish the others.

    python -m tune_unlearn.search --method experiments.gpu_memory_hog:MemoryHog --experiment fmnist \
        --sampler random --num-samples 4 --holdout none

On the CPU nothing is allocated (a CPU allocation failure is not what the check is about).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from tune_unlearn.methods.base import Choice
from tune_unlearn.methods.selective import SelectiveForgetting


class MemoryHog(SelectiveForgetting):
    name = "gpu_memory_hog"
    hparams = tuple(replace(h, searched=False, default=1 if h.name == "ft_epochs" else h.default)
                    for h in SelectiveForgetting.hparams) + (
        Choice("hog_gib", 0, (0, 4096), help="GiB asked of the GPU before unlearning (0: none)"),
    )

    def unlearn(self, model, data, hp, ctx):
        device = next(model.parameters()).device
        if hp["hog_gib"] and device.type == "cuda":
            torch.empty(hp["hog_gib"] * 2**30, dtype=torch.uint8, device=device)
        return super().unlearn(model, data, hp, ctx)
