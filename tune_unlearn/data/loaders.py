"""How each small data set is read into memory (`LOADERS`, by name): scikit-learn's digits,
Fashion-MNIST's IDX files, CIFAR's python pickles. What each data set is (classes, channels,
where it lives) is in datasets.py, without torch. Nothing downloads unless asked."""

from __future__ import annotations

import gzip
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from ..errors import UserError
from .datasets import DATASETS

if TYPE_CHECKING:
    from .experiment import DatasetSpec


@dataclass
class Arrays:
    """A whole small data set in memory: images as float in [0, 1], NCHW."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int



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
        raise missing_data("fmnist", root)
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
        raise missing_data(spec.name, root)
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


def missing_data(name: str, root: Path | None) -> UserError:
    return UserError(f"data set {name!r} not found in {root}: {DATASETS[name].install_hint}")


def dataset_root(spec: DatasetSpec) -> Path | None:
    root = spec.root if spec.root is not None else DATASETS[spec.name].default_root
    return None if root is None else Path(root).expanduser().resolve()
