"""Training a run: one configuration builds the model, fits it with Keras callbacks, writes the run store.

The same `train` runs in the foreground (`python -m core train`) and in a background job process; a Keras
callback writes each epoch to the run folder, which is how pages see live progress without sharing memory.
"""
from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

import numpy as np

from core import datasets
from core.errors import DigitLabError, InvalidOptionError
from core.models import ARCHITECTURES, DISPLAY_NAMES, to_model_input
from core.runs import RunWriter
from core.storage import atomic_output

OPTIMIZERS = ("adam", "sgd", "rmsprop")
#: The reused CNN's targets on the official MNIST test set, by training set (issue: foundation).
CNN_TARGETS = {datasets.MNIST_SUBSET: 0.97, datasets.MNIST_FULL: 0.99}


@dataclass
class RunConfig:
    """Everything that defines a training run. Defaults are the reused model's settings."""

    architecture: str = "cnn"
    dataset: str = datasets.MNIST_SUBSET
    input_size: int = 28
    epochs: int = 15
    batch_size: int = 128
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    augment: bool = False
    elastic_copies: int = 0  # with augment: add N elastically distorted copies of each training image
    early_stopping: int | None = 5  # patience in epochs on val_loss; None disables
    weights: str = "none"  # transfer models: imagenet | none | path to a .h5 file
    fine_tune_layers: int = 0  # transfer models: unfreeze the last N backbone layers after the head is trained
    fine_tune_epochs: int = 0
    fine_tune_learning_rate: float = 1e-5
    max_samples: int | None = None  # cap on training images (stratified), for quick runs
    validation_fraction: float = 0.1
    random_state: int = 0
    cache_features: bool = True  # frozen pretrained backbone, no augmentation: train the head on cached features
    reproduces: str | None = None  # id of the published reference run this run reproduces (core.reproduce)

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise InvalidOptionError("architecture", self.architecture, ARCHITECTURES)
        if self.dataset not in datasets.TRAINING_SETS:
            raise InvalidOptionError("dataset", self.dataset, datasets.TRAINING_SETS)
        if self.optimizer not in OPTIMIZERS:
            raise InvalidOptionError("optimizer", self.optimizer, OPTIMIZERS)
        for name, (lo, hi) in limits(self.architecture).items():
            value = getattr(self, name)
            if value is None and name in OPTIONAL:
                continue
            _check_range(name, value, lo, hi, float if name in FLOAT_OPTIONS else int, optional=name in OPTIONAL)
        if self.weights is None:
            self.weights = "none"
        if not self.is_transfer and self.weights != "none":
            raise InvalidOptionError("weights", self.weights, f"'none' for {self.architecture} (only VGG16 and "
                                     "MobileNetV2 take pretrained weights)")
        if not isinstance(self.weights, str) or not self.weights.strip():
            raise InvalidOptionError("weights", self.weights, "'imagenet', 'none' or the path of a .h5 file")
        if self.elastic_copies and datasets.INPUT_SHAPES[self.dataset][-1] != 1:
            # Elastic distortion imitates another hand drawing the same stroke: meaningless for photographs.
            raise InvalidOptionError("elastic_copies", self.elastic_copies, f"0 for {self.dataset} (elastic "
                                     "distortion is for gray images)")

    @classmethod
    def preset(cls, architecture: str, **overrides) -> "RunConfig":
        """Sensible settings per architecture (the launch form's presets), then the overrides."""
        if architecture not in PRESETS:
            raise InvalidOptionError("architecture", architecture, ARCHITECTURES)
        return cls.from_dict({"architecture": architecture, **PRESETS[architecture], **overrides})

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def is_transfer(self) -> bool:
        return self.architecture in ("vgg16", "mobilenetv2")

    @property
    def pretrained(self) -> bool:
        """A transfer model with ImageNet (or file) weights: its backbone starts frozen."""
        return self.is_transfer and self.weights not in (None, "none")

    @property
    def fine_tunes(self) -> bool:
        """Head first, then the last layers: only for a pretrained backbone (from scratch, all of it learns)."""
        return self.pretrained and self.fine_tune_layers > 0 and self.fine_tune_epochs > 0


#: Valid ranges of every numeric option (inclusive), shared by RunConfig, the CLI and the launch form.
LIMITS = {
    "epochs": (1, 1000),
    "batch_size": (1, 4096),
    "learning_rate": (1e-7, 1.0),
    "fine_tune_learning_rate": (1e-8, 1.0),
    "elastic_copies": (0, 20),
    "early_stopping": (1, 100),  # or None: off
    # A stratified split of the training images needs at least two per class (one each side of the split).
    "max_samples": (20, 60_000),  # or None: all
    "fine_tune_epochs": (0, 1000),
    "validation_fraction": (0.05, 0.5),
    "random_state": (0, 2**32 - 1),
}
#: Input sizes per architecture: the digit models take MNIST's 28x28; ImageNet backbones need at least 32 px.
INPUT_SIZES = {"mlp": (28, 28), "cnn": (28, 28), "cnn-deep": (28, 28), "vgg16": (32, 96), "mobilenetv2": (32, 96)}
#: Layers in each backbone without its classifier (keras.applications, checked by a test): the most that
#: fine-tuning can unfreeze. 0 for architectures without a backbone.
BACKBONE_LAYERS = {"vgg16": 19, "mobilenetv2": 155}
OPTIONAL = ("early_stopping", "max_samples")
FLOAT_OPTIONS = ("learning_rate", "fine_tune_learning_rate", "validation_fraction")


def limits(architecture: str) -> dict[str, tuple[float, float]]:
    """Every numeric option's valid (low, high) range for an architecture."""
    return {**LIMITS, "input_size": INPUT_SIZES[architecture],
            "fine_tune_layers": (0, BACKBONE_LAYERS.get(architecture, 0))}


def _check_range(name: str, value, lo, hi, kind: type, optional: bool = False) -> None:
    """Raise InvalidOptionError naming the valid range unless lo <= value <= hi (and an integer for ints)."""
    if kind is int:
        ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool) and lo <= value <= hi
        valid = f"{lo}" if lo == hi else f"an integer from {lo:,} to {hi:,}".replace(",", "")
    else:
        ok = (isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
              and np.isfinite(value) and lo <= value <= hi)
        valid = f"a number from {lo:g} to {hi:g}"
    if not ok:
        raise InvalidOptionError(name, value, valid + (" (or none)" if optional else ""))


#: Per-architecture defaults: small digits need few epochs; transfer backbones need >= 32 px and a low rate
#: when fine-tuning (the seed reports used 1e-3 for the head, 1e-5 for fine-tuning).
PRESETS = {
    "mlp": {"epochs": 20, "batch_size": 128, "learning_rate": 1e-3},
    "cnn": {"epochs": 15, "batch_size": 128, "learning_rate": 1e-3},
    "cnn-deep": {"epochs": 15, "batch_size": 128, "learning_rate": 1e-3},
    "vgg16": {"epochs": 5, "batch_size": 64, "learning_rate": 1e-3, "input_size": 32, "weights": "imagenet"},
    "mobilenetv2": {"epochs": 5, "batch_size": 64, "learning_rate": 1e-3, "input_size": 32, "weights": "imagenet",
                    "fine_tune_layers": 20, "fine_tune_epochs": 2, "fine_tune_learning_rate": 1e-5},
}


def rebuild_command(cfg: RunConfig) -> str:
    """The CLI command that trains this configuration again (shipped runs keep it when the model is too big)."""
    d, defaults = cfg.to_dict(), RunConfig.preset(cfg.architecture).to_dict()
    flags = {"dataset": "--dataset", "epochs": "--epochs", "batch_size": "--batch-size", "learning_rate": "--lr",
             "max_samples": "--max-samples", "input_size": "--input-size", "weights": "--weights",
             "fine_tune_layers": "--fine-tune-layers", "fine_tune_epochs": "--fine-tune-epochs",
             "random_state": "--seed", "early_stopping": "--early-stopping"}
    parts = ["python -m core train", f"--arch {cfg.architecture}"]
    parts += [f"{flag} {0 if d[k] is None and k == 'early_stopping' else d[k]}" for k, flag in flags.items()
              if d[k] != defaults[k] or k in ("epochs", "random_state")]
    if cfg.augment:
        parts.append("--augment")
    if cfg.elastic_copies:
        parts.append(f"--elastic {cfg.elastic_copies}")
    return " ".join(parts)


def build_model(cfg: RunConfig):
    """The Keras model a configuration asks for (ImageNet weights resolved offline-safely)."""
    from core import models

    shape = datasets.INPUT_SHAPES[cfg.dataset]  # CIFAR-10 in colour; digits and Fashion-MNIST 28x28x1
    if cfg.architecture == "mlp":
        return models.build_mlp(shape)
    if cfg.architecture == "cnn":
        return models.build_simple_cnn(shape)
    if cfg.architecture == "cnn-deep":
        return models.build_deep_cnn(shape)
    return models.assemble(*build_transfer_parts(cfg))


def build_transfer_parts(cfg: RunConfig):
    from core import models

    weights = models.resolve_imagenet_weights(cfg.architecture, cfg.weights, cfg.input_size)
    return models.build_transfer_parts(cfg.architecture, input_shape=datasets.INPUT_SHAPES[cfg.dataset],
                                       input_size=cfg.input_size, weights=weights)


def uses_feature_cache(cfg: RunConfig) -> bool:
    """Frozen pretrained backbone and no augmentation: the backbone's output never changes, compute it once."""
    return cfg.pretrained and not cfg.augment and cfg.cache_features


def _weights_identity(cfg: RunConfig) -> str:
    from core import models

    path = models.resolve_imagenet_weights(cfg.architecture, cfg.weights, cfg.input_size)
    st = Path(path).stat()
    return f"{Path(path).name}:{st.st_size}:{int(st.st_mtime)}"


def cached_features(feature_model, cfg: RunConfig, x: np.ndarray, batch_size: int = 512) -> tuple[np.ndarray, bool]:
    """Backbone features of x, from the cache when this (backbone, weights, input size, data) was seen before.

    Returns (features, hit).
    """
    import hashlib

    from core import config

    h = hashlib.sha1()
    for part in (cfg.architecture, cfg.input_size, _weights_identity(cfg), x.shape, x.tobytes()):
        h.update(part if isinstance(part, bytes) else str(part).encode())
    path = config.data_home() / "cache" / "features" / f"{h.hexdigest()[:20]}.npy"
    if path.exists():
        try:
            return np.load(path), True
        except (OSError, ValueError):
            pass  # a damaged cache entry is computed again and replaced
    from core.models import Predictor

    feats = Predictor(feature_model).outputs(x, batch_size=batch_size)  # a traced call: 3x faster than predict
    try:
        with atomic_output(path) as tmp:
            np.save(tmp, feats)
    except DigitLabError as e:  # a cache that cannot be written never fails the run it serves
        import warnings

        warnings.warn(f"The feature cache was not saved ({e}); the next run computes the features again.")
    return feats, False


def _optimizer(name: str, lr: float):
    import keras

    return {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD, "rmsprop": keras.optimizers.RMSprop}[name](
        learning_rate=lr
    )


def augmenter(random_state: int = 0):
    """Small geometric jitter, the kind handwriting has: rotation, shift and zoom, black fill."""
    import keras
    from keras import layers

    return keras.Sequential([
        layers.RandomRotation(0.04, fill_mode="constant", seed=random_state),
        layers.RandomShear(0.15, 0.0, fill_mode="constant", seed=random_state + 3),
        layers.RandomTranslation(0.1, 0.1, fill_mode="constant", seed=random_state + 1),
        layers.RandomZoom((-0.15, 0.15), fill_mode="constant", seed=random_state + 2),
    ], name="augment")


def scan_jitter(x, low: int = 8, p: float = 0.5):
    """Make a batch look like other scans: random stroke width, then (with probability p) low resolution.

    Scanned forms and small photos reach the model with other pen widths and blurred by upscaling (an 8x8 scan
    becomes a 20x20 blob); MNIST never shows the model such strokes. Simulating them in training makes the
    model tolerate them while its architecture stays exactly the same.
    """
    import tensorflow as tf

    thicker = tf.nn.max_pool2d(x, 2, 1, "SAME")
    thinner = -tf.nn.max_pool2d(-x, 2, 1, "SAME")
    width = tf.random.uniform((), 0, 3, dtype=tf.int32)
    x = tf.switch_case(width, [lambda: x, lambda: thicker, lambda: thinner])
    size = tf.random.uniform((), low, 29, dtype=tf.int32)
    small = tf.image.resize(x, tf.stack([size, size]), method="area")
    blurred = tf.image.resize(small, (28, 28), method="bilinear")
    return tf.cond(tf.random.uniform(()) < p, lambda: blurred, lambda: x)


def elastic_copies(images: np.ndarray, copies: int, alpha: float = 12.0, sigma: float = 3.0,
                   random_state: int = 0) -> np.ndarray:
    """`copies` elastically distorted versions of each (n, 28, 28, 1) image, stacked copy after copy.

    Elastic distortion (Simard, Steinkraus and Platt, ICDAR 2003) bends each image along a smooth random
    displacement field: the way another hand draws the same digit, which rotations and shifts cannot mimic.
    Gentler than Simard's alpha=34, sigma=4, which over-distorts 5,000 digits (measured: see the README).
    """
    import cv2

    rng = np.random.default_rng(random_state)
    n, h, w = images.shape[:3]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    out = np.empty((copies * n, h, w, 1), np.float32)
    for k in range(copies * n):
        dx, dy = (cv2.GaussianBlur(rng.uniform(-1, 1, (h, w)).astype(np.float32), (0, 0), sigma) * alpha
                  for _ in range(2))
        out[k, :, :, 0] = cv2.remap(images[k % n, :, :, 0], gx + dx, gy + dy, cv2.INTER_LINEAR, borderValue=0)
    return out


def make_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, shuffle: bool, augment: bool, random_state: int,
                 digits: bool = True):
    """A batched tf.data pipeline; with `augment`, geometric jitter, plus scan jitter for digits (`digits`):
    stroke width and scan resolution are properties of handwritten digits, not of clothes or photographs."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        ds = ds.shuffle(len(x), seed=random_state, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if augment:
        aug = augmenter(random_state)
        jitter = scan_jitter if digits else (lambda a: a)
        ds = ds.map(lambda a, b: (jitter(aug(a, training=True)), b), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _epoch_logger(writer: RunWriter, on_epoch: Callable[[dict], None] | None, should_stop: Callable[[], bool] | None,
                  epoch_offset: Callable[[], int]):
    import keras

    class EpochLogger(keras.callbacks.Callback):
        """Writes each epoch to the run store; stops training when the job was cancelled."""

        def on_epoch_begin(self, epoch, logs=None):
            self._t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            row = {"epoch": epoch_offset() + 1, "seconds": round(time.perf_counter() - self._t0, 3)}
            row.update({k: float(logs[k]) for k in ("loss", "accuracy", "val_loss", "val_accuracy") if k in logs})
            writer.append_epoch(row)
            if on_epoch:
                on_epoch(row)
            if should_stop and should_stop():
                self.model.stop_training = True

    return EpochLogger()


def device_name() -> str:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return f"GPU ({len(gpus)}x {gpus[0].name})" if gpus else f"CPU ({platform.processor() or platform.machine()})"


def library_versions() -> dict:
    import keras
    import sklearn
    import tensorflow as tf

    return {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__, "scikit-learn": sklearn.__version__}


def _stratified_cap(ds: datasets.Dataset, n: int | None, random_state: int) -> datasets.Dataset:
    if n is None or n >= len(ds):
        return ds
    from sklearn.model_selection import train_test_split

    idx, _ = train_test_split(np.arange(len(ds)), train_size=n, stratify=ds.labels, random_state=random_state)
    return ds.subset(np.sort(idx))


def load_data(cfg: RunConfig):
    """(train, validation, test) for a run; test is the data set's own official test split (for MNIST, when this
    machine has it; None otherwise)."""
    train, val = datasets.load_training_set(cfg.dataset, cfg.validation_fraction, cfg.random_state)
    train = _stratified_cap(train, cfg.max_samples, cfg.random_state)
    val = _stratified_cap(val, None if cfg.max_samples is None else max(cfg.max_samples // 5, 50), cfg.random_state)
    test = datasets.load_test_set(cfg.dataset)
    return train, val, test


def count_params(model) -> tuple[int, int]:

    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    total = sum(int(np.prod(w.shape)) for w in model.weights)
    return total, trainable


def train(cfg: RunConfig, run_dir: str | Path, on_epoch: Callable[[dict], None] | None = None,
          should_stop: Callable[[], bool] | None = None, title: str | None = None) -> dict:
    """Train one run into `run_dir` and return its run.json fields (metrics included).

    Writes config.json first, history.csv after every epoch, then metrics.json and model.keras; run.json's
    status goes running -> done (or cancelled); a failure or Ctrl-C leaves it failed or interrupted, with the
    reason. Raises DigitLabError subclasses for bad configurations and for files that cannot be written.
    """
    writer = RunWriter(Path(run_dir))
    writer.write_config(cfg.to_dict())
    writer.mark_running(title=title or f"{DISPLAY_NAMES[cfg.architecture]} ({cfg.architecture}) on {cfg.dataset}",
                        dataset=cfg.dataset, input_shape=list(datasets.INPUT_SHAPES[cfg.dataset]),
                        **({"reproduces": cfg.reproduces} if cfg.reproduces else {}))
    try:
        return _train(cfg, writer, on_epoch, should_stop)
    except KeyboardInterrupt:  # Ctrl-C (or SIGTERM, which the CLI turns into it): say so now, not on next read
        _mark_stopped(writer, "interrupted", "stopped by the user (Ctrl-C) before the run finished; the "
                      f"{len(writer.history)} epochs it finished are kept")
        raise
    except Exception as e:
        _mark_stopped(writer, "failed", str(e) if isinstance(e, DigitLabError) else f"{type(e).__name__}: {e}")
        raise


def _mark_stopped(writer: RunWriter, status: str, error: str) -> None:
    try:
        writer.update_info(status=status, error=error, finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    except DigitLabError:
        pass  # the disk may be what failed; the caller reports the original error


def _train(cfg: RunConfig, writer: RunWriter, on_epoch, should_stop) -> dict:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(cfg.random_state)
    gpus = tf.config.list_physical_devices("GPU")
    # On a GPU the big backbones run in float16 with float32 weights (the output layer stays float32); on a
    # CPU float16 is only slower. XLA is Keras' default (jit_compile="auto") where the model supports it.
    keras.mixed_precision.set_global_policy("mixed_float16" if gpus and cfg.is_transfer else "float32")
    train_ds, val_ds, test_ds = load_data(cfg)
    if cfg.is_transfer:
        feature_model, head = build_transfer_parts(cfg)
        from core.models import assemble

        model = assemble(feature_model, head)
    else:
        model = build_model(cfg)
    total, trainable = count_params(model)
    x_tr, y_tr = to_model_input(train_ds.images), train_ds.labels
    x_va, y_va = to_model_input(val_ds.images), val_ds.labels
    feature_cache = "off"
    if uses_feature_cache(cfg):
        # Fit only the head on backbone features computed once: same function, no backbone pass per epoch.
        t0 = time.perf_counter()
        (f_tr, hit_tr), (f_va, hit_va) = cached_features(feature_model, cfg, x_tr), cached_features(feature_model, cfg, x_va)
        feature_cache = f"hit ({time.perf_counter() - t0:.1f} s to load)" if hit_tr and hit_va else \
            f"computed ({time.perf_counter() - t0:.1f} s)"
        fit_model, fit_x, fit_vx = head, f_tr, f_va
    else:
        fit_model, fit_x, fit_vx = model, x_tr, x_va
    writer.update_info(
        device=device_name(), versions=library_versions(), params=total,
        trainable_params=trainable, weights=cfg.weights, feature_cache=feature_cache,
        data={"train": {"n": len(train_ds), "provenance": train_ds.provenance},
              "validation": {"n": len(val_ds), "provenance": val_ds.provenance},
              "test": None if test_ds is None else {"n": len(test_ds), "provenance": test_ds.provenance}},
    )
    augment = cfg.augment and fit_model is model
    fit_y = y_tr
    if augment and cfg.elastic_copies:
        fit_x = np.concatenate([fit_x, elastic_copies(fit_x, cfg.elastic_copies, random_state=cfg.random_state)])
        fit_y = np.tile(y_tr, cfg.elastic_copies + 1)
    digits = cfg.dataset in datasets.DIGIT_SETS
    fit_ds = make_dataset(fit_x, fit_y, cfg.batch_size, True, augment, cfg.random_state, digits)
    val_tf = make_dataset(fit_vx, y_va, cfg.batch_size, False, False, cfg.random_state)
    epoch_offset = lambda: len(writer.history)  # noqa: E731 - numbering continues through fine-tuning
    callbacks = [_epoch_logger(writer, on_epoch, should_stop, epoch_offset)]
    if cfg.early_stopping:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.early_stopping,
                                                       restore_best_weights=True))
    started = time.time()
    fit_model.compile(optimizer=_optimizer(cfg.optimizer, cfg.learning_rate),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    fit_model.fit(fit_ds, validation_data=val_tf, epochs=cfg.epochs, callbacks=callbacks, verbose=0)
    cancelled = bool(should_stop and should_stop())
    if cfg.fine_tunes and not cancelled:
        from core.models import backbone_of

        backbone = backbone_of(model)
        backbone.trainable = True
        for layer in backbone.layers[: -cfg.fine_tune_layers]:
            layer.trainable = False
        model.compile(optimizer=_optimizer(cfg.optimizer, cfg.fine_tune_learning_rate),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        fit_ds = make_dataset(x_tr, y_tr, cfg.batch_size, True, cfg.augment, cfg.random_state, digits)
        val_tf = make_dataset(x_va, y_va, cfg.batch_size, False, False, cfg.random_state)
        model.fit(fit_ds, validation_data=val_tf, epochs=cfg.fine_tune_epochs, callbacks=callbacks, verbose=0)
        cancelled = bool(should_stop and should_stop())
    metrics = evaluate_model(model, test_ds if test_ds is not None else val_ds, cfg.batch_size)
    metrics["test_set"] = (test_ds or val_ds).provenance
    if cfg.architecture == "cnn" and test_ds is not None and cfg.dataset in CNN_TARGETS:
        metrics["target_accuracy"] = CNN_TARGETS[cfg.dataset]
        metrics["target_met"] = metrics["test_accuracy"] >= CNN_TARGETS[cfg.dataset]
    writer.write_metrics(metrics)
    with atomic_output(writer.path / "model.keras") as tmp:  # a full disk leaves no truncated model file
        inference_copy(model).save(tmp)
    wall = round(time.time() - started, 2)
    size_mb = (writer.path / "model.keras").stat().st_size / 2**20
    writer.update_info(status="cancelled" if cancelled else "done", finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                       wall_seconds=wall, trainable_params=count_params(model)[1], model_mb=round(size_mb, 1),
                       rebuild=rebuild_command(cfg))
    return {"id": writer.id, "path": str(writer.path), "status": "cancelled" if cancelled else "done",
            "wall_seconds": wall, "epochs": len(writer.history), **metrics}


def inference_copy(model):
    """The model without its optimizer state (Adam's moments triple a saved file; inference never needs them)."""
    import keras

    # Not keras.models.clone_model: in Keras 3 the clone comes back compiled, optimizer included.
    clean = keras.Model.from_config(model.get_config())
    clean.set_weights(model.get_weights())
    return clean


def evaluate_model(model, ds: datasets.Dataset, batch_size: int = 512) -> dict:
    """Test loss and accuracy of a trained model on a data set in its training form (digits, clothes, CIFAR-10)."""
    from core.models import Predictor

    proba = Predictor(model).predict_proba(to_model_input(ds.images), batch_size=batch_size)
    y = ds.labels
    loss = float(-np.mean(np.log(np.clip(proba[np.arange(len(y)), y], 1e-7, 1.0))))
    return {"test_accuracy": float(np.mean(proba.argmax(1) == y)), "test_loss": loss, "test_n": int(len(y))}
