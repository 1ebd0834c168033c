import dataclasses
import gzip
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from tune_unlearn.data.loaders import LOADERS
from tune_unlearn.data.load import load_data
from tune_unlearn.data.forget_rules import make_split
from tune_unlearn.data.parts import random_crop, random_flip
from tune_unlearn.errors import UserError
from tune_unlearn.data.experiment import ForgetSpec, load_experiment

FMNIST = Path("/usr/share/datasets/fashion-mnist")


def test_random_split_is_disjoint_complete_and_seeded():
    labels = torch.arange(1000) % 10
    a = make_split(labels, ForgetSpec(rule="random", fraction=0.1, seed=3))
    b = make_split(labels, ForgetSpec(rule="random", fraction=0.1, seed=3))
    c = make_split(labels, ForgetSpec(rule="random", fraction=0.1, seed=4))
    assert len(a.forget) == 100 and len(a.retain) == 900
    assert not set(a.forget.tolist()) & set(a.retain.tolist())
    assert sorted(a.forget.tolist() + a.retain.tolist()) == list(range(1000))
    assert torch.equal(a.forget, b.forget)
    assert not torch.equal(a.forget, c.forget)


def test_class_split_takes_exactly_those_classes():
    labels = torch.arange(200) % 10
    split = make_split(labels, ForgetSpec(rule="classes", classes=(2, 7)))
    assert set(labels[split.forget].tolist()) == {2, 7}
    assert not {2, 7} & set(labels[split.retain].tolist())
    assert len(split.forget) == 40


def test_experiment_split_is_stored_with_the_data(tiny_experiment):
    first = load_data(tiny_experiment)
    second = load_data(tiny_experiment)
    assert torch.equal(first.split.forget, second.split.forget)
    assert len(first.forget) + len(first.retain) == len(first.train)
    assert torch.equal(first.forget.labels, first.train.labels[first.split.forget])


def test_batches_cover_the_part_once_and_never_hold_one_sample(prepared):
    part = prepared.data.retain
    seen = torch.cat([y for _, y in part.batches(100, shuffle=True, augment=True)])
    assert len(seen) == len(part)
    sizes = [len(y) for _, y in part.batches(len(part) - 1)]
    assert min(sizes) > 1 and sum(sizes) == len(part)


def test_random_crop_shifts_content_and_flip_mirrors():
    torch.manual_seed(0)
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4) + 1
    cropped = random_crop(x, padding=1)
    assert cropped.shape == x.shape
    for i in range(2):  # every crop is x shifted by at most one pixel, zeros entering at the edge
        assert any(
            torch.equal(cropped[i], torch.nn.functional.pad(x[i], (1, 1, 1, 1))[:, dy:dy + 4, dx:dx + 4])
            for dy in range(3) for dx in range(3)
        )
    flipped = random_flip(x)
    for i in range(2):
        assert torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], x[i].flip(2))


@pytest.mark.skipif(not FMNIST.is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_real_fashion_mnist_from_debian_files():
    exp = load_experiment("fmnist")
    arrays = LOADERS["fmnist"](FMNIST, False, exp.dataset)
    assert arrays.x_train.shape == (60000, 1, 28, 28) and arrays.x_test.shape == (10000, 1, 28, 28)
    assert arrays.y_train.bincount().tolist() == [6000] * 10
    assert 0.0 <= arrays.x_train.min() and arrays.x_train.max() <= 1.0
    assert 0.2 < arrays.x_train.mean() < 0.4  # Fashion-MNIST's mean pixel is about 0.286


def test_missing_fashion_mnist_says_where_and_how(tmp_path):
    with pytest.raises(UserError, match="apt-get install dataset-fashion-mnist") as err:
        load_data(load_experiment("fmnist", {"dataset.root": str(tmp_path)}))
    assert str(tmp_path) in str(err.value)


def test_fashion_mnist_reader_on_generated_idx_files(tmp_path):
    def write(name, magic, array):
        header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
        with gzip.open(tmp_path / f"{name}.gz", "wb") as f:
            f.write(header + array.astype(np.uint8).tobytes())

    rng = np.random.default_rng(0)
    write("train-images-idx3-ubyte", 0x0803, rng.integers(0, 255, (50, 28, 28)))
    write("train-labels-idx1-ubyte", 0x0801, np.arange(50) % 10)
    write("t10k-images-idx3-ubyte", 0x0803, rng.integers(0, 255, (20, 28, 28)))
    write("t10k-labels-idx1-ubyte", 0x0801, np.arange(20) % 10)
    data = load_data(load_experiment("fmnist", {"dataset.root": str(tmp_path)}))
    assert len(data.train) == 50 and len(data.val) == len(data.test) == 10 and len(data.forget) == 5


def test_cifar_reader_on_a_generated_fixture(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, n in [*[(f"data_batch_{i}", 8) for i in range(1, 6)], ("test_batch", 20)]:
        entry = {"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8), "labels": list(np.arange(n) % 10)}
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f)
    data = load_data(load_experiment("cifar10", {"dataset.root": str(tmp_path)}))
    assert len(data.train) == 40 and len(data.val) == len(data.test) == 10 and data.in_channels == 3
    x, y = next(data.train.batches(16, shuffle=True, augment=True))
    assert x.shape[1:] == (3, 32, 32) and x.shape[0] <= 16


def test_missing_cifar_points_at_download(tmp_path):
    with pytest.raises(UserError, match="--download"):
        load_data(load_experiment("cifar100", {"dataset.root": str(tmp_path)}))


def test_imagefolder_tree_on_a_generated_fixture(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, per_class in (("train", 6), ("val", 2)):
        for cls in ("ant", "bee", "cat"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(tmp_path / split / cls / f"{i}.png")
    exp = load_experiment("imagenet100", {"dataset.root": str(tmp_path), "dataset.image_size": 32,
                                          "dataset.workers": 0, "forget.fraction": 0.2})
    data = load_data(exp)
    assert data.num_classes == 3 and len(data.train) == 18 and len(data.val) == len(data.test) == 3
    assert len(data.forget) == 4
    x, y = next(data.forget.batches(4, shuffle=True, augment=True))
    assert x.shape == (4, 3, 32, 32) and y.shape == (4,)
    with pytest.raises(UserError, match="forget class 5 does not exist"):
        load_data(load_experiment("imagenet100", {"dataset.root": str(tmp_path), "forget.classes": [5]}))
    # mislabeled: the forget samples stream with their wrong labels, their true ones beside them
    wrong = load_data(load_experiment("imagenet100", {"dataset.root": str(tmp_path), "dataset.image_size": 32,
                                                      "dataset.workers": 0, "forget.rule": "mislabeled",
                                                      "forget.fraction": 0.2}))
    streamed = torch.cat([y for _, y in wrong.forget.batches(4)])
    true = torch.cat([y for _, y in wrong.forget_true.batches(4)])
    assert torch.equal(streamed, wrong.forget.labels.cpu()) and (streamed != true).all()
    assert torch.equal(torch.cat([y for _, y in wrong.retain.batches(8)]), data.train.labels[wrong.split.retain].cpu())
    with pytest.raises(UserError, match="forget rule 'backdoor' stamps its trigger on in-memory images"):
        load_experiment("imagenet100", {"forget.rule": "backdoor"})


def test_validation_split_is_disjoint_stratified_and_seeded(tiny_experiment):
    data = load_data(tiny_experiment)
    val, test = set(data.val.indices.tolist()), set(data.test.indices.tolist())
    assert val and test and not val & test  # both carved from the held-out split, disjoint
    assert len(val) + len(test) == data.fingerprint["n_test"]
    # stratified: every class in both, in nearly equal shares
    assert set(data.val.labels.tolist()) == set(data.test.labels.tolist()) == set(range(10))
    assert abs(len(val) - len(test)) <= 10
    again = load_data(tiny_experiment)
    assert torch.equal(again.val.indices, data.val.indices)


def test_class_forgetting_splits_validation_too():
    data = load_data(load_experiment("digits_class", {"model.width": 4}))
    assert 3 not in data.val.labels.tolist() and set(data.val_forget.labels.tolist()) == {3}
    assert not set(data.val_forget.indices.tolist()) & set(data.test_forget.indices.tolist())


def test_the_validation_split_never_reaches_a_method(prepared):
    from tune_unlearn.methods.base import Method
    from tune_unlearn.pipeline import run_method

    seen = []

    class Spy(Method):
        name, hparams = "spy", ()

        def unlearn(self, model, data, hp, ctx):
            seen.extend(getattr(data, f.name) for f in dataclasses.fields(data))
            return {}

    result = run_method(prepared, Spy(), {})
    parts = [p for p in seen if hasattr(p, "indices")]
    assert len(parts) == 3 and all(p._images is prepared.data.train._images for p in parts)  # training images only
    assert "val_acc" in result.metrics and "test_acc" in result.test_metrics


@pytest.mark.parametrize("overrides,message", [
    ({"dataset.val_fraction": 0.0}, "val_fraction must lie in (0, 1), got 0.0"),
    ({"dataset.val_fraction": 1.5}, "val_fraction must lie in (0, 1), got 1.5"),
    ({"retrained_models": 0}, "retrained_models must be >= 1, got 0"),
])
def test_bad_validation_and_ensemble_settings_are_refused(overrides, message):
    with pytest.raises(UserError, match=re.escape(message)):
        load_experiment("digits", overrides)


def test_a_validation_fraction_that_empties_a_class_is_refused():
    with pytest.raises(UserError, match="val_fraction 0.01"):
        load_data(load_experiment("digits", {"dataset.val_fraction": 0.01}))


def test_downloads_into_one_folder_take_turns(tmp_path, monkeypatch):
    """Two loads with --download into the same folder (two searches, or a cluster's nodes on a
    shared disk) never fetch at the same time: the second waits, then finds the files."""
    import threading
    import time

    from tune_unlearn.data.loaders import Arrays

    spans, lock = [], threading.Lock()

    def fetching(root, download, spec):  # stands in for torchvision's download, which needs a network
        start = time.monotonic()
        time.sleep(0.3)
        with lock:
            spans.append((start, time.monotonic()))
        g = torch.Generator().manual_seed(0)
        return Arrays(torch.rand(200, 1, 8, 8, generator=g), torch.arange(200) % 10,
                      torch.rand(100, 1, 8, 8, generator=g), torch.arange(100) % 10, 10)

    monkeypatch.setitem(LOADERS, "fmnist", fetching)
    exp = load_experiment("fmnist", {"dataset.root": str(tmp_path / "data")})
    threads = [threading.Thread(target=load_data, args=(exp, "cpu", True)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    (a0, a1), (b0, b1) = sorted(spans)
    assert len(spans) == 2 and b0 >= a1  # one after the other
    assert (tmp_path / "data" / ".tune_unlearn-download.lock").is_file()
