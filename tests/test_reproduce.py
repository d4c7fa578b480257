"""Training sets beyond MNIST (Fashion-MNIST, CIFAR-10) from small fabricated Keras cache files in Keras' real
formats, and the published runs reproduced on them: configs, refusals, a tiny run end to end, the comparison."""
import gzip
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from core import datasets, jobs, models, reproduce, runs
from core.errors import DatasetError, InvalidOptionError, ModelError
from core.training import RunConfig, train
from tests.conftest import ROOT


def _write_idx(path, arr):
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def write_fashion_mnist(home, n_train=100, n_test=30):
    """The four gzipped IDX files keras.datasets.fashion_mnist caches, with random images and cycling labels."""
    folder = home / "datasets" / "fashion-mnist"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)


def write_cifar10(home, n_per_batch=20, layout="keras3"):
    """CIFAR-10's Python batches (pickled dicts with bytes keys, data uint8 (n, 3072) in CHW order)."""
    base = home / "datasets"
    folder = (base / "cifar-10-batches-py-target" / "cifar-10-batches-py" if layout == "keras3"
              else base / "cifar-10-batches-py")
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)
    for k, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        batch = {b"batch_label": b"fabricated", b"labels": [int(v) for v in (np.arange(n_per_batch) + k) % 10],
                 b"data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
                 b"filenames": [b"x.png"] * n_per_batch}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=4))
    return folder


def write_mnist(home, n_train=200, n_test=50):
    (home / "datasets").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    np.savez(home / "datasets" / "mnist.npz", x_train=rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
             y_train=(np.arange(n_train) % 10).astype(np.uint8),
             x_test=rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8), y_test=(np.arange(n_test) % 10).astype(np.uint8))


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A Keras cache with nothing in it yet (and no official MNIST test set)."""
    h = tmp_path / "keras"
    monkeypatch.setenv("KERAS_HOME", str(h))
    monkeypatch.setenv("DIGITLAB_MNIST_TEST_DIR", str(tmp_path / "no-mnist"))
    return h


# --- data sets ------------------------------------------------------------------------------------------------

def test_fashion_mnist_is_read_from_the_keras_cache_with_its_own_test_split(home):
    write_fashion_mnist(home, 100, 30)
    train_, val = datasets.load_fashion_mnist(validation_fraction=0.2)
    assert train_.images.shape == (80, 28, 28) and len(val) == 20 and set(val.class_counts().values()) == {2}
    assert "Fashion-MNIST training set (100 images) from the Keras cache" in train_.provenance
    test = datasets.load_test_set("fashion-mnist")
    assert test.images.shape == (30, 28, 28) and "Fashion-MNIST official test set" in test.provenance
    datasets.check_training_set("fashion-mnist")


def test_cifar10_is_read_in_colour_from_either_keras_layout(home):
    folder = write_cifar10(home, 20, layout="legacy")
    train_, _ = datasets.load_cifar10(validation_fraction=0.1)
    assert train_.images.shape == (90, 32, 32, 3) and train_.images.dtype == np.uint8
    raw = pickle.loads((folder / "data_batch_1").read_bytes(), encoding="bytes")[b"data"][0]
    first = datasets._read_cifar_batch(folder / "data_batch_1")[0][0]
    assert (first[:, :, 0].ravel() == raw[:1024]).all() and (first[:, :, 2].ravel() == raw[2048:]).all()  # CHW -> HWC
    write_cifar10(home, 10, layout="keras3")  # where Keras 3 unpacks it wins
    assert datasets.load_cifar10_test().images.shape == (10, 32, 32, 3)


def test_missing_sets_say_which_fetch_command_gets_them(home):
    for name, command in (("fashion-mnist", "data fetch fashion-mnist"), ("cifar10", "data fetch cifar10"),
                          ("mnist-full", "data fetch mnist")):
        with pytest.raises(DatasetError, match=f"not in the Keras cache.*`python -m core {command}`"):
            datasets.check_training_set(name)
    with pytest.raises(DatasetError, match="data fetch fashion-mnist"):
        datasets.load_training_set("fashion-mnist")
    (home / "datasets").mkdir(parents=True)
    (home / "datasets" / "cifar-10-batches-py-target_archive").write_bytes(b"an archive copied by hand")
    with pytest.raises(DatasetError, match="not unpacked.*data fetch cifar10"):
        datasets.load_cifar10()


def test_a_cifar_pickle_that_names_other_code_is_refused(home):
    folder = write_cifar10(home, 5)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}, protocol=4))
    with pytest.raises(DatasetError, match="cannot be read.*refusing to load"):
        datasets.load_cifar10()


def test_run_config_accepts_the_new_sets_and_refuses_elastic_copies_in_colour():
    assert RunConfig(dataset="fashion-mnist").dataset == "fashion-mnist"
    assert RunConfig(dataset="cifar10", augment=True).dataset == "cifar10"
    with pytest.raises(InvalidOptionError, match="elastic_copies must be 0 for cifar10"):
        RunConfig(dataset="cifar10", augment=True, elastic_copies=2)


# --- training on them -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dataset, arch, extra, shape", [
    ("fashion-mnist", "cnn", {"augment": True}, [28, 28, 1]),
    ("cifar10", "cnn", {"augment": True}, [32, 32, 3]),
    ("cifar10", "mlp", {}, [32, 32, 3]),
    ("cifar10", "vgg16", {"weights": "none", "input_size": 32}, [32, 32, 3]),
])
def test_one_tiny_epoch_on_each_new_set_end_to_end(home, tmp_path, dataset, arch, extra, shape):
    write_fashion_mnist(home, 100, 20)
    write_cifar10(home, 20)
    cfg = RunConfig.preset(arch, dataset=dataset, epochs=1, max_samples=40, batch_size=16, early_stopping=None,
                           **extra)
    result = train(cfg, tmp_path / "run")
    assert result["status"] == "done" and result["test_n"] == 20
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["input_shape"] == shape and info["dataset"] == dataset
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "official test set" in metrics["test_set"] and "target_accuracy" not in metrics
    model = models.load_model(tmp_path / "run" / "model.keras")
    assert list(model.input_shape[1:]) == shape


def test_transfer_models_take_colour_through_and_give_vgg16_bgr():
    import keras

    feature_model, _ = models.build_transfer_parts("vgg16", input_shape=(32, 32, 3), input_size=32, weights=None)
    flip = keras.Model(feature_model.input, feature_model.get_layer("rgb_to_bgr").output)
    x = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    np.testing.assert_allclose(flip.predict(x, verbose=0), x[..., ::-1] * 255, rtol=1e-5, atol=1e-3)
    gray, _ = models.build_transfer_parts("mobilenetv2", input_shape=(28, 28, 1), input_size=32, weights=None)
    assert gray.input_shape[1:] == (28, 28, 1)  # digits still go through the gray-to-RGB adapter


# --- the published runs, reproduced -----------------------------------------------------------------------------

def test_every_published_run_has_a_plan_and_polymnist_says_why_not(home):
    write_fashion_mnist(home)
    plans = {p.id: p for p in reproduce.plans()}
    assert len(plans) == 11
    for pid in ("lab3-polymnist-mlp", "lab3-polymnist-cnn", "lab3-polymnist-cnn-aug"):
        assert not plans[pid].reproducible and "PolyMNIST" in plans[pid].reason
        with pytest.raises(reproduce.NotReproducibleError, match="cannot be reproduced: PolyMNIST"):
            reproduce.reproduce_config(pid)
    assert plans["prac2-fashion-cnn-simple"].ready and plans["prac2-fashion-cnn-simple"].missing == []
    assert plans["ut3-cifar10-cnn-simple"].missing == ["cifar10"]
    assert plans["ut3-cifar10-cnn-simple"].fetch_commands == ["python -m core data fetch cifar10"]
    assert plans["ut3-cifar10-vgg16-transfer"].missing == ["cifar10", "vgg16"]
    assert plans["tec-fashion-mobilenetv2"].missing == ["mobilenetv2-96"]
    assert plans["lab3-mnist-digit-cnn"].missing == ["mnist"]
    assert all(p.differences for p in plans.values() if p.reproducible)
    with pytest.raises(reproduce.NotReproducibleError, match="No published run with id 'nope'"):
        reproduce.plan("nope")


def test_reproduce_config_matches_the_published_settings_or_says_what_is_missing(home):
    write_fashion_mnist(home)
    write_cifar10(home, 5)
    cfg = reproduce.reproduce_config("prac2-fashion-cnn-simple")
    assert (cfg.architecture, cfg.dataset, cfg.epochs, cfg.batch_size, cfg.reproduces) == \
        ("cnn", "fashion-mnist", 10, 64, "prac2-fashion-cnn-simple")
    cifar = reproduce.reproduce_config("ut3-cifar10-cnn-simple", max_samples=500)
    assert (cifar.dataset, cifar.epochs, cifar.batch_size, cifar.max_samples) == ("cifar10", 8, 128, 500)
    with pytest.raises(ModelError, match="`python -m core weights fetch vgg16`"):
        reproduce.reproduce_config("ut3-cifar10-vgg16-transfer")
    with pytest.raises(ModelError, match="weights fetch mobilenetv2 --input-size 96"):
        reproduce.reproduce_config("tec-fashion-mobilenetv2")
    with pytest.raises(DatasetError, match="data fetch mnist"):
        reproduce.reproduce_config("lab3-mnist-digit-cnn")
    write_mnist(home)
    digits = reproduce.reproduce_config("lab3-mnist-digit-cnn")
    assert (digits.architecture, digits.dataset, digits.augment) == ("cnn-deep", "mnist-full", True)
    (home / "models").mkdir()
    (home / "models" / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5").write_bytes(b"weights")
    vgg = reproduce.reproduce_config("prac2-fashion-vgg16-transfer")
    assert (vgg.weights, vgg.input_size, vgg.epochs, vgg.batch_size) == ("imagenet", 96, 15, 32)
    with pytest.raises(InvalidOptionError, match="epochs"):
        reproduce.reproduce_config("prac2-fashion-cnn-simple", epochs=0)


def test_a_reproduction_records_what_it_reproduces_and_compares_on_the_same_axes(home):
    write_fashion_mnist(home, 100, 20)
    result = reproduce.run("prac2-fashion-cnn-simple", epochs=2, max_samples=40)
    info = json.loads((runs.user_runs_dir() / result["id"] / "run.json").read_text())
    assert info["reproduces"] == "prac2-fashion-cnn-simple"
    assert info["title"] == "Reproduction of Model 1: CNN simple 32-64 (Fashion-MNIST)"
    cmp = reproduce.comparison("prac2-fashion-cnn-simple", result["id"])
    sources = {(r["source"], r["metric"]) for r in cmp["series"]}
    assert ("published", "accuracy") in sources and ("reproduction", "val_accuracy") in sources
    assert cmp["metrics"] == ["loss", "accuracy"]  # the report logged no validation curve
    assert max(r["epoch"] for r in cmp["series"] if r["source"] == "published") == 10
    assert max(r["epoch"] for r in cmp["series"] if r["source"] == "reproduction") == 2
    acc = cmp["test_accuracy"]
    assert acc["published"] == 0.91 and acc["difference"] == pytest.approx(result["test_accuracy"] - 0.91, abs=1e-4)
    assert cmp["warnings"] == []
    assert any("max_samples" in d for d in cmp["differences"]) and any("epochs" in d for d in cmp["differences"])
    assert [r.id for r in reproduce.reproductions("prac2-fashion-cnn-simple")] == [result["id"]]
    other = reproduce.comparison("ut3-cifar10-cnn-simple", result["id"])  # not what it reproduces: said
    assert any("does not record" in w for w in other["warnings"]) and any("fashion-mnist" in w for w in other["warnings"])


def test_queue_titles_the_job_and_carries_the_reference_to_the_run(home):
    write_fashion_mnist(home, 100, 20)
    job = reproduce.queue("prac2-fashion-cnn-simple", start_worker=False, epochs=1, max_samples=40)
    assert job.title == "Reproduction of Model 1: CNN simple 32-64 (Fashion-MNIST)"
    assert job.config["reproduces"] == "prac2-fashion-cnn-simple"
    assert jobs.run_worker(once=True) == 1
    assert json.loads((jobs.Path(job.run_dir) / "run.json").read_text())["reproduces"] == "prac2-fashion-cnn-simple"


def test_cli_reproduce_refuses_polymnist_plainly(home):
    r = subprocess.run([sys.executable, "-m", "core", "runs", "reproduce", "lab3-polymnist-cnn", "--json"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "PolyMNIST" in json.loads(r.stdout)["error"]
