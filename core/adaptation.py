"""Few-shot adaptation: what k labelled target digits per class buy, against zero-shot reuse.

The paper's own "future work": fine-tune the reused model with a few digits of the new domain. From a labelled
target set, a stratified split keeps one fixed test part (the same for every strategy, k and seed); from the
rest, k images per class are drawn for each seed. Strategies:

- ``last-layer``: only the final Dense layer learns (the features stay MNIST's);
- ``fine-tune``: every layer learns at a low rate, each batch three quarters target digits and a quarter MNIST
  digits (replay), so the source domain is not forgotten;
- ``self-training``: fine-tune, let that model label the rest of the pool (the scans nobody labelled) where it is
  at least 90 % sure, and fine-tune the model under test again on the labelled and the self-labelled images
  (Yarowsky 1995; Lee 2013, pseudo-labels). The pool's own labels are never read;
- ``scratch``: the same architecture, freshly initialised, trained on the k images only;
- zero-shot: the model as it is (always reported).

Every fit runs a fixed number of gradient steps whatever k is (small sets are revisited, large ones sampled),
so the cost is the same for every row and a k=1 fit is not a handful of steps. The labelled images are
enlarged by elastic distortion (the same augmentation the reused model was trained with). Every result
carries the MNIST test accuracy after adaptation, which shows forgetting. The model file is never changed:
each fit starts from a fresh copy of its weights.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from core.datasets import Dataset
from core.errors import DatasetError, InvalidOptionError
from core.reframing import DEFAULT_METHOD

STRATEGIES = ("last-layer", "fine-tune", "self-training", "scratch")
#: Each strategy's colour in every chart, on the pages and in the HTML report (tab10's blue, red, purple, grey).
STRATEGY_COLOURS = {"last-layer": "#1f77b4", "fine-tune": "#d62728", "self-training": "#9467bd",
                    "scratch": "#7f7f7f"}
DEFAULT_SHOTS = (1, 2, 5, 10, 20, 50)


@dataclass(frozen=True)
class FitSettings:
    """How one strategy trains: gradient steps, batch size, learning rate (Adam), MNIST share of a batch."""

    steps: int
    batch_size: int
    learning_rate: float
    replay: float = 0.0


#: Chosen once for every target, never on one target's labels: fine-tuning's settings had the best mean
#: accuracy at k=10 over five form variants together (MNIST low-res, slant and European; scikit-learn thick pen
#: and stretched: `python bench/select_adaptation.py`, 97.5 % against 96.5-97.3 % for five other candidates,
#: and 98.3 % on MNIST after it). A low rate keeps the MNIST
#: features; the last layer alone takes a higher one; from scratch, which starts from nothing, takes more steps.
SETTINGS = {
    "last-layer": FitSettings(steps=200, batch_size=32, learning_rate=3e-3),
    "fine-tune": FitSettings(steps=600, batch_size=64, learning_rate=3e-4, replay=0.25),
    "scratch": FitSettings(steps=300, batch_size=32, learning_rate=1e-3),
}
#: Self-training's two fits are fine-tunes, which read SETTINGS["fine-tune"]; its own entry names the strategy and
#: says it replays MNIST. Of 22 changes to fine-tuning, it alone was ahead on the five variants
#: (bench/adaptation_candidates.py, seeds 0-5: 30 fits, +0.22 points, ahead in 20 and behind in 6).
SETTINGS["self-training"] = SETTINGS["fine-tune"]
#: The least confidence at which self-training takes the fine-tuned model's answer as a label.
PSEUDO_CONFIDENCE = 0.9
#: Elastically distorted copies of each labelled target image (Simard et al. 2003), as in the reused model.
ELASTIC_COPIES = 4
#: The fewest seeds per (strategy, k) of a learning curve the report and the Domain shift page cite first (the
#: issue's minimum): a quicker run is kept, shown on the Adapt page, and cited only when no full one is saved.
MIN_SEEDS = 3
#: MNIST digits used to measure forgetting (a stratified sample of the official test set when present).
MNIST_CHECK_SIZE = 2000


@dataclass
class AdaptationResult:
    """Everything `python -m core adapt --json` prints."""

    target: str
    provenance: str
    model: str
    reframing: str
    n_test: int
    n_pool: int
    zero_shot: float
    zero_shot_mnist: float
    results: list[dict] = field(default_factory=list)  # strategy, shots, seed, accuracy, mnist_accuracy, seconds
    skipped_shots: list[int] = field(default_factory=list)  # k larger than the smallest class allows
    kept: list[dict] = field(default_factory=list)  # adapted models saved as runs: strategy, shots, run id
    seconds: float = 0.0

    def summary(self) -> list[dict]:
        """Per strategy and k: mean and standard deviation over seeds (accuracy and MNIST accuracy); std is None
        for a single seed, which measures no spread."""
        import pandas as pd

        if not self.results:
            return []
        df = pd.DataFrame(self.results)
        g = df.groupby(["strategy", "shots"], sort=False)
        out = g.agg(mean=("accuracy", "mean"), std=("accuracy", "std"), n=("accuracy", "size"),
                    mnist_mean=("mnist_accuracy", "mean")).reset_index()
        rows = [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
                for row in out.to_dict(orient="records")]
        return [dict(r, std=r["std"] if r["n"] > 1 else None) for r in rows]

    def best(self, shots: int) -> dict | None:
        """The strategy with the best mean accuracy at k=shots."""
        rows = [r for r in self.summary() if r["shots"] == shots]
        return max(rows, key=lambda r: r["mean"]) if rows else None

    def as_dict(self) -> dict:
        return {"target": self.target, "provenance": self.provenance, "model": self.model,
                "reframing": self.reframing, "n_test": self.n_test, "n_pool": self.n_pool,
                "zero_shot": self.zero_shot, "zero_shot_mnist": self.zero_shot_mnist, "results": self.results,
                "summary": self.summary(), "skipped_shots": self.skipped_shots, "kept": self.kept,
                "seconds": round(self.seconds, 1)}


def strategy_colour(strategy: str) -> str:
    """The strategy's chart colour (tab10's green for a name saved by another version)."""
    return STRATEGY_COLOURS.get(strategy, "#2ca02c")


def check_strategies(strategies) -> list[str]:
    """The strategies asked for, each once, in the order of STRATEGIES (fine-tune before self-training, which
    starts from it); an InvalidOptionError names the valid ones."""
    bad = [s for s in strategies if s not in STRATEGIES]
    if bad or not strategies:
        raise InvalidOptionError("strategies", ",".join(bad) or "(none)", STRATEGIES)
    return [s for s in STRATEGIES if s in strategies]


def split_target(labels: np.ndarray, test_fraction: float = 0.5, random_state: int = 0):
    """(pool indices, test indices): a stratified split, the test part fixed for every strategy, k and seed."""
    from sklearn.model_selection import train_test_split

    if not 0.05 <= test_fraction <= 0.95:
        raise InvalidOptionError("test_fraction", test_fraction, "a number from 0.05 to 0.95")
    counts = np.bincount(labels, minlength=10)
    if (counts[counts > 0] < 2).any():
        raise DatasetError("Every digit in the target set needs at least 2 images (one to adapt, one to test); "
                           f"counts per digit: {counts.tolist()}.")
    idx = np.arange(len(labels))
    pool, test = train_test_split(idx, test_size=test_fraction, stratify=labels, random_state=random_state)
    return np.sort(pool), np.sort(test)


def sample_shots(labels: np.ndarray, pool: np.ndarray, shots: int, seed: int) -> np.ndarray:
    """k indices per class from the pool, drawn with this seed (each class present in the target set)."""
    rng = np.random.default_rng(seed)
    chosen = []
    for d in np.unique(labels[pool]):
        members = pool[labels[pool] == d]
        chosen.append(rng.choice(members, size=shots, replace=False))
    return np.sort(np.concatenate(chosen))


def max_shots(labels: np.ndarray, pool: np.ndarray) -> int:
    """The largest k every class of the pool can give."""
    counts = np.bincount(labels[pool], minlength=10)
    return int(counts[counts > 0].min()) if counts.any() else 0


def _accuracy(predictor, x: np.ndarray, y: np.ndarray, blank: np.ndarray | None = None) -> float:
    p = predictor.predict_proba(x).argmax(1)
    if blank is not None:
        p = np.where(blank, -1, p)  # a blank input is never right
    return float(np.mean(p == y)) if len(y) else 0.0


def _fresh_copy(base, keep_weights: bool):
    """A new model of the same architecture, every layer trainable; with the base's weights, or freshly
    initialised (scratch)."""
    import keras

    model = keras.Model.from_config(base.get_config())  # not clone_model: Keras 3 copies compile state too
    if keep_weights:
        model.set_weights(base.get_weights())
    # The config keeps each layer's `trainable`: a base kept from a last-layer fit (or any model saved with
    # frozen layers) would make every strategy train its last layer only. A strategy freezes what it means to.
    for layer in model.layers:
        layer.trainable = True
    return model


def _last_dense(model):
    import keras

    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    if not dense:
        raise InvalidOptionError("strategy", "last-layer",
                                 "fine-tune, self-training or scratch (this model has no Dense layer)")
    return dense[-1]


def pseudo_labels(model, x: np.ndarray, confidence: float = PSEUDO_CONFIDENCE) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels): the images of x that `model` labels with at least `confidence`, and its labels."""
    from core.models import Predictor

    if not len(x):
        return x, np.zeros(0, np.int64)
    proba = Predictor(model).predict_proba(x)
    sure = proba.max(1) >= confidence
    return x[sure], proba.argmax(1)[sure]


def fit_strategy(base, strategy: str, x: np.ndarray, y: np.ndarray, seed: int,
                 replay: tuple[np.ndarray, np.ndarray] | None = None, unlabelled: np.ndarray | None = None,
                 teacher=None):
    """Adapt a fresh copy of `base` with one strategy on (x, y) (model inputs); returns the adapted model.

    Self-training also reads `unlabelled` (model inputs without labels); `teacher` is its first fit when it has
    been made already (the fine-tune of the same x, y, seed and replay).
    """
    import keras

    if strategy not in SETTINGS:
        raise InvalidOptionError("strategy", strategy, STRATEGIES)
    if strategy == "self-training":
        if unlabelled is None:
            raise InvalidOptionError("unlabelled", None, "the images self-training labels itself (may be empty)")
        teacher = teacher if teacher is not None else fit_strategy(base, "fine-tune", x, y, seed, replay)
        xp, yp = pseudo_labels(teacher, unlabelled)
        if not len(yp):
            return teacher  # the second fit would see the very same images: it is the first
        return fit_strategy(base, "fine-tune", np.concatenate([x, xp]), np.concatenate([y, yp]), seed, replay)
    s = SETTINGS[strategy]
    keras.utils.set_random_seed(seed)
    model = _fresh_copy(base, keep_weights=strategy != "scratch")
    if strategy == "last-layer":
        last = _last_dense(model)
        for layer in model.layers:
            layer.trainable = layer is last
    rng = np.random.default_rng(seed)
    n = s.steps * s.batch_size
    n_replay = int(round(n * s.replay)) if replay is not None else 0
    # Fixed steps: sample (with replacement) exactly the images the steps will see, target and MNIST mixed.
    pick = rng.integers(0, len(x), n - n_replay)
    xs, ys = [x[pick]], [y[pick]]
    if n_replay:
        rp = rng.integers(0, len(replay[1]), n_replay)
        xs.append(replay[0][rp])
        ys.append(replay[1][rp])
    order = rng.permutation(n)
    fx, fy = np.concatenate(xs)[order], np.concatenate(ys)[order]
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=s.learning_rate),
                  loss="sparse_categorical_crossentropy")
    model.fit(fx, fy, batch_size=s.batch_size, epochs=1, shuffle=False, verbose=0)
    return model


def _mnist_check(random_state: int = 0):
    """(x, y) MNIST digits for the forgetting check: official test set when present, else the held-out subset."""
    from sklearn.model_selection import train_test_split

    from core.datasets import load_mnist_target
    from core.models import to_model_input

    ds = load_mnist_target()
    idx = np.arange(len(ds))
    if len(idx) > MNIST_CHECK_SIZE:
        idx, _ = train_test_split(idx, train_size=MNIST_CHECK_SIZE, stratify=ds.labels, random_state=random_state)
    return to_model_input(ds.images[np.sort(idx)]), ds.labels[np.sort(idx)], ds.provenance


def _mnist_replay(random_state: int = 0):
    from core.datasets import load_mnist_subset
    from core.models import to_model_input

    train, _ = load_mnist_subset(random_state=random_state)
    return to_model_input(train.images), train.labels


def adapt(dataset: Dataset, model_path: str | Path | None = None, shots=DEFAULT_SHOTS, strategies=STRATEGIES,
          seeds: int = 3, test_fraction: float = 0.5, method: str = DEFAULT_METHOD, random_state: int = 0,
          progress: Callable[[int, int, str], None] | None = None, keep=(), keep_dir: Path | None = None,
          ) -> AdaptationResult:
    """Learning curve of few-shot adaptation on a labelled target set (see the module docstring).

    `shots` larger than the smallest class of the pool are skipped and listed; `progress(done, total, what)`
    is called after every fit; `keep` lists (strategy, shots) whose seed-0 model is saved as a run.
    """
    from core.models import Predictor, load_model, resolve_model_path, to_model_input
    from core.reframing import METHODS, reframe_batch
    from core.training import elastic_copies

    if method not in METHODS:
        raise InvalidOptionError("reframing", method, METHODS)
    strategies = check_strategies(strategies)
    if not 1 <= seeds <= 20:
        raise InvalidOptionError("seeds", seeds, "an integer from 1 to 20")
    shots = sorted({int(k) for k in shots})
    if not shots or shots[0] < 1:
        raise InvalidOptionError("shots", shots, "a list of integers >= 1")
    if keep:
        from core import config

        config.require_writable("keeping adapted models as runs")
    t0 = time.perf_counter()
    # The file, absolute: what the report and the pages compare with the model under test, from any folder
    model_path = resolve_model_path(model_path).resolve()
    base = load_model(model_path)
    X, blank = reframe_batch(dataset.images, method)
    x_all, y_all = to_model_input(X), np.asarray(dataset.labels)
    pool, test = split_target(y_all, test_fraction, random_state)
    limit = max_shots(y_all, pool)
    usable, skipped = [k for k in shots if k <= limit], [k for k in shots if k > limit]
    if not usable:
        raise DatasetError(f"The target set allows at most {limit} labelled images per class for adaptation "
                           f"(after setting {test_fraction:.0%} aside for testing); asked for {shots}.")
    mx, my, _ = _mnist_check(random_state)
    base_predictor = Predictor(base)
    result = AdaptationResult(
        target=dataset.name, provenance=dataset.provenance, model=str(model_path), reframing=method,
        n_test=int(len(test)), n_pool=int(len(pool)),
        zero_shot=_accuracy(base_predictor, x_all[test], y_all[test], blank[test]),
        zero_shot_mnist=_accuracy(base_predictor, mx, my), skipped_shots=skipped)
    replay = _mnist_replay(random_state) if any(SETTINGS[s].replay for s in strategies) else None
    keep = {(s, int(k)) for s, k in keep}
    total, done = len(strategies) * len(usable) * seeds, 0
    for k in usable:
        for seed in range(seeds):
            idx = sample_shots(y_all, pool, k, seed=random_state * 1000 + seed)
            idx = idx[~blank[idx]]  # a blank scan teaches nothing
            rest = np.setdiff1d(pool, idx)
            unlabelled = x_all[rest[~blank[rest]]]  # the scans left without labels, for self-training
            xk, yk = x_all[idx], y_all[idx]
            xa = np.concatenate([xk, elastic_copies(xk, ELASTIC_COPIES, random_state=seed)])
            ya = np.tile(yk, ELASTIC_COPIES + 1)
            fitted, took = {}, {}
            for strategy in strategies:
                t = time.perf_counter()
                model = fitted[strategy] = fit_strategy(
                    base, strategy, xa, ya, seed, replay if SETTINGS[strategy].replay else None, unlabelled,
                    teacher=fitted.get("fine-tune"))
                took[strategy] = time.perf_counter() - t
                if strategy == "self-training" and "fine-tune" in fitted:
                    took[strategy] += took["fine-tune"]  # its first fit is the fine-tune row's: its cost too
                p = Predictor(model)
                result.results.append({
                    "strategy": strategy, "shots": k, "seed": seed,
                    "accuracy": _accuracy(p, x_all[test], y_all[test], blank[test]),
                    "mnist_accuracy": _accuracy(p, mx, my), "seconds": round(took[strategy], 2)})
                if seed == 0 and (strategy, k) in keep:
                    result.kept.append(_keep_as_run(model, strategy, k, dataset, model_path, method,
                                                    result.results[-1], keep_dir))
                done += 1
                if progress:
                    progress(done, total, f"{strategy}, k={k}, seed {seed}")
    result.seconds = time.perf_counter() - t0
    return result


def _keep_as_run(model, strategy: str, shots: int, dataset: Dataset, base_path: Path, method: str, row: dict,
                 parent: Path | None) -> dict:
    """Save an adapted model as a run of its own (usable on every page), written atomically."""
    from core.runs import RunWriter, allocate_run_dir
    from core.storage import atomic_output
    from core.training import count_params, inference_copy

    run_dir = allocate_run_dir(f"adapted-{strategy}", parent)
    w = RunWriter(run_dir)
    w.write_config({"architecture": "cnn" if "cnn" in model.name else model.name, "adapted_from": str(base_path),
                    "strategy": strategy, "shots": shots, "reframing": method, "target": dataset.name})
    total, trainable = count_params(model)
    w.write_metrics({"target_accuracy": row["accuracy"], "test_accuracy": row["mnist_accuracy"],
                     "test_set": f"MNIST ({MNIST_CHECK_SIZE} stratified test digits)"})
    with atomic_output(run_dir / "model.keras") as tmp:
        inference_copy(model).save(tmp)
    learnt = f"{shots} labelled {dataset.name} digits per class"
    if strategy == "self-training":
        learnt += f" and the other pool scans it labelled itself (at >= {PSEUDO_CONFIDENCE:.0%} confidence)"
    w.update_info(status="done", title=f"Adapted ({strategy}, {shots} per class) on {dataset.name}",
                  dataset=dataset.name, params=total, trainable_params=trainable,
                  source=f"adapted from {base_path} with {learnt}")
    return {"strategy": strategy, "shots": shots, "run_id": run_dir.name, "path": str(run_dir)}


def results_dir() -> Path:
    """Where adaptation results are kept: one folder per adaptation, `result.json` inside."""
    from core import config

    return config.data_home() / "adaptations"


def new_result_dir() -> Path:
    """A fresh folder of results_dir() for one adaptation's result.json (a job's, or the CLI's)."""
    from core.runs import allocate_run_dir

    return allocate_run_dir("adapt", results_dir())


def save_result(result: AdaptationResult, folder: Path) -> Path:
    """Write result.json atomically into `folder` (a fresh folder from allocate_run_dir)."""
    from core.runs import write_json

    path = Path(folder) / "result.json"
    write_json(path, result.as_dict())
    return path


def result_seeds(result: dict) -> int:
    """The fewest seeds behind a point of a saved result's learning curve (0 when it has none)."""
    ns = [int(r.get("n", 1)) for r in result.get("summary") or []]
    return min(ns) if ns else 0


def results_to_cite(results: list[dict], model_path: str | Path | None = None, method: str | None = None
                    ) -> list[dict]:
    """Saved results (load_results, newest first) with a learning curve, measured on the model at model_path (any
    model when None), the one to cite first: curves of >= MIN_SEEDS seeds before quicker ones, then those of
    the same reframing method, then the newest. A result for another model says nothing about this one."""
    def file_of(path) -> Path:  # a run folder stands for its model.keras (results saved before it was resolved)
        p = Path(str(path)).expanduser().resolve()
        return p / "model.keras" if p.is_dir() else p

    want = file_of(model_path) if model_path is not None else None

    def same_model(r: dict) -> bool:
        try:
            return want is None or file_of(r.get("model", "")) == want
        except (OSError, ValueError):
            return False

    mine = [r for r in results if isinstance(r.get("summary"), list) and r["summary"] and same_model(r)]
    # sorted() is stable: the newest stays first within each group
    return sorted(mine, key=lambda r: (result_seeds(r) < MIN_SEEDS,
                                       method is not None and r.get("reframing") != method))


def _summary_readable(summary) -> bool:
    """A saved summary the pages can draw: a list of rows with a numeric shots, mean and n."""
    if not isinstance(summary, list):
        return False
    try:
        for row in summary:
            int(row["shots"]), float(row["mean"]), int(row.get("n", 1))
    except (KeyError, TypeError, ValueError):
        return False
    return True


def load_results(target: str | None = None) -> list[dict]:
    """Saved adaptation results, newest first (optionally for one target); damaged files (unreadable, or a summary
    the pages cannot draw) are passed over. A point of one seed has std None (older versions wrote 0.0: one seed
    measures no spread)."""
    import json

    folder = results_dir()
    found = []
    for p in sorted(folder.glob("*/result.json"), key=lambda q: q.stat().st_mtime, reverse=True) \
            if folder.is_dir() else []:
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and (target is None or data.get("target") == target) \
                and _summary_readable(data.get("summary")):
            data["id"] = p.parent.name
            for row in data["summary"]:
                if int(row.get("n", 1)) < 2:
                    row["std"] = None
            found.append(data)
    return found
