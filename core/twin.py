"""A model's OpenCV twin: the same network as a TFLite file that OpenCV's DNN module runs, without TensorFlow.

Why: importing TensorFlow takes 4-5 s on this 2-core machine, so a stroke drawn the moment a fresh server's Draw
page showed waited for it in the model process (3.2-4.3 s, issue 8). OpenCV is in the server already (every
reframing uses it): it reads the twin in about a millisecond and runs one digit in well under one.

`export_twin` (which needs TensorFlow: `python -m core twin --model M`) converts a Keras model with a batch of
one, checks the twin against Keras on MNIST digits, and writes `<model file>.tflite` and
`<model file>.tflite.json` beside the model file (`model.keras.tflite`). The JSON records the SHA-256 of both
files, the OpenCV version the twin was checked with and the largest difference seen; `load_twin` uses a twin
only while all three still hold, so a retrained model file or another OpenCV falls back to Keras rather than
answer with a stale network, and OpenCV never reads a damaged file. A twin answers `predict_proba` and
`describe`; the penultimate layer's features still come from Keras.
"""
from __future__ import annotations

import contextlib
import json
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core.errors import ModelError

if TYPE_CHECKING:
    from core.models import Predictor

#: The largest difference in any class probability between twin and Keras that export_twin accepts.
TOLERANCE = 1e-4
#: MNIST digits the twin is checked on at export.
CHECK_SIZE = 256


def twin_paths(model_path: str | Path) -> tuple[Path, Path]:
    """(the .tflite file, its .json record) beside a model file: model.keras.tflite, model.keras.tflite.json
    (the whole name, so a model.h5 beside it has a twin of its own)."""
    p = Path(model_path)
    return p.with_name(p.name + ".tflite"), p.with_name(p.name + ".tflite.json")


class TwinPredictor:
    """predict_proba and describe of core.models.Predictor, run by OpenCV's DNN module on a twin file."""

    def __init__(self, net, description: dict, name: str = "the twin") -> None:
        self._net = net
        self._lock = threading.Lock()  # one Net, one forward at a time (Streamlit runs sessions in threads)
        self._description = dict(description)
        self._input_shape = (None,) + tuple(description["input_shape"])
        self._name = name

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities (n, 10) for reframed images (n, 28, 28[, 1]), like Predictor.predict_proba."""
        import cv2

        from core.models import as_probabilities, model_inputs

        x = model_inputs(X, self._input_shape)
        if x.ndim == 4:
            x = x.transpose(0, 3, 1, 2)  # OpenCV's DNN takes NCHW; Keras' images are NHWC
        out = np.zeros((len(x), self._description["outputs"]), np.float32)
        try:
            with self._lock:
                for i, one in enumerate(x):  # the twin's batch is one image (a fixed batch converts every layer)
                    self._net.setInput(np.ascontiguousarray(one[None]))
                    out[i] = self._net.forward().reshape(-1)
        except (cv2.error, ValueError) as e:
            raise ModelError(f"OpenCV could not run {self._name}: {str(e).strip().splitlines()[-1]} "
                             "(`python -m core twin` writes it again).") from None
        return as_probabilities(out)

    def describe(self) -> dict:
        """name, params, input_shape, outputs of the Keras model, as recorded at export."""
        return dict(self._description)


def load_twin(model_path: str | Path) -> TwinPredictor | None:
    """The twin of a model file, or None: no twin, a model file changed since, another OpenCV, unreadable."""
    import cv2

    from core.models import file_sha256, input_kind

    tflite, record_path = twin_paths(model_path)
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        if (record["opencv"] != cv2.__version__ or record["source_sha256"] != file_sha256(Path(model_path))
                or record["sha256"] != file_sha256(tflite)):  # OpenCV never reads a damaged or foreign file
            return None
        description = record["describe"]
        input_kind((None,) + tuple(description["input_shape"]))  # a record edited by hand is not trusted
        if description["outputs"] != 10:
            return None
        return TwinPredictor(cv2.dnn.readNetFromTFLite(str(tflite)), description, tflite.name)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ModelError, cv2.error):
        return None


def quick_predictor(model_path: str | Path | None = None) -> TwinPredictor | Predictor:
    """The twin of a model file (None: the shipped model) when it has a valid one, else its Keras Predictor."""
    from core.models import Predictor, resolve_model_path

    twin = load_twin(resolve_model_path(model_path))
    return twin if twin is not None else Predictor.load(model_path)


def _check_digits() -> np.ndarray:
    """MNIST digits as model inputs: the held-out part of the embedded subset."""
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
    source_sha256 = file_sha256(path)  # before loading: the record names exactly the file that was checked
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
            net = cv2.dnn.readNetFromTFLite(str(tmp))
        except cv2.error as e:
            raise ModelError(f"OpenCV cannot read the twin of {path.name}: {str(e).strip().splitlines()[-1]}") \
                from None
        got = TwinPredictor(net, describe_model(model), f"the twin of {path.name}").predict_proba(x)
        want = keras_predictor.predict_proba(x)
        diff = float(np.abs(got - want).max())
        if diff > TOLERANCE or (got.argmax(1) != want.argmax(1)).any():
            raise ModelError(f"The twin of {path.name} differs from the Keras model by up to {diff:.2g} in a "
                             f"probability (at most {TOLERANCE:g} is accepted); it was not written.")
    record = {"source": path.name, "source_sha256": source_sha256, "file": tflite.name,
              "sha256": file_sha256(tflite), "opencv": cv2.__version__, "tensorflow": tf.__version__,
              "checked_on": f"{len(x)} MNIST digits", "max_abs_diff": diff, "describe": describe_model(model)}
    atomic_write_text(record_path, json.dumps(record, indent=2) + "\n")
    return record
