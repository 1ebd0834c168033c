"""Subsets of a data set ("parts") and their batches.

Small data sets (digits, Fashion-MNIST, CIFAR) are held as one float tensor on the device for
the whole run: a batch is an index slice, augmentation (random crop + flip) runs on the device,
and there are no DataLoader workers (TensorPart). ImageFolder trees (ImageNet-100) stream from
disk through a DataLoader with workers (FolderPart). Both offer the same `batches` interface, so
methods never know which one they got.
"""

from __future__ import annotations

import math
from typing import Iterator

import torch
import torch.nn.functional as F
import torch.utils.data


def random_crop(x: torch.Tensor, padding: int) -> torch.Tensor:
    """Per-sample random crop after zero padding, on x's device (what torchvision's RandomCrop
    does image by image, done for the whole batch with one gather)."""
    n, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (n, 1), device=x.device)
    dx = torch.randint(0, 2 * padding + 1, (n, 1), device=x.device)
    rows = (dy + torch.arange(h, device=x.device)).view(n, 1, h, 1)
    cols = (dx + torch.arange(w, device=x.device)).view(n, 1, 1, w)
    batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    chans = torch.arange(c, device=x.device).view(1, c, 1, 1)
    return padded[batch, chans, rows, cols]


def random_flip(x: torch.Tensor) -> torch.Tensor:
    flip = torch.rand(x.shape[0], device=x.device) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)


def batch_count(n: int, batch_size: int) -> int:
    return max(1, math.ceil(n / batch_size))


class TensorPart:
    """A subset of a device-resident data set. `batches` slices it into nearly equal batches of
    at most `batch_size` (so no batch of one sample upsets BatchNorm)."""

    def __init__(self, name: str, images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor,
                 mean: torch.Tensor, std: torch.Tensor, crop_padding: int, flip: bool, channels_last: bool):
        self.name = name
        self._images, self._labels = images, labels
        self.indices = indices.to(images.device)
        self._mean, self._std = mean, std
        self._crop_padding, self._flip, self._channels_last = crop_padding, flip, channels_last

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def labels(self) -> torch.Tensor:
        return self._labels[self.indices]

    def batches(self, batch_size: int, shuffle: bool = False, augment: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.indices
        if shuffle:
            order = order[torch.randperm(len(order), device=order.device)]
        for chunk in order.tensor_split(batch_count(len(order), batch_size)):
            x = self._images[chunk]
            if augment:
                if self._crop_padding:
                    x = random_crop(x, self._crop_padding)
                if self._flip:
                    x = random_flip(x)
            x = (x - self._mean) / self._std
            if self._channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self._labels[chunk]

    def subset(self, positions: torch.Tensor, name: str | None = None) -> "TensorPart":
        """The samples at `positions` (positions within this part)."""
        return TensorPart(name or self.name, self._images, self._labels, self.indices[positions.to(self.indices.device)],
                          self._mean, self._std, self._crop_padding, self._flip, self._channels_last)

    def relabel(self, other: "TensorPart", labels: torch.Tensor) -> "TensorPart":
        """This part with the samples of `other` (a part of the same data set) labelled `labels`."""
        full = self._labels.clone()
        full[other.indices] = labels.to(full.device)
        return TensorPart(self.name, self._images, full, self.indices, self._mean, self._std,
                          self._crop_padding, self._flip, self._channels_last)

    def join(self, other: "TensorPart", name: str) -> "TensorPart":
        """This part's samples followed by those of `other` (a part of the same data set)."""
        return TensorPart(name, self._images, self._labels, torch.cat([self.indices, other.indices]), self._mean,
                          self._std, self._crop_padding, self._flip, self._channels_last)


class FolderPart:
    """A subset of an ImageFolder tree, streamed through a DataLoader with workers."""

    def __init__(self, name: str, train_set, eval_set, indices: torch.Tensor, labels: torch.Tensor,
                 workers: int, device: torch.device, channels_last: bool):
        self.name = name
        self._train_set, self._eval_set = train_set, eval_set
        self.indices = indices.cpu()
        self._all_labels = labels
        self._workers, self._device, self._channels_last = workers, device, channels_last

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def labels(self) -> torch.Tensor:
        return self._all_labels[self.indices].to(self._device)

    def batches(self, batch_size: int, shuffle: bool = False, augment: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        from torch.utils.data import DataLoader, Subset

        dataset = Subset(self._train_set if augment else self._eval_set, self.indices.tolist())
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=self._workers,
                            pin_memory=self._device.type == "cuda",
                            drop_last=shuffle and len(dataset) % batch_size == 1)
        for x, y in loader:
            x = x.to(self._device, non_blocking=True)
            if self._channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y.to(self._device, non_blocking=True)

    def subset(self, positions: torch.Tensor, name: str | None = None) -> "FolderPart":
        return FolderPart(name or self.name, self._train_set, self._eval_set, self.indices[positions.cpu()],
                          self._all_labels, self._workers, self._device, self._channels_last)

    def relabel(self, other: "FolderPart", labels: torch.Tensor) -> "FolderPart":
        """This part with the samples of `other` (a part of the same data set) labelled `labels`."""
        mapping = dict(zip(other.indices.tolist(), labels.cpu().tolist()))
        full = self._all_labels.clone()
        full[other.indices] = labels.cpu()
        return FolderPart(self.name, Relabeled(self._train_set, mapping), Relabeled(self._eval_set, mapping),
                          self.indices, full, self._workers, self._device, self._channels_last)

    def join(self, other: "FolderPart", name: str) -> "FolderPart":
        """This part's samples followed by those of `other` (a part of the same data set)."""
        return FolderPart(name, self._train_set, self._eval_set, torch.cat([self.indices, other.indices.cpu()]),
                          self._all_labels, self._workers, self._device, self._channels_last)


class Relabeled(torch.utils.data.Dataset):
    """A dataset whose samples at some indices carry other labels."""

    def __init__(self, dataset, mapping: dict[int, int]):
        self.dataset, self.mapping = dataset, mapping

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        x, y = self.dataset[index]
        return x, self.mapping.get(index, y)


Part = TensorPart | FolderPart
