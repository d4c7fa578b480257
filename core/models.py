"""Model architectures (the keras-io way), loading, and the fast single-image predictor.

TensorFlow/Keras are imported inside functions: importing `core.models` costs nothing, so pages that only show
cached results never pay TensorFlow's ~4 s import.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core import config
from core.reframing import DEFAULT_METHOD, Reframed, reframe
from core.errors import InvalidOptionError, ModelError

ARCHITECTURES = ("mlp", "cnn", "cnn-deep", "vgg16", "mobilenetv2")
DISPLAY_NAMES = {"mlp": "MLP", "cnn": "CNN", "cnn-deep": "CNN", "vgg16": "VGG16", "mobilenetv2": "MobileNetV2"}
#: Keras' own file names for the ImageNet weights without the classifier top.
IMAGENET_FILES = {
    "vgg16": "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "mobilenetv2": "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{size}_no_top.h5",
}
MOBILENET_SIZES = (96, 128, 160, 192, 224)


def to_model_input(images: np.ndarray) -> np.ndarray:
    """The one preprocessing path shared by training and inference: (n, 28, 28) -> (n, 28, 28, 1) in [0, 1].

    Images that already have a channel axis (n, h, w, c), e.g. CIFAR-10's 32x32x3, keep their shape.
    """
    x = np.asarray(images)
    x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32, copy=False)
    return x if x.ndim == 4 else x.reshape(-1, 28, 28, 1)


def build_mlp(input_shape=(28, 28, 1), num_classes: int = 10, hidden=(256, 128), dropout: float = 0.2):
    """MLP 256-128 with dropout, as in the PolyMNIST report."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=input_shape)
    x = layers.Flatten()(inputs)
    for units in hidden:
        x = layers.Dense(units, activation="relu")(x)
        x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="mlp")


def build_simple_cnn(input_shape=(28, 28, 1), num_classes: int = 10):
    """The Keras "Simple MNIST convnet" (34,826 parameters): the model the paper reused."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=input_shape)
    x = layers.Conv2D(32, kernel_size=(3, 3), activation="relu")(inputs)
    x = layers.MaxPooling2D(pool_size=(2, 2))(x)
    x = layers.Conv2D(64, kernel_size=(3, 3), activation="relu")(x)
    x = layers.MaxPooling2D(pool_size=(2, 2))(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(0.5)(x)
    outputs = layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="simple_cnn")


def build_deep_cnn(input_shape=(28, 28, 1), num_classes: int = 10):
    """The deeper variant: two Conv-BN blocks of 32 and 64 filters with dropout, Dense 256."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=input_shape)
    x = inputs
    for filters in (32, 64):
        for _ in range(2):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
            x = layers.BatchNormalization()(x)
            x = layers.Activation("relu")(x)
        x = layers.MaxPooling2D(2)(x)
        x = layers.Dropout(0.25)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(256, activation="relu")(x)
    x = layers.Dropout(0.5)(x)
    outputs = layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="deep_cnn")


def resolve_imagenet_weights(arch: str, weights: str | None, input_size: int) -> str | None:
    """'none' -> None; a file path -> that path; 'imagenet' -> the Keras cache file, or a clear ModelError.

    Never lets Keras try to download: offline that fails late, or hangs on a slow network.
    """
    if weights in (None, "none"):
        return None
    if weights != "imagenet":
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ModelError(f"Weights file {path} does not exist. Use 'imagenet', 'none' or a .h5 file path.")
        return str(path)
    cached = imagenet_weights_path(arch, input_size)
    if not cached.exists():
        fetch = "python -m core weights fetch " + (arch if arch == "vgg16" else f"{arch} --input-size {input_size}")
        raise ModelError(
            f"ImageNet weights for {DISPLAY_NAMES[arch]} are not available offline: {cached} is missing. "
            f"Fetch them with `{fetch}` (needs internet), pass --weights PATH to a local copy of that "
            "file, or choose weights 'none' to train from scratch."
        )
    return str(cached)


def imagenet_weights_path(arch: str, input_size: int) -> Path:
    """Where Keras caches the no-top ImageNet weights a transfer run of this input size loads (MobileNetV2: the
    file of the nearest size Keras publishes; the convolution weights do not depend on the input size)."""
    size = min(MOBILENET_SIZES, key=lambda s: abs(s - input_size))
    return config.keras_home() / "models" / IMAGENET_FILES[arch].format(size=size)


def _adapt_gray(inputs, input_size: int):
    """28x28x1 digits (or colour images, passed through) -> input_size x input_size x 3 in [0, 255], the form
    ImageNet backbones expect."""
    from keras import layers

    x = layers.Resizing(input_size, input_size, interpolation="bilinear")(inputs)
    if inputs.shape[-1] == 1:
        x = layers.Concatenate(axis=-1)([x, x, x])
    return layers.Rescaling(255.0)(x)


def _rgb_to_bgr(x):
    """Reverse the channel order with a frozen 1x1 linear map: VGG16's ImageNet weights expect BGR (Keras'
    "caffe" preprocessing). A Lambda layer would do it in one line, but safe loading refuses Lambda layers."""
    from keras import layers

    flip = layers.Dense(3, use_bias=False, trainable=False, name="rgb_to_bgr")
    y = flip(x)
    flip.set_weights([np.eye(3, dtype=np.float32)[::-1]])
    return y


def build_transfer_parts(arch: str, input_shape=(28, 28, 1), num_classes: int = 10, input_size: int = 48,
                         weights: str | None = "imagenet", dropout: float | None = None):
    """(feature_model, head) of a transfer model: digits -> backbone features, and features -> classes.

    The whole model is head(feature_model(x)); training the head alone on features computed once is the same
    function as training the whole model with a frozen backbone, without running the backbone every epoch.
    """
    import keras
    from keras import layers

    if arch not in ("vgg16", "mobilenetv2"):
        raise InvalidOptionError("transfer architecture", arch, ("vgg16", "mobilenetv2"))
    if not 32 <= input_size <= 96:
        raise InvalidOptionError(f"input_size for {DISPLAY_NAMES[arch]}", input_size, "32..96")
    inputs = keras.Input(shape=input_shape)
    x = _adapt_gray(inputs, input_size)
    shape = (input_size, input_size, 3)
    if arch == "vgg16":
        # VGG16's "caffe" preprocessing: BGR order (a no-op for gray) minus the ImageNet channel means.
        if input_shape[-1] == 3:
            x = _rgb_to_bgr(x)
        x = layers.Normalization(mean=[103.939, 116.779, 123.68], variance=[1.0, 1.0, 1.0])(x)
        backbone = keras.applications.VGG16(include_top=False, weights=weights, input_shape=shape)
    else:
        x = layers.Rescaling(1 / 127.5, offset=-1.0)(x)  # MobileNetV2 expects [-1, 1]
        backbone = keras.applications.MobileNetV2(include_top=False, weights=weights, input_shape=shape,
                                                  pooling="avg")
    # Pretrained weights are frozen (only the head learns); without them the backbone learns from scratch.
    backbone.trainable = weights is None
    if weights is None:
        # keras.applications' BatchNorm momentum (0.999) suits ImageNet's millions of steps; on a few hundred
        # steps of digits the moving statistics used at inference stay near their initial values and the
        # model answers at chance on validation data while training accuracy climbs. 0.9 converges in time.
        for layer in backbone.layers:
            if isinstance(layer, layers.BatchNormalization):
                layer.momentum = 0.9
    features = backbone(x, training=False if weights is not None else None)
    feature_model = keras.Model(inputs, features, name=f"{arch}_features")
    head_in = keras.Input(shape=features.shape[1:])
    if arch == "vgg16":
        h = layers.Flatten()(head_in)
        h = layers.Dense(256, activation="relu")(h)
        h = layers.Dropout(0.5 if dropout is None else dropout)(h)
    else:
        h = layers.Dropout(0.3 if dropout is None else dropout)(head_in)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32")(h)
    return feature_model, keras.Model(head_in, outputs, name=f"{arch}_head")


def assemble(feature_model, head):
    """The whole transfer model from its two parts (they share weights)."""
    import keras

    inputs = keras.Input(shape=feature_model.input_shape[1:])
    return keras.Model(inputs, head(feature_model(inputs)), name=feature_model.name.replace("_features", "_transfer"))


def build_vgg16_transfer(input_shape=(28, 28, 1), num_classes: int = 10, input_size: int = 48,
                         weights: str | None = "imagenet", dropout: float = 0.5):
    """VGG16 backbone (frozen with ImageNet weights) + Flatten + Dense 256 + Dropout head."""
    return assemble(*build_transfer_parts("vgg16", input_shape, num_classes, input_size, weights, dropout))


def build_mobilenetv2_transfer(input_shape=(28, 28, 1), num_classes: int = 10, input_size: int = 64,
                               weights: str | None = "imagenet", dropout: float = 0.3):
    """MobileNetV2 backbone (frozen with ImageNet weights) + global pooling + Dropout + Dense head."""
    return assemble(*build_transfer_parts("mobilenetv2", input_shape, num_classes, input_size, weights, dropout))


def backbone_of(model):
    """The backbone inside a transfer model, looking into nested models (None for MLP/CNN)."""
    for layer in model.layers:
        if layer.name == "vgg16" or layer.name.startswith("mobilenetv2_1."):  # keras.applications' names
            return layer
        if hasattr(layer, "layers"):
            found = backbone_of(layer)
            if found is not None:
                return found
    return None


#: Model files a user may bring: Keras 3's .keras and the legacy HDF5 .h5.
MODEL_SUFFIXES = (".keras", ".h5")


def resolve_model_path(spec: str | Path | None = None) -> Path:
    """The model file for `--model`: None is the shipped reused model; a file; a run folder; or a run id."""
    if spec in (None, ""):
        return reused_model_path()
    p = Path(spec).expanduser()
    if p.is_dir():
        p = p / "model.keras"
    if p.is_file():
        return p
    if not p.suffix and "/" not in str(spec):  # looks like a run id (`python -m core runs` lists them)
        from core.runs import get_run

        run = get_run(str(spec))
        if not run.has_model:
            raise ModelError(f"Run {spec!r} has no model file here ({run.status}).")
        return Path(run.path) / "model.keras"
    raise ModelError(f"No model file at {p}. Give a .keras or .h5 file, a run folder, or a run id "
                     "(`python -m core runs` lists them).")


def _model_config(path: Path) -> dict | None:
    """The architecture stored in a model file, read without building anything (None when unreadable)."""
    import json
    import zipfile

    try:
        if path.suffix == ".h5":
            import h5py

            with h5py.File(path, "r") as f:
                raw = f.attrs.get("model_config")
            raw = raw.decode() if isinstance(raw, bytes) else raw
            return json.loads(raw) if raw else None
        with zipfile.ZipFile(path) as zf:
            return json.loads(zf.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


def _layer_classes(cfg) -> list[tuple[str, str]]:
    """(class_name, module) of every layer in a Keras config, nested models included."""
    found = []
    if isinstance(cfg, dict):
        if "class_name" in cfg and isinstance(cfg.get("config"), dict):
            found.append((str(cfg["class_name"]), str(cfg.get("module") or "")))
        for v in cfg.values():
            found += _layer_classes(v)
    elif isinstance(cfg, list):
        for v in cfg:
            found += _layer_classes(v)
    return found


def check_model_file(path: Path) -> None:
    """Refuse files whose loading would run code: Lambda layers and custom (non-Keras) classes.

    Keras' safe mode refuses Lambda layers in .keras files; legacy .h5 files are not covered by it, so the
    stored architecture is inspected first, for both formats, with one message that says why.
    """
    cfg = _model_config(path)
    if cfg is None:
        return  # not readable as a model: load_model says so
    for name, module in _layer_classes(cfg):
        if name == "Lambda":
            raise ModelError(f"{path.name} contains a Lambda layer: loading it would run Python code stored in "
                             "the file, which is refused for safety. Rebuild the model with built-in Keras "
                             "layers, or save it without the Lambda layer.")
        if module and not module.startswith("keras"):
            raise ModelError(f"{path.name} uses a custom class {name!r} from {module!r}: only built-in Keras "
                             "layers can be loaded safely here (custom code is never imported from a file).")


def load_model(path: str | Path):
    """Load a saved .keras or .h5 model (inference only, not compiled), in Keras' safe mode."""
    p = Path(path)
    if p.is_dir():
        p = p / "model.keras"
    if not p.is_file():
        raise ModelError(f"No model file at {p}.")
    if p.suffix.lower() not in MODEL_SUFFIXES:
        raise ModelError(f"{p.name}: a model must be a .keras or .h5 file.")
    if _model_config(p) is None:  # Keras would say "File not found" of a file that is there but not a model
        raise ModelError(f"{p.name} is not a saved Keras model: a .keras file is a zip archive holding the "
                         "model's config.json, an .h5 file an HDF5 file holding its architecture (a file of "
                         "weights only, a truncated download or another format cannot be loaded).")
    check_model_file(p)
    import keras

    try:
        return keras.saving.load_model(p, compile=False, safe_mode=True)
    except Exception as e:  # Keras raises many types for a bad file; the user needs one message
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "Lambda" in text or "safe_mode" in text:
            raise ModelError(f"{p.name} contains code (a Lambda layer) that safe loading refuses.") from None
        if "Could not locate" in text or "Unknown" in text:
            raise ModelError(f"{p.name} uses a custom layer or function that is not part of Keras; only "
                             "built-in layers can be loaded.") from None
        raise ModelError(f"Could not load the model at {p.name}: {text}") from None


def input_kind(input_shape) -> tuple[str, int, int]:
    """How a model takes a digit: ("flat", 784, 1), ("gray2d", 28, 1) or ("image", side, channels).

    Raises ModelError naming the shape when it is not one of those (a digit is square, gray or RGB).
    """
    shape = tuple(input_shape[1:])
    if len(shape) == 1 and shape[0] is not None and int(np.sqrt(shape[0])) ** 2 == shape[0]:
        return "flat", int(np.sqrt(shape[0])), 1
    if len(shape) == 2 and shape[0] == shape[1] and shape[0]:
        return "gray2d", int(shape[0]), 1
    if len(shape) == 3 and shape[0] == shape[1] and shape[0] and shape[2] in (1, 3):
        return "image", int(shape[0]), int(shape[2])
    raise ModelError(f"The model's input shape {shape} is not a digit image: expected (784,) or (N*N,), (N, N), "
                     "(N, N, 1) or (N, N, 3) with N from 8 to 256.")


def check_model(model) -> None:
    """One image in, ten digit classes out: refuse anything else with a message naming the shapes."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelError(f"The model has {len(model.inputs)} inputs and {len(model.outputs)} outputs; one of "
                         "each is needed (a digit image in, 10 class scores out).")
    kind, side, _ = input_kind(model.input_shape)
    if not 8 <= side <= 256:
        raise ModelError(f"The model's input side is {side} pixels; 8 to 256 are supported.")
    out = tuple(model.output_shape[1:])
    if out != (10,):
        raise ModelError(f"The model outputs shape {out}; a digit classifier outputs 10 classes (0-9).")


def adapt_inputs(x: np.ndarray, input_shape) -> np.ndarray:
    """(n, 28, 28, 1) model inputs in [0, 1] reshaped or resized to what a model takes (see input_kind)."""
    import cv2

    kind, side, channels = input_kind(input_shape)
    if side != 28:
        x = np.stack([cv2.resize(a[:, :, 0], (side, side), interpolation=cv2.INTER_AREA if side < 28
                                 else cv2.INTER_LINEAR) for a in x])[..., None] if len(x) else \
            np.zeros((0, side, side, 1), np.float32)
    if kind == "flat":
        return x.reshape(len(x), side * side)
    if kind == "gray2d":
        return x[:, :, :, 0]
    return np.repeat(x, 3, axis=3) if channels == 3 else x


def model_inputs(X: np.ndarray, input_shape) -> np.ndarray:
    """Reframed digits (n, 28, 28[, 1]) as a model with this input shape takes them (float32, see adapt_inputs).

    Inputs already in the model's own shape (28x28x1 digits, 32x32x3 CIFAR-10 images) are kept as they are.
    """
    x = to_model_input(X)
    if x.shape[1:] != tuple(input_shape[1:]):
        x = adapt_inputs(x, input_shape).astype(np.float32)
    return x


def as_probabilities(p: np.ndarray) -> np.ndarray:
    """A model's outputs (n, 10) as class probabilities: outputs that are logits (rows that do not sum to 1, or
    negative values) get a softmax, so confidences compare between models."""
    if len(p) and ((np.abs(p.sum(axis=1) - 1) > 1e-3).any() or (p < 0).any()):
        z = p - p.max(axis=1, keepdims=True)
        p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    return p


def file_sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def describe_model(model) -> dict:
    """name, params, input_shape and outputs of a Keras model: its part of model_identity."""
    return {"name": model.name, "params": int(model.count_params()),
            "input_shape": list(model.input_shape[1:]), "outputs": int(model.output_shape[-1])}


def model_identity(path: str | Path, description: dict | None = None) -> dict:
    """Who the model under test is: name, parameters, input shape, SHA-256 of the file, what it learnt from.

    `description` is `Predictor.describe()` (or describe_model of a loaded model) when the model is loaded.
    """
    path = Path(path)
    info = {"file": path.name, "sha256": file_sha256(path)}
    if description is not None:
        info.update(description)
    run_json = path.parent / "run.json"
    if path.name == "model.keras" and run_json.is_file():  # a run folder says what it was trained on
        import json

        try:
            run = json.loads(run_json.read_text(encoding="utf-8"))
            data = run.get("data", {}).get("train", {}) if isinstance(run.get("data"), dict) else {}
            info.update(run=run.get("id", path.parent.name), title=run.get("title", ""),
                        trained_on=data.get("provenance") or run.get("source") or run.get("dataset", ""))
        except (OSError, ValueError, AttributeError):
            pass
    info.setdefault("trained_on", "not known (an uploaded file)")
    return info


def save_uploaded_model(data: bytes, name: str, load=None) -> Path:
    """Keep an uploaded model file under <data home>/models/<sha256>.<suffix> (atomically); checks it loads.

    `load(path)`, when given, loads and checks it elsewhere (the dashboard's model process), raising ModelError,
    and returns None when it cannot: the file is then loaded and checked here, with TensorFlow in this process."""
    import hashlib

    from core.storage import atomic_write_bytes

    suffix = Path(name).suffix.lower()
    if suffix not in MODEL_SUFFIXES:
        raise ModelError(f"{name}: a model must be a .keras or .h5 file.")
    if not data:
        raise ModelError(f"{name}: the file is empty.")
    path = config.data_home() / "models" / f"{hashlib.sha256(data).hexdigest()[:16]}{suffix}"
    if not path.exists():
        atomic_write_bytes(path, data)
    try:
        if load is None or load(str(path)) is None:
            check_model(load_model(path))
    except ModelError as e:
        path.unlink(missing_ok=True)
        raise ModelError(str(e).replace(path.name, name)) from None
    return path


def reused_model_path() -> Path:
    return config.REUSED_MODEL_DIR / "model.keras"


class Predictor:
    """Fast inference for one model: a traced call of the model, not `model.predict`.

    `model.predict` builds a data pipeline on every call (~60 ms for one image); a tf.function with a fixed
    input signature is traced once and then costs about a millisecond.
    """

    def __init__(self, model) -> None:
        import tensorflow as tf

        self.model = model
        self._features: Predictor | None = None  # the penultimate-layer model, made on first use
        shape = (None,) + tuple(model.input_shape[1:])
        self._call = tf.function(lambda x: model(x, training=False),
                                 input_signature=[tf.TensorSpec(shape, tf.float32)])

    @classmethod
    def load(cls, path: str | Path | None = None) -> "Predictor":
        """The predictor of a model file (None: the shipped reused model), checked to classify digits."""
        model = load_model(resolve_model_path(path))
        check_model(model)
        return cls(model)

    def outputs(self, X: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """The model's outputs (probabilities, or features for a feature extractor) for inputs (n, 28, 28[, 1]).

        A model that takes another input (flat 784, 28x28, 32x32x3...) gets the same digits reshaped or
        resized to it (adapt_inputs): every model sees the same reframed 28x28 image.
        """
        x = model_inputs(X, self.model.input_shape)
        if len(x) == 0:
            return np.zeros((0,) + tuple(self.model.output_shape[1:]), np.float32)
        out = [self._call(x[i : i + batch_size]).numpy() for i in range(0, len(x), batch_size)]
        return np.concatenate(out).astype(np.float32)

    def describe(self) -> dict:
        """name, params, input_shape, outputs (see model_identity)."""
        return describe_model(self.model)

    def features(self, X: np.ndarray) -> np.ndarray:
        """Penultimate-layer features (the input of the last Dense layer) for inputs X of shape (n, 28, 28[, 1])."""
        if self._features is None:
            from core.shift import penultimate_model

            self._features = Predictor(penultimate_model(self.model))
        return self._features.outputs(X)

    def predict_proba(self, X: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """Class probabilities, shape (n, 10), for model inputs X of shape (n, 28, 28[, 1]).

        A model that ends in logits (its rows do not sum to 1) gets a softmax, so confidences compare.
        """
        return as_probabilities(self.outputs(X, batch_size))


@dataclass(frozen=True)
class Prediction:
    """What the reused model says about one image, with the reframing that produced its input."""

    digit: int | None  # None when the image is blank
    confidence: float | None
    probabilities: tuple[float, ...] | None
    reframed: Reframed

    def as_dict(self) -> dict:
        return {"digit": self.digit, "confidence": self.confidence,
                "probabilities": None if self.probabilities is None else list(self.probabilities),
                "reframing": self.reframed.method, "blank": self.reframed.blank}


def classify(predictor: "Predictor", image: np.ndarray, method: str = DEFAULT_METHOD) -> Prediction:
    """Reframe one image and classify it; a blank image is reported as such, never classified."""
    r = reframe(image, method)
    if r.blank:
        return Prediction(None, None, None, r)
    p = predictor.predict_proba(r.image[None])[0]
    return Prediction(int(p.argmax()), float(p.max()), tuple(float(v) for v in p), r)
