import json

import numpy as np
import pytest

from core import models, runs
from core.errors import InvalidOptionError, ModelError
from core.training import RunConfig, rebuild_command, train


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No Keras cache and no official test set: runs test on their validation split, quickly."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("DIGITLAB_MNIST_TEST_DIR", str(tmp_path / "no-mnist"))


@pytest.fixture(scope="module")
def mobilenet_weights(tmp_path_factory):
    """A local weights file, as a user passes with --weights PATH (random values: no download needed)."""
    import keras

    path = tmp_path_factory.mktemp("w") / "mobilenetv2.weights.h5"
    keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(32, 32, 3),
                                   pooling="avg").save_weights(path)
    return str(path)


@pytest.mark.parametrize("arch, extra", [
    ("mlp", {}), ("cnn", {}), ("cnn-deep", {}),
    ("vgg16", {"weights": "none", "input_size": 32}),
    ("mobilenetv2", {"weights": "none", "input_size": 32}),
])
def test_each_architecture_trains_one_tiny_epoch(offline, tmp_path, arch, extra):
    cfg = RunConfig.preset(arch, epochs=1, max_samples=40, batch_size=16, **extra)
    result = train(cfg, tmp_path / "run")
    assert result["status"] == "done" and result["epochs"] == 1
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["status"] == "done" and info["params"] > 0 and info["trainable_params"] > 0
    assert info["versions"]["tensorflow"] and info["device"].startswith(("CPU", "GPU"))
    assert info["weights"] == extra.get("weights", "none")
    history = runs.read_history(tmp_path / "run" / "history.csv")
    assert len(history) == 1 and set(history[0]) == set(runs.HISTORY_COLUMNS)
    assert (tmp_path / "run" / "model.keras").exists()
    assert "validation" in json.loads((tmp_path / "run" / "metrics.json").read_text())["test_set"] or \
        "held-out" in json.loads((tmp_path / "run" / "metrics.json").read_text())["test_set"]


def test_imagenet_offline_is_refused_with_a_way_out(offline, tmp_path):
    with pytest.raises(ModelError, match="not available offline"):
        train(RunConfig.preset("vgg16", epochs=1, max_samples=20), tmp_path / "run")


def test_cached_feature_training_matches_end_to_end_frozen(mobilenet_weights):
    import keras

    rng = np.random.default_rng(0)
    x = rng.random((48, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, 48)

    def parts():
        keras.utils.set_random_seed(0)
        return models.build_transfer_parts("mobilenetv2", input_size=32, weights=mobilenet_weights, dropout=0.0)

    feat, head = parts()
    whole = models.assemble(feat, head)
    whole.compile(optimizer=keras.optimizers.SGD(0.05), loss="sparse_categorical_crossentropy")
    whole.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)

    feat2, head2 = parts()
    features = feat2.predict(x, verbose=0)
    head2.compile(optimizer=keras.optimizers.SGD(0.05), loss="sparse_categorical_crossentropy")
    head2.fit(features, y, batch_size=16, epochs=2, shuffle=False, verbose=0)

    for a, b in zip(head.get_weights(), head2.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(whole.predict(x, verbose=0), models.assemble(feat2, head2).predict(x, verbose=0),
                               atol=1e-5)
    assert models.backbone_of(whole).trainable is False


def test_feature_cache_is_computed_once_then_hit(offline, tmp_path, mobilenet_weights):
    cfg = RunConfig.preset("mobilenetv2", weights=mobilenet_weights, epochs=1, max_samples=40, batch_size=16,
                           fine_tune_layers=0, fine_tune_epochs=0)
    train(cfg, tmp_path / "a")
    train(cfg, tmp_path / "b")
    first = json.loads((tmp_path / "a" / "run.json").read_text())["feature_cache"]
    second = json.loads((tmp_path / "b" / "run.json").read_text())["feature_cache"]
    assert first.startswith("computed") and second.startswith("hit")
    assert json.loads((tmp_path / "a" / "run.json").read_text())["trainable_params"] < 20000  # head only


def test_fine_tuning_unfreezes_the_last_layers(offline, tmp_path, mobilenet_weights):
    cfg = RunConfig.preset("mobilenetv2", weights=mobilenet_weights, epochs=1, max_samples=40, batch_size=16,
                           fine_tune_layers=10, fine_tune_epochs=1)
    result = train(cfg, tmp_path / "run")
    assert result["epochs"] == 2  # head, then fine-tuning; numbering continues
    assert json.loads((tmp_path / "run" / "run.json").read_text())["trainable_params"] > 20000


@pytest.mark.parametrize("bad, message", [
    ({"architecture": "resnet"}, "mlp, cnn, cnn-deep, vgg16, mobilenetv2"),
    ({"dataset": "cifar"}, "mnist-subset, mnist-full"),
    ({"optimizer": "lbfgs"}, "adam, sgd, rmsprop"),
    ({"architecture": "vgg16", "input_size": 28}, "input_size must be an integer from 32 to 96; got 28"),
    ({"epochs": 0}, "epochs must be an integer from 1 to 1000; got 0"),
])
def test_bad_configurations_name_the_valid_values(bad, message):
    with pytest.raises(InvalidOptionError, match=message):
        RunConfig(**bad)


def test_rebuild_command_round_trips_through_the_cli_parser():
    from core.cli import _train_config, build_parser

    cfg = RunConfig.preset("vgg16", weights="none", epochs=6, learning_rate=1e-4, max_samples=2000)
    args = build_parser().parse_args(rebuild_command(cfg).split()[3:])
    assert _train_config(args) == cfg
