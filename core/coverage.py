"""How much of the work a model can take: risk-coverage, the automation headline, Wilson intervals.

A form pipeline accepts the model's answer when its confidence (the top class probability) reaches a
threshold and sends the rest to a person. For every threshold: the share of images accepted (coverage) and the
accuracy on them. The headline "automate X % of digits at >= T accuracy" takes the lowest threshold whose
accepted images reach T, which accepts the most. Blanks have confidence 0 and are never accepted.

The threshold is chosen on the same labelled images it is reported on, so the accuracy at it is optimistic;
every accuracy here carries its 95 % Wilson interval, which says how far the true figure may lie.
"""
from __future__ import annotations

import numpy as np

from core.errors import InvalidOptionError

#: The thresholds of the risk-coverage curve: 0.00 to 0.99 by 0.01, then finer near 1, where it matters.
THRESHOLDS = np.concatenate([np.round(np.arange(0, 1, 0.01), 2), [0.995, 0.999, 0.9999]])
DEFAULT_TARGET = 0.99


def wilson_interval(correct: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (scipy.stats.binomtest); (0, 1) when n is 0."""
    from scipy.stats import binomtest

    if n <= 0:
        return 0.0, 1.0
    ci = binomtest(int(correct), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def images_to_show(target_accuracy: float, confidence: float = 0.95) -> int | None:
    """The fewest images that, all of them right, show target_accuracy: the Wilson interval of n right out of n
    has lower end n / (n + z^2), at least the target once n >= z^2 T / (1 - T) (381 at 99 %, 73 at 95 %).
    None for a target of 100 %, which no number of images can show."""
    from scipy.stats import norm

    if target_accuracy >= 1.0:
        return None
    z = norm.ppf(0.5 + confidence / 2)
    n = int(np.ceil(z * z * target_accuracy / (1 - target_accuracy) - 1e-9))
    return n + (wilson_interval(n, n, confidence)[0] < target_accuracy)  # guard a rounding at the edge


def accuracy_with_interval(y_true, y_pred) -> dict:
    """Accuracy with its 95 % Wilson interval: {accuracy, low, high, n}."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    n, correct = len(y_true), int(np.sum(y_true == y_pred))
    low, high = wilson_interval(correct, n)
    return {"accuracy": correct / n if n else 0.0, "low": low, "high": high, "n": n}


def _confidence(probabilities: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    conf = np.asarray(probabilities, np.float64).max(axis=1)
    return np.where(np.asarray(y_pred) < 0, 0.0, conf)  # a blank is never confident


def risk_coverage(y_true, y_pred, probabilities, thresholds=THRESHOLDS) -> list[dict]:
    """For each threshold: {threshold, coverage, accuracy, low, high, accepted} (accuracy None when none)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    conf = _confidence(probabilities, y_pred)
    right = y_true == y_pred
    n = len(y_true)
    rows = []
    for t in thresholds:
        accepted = (conf >= t) & (conf > 0)
        k = int(accepted.sum())
        correct = int(right[accepted].sum())
        low, high = wilson_interval(correct, k)
        rows.append({"threshold": float(t), "coverage": k / n if n else 0.0,
                     "accuracy": correct / k if k else None, "low": low if k else None,
                     "high": high if k else None, "accepted": k})
    return rows


def automation(y_true, y_pred, probabilities, target_accuracy: float = DEFAULT_TARGET) -> dict:
    """The most images a threshold can accept while their accuracy stays >= target_accuracy.

    Returns {target_accuracy, threshold, coverage, accuracy, low, high, accepted, too_few}; threshold None and
    coverage 0 when no threshold reaches the target. `too_few` is true when fewer images are accepted than
    images_to_show(target_accuracy): even all of them right would not show the target (4 saved digits at 99 %).
    """
    if not 0.5 <= target_accuracy <= 1.0:
        raise InvalidOptionError("target accuracy", target_accuracy, "a number from 0.5 to 1")
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    conf = _confidence(probabilities, y_pred)
    n = len(y_true)
    order = np.argsort(-conf, kind="stable")  # most confident first: accepting a prefix is a threshold
    right = (y_true == y_pred)[order]
    c = conf[order]
    correct = np.cumsum(right)
    k = np.arange(1, n + 1)
    # A threshold accepts every image at or above it: only the last of a run of equal confidences is a cut.
    is_cut = np.append(c[1:] < c[:-1], True) & (c > 0)
    ok = is_cut & (correct / k >= target_accuracy - 1e-12)
    out = _no_threshold(target_accuracy)
    if ok.any():
        i = int(np.flatnonzero(ok)[-1])
        low, high = wilson_interval(int(correct[i]), i + 1)
        needed = images_to_show(target_accuracy)
        out.update(threshold=float(c[i]), coverage=(i + 1) / n, accuracy=float(correct[i] / (i + 1)),
                   low=low, high=high, accepted=i + 1, too_few=needed is None or i + 1 < needed)
    return out


def _no_threshold(target_accuracy: float) -> dict:
    """The automation figure when no threshold reaches the target (or nothing is predicted)."""
    return {"target_accuracy": target_accuracy, "threshold": None, "coverage": 0.0, "accuracy": None,
            "low": None, "high": None, "accepted": 0, "too_few": False}


def automation_per_digit(y_true, y_pred, probabilities, target_accuracy: float = DEFAULT_TARGET) -> list[dict]:
    """The automation figure per predicted digit (what a pipeline knows when it decides): for the images the
    model calls d, the share it can accept at >= target accuracy, and the threshold that does it."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    proba = np.asarray(probabilities)
    rows = []
    for d in range(10):
        sel = y_pred == d
        a = automation(y_true[sel], y_pred[sel], proba[sel], target_accuracy) if sel.any() else \
            _no_threshold(target_accuracy)
        rows.append({"digit": d, "predicted": int(sel.sum()), **a})
    return rows
