"""Numbers of several digits: split with OpenCV, classify each digit, recompose (the paper's 0-303 experiment).

Splitting finds the ink's connected components and groups those whose columns overlap (a "5" whose bar came
loose is still one digit), left to right; specks far smaller than the rest are dropped as noise.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from core.datasets import load_sklearn_digits
from core.reframing import DEFAULT_METHOD, find_ink, to_gray

#: A component with less than this share of the largest component's ink is noise, not a digit.
SPECK_SHARE = 0.08
LABEL_PATTERN = re.compile(r"^(\d{1,6})(?:[_\-. ].*)?$")


@dataclass(frozen=True)
class Split:
    """One digit cut out of a number: its box in the number image and the crop (with a little paper around)."""

    box: tuple[int, int, int, int]  # x, y, w, h
    image: np.ndarray


def split_digits(image: np.ndarray) -> list[Split]:
    """Cut a number image into digit images, left to right. A blank image gives []."""
    gray = to_gray(image)
    ink = find_ink(gray)
    if ink.blank:
        return []
    n, _, stats, _ = cv2.connectedComponentsWithStats(ink.mask, connectivity=8)
    comps = [tuple(int(v) for v in stats[i, :5]) for i in range(1, n)]  # x, y, w, h, area
    if not comps:
        return []
    biggest = max(c[4] for c in comps)
    comps = sorted((c for c in comps if c[4] >= SPECK_SHARE * biggest), key=lambda c: c[0])
    groups: list[list[int]] = []  # [x0, y0, x1, y1]
    for x, y, w, h, _ in comps:
        if groups and x < groups[-1][2] - 0.2 * w:  # overlaps the previous group's columns
            g = groups[-1]
            g[:] = [min(g[0], x), min(g[1], y), max(g[2], x + w), max(g[3], y + h)]
        else:
            groups.append([x, y, x + w, y + h])
    splits = []
    H, W = gray.shape
    for x0, y0, x1, y1 in groups:
        pad = max(1, round(0.1 * max(x1 - x0, y1 - y0)))
        a, b = max(0, y0 - pad), min(H, y1 + pad)
        c, d = max(0, x0 - pad), min(W, x1 + pad)
        crop = gray[a:b, c:d]
        if min(crop.shape) < 8:  # reframing needs 8x8: extend with paper, never with the neighbour's ink
            crop = _pad_with(crop, ink.background, 8)
        splits.append(Split((x0, y0, x1 - x0, y1 - y0), crop))
    return splits


def _pad_with(a: np.ndarray, value: float, minimum: int) -> np.ndarray:
    h, w = a.shape
    dh, dw = max(0, minimum - h), max(0, minimum - w)
    return cv2.copyMakeBorder(a, dh // 2, dh - dh // 2, dw // 2, dw - dw // 2, cv2.BORDER_CONSTANT, value=value)


@dataclass(frozen=True)
class NumberReading:
    splits: tuple[Split, ...]
    digits: tuple[int, ...]
    confidences: tuple[float, ...]

    @property
    def number(self) -> int | None:
        return int("".join(map(str, self.digits))) if self.digits else None


def read_number(predictor, image: np.ndarray, method: str = DEFAULT_METHOD) -> NumberReading:
    """Split, reframe and classify each digit, recompose the number (None when nothing was found)."""
    from core.models import classify

    splits = split_digits(image)
    preds = [classify(predictor, s.image, method) for s in splits]
    kept = [(s, p) for s, p in zip(splits, preds) if p.digit is not None]
    return NumberReading(tuple(s for s, _ in kept), tuple(p.digit for _, p in kept),
                         tuple(p.confidence for _, p in kept))


def label_from_name(name: str) -> int | None:
    """'127_0001.png' -> 127; None when the file name does not start with a number."""
    m = LABEL_PATTERN.match(Path(name).stem)
    return int(m.group(1)) if m else None


def compose_numbers(n: int = 300, max_value: int = 303, random_state: int = 0) -> tuple[list, np.ndarray]:
    """A built-in numbers set made from scikit-learn's digit scans, so the experiment works offline.

    Each number 0..max_value is drawn uniformly; its digits are scans of those digits placed side by side with
    a 2-pixel gap of paper, as digits written in the boxes of a form.
    """
    rng = np.random.default_rng(random_state)
    digits = load_sklearn_digits()
    by_class = {d: np.flatnonzero(digits.labels == d) for d in range(10)}
    images, labels = [], []
    for value in rng.integers(0, max_value + 1, size=n):
        parts = []
        for ch in str(value):
            parts.append(digits.images[rng.choice(by_class[int(ch)])])
            parts.append(np.full((8, 2), 255, np.uint8))
        images.append(cv2.copyMakeBorder(np.hstack(parts[:-1]), 2, 2, 2, 2, cv2.BORDER_CONSTANT, value=255))
        labels.append(int(value))
    return images, np.array(labels, np.int64)


def _scan_numbers(folder: str | Path, display: str):
    from core.datasets import scan_labelled_images

    return scan_labelled_images(folder, lambda rel: label_from_name(rel.name),
                                "the file name does not start with the number (e.g. 127_0001.png)", display)


def load_numbers_folder(folder: str | Path, display: str | None = None
                        ) -> tuple[list, np.ndarray, list[str], list[str]]:
    """Images whose file names start with their number (127_0001.png): images, labels, names, skipped.

    Messages call the folder `display` (default: `folder` as given).
    """
    from core.datasets import nothing_readable

    display = display or str(folder)
    images, labels, names, skipped = _scan_numbers(folder, display)
    if not images:
        raise nothing_readable(display, "labelled number images", skipped)
    return images, labels, names, skipped


def evaluate_numbers(predictor, images, labels, method: str = DEFAULT_METHOD) -> dict:
    """Share of numbers read exactly right, overall and per number of digits."""
    predicted = [read_number(predictor, img, method).number for img in images]
    correct = np.array([p == t for p, t in zip(predicted, labels)])
    lengths = np.array([len(str(t)) for t in labels])
    per_length = [{"digits": int(k), "n": int((lengths == k).sum()), "accuracy": float(correct[lengths == k].mean())}
                  for k in sorted(set(lengths.tolist()))]
    return {"n": len(labels), "reframing": method, "accuracy": float(correct.mean()) if len(labels) else 0.0,
            "per_length": per_length, "predicted": predicted, "labels": [int(t) for t in labels]}


def load_numbers_zip(data: bytes, name: str = "numbers.zip"):
    """A zip of number images named like 127_0001.png, extracted safely (see datasets.extracted_upload).

    Every message names the archive as `name`, never the extraction folder.
    """
    from core.datasets import extracted_upload, nothing_readable

    with extracted_upload(data, name, prefix="numbers-") as (folder, unsafe, _warnings):
        images, labels, names, skipped = _scan_numbers(folder, name)
    if not images:
        raise nothing_readable(name, "labelled number images", unsafe + skipped)
    return images, labels, names, unsafe + skipped
