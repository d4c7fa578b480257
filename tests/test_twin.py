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
    elif kind == "logits":  # no softmax: both predictors turn its outputs into probabilities alike
        model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
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


@pytest.mark.parametrize("kind", ["cnn", "logits", "flat", "rgb32"])
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
    assert np.allclose(got.sum(axis=1), 1, atol=1e-5)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left behind
    assert twin.load_twin(path).predict_proba(np.zeros((0, 28, 28), np.uint8)).shape == (0, 10)


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


@pytest.mark.parametrize("damage", ["truncated", "other opencv", "edited shape", "not a record", "no record",
                                    "no file"])
def test_a_twin_that_is_not_the_models_is_never_read(tmp_path, monkeypatch, damage):
    import cv2

    path = _exported(tmp_path)
    tflite, record_path = twin.twin_paths(path)
    record = json.loads(record_path.read_text())
    if damage == "truncated":
        tflite.write_bytes(tflite.read_bytes()[:1000])
    elif damage == "other opencv":
        record_path.write_text(json.dumps({**record, "opencv": "4.0.0"}))
    elif damage == "edited shape":
        record_path.write_text(json.dumps({**record, "describe": {**record["describe"], "input_shape": [5, 7]}}))
    elif damage == "not a record":
        record_path.write_text("[1, 2]")
    elif damage == "no record":
        record_path.unlink()
    else:
        tflite.unlink()
    monkeypatch.setattr(cv2.dnn, "readNetFromTFLite", lambda *a: pytest.fail("OpenCV was handed the file"))
    assert twin.load_twin(path) is None


def test_an_opencv_failure_while_predicting_is_a_model_error():
    import cv2

    class Broken:
        def setInput(self, x):
            pass

        def forward(self):
            raise cv2.error("OpenCV(5.0.0) dnn: (-215:Assertion failed) in function 'forward'")

    quick = twin.TwinPredictor(Broken(), {"name": "m", "params": 1, "input_shape": [28, 28, 1], "outputs": 10},
                               "model.keras.tflite")
    with pytest.raises(ModelError, match="model.keras.tflite.*python -m core twin"):
        quick.predict_proba(_digits(2))


def test_the_page_cache_sees_a_twin_written_while_the_server_runs(tmp_path, monkeypatch):
    from ui import cache

    path = _saved(tmp_path, "flat")
    monkeypatch.setattr(cache, "predictor", lambda p=None: "keras")
    assert cache.quick_predictor(str(path)) == "keras"
    twin.export_twin(path)
    assert isinstance(cache.quick_predictor(str(path)), twin.TwinPredictor)


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
    assert out["source"] == "flat.keras" and out["file"] == "flat.keras.tflite" and twin.load_twin(path) is not None


def test_cli_predict_answers_with_the_twin(tmp_path):
    import cv2

    from tests.conftest import canvas

    image = tmp_path / "one.png"
    cv2.imwrite(str(image), canvas([((140, 50), (140, 230))], rgba=False))
    code = f"""
import sys
from core.cli import main
assert main(["predict", {str(image)!r}, "--json"]) == 0
assert "tensorflow" not in sys.modules, "TensorFlow was imported"
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout)[0]["digit"] == 1
