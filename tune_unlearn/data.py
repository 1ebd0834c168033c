"""Data sets, forget/retain splits, and batches.

Small data sets (digits, Fashion-MNIST, CIFAR) are held as one float tensor on the device for
the whole run: a batch is an index slice, augmentation (random crop + flip) runs on the device,
and there are no DataLoader workers. ImageFolder trees (ImageNet-100) stream from disk through
a DataLoader with workers. Both kinds of subset ("part") offer the same `batches` interface, so
methods never know which one they got.

Nothing here downloads unless asked (`download=True`, the CLI's `--download`).
"""

from __future__ import annotations

import gzip
import hashlib
import math
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
import torch.utils.data

from .datasets import DATASETS, DEFAULT_DOWNLOAD_ROOT, DatasetInfo  # noqa: F401  (re-exported)
from .errors import UserError
from .forget_rules import Split, make_split, stamp, training_set, triggered_positions  # noqa: F401  (Split re-exported)

if TYPE_CHECKING:
    from .experiment import DatasetSpec, Experiment, ForgetSpec


@dataclass
class Arrays:
    """A whole small data set in memory: images as float in [0, 1], NCHW."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int


# --------------------------------------------------------------------------- loaders


def _load_digits(root: Path | None, download: bool, spec: DatasetSpec) -> Arrays:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
    y = torch.from_numpy(digits.target.astype(np.int64))
    # digits has no official test split: a fixed, stratified one (independent of the forget seed).
    train_idx, test_idx = train_test_split(
        np.arange(len(y)), test_size=spec.test_fraction, random_state=0, stratify=digits.target
    )
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    return Arrays(x[train_idx], y[train_idx], x[test_idx], y[test_idx], 10)


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    _, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if dtype_code != 0x08:
        raise UserError(f"{path}: not an unsigned-byte IDX file")
    shape = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _find_idx(root: Path, stem: str) -> Path | None:
    for folder in (root, root / "FashionMNIST" / "raw"):
        for name in (stem + ".gz", stem):
            if (folder / name).is_file():
                return folder / name
    return None


def _load_fmnist(root: Path, download: bool, spec: DatasetSpec) -> Arrays:
    if download:
        from torchvision.datasets import FashionMNIST

        FashionMNIST(str(root), train=True, download=True)
        FashionMNIST(str(root), train=False, download=True)
    stems = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    paths = [_find_idx(root, s) for s in stems]
    if any(p is None for p in paths):
        raise _missing("fmnist", root)
    xtr, ytr, xte, yte = (_read_idx(p) for p in paths)  # type: ignore[arg-type]

    def images(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.float32) / 255.0).unsqueeze(1)

    return Arrays(images(xtr), torch.from_numpy(ytr.astype(np.int64)), images(xte), torch.from_numpy(yte.astype(np.int64)), 10)


def _load_cifar(root: Path, download: bool, spec: DatasetSpec) -> Arrays:
    hundred = spec.name == "cifar100"
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    if download:
        from torchvision.datasets import CIFAR10, CIFAR100

        (CIFAR100 if hundred else CIFAR10)(str(root), train=True, download=True)
    train_files = ["train"] if hundred else [f"data_batch_{i}" for i in range(1, 6)]
    test_files = ["test"] if hundred else ["test_batch"]
    if not all((folder / f).is_file() for f in train_files + test_files):
        raise _missing(spec.name, root)
    label_key = "fine_labels" if hundred else "labels"

    # The python-pickle format torchvision downloads; read directly so that copies without
    # torchvision's checksum files (and the small test fixtures) load too.
    def read(files: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        for name in files:
            with open(folder / name, "rb") as f:
                entry = pickle.load(f, encoding="latin1")
            xs.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.extend(entry[label_key])
        x = torch.from_numpy(np.concatenate(xs).astype(np.float32) / 255.0)
        return x, torch.tensor(ys, dtype=torch.int64)

    xtr, ytr = read(train_files)
    xte, yte = read(test_files)
    return Arrays(xtr, ytr, xte, yte, 100 if hundred else 10)


# What each data set is (classes, channels, where it lives) is in datasets.py, without torch;
# how to read it is here, by name.
LOADERS: dict[str, Callable] = {"digits": _load_digits, "fmnist": _load_fmnist, "cifar10": _load_cifar,
                                "cifar100": _load_cifar}


def _missing(name: str, root: Path | None) -> UserError:
    return UserError(f"data set {name!r} not found in {root}: {DATASETS[name].install_hint}")


def dataset_root(spec: DatasetSpec) -> Path | None:
    root = spec.root if spec.root is not None else DATASETS[spec.name].default_root
    return None if root is None else Path(root).expanduser().resolve()


# --------------------------------------------------------------------------- augmentation


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


# --------------------------------------------------------------------------- parts


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
        return FolderPart(self.name, _Relabeled(self._train_set, mapping), _Relabeled(self._eval_set, mapping),
                          self.indices, full, self._workers, self._device, self._channels_last)

    def join(self, other: "FolderPart", name: str) -> "FolderPart":
        """This part's samples followed by those of `other` (a part of the same data set)."""
        return FolderPart(name, self._train_set, self._eval_set, torch.cat([self.indices, other.indices.cpu()]),
                          self._all_labels, self._workers, self._device, self._channels_last)


class _Relabeled(torch.utils.data.Dataset):
    """A dataset whose samples at some indices carry other labels."""

    def __init__(self, dataset, mapping: dict[int, int]):
        self.dataset, self.mapping = dataset, mapping

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        x, y = self.dataset[index]
        return x, self.mapping.get(index, y)


Part = TensorPart | FolderPart


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
    info = DATASETS[spec.name]
    root = dataset_root(spec)
    channels_last = device.type == "cuda"
    if info.load is None:
        return _load_folder(exp, root, device, channels_last)
    if root is not None and download:
        root.mkdir(parents=True, exist_ok=True)
    arrays = info.load(root, download, spec)
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
        raise _missing(spec.name, root)
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
        train_aug, train_eval = _Relabeled(train_aug, wrong), _Relabeled(train_eval, wrong)

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
