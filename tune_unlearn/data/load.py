"""An experiment's data on the device, split: the training set D as the forget rule made it,
the retain and forget parts, and the validation and test splits (load_data -> ExperimentData).

Nothing here downloads unless asked (`download=True`, the CLI's `--download`).
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import UserError
from ..files import exclusive
from .forget_rules import Split, make_split, stamp, training_set, triggered_positions
from .loaders import LOADERS, dataset_root, missing_data
from .parts import FolderPart, Part, Relabeled, TensorPart

if TYPE_CHECKING:
    from .experiment import DatasetSpec, Experiment, ForgetSpec


@dataclass
class ExperimentData:
    """Everything a run needs from the data: the parts, the split and a fingerprint."""

    num_classes: int
    in_channels: int
    train: Part  # all of D = retain + forget
    retain: Part
    forget: Part
    val: Part  # scores trials; held out from every model's training, never given to a method
    test: Part  # final numbers only
    split: Split
    fingerprint: dict  # what identifies the data in cache keys
    # With class forgetting, `val` and `test` hold the samples of the retained classes and
    # `val_forget` / `test_forget` those of the forgotten classes (None for a random forget set).
    val_forget: Part | None = None
    test_forget: Part | None = None
    # Corrective rules: D_f with the labels it should have had (None otherwise); a method never
    # sees it: it knows which samples are wrong, not what is right.
    forget_true: Part | None = None
    # Backdoor: the held-out images of every class but the target, triggered and labelled with
    # the target, so that accuracy on them is the attack success rate (None without a trigger).
    val_triggered: Part | None = None
    test_triggered: Part | None = None

    def heldout(self, split: str) -> tuple[Part, Part | None]:
        """The held-out part of `split` ('val' or 'test') and its forgotten-class part."""
        if split == "val":
            return self.val, self.val_forget
        if split == "test":
            return self.test, self.test_forget
        raise ValueError(f"unknown split {split!r}; allowed: val, test")

    def triggered(self, split: str) -> Part | None:
        """The triggered held-out part of `split` ('val' or 'test'), None without a trigger."""
        return {"val": self.val_triggered, "test": self.test_triggered}[split]


def split_test(labels: torch.Tensor, forget: ForgetSpec) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Positions of the test samples kept in `test`, and of those of forgotten classes."""
    positions = torch.arange(len(labels))
    if forget.rule != "classes":
        return positions, None
    gone = torch.isin(labels, torch.tensor(list(forget.classes), dtype=labels.dtype))
    return positions[~gone], positions[gone]


def split_heldout(labels: torch.Tensor, spec: DatasetSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions (into the test split) of the validation and the test samples: a seeded,
    stratified `val_fraction` of every class goes to validation. A class left without a
    validation or a test sample is an error."""
    from sklearn.model_selection import train_test_split

    y = labels.cpu().numpy()
    try:
        val, test = train_test_split(np.arange(len(y)), train_size=spec.val_fraction, random_state=spec.val_seed,
                                     stratify=y)
    except ValueError as exc:
        raise UserError(f"dataset.val_fraction {spec.val_fraction} cannot split the {len(y)} test samples by class: "
                        f"{exc}") from None
    for name, positions in (("validation", val), ("test", test)):
        missing = sorted(set(y.tolist()) - set(y[positions].tolist()))
        if missing:
            raise UserError(f"dataset.val_fraction {spec.val_fraction} leaves class {missing[0]} without a {name} "
                            "sample; allowed: a fraction that leaves every class in both splits")
    return torch.from_numpy(np.sort(val)), torch.from_numpy(np.sort(test))


def _fingerprint(spec: DatasetSpec, y_train: torch.Tensor, n_test: int, num_classes: int) -> dict:
    digest = hashlib.sha256(y_train.numpy().astype(np.int64).tobytes()).hexdigest()[:16]
    return {"name": spec.name, "image_size": spec.image_size, "test_fraction": spec.test_fraction,
            "n_train": len(y_train), "n_test": n_test, "num_classes": num_classes, "train_labels": digest}


def load_data(exp: Experiment, device: torch.device | str = "cpu", download: bool = False) -> ExperimentData:
    """Load the experiment's data set onto `device` and split it. Errors (missing data, bad
    forget classes) are UserErrors raised before anything is trained."""
    device = torch.device(device)
    spec = exp.dataset
    root = dataset_root(spec)
    channels_last = True  # batches in the memory format Runtime.prepare gives every network
    if spec.name not in LOADERS:
        return _load_folder(exp, root, device, channels_last)
    # One download at a time into a folder: searches (or a cluster's nodes) sharing it would
    # otherwise write the same archive at once; who comes second finds it there and checked.
    downloading = root is not None and download
    with exclusive(root / ".tune_unlearn-download.lock") if downloading else contextlib.nullcontext():
        arrays = LOADERS[spec.name](root, download, spec)
    split = make_split(arrays.y_train, exp.forget, arrays.num_classes)
    x_train, y_train = training_set(arrays.x_train.to(device), arrays.y_train.to(device), split, exp.forget)
    mean = x_train.mean(dim=(0, 2, 3), keepdim=True)
    std = x_train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)

    def part(name, images, labels, indices, augmentable=True):
        return TensorPart(name, images, labels, indices, mean, std,
                          exp.train.crop_padding if augmentable else 0, exp.train.flip and augmentable, channels_last)

    everything = torch.arange(len(y_train))
    x_test, y_test = arrays.x_test.to(device), arrays.y_test.to(device)

    def heldout_parts(name, positions):
        kept, gone = split_test(arrays.y_test[positions], exp.forget)
        return (part(name, x_test, y_test, positions[kept], augmentable=False),
                None if gone is None else part(f"{name}_forget", x_test, y_test, positions[gone], augmentable=False))

    val_positions, test_positions = split_heldout(arrays.y_test, spec)
    val, val_forget = heldout_parts("val", val_positions)
    test, test_forget = heldout_parts("test", test_positions)
    triggered = {}
    if split.poisoned is not None:  # the attack success rate's images: triggered, labelled with the target
        x_stamped = stamp(x_test, exp.forget.trigger)
        y_target = torch.full_like(y_test, exp.forget.target)
        for name, positions in (("val", val_positions), ("test", test_positions)):
            kept = positions[triggered_positions(arrays.y_test[positions], exp.forget)]
            triggered[name] = part(f"{name}_triggered", x_stamped, y_target, kept, augmentable=False)
    forget_true = None
    if split.true_labels is not None:
        forget_true = part("forget_true", x_train, split.true_labels.to(device), split.forget)
    return ExperimentData(
        num_classes=arrays.num_classes,
        in_channels=x_train.shape[1],
        train=part("train", x_train, y_train, everything),
        retain=part("retain", x_train, y_train, split.retain),
        forget=part("forget", x_train, y_train, split.forget),
        val=val,
        test=test,
        split=split,
        fingerprint=_fingerprint(spec, arrays.y_train, len(y_test), arrays.num_classes),
        val_forget=val_forget,
        test_forget=test_forget,
        forget_true=forget_true,
        val_triggered=triggered.get("val"),
        test_triggered=triggered.get("test"),
    )


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _load_folder(exp: Experiment, root: Path | None, device: torch.device, channels_last: bool) -> ExperimentData:
    from torchvision import datasets, transforms

    spec = exp.dataset
    if root is None or not (root / "train").is_dir() or not (root / "val").is_dir():
        raise missing_data(spec.name, root)
    size = spec.image_size or 224
    normalize = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    train_tf = transforms.Compose([
        transforms.RandomResizedCrop(size),
        *([transforms.RandomHorizontalFlip()] if exp.train.flip else []),
        transforms.ToTensor(), normalize])
    eval_tf = transforms.Compose([
        transforms.Resize(int(round(size * 256 / 224))), transforms.CenterCrop(size), transforms.ToTensor(), normalize])
    try:
        train_aug = datasets.ImageFolder(str(root / "train"), transform=train_tf)
        train_eval = datasets.ImageFolder(str(root / "train"), transform=eval_tf)
        val = datasets.ImageFolder(str(root / "val"), transform=eval_tf)
    except (FileNotFoundError, RuntimeError) as exc:
        raise UserError(f"cannot read the ImageFolder tree in {root}: {exc}") from None
    if train_aug.classes != val.classes:
        raise UserError(f"{root}: train/ and val/ hold different classes")
    num_classes = len(train_aug.classes)
    bad = [c for c in exp.forget.classes if not 0 <= c < num_classes]
    if bad:
        raise UserError(f"forget class {bad[0]} does not exist; allowed: 0..{num_classes - 1}")
    true_train = torch.tensor(train_aug.targets, dtype=torch.int64)
    y_test = torch.tensor(val.targets, dtype=torch.int64)
    split = make_split(true_train, exp.forget, num_classes)  # backdoor is refused for ImageFolder trees
    y_train = true_train if split.labels is None else split.labels
    clean_aug, clean_eval = train_aug, train_eval
    if split.labels is not None:  # mislabeled: D's samples carry the rule's labels
        wrong = {int(i): int(split.labels[i]) for i in split.forget}
        train_aug, train_eval = Relabeled(train_aug, wrong), Relabeled(train_eval, wrong)

    def part(name, indices, train_set, eval_set, labels):
        return FolderPart(name, train_set, eval_set, indices, labels, spec.workers, device, channels_last)

    def heldout_parts(name, positions):
        kept, gone = split_test(y_test[positions], exp.forget)
        return (part(name, positions[kept], val, val, y_test),
                None if gone is None else part(f"{name}_forget", positions[gone], val, val, y_test))

    val_positions, test_positions = split_heldout(y_test, spec)
    val_part, val_forget = heldout_parts("val", val_positions)
    test_part, test_forget = heldout_parts("test", test_positions)
    return ExperimentData(
        num_classes=num_classes,
        in_channels=3,
        train=part("train", torch.arange(len(y_train)), train_aug, train_eval, y_train),
        retain=part("retain", split.retain, train_aug, train_eval, y_train),
        forget=part("forget", split.forget, train_aug, train_eval, y_train),
        val=val_part,
        test=test_part,
        split=split,
        fingerprint=_fingerprint(spec, true_train, len(y_test), num_classes),
        val_forget=val_forget,
        test_forget=test_forget,
        forget_true=None if split.true_labels is None else part("forget_true", split.forget, clean_aug, clean_eval,
                                                                 true_train),
    )
