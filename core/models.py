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
    """The one preprocessing path shared by training and inference: (n, 28, 28) -> (n, 28, 28, 1) in [0, 1]."""
    x = np.asarray(images)
    x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32, copy=False)
    return x.reshape(-1, 28, 28, 1)


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
    size = min(MOBILENET_SIZES, key=lambda s: abs(s - input_size))
    cached = config.keras_home() / "models" / IMAGENET_FILES[arch].format(size=size)
    if not cached.exists():
        raise ModelError(
            f"ImageNet weights for {DISPLAY_NAMES[arch]} are not available offline: {cached} is missing. "
            "Either run once with internet so Keras caches them, pass --weights PATH to a local copy of that "
            "file, or choose weights 'none' to train from scratch."
        )
    return str(cached)


def _adapt_gray(inputs, input_size: int):
    """28x28x1 digits -> input_size x input_size x 3 in [0, 255], the form ImageNet backbones expect."""
    from keras import layers

    x = layers.Resizing(input_size, input_size, interpolation="bilinear")(inputs)
    x = layers.Concatenate(axis=-1)([x, x, x])
    return layers.Rescaling(255.0)(x)


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


def load_model(path: str | Path):
    """Load a saved .keras model (inference only, not compiled)."""
    import keras

    p = Path(path)
    if p.is_dir():
        p = p / "model.keras"
    if not p.is_file():
        raise ModelError(f"No model file at {p}.")
    try:
        return keras.saving.load_model(p, compile=False)
    except Exception as e:  # Keras raises many types for a bad file; the user needs one message
        raise ModelError(f"Could not load the model at {p}: {e}") from e


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
        shape = (None,) + tuple(model.input_shape[1:])
        self._call = tf.function(lambda x: model(x, training=False),
                                 input_signature=[tf.TensorSpec(shape, tf.float32)])

    @classmethod
    def load(cls, path: str | Path | None = None) -> "Predictor":
        return cls(load_model(path or reused_model_path()))

    def outputs(self, X: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """The model's outputs (probabilities, or features for a feature extractor) for inputs (n, 28, 28[, 1])."""
        x = to_model_input(X)
        if len(x) == 0:
            return np.zeros((0,) + tuple(self.model.output_shape[1:]), np.float32)
        out = [self._call(x[i : i + batch_size]).numpy() for i in range(0, len(x), batch_size)]
        return np.concatenate(out).astype(np.float32)

    def predict_proba(self, X: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """Class probabilities, shape (n, 10), for model inputs X of shape (n, 28, 28[, 1])."""
        return self.outputs(X, batch_size)


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
