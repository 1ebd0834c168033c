"""Models: torchvision's ResNet-18, adapted to small images and to narrow CPU runs.

The module names and state-dict keys are torchvision's (conv1, bn1, layer1..layer4, fc), so a
checkpoint of `torchvision.models.resnet18` loads into `width=64, small_input=False` unchanged,
and layer scopes such as `layer4` mean the same thing as in the paper.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

from .errors import UserError
from .data.experiment import ModelSpec


# The network as a sequence of stages: `forward(x, start=...)` runs the stages from `start` on,
# so a pass through the last stage alone can start from cached activations.
STAGES = ("stem", "layer1", "layer2", "layer3", "layer4", "head")


class ResNet18(ResNet):
    """ResNet-18 with a configurable stage width, input channels and stem.

    `small_input=True` replaces the 7x7 stride-2 stem and the max-pool by a 3x3 stride-1
    convolution (the usual CIFAR / Fashion-MNIST variant), which keeps 28x28 inputs from
    shrinking to 1x1 before the last stage.
    """

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 64, small_input: bool = True):
        # Build the standard network (torchvision's own initialisation and _make_layer), then
        # replace only what differs: the stem for small or non-RGB inputs, and the stages for
        # another width (BasicBlock only takes base_width=64, so narrow networks re-run
        # _make_layer with fewer planes).
        super().__init__(BasicBlock, [2, 2, 2, 2], num_classes=num_classes)
        replaced: list[nn.Module] = []
        if width != 64:
            self.inplanes = width
            self.bn1 = nn.BatchNorm2d(width)
            self.layer1 = self._make_layer(BasicBlock, width, 2)
            self.layer2 = self._make_layer(BasicBlock, width * 2, 2, stride=2)
            self.layer3 = self._make_layer(BasicBlock, width * 4, 2, stride=2)
            self.layer4 = self._make_layer(BasicBlock, width * 8, 2, stride=2)
            self.fc = nn.Linear(width * 8, num_classes)
            replaced += [self.bn1, self.layer1, self.layer2, self.layer3, self.layer4]
        if width != 64 or in_channels != 3 or small_input:
            if small_input:
                self.conv1 = nn.Conv2d(in_channels, width, kernel_size=3, stride=1, padding=1, bias=False)
                self.maxpool = nn.Identity()
            else:
                self.conv1 = nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
            replaced.append(self.conv1)
        for m in (m for module in replaced for m in module.modules()):  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def stage(self, name: str, x: torch.Tensor) -> torch.Tensor:
        if name == "stem":
            return self.maxpool(self.relu(self.bn1(self.conv1(x))))
        if name == "head":
            return self.fc(torch.flatten(self.avgpool(x), 1))
        return getattr(self, name)(x)

    def forward(self, x: torch.Tensor, start: str = "stem", stop: str | None = None) -> torch.Tensor:
        """The stages from `start` up to, not including, `stop` (default: to the logits).
        `start="layer4"` takes the activations that enter layer4."""
        first = STAGES.index(start)
        last = len(STAGES) if stop is None else STAGES.index(stop)
        for name in STAGES[first:last]:
            x = self.stage(name, x)
        return x


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


def build_model(spec: ModelSpec, num_classes: int, in_channels: int) -> nn.Module:
    return ResNet18(num_classes, in_channels, spec.width, spec.small_input)


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
