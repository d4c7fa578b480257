"""Evaluating a reused model on a target domain: the paper's Tables 2-4, from scikit-learn's metrics.

A blank image (no ink found) cannot be classified: it is predicted as ``BLANK`` (-1), which counts as a wrong
answer (a false negative for its true digit, a false positive for none), so each digit's TP+TN+FP+FN is still
the data set size. The 10x10 confusion matrix leaves blanks out; their number is reported beside it.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from core import config
from core.datasets import Dataset
from core.reframing import DEFAULT_METHOD, METHODS, reframe_batch

BLANK = -1
DIGITS = list(range(10))


def summary_metrics(y_true, y_pred) -> dict:
    """Accuracy and macro precision, recall and F1 over the ten digits (scikit-learn, zero_division=0)."""
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=DIGITS, average="macro", zero_division=0)
    return {"accuracy": float(accuracy_score(y_true, y_pred)),
            "macro": {"precision": float(p), "recall": float(r), "f1": float(f)}}


def confusion(y_true, y_pred) -> np.ndarray:
    """The 10x10 confusion matrix: rows are true digits, columns predicted digits (blanks left out)."""
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(y_true, y_pred, labels=DIGITS)


def per_digit(y_true, y_pred) -> list[dict]:
    """Per digit: TP, TN, FP, FN (the paper's Table 3) and accuracy, recall, precision, F1 (Table 4)."""
    from sklearn.metrics import multilabel_confusion_matrix, precision_recall_fscore_support

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
    y_pred: np.ndarray  # BLANK where no ink was found
    probabilities: np.ndarray  # (n, 10); zeros for blanks
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def n(self) -> int:
        return int(len(self.y_true))

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

    def as_dict(self) -> dict:
        """The CLI's --json shape."""
        return {"target": self.target, "provenance": self.provenance, "reframing": self.method, "n": self.n,
                **summary_metrics(self.y_true, self.y_pred), "per_digit": self.per_digit(),
                "confusion_matrix": self.confusion_matrix().tolist(), "blank": self.blank,
                "skipped": len(self.skipped), "skipped_files": self.skipped, "seconds": round(self.seconds, 3)}


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


def evaluate(predictor, dataset: Dataset, method: str = DEFAULT_METHOD, model_path: Path | None = None,
             progress: Callable[[float], None] | None = None, use_cache: bool = True) -> Evaluation:
    """Reframe every image of `dataset` with `method`, classify it, and keep the predictions.

    Cached on disk per (model file, data set content, method), so the CLI and every page share results.
    `progress` gets a fraction in [0, 1] as chunks finish.
    """
    from core.models import reused_model_path

    key = fingerprint(Path(model_path or reused_model_path()), dataset.images, dataset.labels, method)
    cached = _cache_path(key)
    if use_cache and cached.exists():
        with np.load(cached) as f:
            return Evaluation(dataset.name, dataset.provenance, method, dataset.labels, f["y_pred"],
                              f["probabilities"], list(dataset.skipped), float(f["seconds"]))
    t0 = time.perf_counter()
    n = len(dataset)
    y_pred = np.full(n, BLANK, np.int64)
    proba = np.zeros((n, 10), np.float32)
    chunk = 2048
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        X, blank = reframe_batch(dataset.images[start:stop], method)
        p = predictor.predict_proba(X)
        p[blank] = 0.0
        proba[start:stop] = p
        y_pred[start:stop] = np.where(blank, BLANK, p.argmax(1))
        if progress:
            progress(stop / n)
    seconds = time.perf_counter() - t0
    if use_cache:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, y_pred=y_pred, probabilities=proba, seconds=seconds)
        tmp.replace(cached)
    return Evaluation(dataset.name, dataset.provenance, method, dataset.labels, y_pred, proba,
                      list(dataset.skipped), seconds)


def compare_methods(predictor, dataset: Dataset, model_path: Path | None = None) -> dict[str, Evaluation]:
    """The same data set through each reframing method (the comparison that shows naive's collapse)."""
    return {m: evaluate(predictor, dataset, m, model_path) for m in METHODS}
