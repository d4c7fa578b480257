"""core.twin: a model's OpenCV twin answers like the Keras model, and is used only while it is the model's."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from core import twin
from core.errors import ModelError
from tests.conftest import ROOT


def _digits(n: int = 200) -> np.ndarray:
    from core.datasets import load_sklearn_digits
    from core.models import to_model_input
    from core.reframing import reframe_batch

    X, _ = reframe_batch(load_sklearn_digits().images[:n])
    return to_model_input(X)


def _saved(tmp_path, kind: str):
    import keras

    from core import models

    keras.utils.set_random_seed(0)
    if kind == "cnn":
        model = models.build_simple_cnn()
    elif kind == "flat":
        model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(32, activation="relu"),
                                  keras.layers.Dense(10, activation="softmax")])
    else:  # a 32x32 RGB input: the digits are resized and repeated over the channels
        model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(4, 3, activation="relu"),
                                  keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10, activation="softmax")])
    path = tmp_path / f"{kind}.keras"
    model.save(path)
    return path


def test_the_shipped_model_has_a_twin_that_answers_like_keras():
    from core.models import Predictor, reused_model_path

    quick = twin.load_twin(reused_model_path())
    assert quick is not None, "models/reused-cnn has no valid twin: run `python -m core twin`"
    x = _digits()
    got, want = quick.predict_proba(x), Predictor.load(None).predict_proba(x)
    assert got.shape == (len(x), 10)
    assert np.abs(got - want).max() < twin.TOLERANCE and (got.argmax(1) == want.argmax(1)).all()
    assert quick.describe() == Predictor.load(None).describe()


@pytest.mark.parametrize("kind", ["cnn", "flat", "rgb32"])
def test_export_writes_a_checked_twin_beside_the_model(tmp_path, kind):
    from core.models import Predictor

    path = _saved(tmp_path, kind)
    record = twin.export_twin(path)
    tflite, record_path = twin.twin_paths(path)
    assert tflite.is_file() and json.loads(record_path.read_text()) == record
    assert record["max_abs_diff"] <= twin.TOLERANCE and record["describe"]["params"] > 0
    x = _digits(50)
    got, want = twin.load_twin(path).predict_proba(x), Predictor.load(path).predict_proba(x)
    assert np.abs(got - want).max() < twin.TOLERANCE
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left behind


def _exported(tmp_path):
    path = _saved(tmp_path, "flat")
    twin.export_twin(path)
    return path


def test_a_changed_model_file_falls_back_to_keras(tmp_path):
    import keras

    path = _exported(tmp_path)
    assert twin.load_twin(path) is not None
    keras.Sequential([keras.Input((784,)), keras.layers.Dense(10, activation="softmax")]).save(path)  # retrained
    assert twin.load_twin(path) is None
    assert type(twin.quick_predictor(path)).__name__ == "Predictor"


@pytest.mark.parametrize("damage", ["truncated", "other opencv", "no record", "no file"])
def test_a_twin_that_is_not_the_models_is_never_read(tmp_path, damage):
    path = _exported(tmp_path)
    tflite, record_path = twin.twin_paths(path)
    if damage == "truncated":  # OpenCV is not even handed the file
        tflite.write_bytes(tflite.read_bytes()[:1000])
    elif damage == "other opencv":
        record = json.loads(record_path.read_text())
        record_path.write_text(json.dumps({**record, "opencv": "4.0.0"}))
    elif damage == "no record":
        record_path.unlink()
    else:
        tflite.unlink()
    assert twin.load_twin(path) is None


def test_export_refuses_a_file_that_is_no_model(tmp_path):
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ModelError, match="not a saved Keras model"):
        twin.export_twin(bad)
    assert not twin.twin_paths(bad)[0].exists()


def test_a_drawing_is_classified_by_the_twin_without_importing_tensorflow():
    code = """
import sys
from core.models import classify
from core.twin import quick_predictor
from tests.conftest import canvas
p = classify(quick_predictor(None), canvas([((140, 50), (140, 230))]), "paper")
print(p.digit, round(p.confidence, 3))
assert "tensorflow" not in sys.modules and "keras" not in sys.modules, "TensorFlow was imported"
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split()[0] == "1"


def test_cli_writes_a_twin_and_prints_json(tmp_path):
    path = _saved(tmp_path, "flat")
    r = subprocess.run([sys.executable, "-m", "core", "twin", "--model", str(path), "--json"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)  # Keras' export messages do not reach stdout
    assert out["source"] == "flat.keras" and out["file"] == "flat.tflite" and twin.load_twin(path) is not None
