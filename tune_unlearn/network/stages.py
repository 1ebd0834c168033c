"""What the code knows about the network without building one: its stages, which stage a
parameter belongs to, and reading and checking checkpoints. The network itself (torchvision's
ResNet-18, adapted) and `build_model` are in resnet.py, which imports torchvision (about 2 s):
only code that builds a network imports it, so the search's own process never does.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import UserError


# The network as a sequence of stages: `forward(x, start=...)` runs the stages from `start` on,
# so a pass through the last stage alone can start from cached activations.
STAGES = ("stem", "layer1", "layer2", "layer3", "layer4", "head")


def stage_of(param_name: str) -> str:
    """The stage a parameter (or module) name belongs to: conv1/bn1 -> stem, fc -> head."""
    top = param_name.split(".")[0]
    return {"conv1": "stem", "bn1": "stem", "fc": "head"}.get(top, top)


def prefix_modules(model: nn.Module, start: str) -> list[nn.Module]:
    """The top-level modules of the stages before `start` (what a scope starting there leaves
    frozen)."""
    before = set(STAGES[:STAGES.index(start)])
    return [m for name, m in model.named_children() if stage_of(name) in before]


def first_stage(names: list[str]) -> str:
    """The earliest stage any of `names` belongs to (where a pass through them must start)."""
    return min((stage_of(n) for n in names), key=STAGES.index)


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a user's checkpoint: a bare state dict, or one under 'state_dict' /
    'model' (the layouts torchvision, Lightning and most training scripts write); a
    DataParallel 'module.' prefix is dropped. Loaded with weights_only=True."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no such checkpoint: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise UserError(f"cannot read checkpoint {path}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"checkpoint {path} holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_state_checked(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load `state` into `model`, or raise a one-line UserError saying what does not fit."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            k = wrong[0]
            parts.append(f"{k} has shape {tuple(state[k].shape)}, the model needs {tuple(own[k].shape)}")
        if missing:
            parts.append(f"{len(missing)} missing keys (first {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (first {unexpected[0]})")
        raise UserError(f"{source} does not fit the experiment's model: {'; '.join(parts)}")
    model.load_state_dict(state)
