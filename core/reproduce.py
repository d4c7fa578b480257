"""The published reference runs, reproduced: the same architecture and settings on the run's own data set.

Each run in models/reference-runs/runs.json maps to a recipe: this product's nearest architecture, the data set
the report trained on (when it can be had: MNIST, Fashion-MNIST and CIFAR-10 come from the Keras cache, fetched on
request), the published settings (epochs, batch size, input size, weights, fine-tuning), and in words every way
ours differs from theirs (a layer more or less, a setting the report did not publish). `comparison` puts the
published curve and ours on the same axes, with the difference in final test accuracy.

Nothing here trains or downloads on import; `plans()` only looks at file names, so a page can call it on every
rerun.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from core import datasets
from core.errors import DigitLabError

if TYPE_CHECKING:
    from core.training import RunConfig

class NotReproducibleError(DigitLabError):
    """A published run whose data set this product cannot obtain (PolyMNIST), or that it does not know."""


#: Why the PolyMNIST runs cannot be reproduced, in one place.
POLYMNIST = ("PolyMNIST (the multimodal MMNIST of Sutter et al., 2021) cannot be had here: Keras does not publish "
             "it (this product fetches only the data sets Keras publishes, from Keras' own URLs and checksums), and "
             "these runs classify which of 5 modalities an image comes from, not its digit, so no training set of "
             "this product stands in for it")
ASSUMED_LR = "learning rate not published: Adam at 1e-3 (the Keras default) assumed"


@dataclass(frozen=True)
class Recipe:
    """How one published run is reproduced: RunConfig settings, and how ours differs (None: cannot be)."""

    settings: dict | None
    differences: tuple[str, ...] = ()
    why_not: str = ""


RECIPES: dict[str, Recipe] = {
    "lab3-polymnist-mlp": Recipe(None, why_not=POLYMNIST),
    "lab3-polymnist-cnn": Recipe(None, why_not=POLYMNIST),
    "lab3-polymnist-cnn-aug": Recipe(None, why_not=POLYMNIST),
    "lab3-mnist-digit-cnn": Recipe(
        {"architecture": "cnn-deep", "dataset": datasets.MNIST_FULL, "epochs": 20, "batch_size": 128,
         "learning_rate": 1e-3, "augment": True, "early_stopping": 5, "validation_fraction": 0.1},
        ("published augmentation: rotation 10 degrees, shift 0.1, zoom 0.1 (ImageDataGenerator); ours: this "
         "product's augmentation (rotation, shear, shift, zoom, stroke-width and scan-resolution jitter)",
         "ReduceLROnPlateau is not available here: the learning rate stays at 1e-3",
         "early-stopping patience not published: 5 epochs here",
         "same split: 54,000 training / 6,000 validation / the official 10,000 test digits")),
    "prac2-fashion-cnn-simple": Recipe(
        {"architecture": "cnn", "dataset": datasets.FASHION_MNIST, "epochs": 10, "batch_size": 64,
         "learning_rate": 1e-3, "early_stopping": None},
        ("published model: 'same'-padded 32-64 convolutions, 50,186 parameters; ours: the Keras simple convnet "
         "('valid' padding, dropout 0.5), 34,826 parameters",
         "published: trained on all 60,000 images without a validation split (training curves only); ours holds "
         "10 % out for validation", ASSUMED_LR)),
    "prac2-fashion-cnn-deep": Recipe(
        {"architecture": "cnn-deep", "dataset": datasets.FASHION_MNIST, "epochs": 20, "batch_size": 64,
         "learning_rate": 1e-3, "early_stopping": None},
        ("published model: convolutions 32-32 / 64-64 / 128 + Dense 256, 436,586 parameters; ours: two "
         "Conv-BN blocks 32-32 / 64-64 + Dense 256 (871,210 parameters on 28x28 images)",
         "published: no validation split (training curves only); ours holds 10 % out", ASSUMED_LR)),
    "prac2-fashion-vgg16-scratch": Recipe(
        {"architecture": "vgg16", "dataset": datasets.FASHION_MNIST, "input_size": 96, "weights": "none",
         "epochs": 30, "batch_size": 32, "learning_rate": 1e-3, "early_stopping": None,
         "fine_tune_layers": 0, "fine_tune_epochs": 0},
        ("published: ~223 s per epoch on a Colab GPU; on a CPU an epoch of 54,000 images at 96 px takes hours "
         "(try --max-samples for a quick look)",
         "published: no validation split (training curves only); ours holds 10 % out", ASSUMED_LR)),
    "prac2-fashion-vgg16-transfer": Recipe(
        {"architecture": "vgg16", "dataset": datasets.FASHION_MNIST, "input_size": 96, "weights": "imagenet",
         "epochs": 15, "batch_size": 32, "learning_rate": 1e-3, "early_stopping": None,
         "fine_tune_layers": 0, "fine_tune_epochs": 0},
        ("same head (Flatten, Dense 256, Dropout, Dense 10) on the frozen ImageNet backbone; ours trains it on "
         "backbone features computed once (the same function, much faster)",
         "published: no validation split (training curves only); ours holds 10 % out", ASSUMED_LR)),
    "ut3-cifar10-cnn-simple": Recipe(
        {"architecture": "cnn", "dataset": datasets.CIFAR10, "epochs": 8, "batch_size": 128,
         "learning_rate": 1e-3, "early_stopping": None},
        ("published model: 'same'-padded 32-64 convolutions + Dense 512, 2,122,186 parameters; ours: the Keras "
         "simple convnet without the Dense 512 layer (42,442 parameters on 32x32x3)",
         "published: validated on the test set, EarlyStopping ended it at epoch 8; ours validates on 10 % of the "
         "training images (the test set stays unseen) and runs 8 epochs", ASSUMED_LR)),
    "ut3-cifar10-vgg16-transfer": Recipe(
        {"architecture": "vgg16", "dataset": datasets.CIFAR10, "input_size": 32, "weights": "imagenet",
         "epochs": 10, "batch_size": 128, "learning_rate": 1e-3, "early_stopping": None,
         "fine_tune_layers": 0, "fine_tune_epochs": 0},
        ("published head: Dense 10 on the backbone's 512 features (5,130 trainable parameters); ours: Flatten, "
         "Dense 256, Dropout 0.5, Dense 10 (133,898 trainable)",
         "published: validated on the test set; ours on 10 % of the training images", ASSUMED_LR)),
    "tec-fashion-mobilenetv2": Recipe(
        {"architecture": "mobilenetv2", "dataset": datasets.FASHION_MNIST, "input_size": 96, "weights": "imagenet",
         "epochs": 5, "batch_size": 64, "learning_rate": 1e-3, "early_stopping": None,
         "fine_tune_layers": 20, "fine_tune_epochs": 5, "fine_tune_learning_rate": 1e-5},
        ("published input 128x128; ours 96x96, the largest this product trains (CPU memory and time)",
         "published: 10 epochs, head first then the last 20 layers; the split was not published: 5 + 5 here",
         "same head (global average pooling, Dropout 0.3, Dense 10) and learning rates (1e-3, then 1e-5)",
         "the report states two final accuracies (0.93 and 0.6946); 0.93 is compared")),
}


def published_weights() -> dict[str, str]:
    """What each published run's backbone started from, as its recipe states it: reference id -> "imagenet"
    or "none" (only the runs whose architecture can start either way: VGG16, MobileNetV2)."""
    return {rid: r.settings["weights"] for rid, r in RECIPES.items() if r.settings and "weights" in r.settings}


def _references() -> dict:
    from core.runs import load_reference_runs

    return {r.id: r for r in load_reference_runs() if r.status != "damaged"}


def _reference(reference_id: str):
    refs = _references()
    if reference_id not in refs:
        raise NotReproducibleError(f"No published run with id {reference_id!r}; the published runs are: "
                                   f"{', '.join(refs) or 'none (models/reference-runs/runs.json is missing)'}.")
    return refs[reference_id]


def title_for(reference_title: str) -> str:
    """The title a reproduction gets: "Reproduction of <the published run's title>"."""
    return f"Reproduction of {reference_title}"


def _config(reference_id: str, overrides: dict):
    from core.training import RunConfig

    recipe = RECIPES.get(reference_id)
    if recipe is None:
        raise NotReproducibleError(f"Published run {reference_id!r} has no reproduction recipe in this version "
                                   f"of the product; reproducible runs: {', '.join(reproducible_ids())}.")
    if recipe.settings is None:
        raise NotReproducibleError(f"{reference_id} cannot be reproduced: {recipe.why_not}.")
    settings = dict(recipe.settings)
    arch = settings.pop("architecture")
    return RunConfig.preset(arch, **{**settings, **overrides, "reproduces": reference_id})


def missing_resources(cfg) -> list[str]:
    """What `python -m core data fetch` / `weights fetch` must get before this configuration can train."""
    from core import downloads

    missing = []
    resource = datasets.FETCH_RESOURCE.get(cfg.dataset)
    if resource and not downloads.get_resource(resource).present():
        missing.append(resource)
    if cfg.weights == "imagenet":
        name = downloads.weights_resource(cfg.architecture, cfg.input_size)
        if not downloads.get_resource(name).present():
            missing.append(name)
    return missing


def reproduce_config(reference_id: str, **overrides) -> RunConfig:
    """The RunConfig that reproduces a published run on its own data set, ready to train here.

    `overrides` (e.g. max_samples=2000, epochs=2) change settings for a quicker look; the run records them in
    config.json. Raises NotReproducibleError for a run whose data set cannot be had (PolyMNIST) or an unknown
    id, DatasetError when its data set is not in the Keras cache and ModelError when its ImageNet weights are
    not (each says which `python -m core ... fetch` command gets them), InvalidOptionError for a bad override.
    """
    cfg = _config(reference_id, overrides)
    datasets.check_training_set(cfg.dataset)
    if cfg.weights == "imagenet":
        from core.models import resolve_imagenet_weights

        resolve_imagenet_weights(cfg.architecture, cfg.weights, cfg.input_size)
    return cfg


def reproducible_ids() -> list[str]:
    return [k for k, r in RECIPES.items() if r.settings is not None]


@dataclass
class Plan:
    """What a page shows beside a published run: can it be reproduced, is it ready, what is missing."""

    id: str
    title: str
    reproducible: bool  # its data set can be had at all
    ready: bool  # data (and weights) are here: a reproduction can be queued now
    reason: str  # why not, when it cannot be
    config: dict | None
    missing: list[str] = field(default_factory=list)  # resources to fetch (core.downloads.fetch names)
    fetch_commands: list[str] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def plan(reference_id: str) -> Plan:
    """The reproduction plan of one published run; never raises for a known id (looks at file names only)."""
    from core import downloads

    ref = _reference(reference_id)
    recipe = RECIPES.get(reference_id)
    if recipe is None or recipe.settings is None:
        why = recipe.why_not if recipe else "no reproduction recipe in this version of the product"
        return Plan(ref.id, ref.title, False, False, why, None)
    cfg = _config(reference_id, {})
    missing = missing_resources(cfg)
    return Plan(ref.id, ref.title, True, not missing, "", cfg.to_dict(), missing,
                [downloads.get_resource(m).command for m in missing], list(recipe.differences))


def plans() -> list[Plan]:
    """Every published run's plan, in runs.json order."""
    return [plan(i) for i in _references()]


def reproductions(reference_id: str) -> list:
    """The project runs (core.runs.RunInfo, any status) that record `reproduces: <reference_id>`, newest last:
    the runs a page offers to overlay on the published curve."""
    from core.runs import list_runs

    return [r for r in list_runs(include_reference=False) if r.kind == "project"
            and r.extra.get("info", {}).get("reproduces") == reference_id]


def queue(reference_id: str, start_worker: bool = True, **overrides):
    """Queue the reproduction as a background job titled "Reproduction of <title>"; returns the core.jobs.Job.

    Refused before anything is queued when its data or weights are missing (see reproduce_config) or on a
    read-only server.
    """
    from core import jobs

    cfg = reproduce_config(reference_id, **overrides)
    return jobs.submit(cfg, title=title_for(_reference(reference_id).title), start_worker=start_worker)


def run(reference_id: str, run_dir: str | Path | None = None, on_epoch: Callable[[dict], None] | None = None,
        should_stop: Callable[[], bool] | None = None, **overrides) -> dict:
    """Train the reproduction in this process (into a new folder of the user's run store unless `run_dir`);
    returns core.training.train's result."""
    from core import config, runs
    from core.training import train

    config.require_writable("training runs")
    cfg = reproduce_config(reference_id, **overrides)
    out = Path(run_dir) if run_dir else runs.allocate_run_dir(cfg.architecture)
    return train(cfg, out, on_epoch=on_epoch, should_stop=should_stop,
                 title=title_for(_reference(reference_id).title))


METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")


def _series(history: list[dict], source: str, label: str) -> list[dict]:
    rows, elapsed = [], 0.0
    for r in history:
        if r.get("epoch") is None:
            continue
        secs = r.get("seconds")
        elapsed = None if secs is None or elapsed is None else elapsed + secs
        for m in METRICS:
            if r.get(m) is not None:
                rows.append({"source": source, "label": label, "epoch": int(r["epoch"]), "metric": m,
                             "value": float(r[m]), "elapsed_seconds": elapsed})
    return rows


def comparison(reference_id: str, run_id: str) -> dict:
    """A published run and a run of ours on the same axes, for the page to overlay.

    Returns `series` (long form: source "published" | "reproduction", label, epoch, metric, value,
    elapsed_seconds; draw value against epoch, or against elapsed_seconds where both have it, coloured by label,
    one chart per metric), `metrics` (those both runs logged), `test_accuracy` ({published, reproduction,
    difference}: ours minus theirs, None where either is missing), `reference` and `run` (id, title, data set,
    epochs), `differences` (the recipe's, plus the run's own overrides) and `warnings` (the run does not say it
    reproduces this published run, or trained on another data set, or was cut short).
    """
    from core.runs import get_run

    ref = _reference(reference_id)
    ours = get_run(run_id)
    if ours.kind != "project":
        raise DigitLabError(f"{run_id!r} is a published run; compare a run of this project with it.")
    info, cfg = ours.extra.get("info", {}), ours.extra.get("config", {})
    published = _series(ref.history(), "published", f"published: {ref.title}")
    mine = _series(ours.history(), "reproduction", f"ours: {ours.title}")
    logged = lambda rows: {r["metric"] for r in rows}  # noqa: E731
    metrics = [m for m in METRICS if m in logged(published) and m in logged(mine)]
    warnings = []
    if info.get("reproduces") != reference_id:
        warnings.append(f"run {run_id} does not record that it reproduces {reference_id}"
                        + (f" (it reproduces {info['reproduces']})" if info.get("reproduces") else ""))
    recipe = RECIPES.get(reference_id)
    expected = (recipe.settings or {}).get("dataset") if recipe else None
    if expected and cfg.get("dataset") != expected:
        warnings.append(f"run {run_id} trained on {cfg.get('dataset') or 'an unknown data set'}, the published "
                        f"run on {ref.dataset}")
    if ours.status != "done":
        warnings.append(f"run {run_id} is {ours.status}: its curve stops at epoch {ours.epochs}")
    differences = list(recipe.differences) if recipe else []
    if recipe and recipe.settings and cfg:
        for key, value in recipe.settings.items():
            if key in cfg and cfg[key] != value:
                differences.append(f"this run changed {key}: {cfg[key]!r} (the recipe says {value!r})")
        if cfg.get("max_samples"):
            differences.append(f"this run trained on {cfg['max_samples']:,} images only (max_samples)")
    a, b = ref.test_accuracy, ours.test_accuracy
    return {
        "reference": {"id": ref.id, "title": ref.title, "dataset": ref.dataset, "epochs": ref.epochs,
                      "source": ref.source, "notes": ref.notes},
        "run": {"id": ours.id, "title": ours.title, "dataset": cfg.get("dataset", ours.dataset), "epochs": ours.epochs,
                "status": ours.status, "test_set": ours.extra.get("metrics", {}).get("test_set", "")},
        "series": published + mine,
        "metrics": metrics,
        "test_accuracy": {"published": a, "reproduction": b,
                          "difference": None if a is None or b is None else round(b - a, 4)},
        "differences": differences,
        "warnings": warnings,
    }
