"""The network: torchvision's ResNet-18, adapted to small images and to narrow CPU runs.

The module names and state-dict keys are torchvision's (conv1, bn1, layer1..layer4, fc), so a
checkpoint of `torchvision.models.resnet18` loads into `width=64, small_input=False` unchanged,
and layer scopes such as `layer4` mean the same thing as in the paper.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

from ..data.experiment import ModelSpec
from .stages import STAGES


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


def build_model(spec: ModelSpec, num_classes: int, in_channels: int) -> nn.Module:
    return ResNet18(num_classes, in_channels, spec.width, spec.small_input)
