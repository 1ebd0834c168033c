"""The data sets an experiment may name and what they are, without torch (so that experiments
validate before torch loads). How each is read: loaders.LOADERS (ImageFolder trees: load.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_DOWNLOAD_ROOT = Path.home() / ".cache" / "tune_unlearn" / "data"


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int | None  # None: read from the data (ImageFolder trees)
    channels: int
    default_root: Path | None
    install_hint: str
    side: int | None = None  # image side in pixels (None: ImageFolder trees, dataset.image_size or 224)

DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo("digits", 10, 1, None, "it ships with scikit-learn", 8),
    "fmnist": DatasetInfo(
        "fmnist",
        10,
        1,
        Path("/usr/share/datasets/fashion-mnist"),
        "install it with 'apt-get install dataset-fashion-mnist', point --data-dir at a folder "
        "with the four IDX files, or pass --download",
        28,
    ),
    "cifar10": DatasetInfo(
        "cifar10", 10, 3, DEFAULT_DOWNLOAD_ROOT, "pass --download, or --data-dir at the folder holding cifar-10-batches-py", 32
    ),
    "cifar100": DatasetInfo(
        "cifar100", 100, 3, DEFAULT_DOWNLOAD_ROOT, "pass --download, or --data-dir at the folder holding cifar-100-python", 32
    ),
    "imagefolder": DatasetInfo(
        "imagefolder", None, 3, None,
        "pass --data-dir at a folder holding train/ and val/ ImageFolder trees (one sub-folder per class)",
    ),
}
