"""A model's OpenCV twin: the same network as a TFLite file that OpenCV's DNN module runs, without TensorFlow.

Why: importing TensorFlow takes 4-5 s on this 2-core machine, so a stroke drawn the moment a fresh server's Draw
page showed waited for it in the model process (3.2-4.3 s, issue 8). OpenCV is in the server already (every
reframing uses it): it reads the twin in about a millisecond and runs one digit in well under one.

`export_twin` (which needs TensorFlow: `python -m core twin --model M`) converts a Keras model with a batch of
one, checks the twin against Keras on MNIST digits, and writes `<model>.tflite` and `<model>.tflite.json` beside
the model file. The JSON records the SHA-256 of both files, the OpenCV version the twin was checked with and the
largest difference seen; `load_twin` uses a twin only while all three still hold, so a retrained model file or
another OpenCV falls back to Keras rather than answer with a stale network, and OpenCV never reads a damaged
file. A twin answers `predict_proba`
and `describe`; the penultimate layer's features still come from Keras.
"""
from __future__ import annotations

import contextlib
import json
import sys
import threading
from pathlib import Path

import numpy as np

from core.errors import ModelError

#: The largest difference in any class probability between twin and Keras that export_twin accepts.
TOLERANCE = 1e-4
#: MNIST digits the twin is checked on at export.
CHECK_SIZE = 256


def twin_paths(model_path: str | Path) -> tuple[Path, Path]:
    """(the .tflite file, its .json record) beside a model file."""
    p = Path(model_path)
    return p.with_suffix(".tflite"), p.with_suffix(".tflite.json")


class TwinPredictor:
    """predict_proba and describe of core.models.Predictor, run by OpenCV's DNN module on a twin file."""

    def __init__(self, net, record: dict) -> None:
        self._net = net
        self._lock = threading.Lock()  # one Net, one forward at a time (Streamlit runs sessions in threads)
        self.record = record

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities (n, 10) for reframed images (n, 28, 28[, 1]), like Predictor.predict_proba."""
        from core.models import adapt_inputs, to_model_input

        x = to_model_input(X)
        shape = tuple(self.record["describe"]["input_shape"])
        if x.shape[1:] != shape:
            x = adapt_inputs(x, (None,) + shape).astype(np.float32)
        if x.ndim == 4:
            x = x.transpose(0, 3, 1, 2)  # OpenCV's DNN takes NCHW; Keras' images are NHWC
        out = []
        with self._lock:
            for one in x:  # the twin's batch is one image (a fixed batch converts every layer)
                self._net.setInput(np.ascontiguousarray(one[None]))
                out.append(self._net.forward().reshape(-1))
        return np.asarray(out, np.float32).reshape(len(x), -1)

    def describe(self) -> dict:
        """name, params, input_shape, outputs of the Keras model, as recorded at export."""
        return dict(self.record["describe"])


def load_twin(model_path: str | Path) -> TwinPredictor | None:
    """The twin of a model file, or None: no twin, a model file changed since, another OpenCV, unreadable."""
    import cv2

    from core.models import file_sha256

    tflite, record_path = twin_paths(model_path)
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        if (record.get("opencv") != cv2.__version__ or record.get("source_sha256") != file_sha256(Path(model_path))
                or record.get("sha256") != file_sha256(tflite)):  # OpenCV never reads a damaged or foreign file
            return None
        return TwinPredictor(cv2.dnn.readNetFromTFLite(str(tflite)), record)
    except (OSError, ValueError, KeyError, cv2.error):
        return None


def quick_predictor(model_path: str | Path | None = None):
    """The twin of a model file (None: the shipped model) when it has a valid one, else its Keras Predictor."""
    from core.models import Predictor, resolve_model_path

    twin = load_twin(resolve_model_path(model_path))
    return twin if twin is not None else Predictor.load(model_path)


def _check_digits() -> np.ndarray:
    """Reframed MNIST digits (model inputs): the held-out part of the embedded subset."""
    from core.datasets import load_mnist_subset
    from core.models import to_model_input

    _, held_out = load_mnist_subset(random_state=0)
    return to_model_input(held_out.images[:CHECK_SIZE])


def export_twin(model_path: str | Path | None = None) -> dict:
    """Write a model file's twin beside it (checked against Keras first) and return its record."""
    import cv2
    import keras
    import tensorflow as tf

    from core.models import Predictor, describe_model, file_sha256, resolve_model_path
    from core.storage import atomic_output, atomic_write_text

    path = resolve_model_path(model_path)
    keras_predictor = Predictor.load(path)
    model = keras_predictor.model
    inp = keras.Input(model.input_shape[1:], batch_size=1)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # Keras prints its export to stdout: --json output stays JSON
            data = tf.lite.TFLiteConverter.from_keras_model(keras.Model(inp, model(inp))).convert()
    except Exception as e:  # the converter raises many types; the user needs one message
        raise ModelError(f"{path.name} cannot be converted to a TFLite twin: {str(e).splitlines()[0]}") from None
    tflite, record_path = twin_paths(path)
    x = _check_digits()
    with atomic_output(tflite) as tmp:
        tmp.write_bytes(data)
        try:
            twin = TwinPredictor(cv2.dnn.readNetFromTFLite(str(tmp)), {"describe": describe_model(model)})
            got = twin.predict_proba(x)
        except cv2.error as e:
            raise ModelError(f"OpenCV cannot run the twin of {path.name}: {str(e).strip().splitlines()[-1]}") \
                from None
        want = keras_predictor.predict_proba(x)
        diff = float(np.abs(got - want).max())
        if diff > TOLERANCE or (got.argmax(1) != want.argmax(1)).any():
            raise ModelError(f"The twin of {path.name} differs from the Keras model by up to {diff:.2g} in a "
                             f"probability (at most {TOLERANCE:g} is accepted); it was not written.")
    record = {"source": path.name, "source_sha256": file_sha256(path), "file": tflite.name,
              "sha256": file_sha256(tflite), "opencv": cv2.__version__, "tensorflow": tf.__version__,
              "checked_on": f"{len(x)} MNIST digits", "max_abs_diff": diff, "describe": describe_model(model)}
    atomic_write_text(record_path, json.dumps(record, indent=2) + "\n")
    return record
