"""Evaluating a reused model on a target domain: the paper's Tables 2-4, from scikit-learn's metrics.

A blank image (no ink found) cannot be classified: it is predicted as ``BLANK`` (-1), which counts as a wrong
answer (a false negative for its true digit, a false positive for none), so each digit's TP+TN+FP+FN is still
the data set size. The 10x10 confusion matrix leaves blanks out; their number is reported beside it.

An image that cannot be reframed at all is ``UNREADABLE`` (-2): it is skipped, listed with its reason, and left
out of every metric. Files read from disk never get there (decoding checks what reframing needs); a data set
built in code can.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from core import config
from core.datasets import Dataset
from core.errors import InvalidOptionError, StorageError
from core.reframing import DEFAULT_METHOD, METHODS, SIZE, reframe, reframe_batch
from core.storage import atomic_output, atomic_write_text, describe_os_error

BLANK = -1
UNREADABLE = -2
DIGITS = list(range(10))
#: Raise when as_dict's analysis changes shape: a saved analysis of another version is recomputed, not misread.
ANALYSIS_VERSION = 1
#: as_dict's fields that depend on the predictions and labels alone: saved beside a cached evaluation.
ANALYSIS_FIELDS = ("accuracy", "macro", "per_digit", "confusion_matrix", "accuracy_ci", "coverage", "automation",
                   "automation_per_digit")


def _evaluated(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    """The pairs that count: unreadable images were skipped, so they are no answer at all."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    keep = y_pred != UNREADABLE
    return y_true[keep], y_pred[keep]


def summary_metrics(y_true, y_pred) -> dict:
    """Accuracy and macro precision, recall and F1 over the ten digits (scikit-learn, zero_division=0)."""
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    y_true, y_pred = _evaluated(y_true, y_pred)
    if len(y_true) == 0:
        return {"accuracy": 0.0, "macro": {"precision": 0.0, "recall": 0.0, "f1": 0.0}}
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=DIGITS, average="macro", zero_division=0)
    return {"accuracy": float(accuracy_score(y_true, y_pred)),
            "macro": {"precision": float(p), "recall": float(r), "f1": float(f)}}


def confusion(y_true, y_pred) -> np.ndarray:
    """The 10x10 confusion matrix: rows are true digits, columns predicted digits (blanks left out)."""
    from sklearn.metrics import confusion_matrix

    y_true, y_pred = _evaluated(y_true, y_pred)
    if len(y_true) == 0:
        return np.zeros((10, 10), np.int64)
    return confusion_matrix(y_true, y_pred, labels=DIGITS)


def per_digit(y_true, y_pred) -> list[dict]:
    """Per digit: TP, TN, FP, FN (the paper's Table 3) and accuracy, recall, precision, F1 (Table 4)."""
    from sklearn.metrics import multilabel_confusion_matrix, precision_recall_fscore_support

    y_true, y_pred = _evaluated(y_true, y_pred)
    if len(y_true) == 0:
        return [{"digit": d, "tp": 0, "tn": 0, "fp": 0, "fn": 0, "accuracy": 0.0, "recall": 0.0, "precision": 0.0,
                 "f1": 0.0} for d in DIGITS]
    mcm = multilabel_confusion_matrix(y_true, y_pred, labels=DIGITS)  # [[tn, fp], [fn, tp]] per digit
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=DIGITS, average=None, zero_division=0)
    n = len(y_true)
    rows = []
    for d in DIGITS:
        (tn, fp), (fn, tp) = mcm[d]
        rows.append({"digit": d, "tp": int(tp), "tn": int(tn), "fp": int(fp), "fn": int(fn),
                     "accuracy": float((tp + tn) / n) if n else 0.0, "recall": float(r[d]),
                     "precision": float(p[d]), "f1": float(f[d])})
    return rows


@dataclass
class Evaluation:
    """One model on one data set with one reframing method."""

    target: str
    provenance: str
    method: str
    y_true: np.ndarray
    y_pred: np.ndarray  # BLANK where no ink was found, UNREADABLE where the image could not be reframed
    probabilities: np.ndarray  # (n, 10); zeros for blanks and unreadable images
    skipped: list[str] = field(default_factory=list)  # "file: reason": not read, or not reframed
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)  # problems that did not stop it (e.g. not cached)
    cache_key: str | None = None  # its evaluation cache entry (model, data, method), when it has one

    @property
    def n(self) -> int:
        """Images evaluated (unreadable ones are skipped; the arrays keep them, aligned with the data set)."""
        return int((np.asarray(self.y_pred) != UNREADABLE).sum())

    @property
    def blank(self) -> int:
        return int((self.y_pred == BLANK).sum())

    def confusion_matrix(self) -> np.ndarray:
        return confusion(self.y_true, self.y_pred)

    def per_digit(self) -> list[dict]:
        return per_digit(self.y_true, self.y_pred)

    def cell(self, true_digit: int, predicted: int) -> np.ndarray:
        """Indices of the images behind one confusion-matrix cell (predicted may be BLANK)."""
        return np.flatnonzero((self.y_true == true_digit) & (self.y_pred == predicted))

    def as_dict(self, target_accuracy: float | None = None) -> dict:
        """The CLI's --json shape, with the risk-coverage analysis (core.coverage) at `target_accuracy`.

        `accuracy_ci` is the accuracy's 95 % Wilson interval; `coverage` one row per confidence threshold;
        `automation` the most images a threshold accepts at >= target_accuracy (default 0.99), also per
        predicted digit. Unreadable images are left out of all of them, as of every metric.

        At the default target, a cached evaluation's analysis is saved beside it and read back next time: a
        cached Report on a fresh server then needs neither scikit-learn's metrics nor scipy.stats (their
        imports were about 1 s of its first run on this 2-core machine).
        """
        from core import coverage

        target = coverage.DEFAULT_TARGET if target_accuracy is None else target_accuracy
        saved = target == coverage.DEFAULT_TARGET and self.cache_key is not None
        analysis = _read_analysis(self.cache_key) if saved else None
        if analysis is None:
            analysis = self._analysis(target)
            if saved:
                _write_analysis(self.cache_key, analysis)
        return {"target": self.target, "provenance": self.provenance, "reframing": self.method, "n": self.n,
                "accuracy": analysis["accuracy"], "macro": analysis["macro"], "per_digit": analysis["per_digit"],
                "confusion_matrix": analysis["confusion_matrix"], "blank": self.blank,
                "skipped": len(self.skipped), "skipped_files": self.skipped, "seconds": round(self.seconds, 3),
                "warnings": list(self.warnings),
                **{k: analysis[k] for k in ("accuracy_ci", "coverage", "automation", "automation_per_digit")}}

    def _analysis(self, target: float) -> dict:
        """The ANALYSIS_FIELDS, computed (scikit-learn's metrics, core.coverage's Wilson intervals)."""
        from core import coverage

        keep = np.asarray(self.y_pred) != UNREADABLE
        y_true, y_pred, proba = np.asarray(self.y_true)[keep], np.asarray(self.y_pred)[keep], \
            np.asarray(self.probabilities)[keep]
        acc = coverage.accuracy_with_interval(y_true, y_pred)
        return {**summary_metrics(self.y_true, self.y_pred), "per_digit": self.per_digit(),
                "confusion_matrix": self.confusion_matrix().tolist(), "accuracy_ci": [acc["low"], acc["high"]],
                "coverage": coverage.risk_coverage(y_true, y_pred, proba),
                "automation": coverage.automation(y_true, y_pred, proba, target),
                "automation_per_digit": coverage.automation_per_digit(y_true, y_pred, proba, target)}


def _analysis_path(key: str) -> Path:
    return _cache_path(key).with_name(f"{key}.analysis-v{ANALYSIS_VERSION}.json")


def _read_analysis(key: str) -> dict | None:
    """A saved analysis, or None to compute it (missing, damaged or of another shape: a cache is disposable)."""
    try:
        analysis = json.loads(_analysis_path(key).read_text())
    except (OSError, ValueError):
        return None
    return analysis if isinstance(analysis, dict) and set(ANALYSIS_FIELDS) <= set(analysis) else None


def _write_analysis(key: str, analysis: dict) -> None:
    # Best effort, silently: it sits beside the evaluation's own cache file, whose failed write already warned
    # once; the result in hand is complete either way.
    try:
        atomic_write_text(_analysis_path(key), json.dumps(analysis))
    except StorageError:
        pass


def fingerprint(*parts) -> str:
    """A short content hash (model bytes, images, labels, method) for the evaluation cache."""
    h = hashlib.sha1()
    for p in parts:
        if isinstance(p, np.ndarray):
            h.update(str(p.shape).encode() + p.tobytes())
        elif isinstance(p, (list, tuple)):
            for a in p:
                h.update(np.ascontiguousarray(a).tobytes())
        elif isinstance(p, Path):
            h.update(p.read_bytes())
        else:
            h.update(str(p).encode())
    return h.hexdigest()[:16]


def _cache_path(key: str) -> Path:
    return config.data_home() / "cache" / "evaluations" / f"{key}.npz"


def classify_images(predictor, images, method: str, chunk: int = 2048,
                    progress: Callable[[float], None] | None = None):
    """Reframe and classify images chunk by chunk: (y_pred, probabilities, failed). y_pred holds a digit,
    BLANK (no ink) or UNREADABLE; probabilities are 0 for both; failed lists (index, reason) of the images that
    could not be reframed. The one loop behind `evaluate` and the shards of core.sharding."""
    n = len(images)
    y_pred = np.full(n, BLANK, np.int64)
    proba = np.zeros((n, 10), np.float32)
    failed_all: list[tuple[int, str]] = []
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        X, blank, failed = _reframe_chunk(images[start:stop], method)
        p = predictor.predict_proba(X)
        p[blank] = 0.0
        proba[start:stop] = p
        y_pred[start:stop] = np.where(blank, BLANK, p.argmax(1))
        for i, reason in failed:
            y_pred[start + i] = UNREADABLE
            proba[start + i] = 0.0
            failed_all.append((start + i, reason))
        if progress:
            progress(stop / n)
    return y_pred, proba, failed_all


def evaluate(predictor, dataset: Dataset, method: str = DEFAULT_METHOD, model_path: Path | None = None,
             progress: Callable[[float], None] | None = None, use_cache: bool = True) -> Evaluation:
    """Reframe every image of `dataset` with `method`, classify it, and keep the predictions.

    `predictor` is a core.models.Predictor, or a function that returns one: then a cached result never loads
    the model, nor TensorFlow. Cached on disk per (model file, data set content, method), so the CLI and
    every page share results.
    `progress` gets a fraction in [0, 1] as chunks finish. An image that cannot be reframed is skipped
    (UNREADABLE, listed in `skipped`) and the rest evaluated. A cache that cannot be read is recomputed; one
    that cannot be written (read-only or full disk) never fails the result: `warnings` says so, once.
    """
    from core.models import reused_model_path

    if method not in METHODS:  # a wrong call, not a bad image: refuse it before anything runs
        raise InvalidOptionError("reframing", method, METHODS)
    warnings = list(dataset.warnings)
    model_file = Path(model_path or reused_model_path())
    key = None
    if use_cache:
        try:
            key = fingerprint(model_file, dataset.images, dataset.labels, method)
        except OSError as e:
            warnings.append(f"Could not read {model_file}: {describe_os_error(e)}. The result was computed but "
                            "not cached.")
    cached = _cache_path(key) if key else None
    if cached is not None:
        hit = _read_cache(cached, len(dataset))
        if hit is not None:
            y_pred, proba, seconds, unreadable = hit
            return Evaluation(dataset.name, dataset.provenance, method, dataset.labels, y_pred, proba,
                              list(dataset.skipped) + unreadable, seconds, warnings, key)
    if not hasattr(predictor, "predict_proba"):
        predictor = predictor()  # a factory: the model (and TensorFlow) load only when there is work to do
    t0 = time.perf_counter()
    n = len(dataset)
    # About twenty chunks, so a progress bar moves at least every second or so, even for 1,797 images; never
    # below 256 images (a call's fixed cost) nor above 2048 (memory).
    chunk = int(np.clip(np.ceil(n / 20), 256, 2048))
    y_pred, proba, failed = classify_images(predictor, dataset.images, method, chunk, progress)
    unreadable = [f"{dataset.files[i] if dataset.files else f'image {i}'}: {reason}" for i, reason in failed]
    seconds = time.perf_counter() - t0
    if cached is not None:
        try:
            with atomic_output(cached) as tmp:
                np.savez_compressed(tmp, y_pred=y_pred, probabilities=proba, seconds=seconds,
                                    unreadable=np.array(unreadable, dtype=str))
        except StorageError as e:
            warnings.append(f"{e} The result was computed but not cached.")
    return Evaluation(dataset.name, dataset.provenance, method, dataset.labels, y_pred, proba,
                      list(dataset.skipped) + unreadable, seconds, warnings, key)


def _reframe_chunk(images, method: str) -> tuple[np.ndarray, np.ndarray, list[tuple[int, str]]]:
    """reframe_batch, and when one image fails it, each image on its own: (X, blank, [(index, reason)]).

    The fast batch path costs nothing extra; only a chunk holding a bad image is redone one by one.
    """
    from core.images import failure_reason

    try:
        X, blank = reframe_batch(images, method)
        return X, blank, []
    except Exception:  # whatever one image raised (shape, NaN, OpenCV): find it, keep the others
        pass
    images = list(images)
    X = np.zeros((len(images), SIZE, SIZE), np.float32)
    blank = np.zeros(len(images), bool)
    failed = []
    for i, img in enumerate(images):
        try:
            r = reframe(img, method)
        except Exception as e:
            failed.append((i, failure_reason(e)))
            continue
        blank[i] = r.blank
        if not r.blank:
            X[i] = r.image
    return X, blank, failed


def _read_cache(path: Path, n: int):
    """(y_pred, probabilities, seconds, unreadable) from a cache file, or None to recompute."""
    if not path.exists():
        return None
    try:
        with np.load(path) as f:
            y_pred, proba, seconds = f["y_pred"], f["probabilities"], float(f["seconds"])
            unreadable = [str(x) for x in f["unreadable"]] if "unreadable" in f.files else []
    except Exception:  # a cache is disposable: damaged, truncated or foreign means recompute
        return None
    if y_pred.shape != (n,) or proba.shape != (n, 10):
        return None
    return y_pred, proba, seconds, unreadable


def compare_methods(predictor, dataset: Dataset, model_path: Path | None = None) -> dict[str, Evaluation]:
    """The same data set through each reframing method (the comparison that shows naive's collapse)."""
    return {m: evaluate(predictor, dataset, m, model_path) for m in METHODS}
