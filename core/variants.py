"""Form variants: target domains that real form pipelines hand over, built by transformation.

A default (reframing method, training augmentation) chosen on one target set is tuned to that set. Real
pipelines hand the model digits in many shapes: binarised scans, digits stretched into a fixed box, thick and
thin pens, low resolution, slant, European 1s and 7s. Each variant here is built from MNIST test digits and from
scikit-learn's digits, first rendered as a scan arrives (dark ink on light paper, `SCAN_SIZE` px), then
transformed with OpenCV. `evaluate_variants` measures a model's zero-shot accuracy on every (source, variant,
method) and `choose_default` picks the method with the best mean over all of them, never on one target alone.

A variant is a function ``(scans, labels, random_state) -> (scans, labels)`` on uint8 scans of shape
(n, h, w), dark ink on light paper; every variant keeps the labels (and the order) of its input.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from core.reframing import METHODS, reframe_batch, to_gray

#: Side of a rendered scan: a form box scanned at ~150-300 dpi holds a digit in 32-64 px, not MNIST's 28.
SCAN_SIZE = 48
#: Paper and ink levels of a clean scan (neither is perfectly white or black on a real scanner).
PAPER, INK = 245, 20
#: The box an OCR front-end stretches every digit into (the digit fills it whatever its aspect ratio).
STRETCH_BOX = 36
#: MNIST test digits sampled per variant (stratified): enough for a ~1-point standard error.
MNIST_SAMPLE = 2000
SOURCES: tuple[str, ...] = ("mnist-test", "sklearn-digits")
#: Side of each source's whole field in the scan. MNIST's 28x28 field already has a 4 px margin round its 20x20
#: digit; scikit-learn's 8x8 digits fill their field, so they get a paper margin to match (~36 px digits both).
_FIELD = {"mnist-test": SCAN_SIZE, "sklearn-digits": STRETCH_BOX}

Variant = Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]]


# --- rendering: any digit image as a scan (dark ink on light paper) ---

def _ink(gray: np.ndarray) -> np.ndarray:
    """Ink level in [0, 1] of a gray image of either polarity (the border tells which is the paper)."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    return 1.0 - gray if np.median(border) > 0.5 else gray


def render_scans(images, field: int = SCAN_SIZE, size: int = SCAN_SIZE) -> np.ndarray:
    """Digit images of any polarity and size as uint8 scans (n, size, size): dark ink on light paper.

    Each image's whole field is resized to `field` px (enlarging interpolates, as a scanner's resampling does)
    and centred on paper of `size` px.
    """
    out = np.full((len(images), size, size), PAPER, np.uint8)
    off = (size - field) // 2
    for i, img in enumerate(images):
        ink = np.clip(cv2.resize(_ink(to_gray(img)), (field, field), interpolation=cv2.INTER_LINEAR), 0, 1)
        out[i, off : off + field, off : off + field] = np.round(PAPER - (PAPER - INK) * ink).astype(np.uint8)
    return out


def _ink_space(scan: np.ndarray) -> np.ndarray:
    # Morphology on dark-on-light scans: dilating the *ink* thickens strokes, so work on 255 - scan.
    return 255 - scan


def _paper_level(scan: np.ndarray) -> int:
    return int(np.median(np.concatenate([scan[0], scan[-1], scan[:, 0], scan[:, -1]])))


def _ink_mask(scan: np.ndarray) -> np.ndarray:
    """uint8 mask (1 = ink) by Otsu's threshold, which separates the two levels of any clean scan."""
    _, mask = cv2.threshold(scan, 0, 1, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    return mask


# --- the variants ---

def binarised(scans: np.ndarray, labels: np.ndarray, random_state: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """1-bit scans: every pixel black or white (Otsu's threshold per image), as fax and bitonal scanners give."""
    out = np.stack([cv2.threshold(s, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)[1] for s in scans])
    return out, labels.copy()


def stretched(scans: np.ndarray, labels: np.ndarray, random_state: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Each digit cropped to its ink and resized to fill a STRETCH_BOX square, aspect ratio not kept."""
    out = np.empty_like(scans)
    off = (scans.shape[1] - STRETCH_BOX) // 2
    for i, s in enumerate(scans):
        x, y, w, h = cv2.boundingRect(_ink_mask(s))
        out[i] = _paper_level(s)
        if w and h:
            box = cv2.resize(s[y : y + h, x : x + w], (STRETCH_BOX, STRETCH_BOX), interpolation=cv2.INTER_LINEAR)
            out[i, off : off + STRETCH_BOX, off : off + STRETCH_BOX] = box
    return out, labels.copy()


def _morph(scans: np.ndarray, op, side: int) -> np.ndarray:
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side))
    return np.stack([255 - op(_ink_space(s), kernel) for s in scans])


def thick_pen(scans: np.ndarray, labels: np.ndarray, random_state: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A felt pen: strokes dilated by a 5x5 ellipse (about 4 px wider on a 48 px scan)."""
    return _morph(scans, cv2.dilate, 5), labels.copy()


def thin_pen(scans: np.ndarray, labels: np.ndarray, random_state: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A fine pen: strokes eroded by a 3x3 ellipse (about 2 px narrower on a 48 px scan)."""
    return _morph(scans, cv2.erode, 3), labels.copy()


#: Low resolution: the side a scan is reduced to before being enlarged back (a fax, a thumbnail, a far photo).
LOW_RES = 10


def low_resolution(scans: np.ndarray, labels: np.ndarray, random_state: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Downsampled to 10x10 (area average) and enlarged back (bilinear): a blurred, blocky scan."""
    h, w = scans.shape[1:3]
    out = np.stack([cv2.resize(cv2.resize(s, (LOW_RES, LOW_RES), interpolation=cv2.INTER_AREA), (w, h),
                               interpolation=cv2.INTER_LINEAR) for s in scans])
    return out, labels.copy()


#: Slant angles (degrees from vertical), either way: handwriting slants far more than MNIST's own spread.
SLANT_DEGREES = (15.0, 20.0)


def slanted(scans: np.ndarray, labels: np.ndarray, random_state: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Sheared 15-20 degrees left or right (random per image) about the middle row, on a wider sheet."""
    rng = np.random.default_rng(random_state)
    h, w = scans.shape[1:3]
    # The top and bottom rows move by up to tan(20 deg) * h / 2: widen the sheet so no ink is cut off.
    pad = int(np.ceil(np.tan(np.radians(SLANT_DEGREES[1])) * h / 2))
    out = np.empty((len(scans), h, w + 2 * pad), scans.dtype)
    for i, s in enumerate(scans):
        k = np.tan(np.radians(rng.uniform(*SLANT_DEGREES))) * rng.choice((-1.0, 1.0))
        # x' = x + k * (c - y): positive k leans the top to the right, as most right-handers write.
        m = np.float32([[1, -k, pad + k * (h - 1) / 2], [0, 1, 0]])
        out[i] = cv2.warpAffine(s, m, (w + 2 * pad, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                borderValue=_paper_level(s))
    return out, labels.copy()


def _stroke_width(mask: np.ndarray) -> int:
    """A digit's pen width in px: its ink area over half its outline (a stroke of length L and width w has
    area L*w and an outline of about 2*L)."""
    contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    outline = sum(cv2.arcLength(c, True) for c in contours)
    return max(1, int(round(2 * float(mask.sum()) / outline))) if outline else 1


def _ink_x(mask: np.ndarray, rows: slice, default: float) -> int:
    """Mean column of the ink in some rows (where a stroke passes), or `default` when they have none."""
    cols = np.nonzero(mask[rows])[1]
    return int(round(cols.mean())) if cols.size else int(round(default))


def _pen(scan: np.ndarray, mask: np.ndarray) -> tuple[int, int]:
    """(width, ink level) of the digit's own pen, so that added strokes look written by the same hand."""
    return _stroke_width(mask), int(np.median(scan[mask > 0]))


def _draw(scan: np.ndarray, lines, ink: int, width: int) -> np.ndarray:
    # Drawn on their own sheet, then the darker of the two kept: a new stroke never lightens the digit's ink.
    sheet = np.full_like(scan, 255)
    for p, q in lines:
        cv2.line(sheet, p, q, ink, width, cv2.LINE_AA)
    return np.minimum(scan, sheet)


def european_one(scan: np.ndarray) -> np.ndarray:
    """A 1 with a continental flag (down-left from the top of the stem) and a base line, in the digit's pen."""
    mask = _ink_mask(scan)
    x, y, w, h = cv2.boundingRect(mask)
    if not h:
        return scan.copy()
    width, ink = _pen(scan, mask)
    band = max(1, h // 8)
    top = _ink_x(mask, slice(y, y + band), x + w / 2)
    bottom = _ink_x(mask, slice(y + h - band, y + h), x + w / 2)
    base_y, half = y + h - 1 - width // 2, int(round(0.22 * h))
    flag = ((top, y), (int(round(top - 0.3 * h)), int(round(y + 0.25 * h))))
    return _draw(scan, [flag, ((bottom - half, base_y), (bottom + half, base_y))], ink, width)


def european_seven(scan: np.ndarray) -> np.ndarray:
    """A 7 with a crossbar through the middle of its stem, in the digit's pen."""
    mask = _ink_mask(scan)
    x, y, w, h = cv2.boundingRect(mask)
    if not h:
        return scan.copy()
    width, ink = _pen(scan, mask)
    mid = y + int(round(0.55 * h))
    # Where the stem crosses the middle row: the 7's stem is slanted, so the bbox centre would miss it.
    stem = _ink_x(mask, slice(mid - 1, mid + 2), x + w / 2)
    half = int(round(0.2 * h))
    return _draw(scan, [((stem - half, mid), (stem + half, mid))], ink, width)


def european(scans: np.ndarray, labels: np.ndarray, random_state: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A European hand: every 1 gains a flag and a base line, every 7 a crossbar; other digits unchanged."""
    out = scans.copy()
    for i, d in enumerate(labels):
        if d == 1:
            out[i] = european_one(scans[i])
        elif d == 7:
            out[i] = european_seven(scans[i])
    return out, labels.copy()


def as_scanned(scans: np.ndarray, labels: np.ndarray, random_state: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The rendered scan unchanged: dark ink on light paper, 48 px (the reference the others are read against)."""
    return scans.copy(), labels.copy()


@dataclass(frozen=True)
class VariantSpec:
    """A named variant: the transformation and one line that says what it imitates."""

    transform: Variant
    description: str

    def __call__(self, scans: np.ndarray, labels: np.ndarray, random_state: int = 0):
        return self.transform(scans, labels, random_state)


VARIANTS: dict[str, VariantSpec] = {
    "scan": VariantSpec(as_scanned, "as scanned: dark ink on light paper, 48x48"),
    "1-bit": VariantSpec(binarised, "binarised (Otsu): two grey levels, as bitonal scanners and faxes give"),
    "stretched": VariantSpec(stretched, "cropped to the ink and stretched to fill a 36x36 box, aspect not kept"),
    "thick-pen": VariantSpec(thick_pen, "strokes dilated by a 5x5 ellipse (felt pen)"),
    "thin-pen": VariantSpec(thin_pen, "strokes eroded by a 3x3 ellipse (fine pen)"),
    "low-res": VariantSpec(low_resolution, "reduced to 10x10 and enlarged back (fax, thumbnail)"),
    "slant": VariantSpec(slanted, "sheared 15-20 degrees, left or right at random"),
    "european": VariantSpec(european, "1s with a flag and a base line, 7s with a crossbar (cv2.line)"),
}


# --- sources and evaluation ---

def _stratified(labels: np.ndarray, n: int | None, random_state: int) -> np.ndarray:
    if n is None or n >= len(labels):
        return np.arange(len(labels))
    from sklearn.model_selection import train_test_split

    idx, _ = train_test_split(np.arange(len(labels)), train_size=n, stratify=labels, random_state=random_state)
    return np.sort(idx)


def load_source(name: str, n: int | None = None, random_state: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """(scans, labels, provenance) of one source rendered as scans; `n` caps it with a stratified sample.

    mnist-test defaults to a stratified MNIST_SAMPLE of the official test set; sklearn-digits to all 1,797.
    """
    from core import datasets
    from core.errors import InvalidOptionError

    if name == "mnist-test":
        ds = datasets.load_mnist_target()  # the official set, else the subset's held-out part, labelled so
        n = MNIST_SAMPLE if n is None else n
    elif name == "sklearn-digits":
        ds = datasets.load_sklearn_digits()
    else:
        raise InvalidOptionError("source", name, SOURCES)
    idx = _stratified(ds.labels, n, random_state)
    images = ds.images[idx] if isinstance(ds.images, np.ndarray) else [ds.images[i] for i in idx]
    sample = f"a stratified {len(idx)} (random_state={random_state})" if len(idx) < len(ds) else f"all {len(idx)}"
    provenance = f"{ds.provenance}; {sample}, rendered as {SCAN_SIZE}x{SCAN_SIZE} scans"
    return render_scans(images, _FIELD[name]), ds.labels[idx].copy(), provenance


def evaluate_variants(predictor, methods: Sequence[str] = METHODS, variants: Mapping[str, Variant] = VARIANTS,
                      sources: Sequence[str] = SOURCES, n: int | None = None, random_state: int = 0):
    """Zero-shot accuracy of `predictor` (anything with predict_proba) per (source, variant, method).

    Returns a pandas DataFrame with columns source, variant, method, n, blank, accuracy. A blank (no ink found
    after the transformation) is never classified and counts as wrong, as in core.evaluation.evaluate.
    `n` caps every source with a stratified sample (tests use a few dozen). The table's attrs hold each
    source's provenance.
    """
    import pandas as pd

    rows, provenance = [], {}
    for source in sources:
        scans, labels, provenance[source] = load_source(source, n, random_state)
        for name, variant in variants.items():
            images, y = variant(scans, labels, random_state)
            for method in methods:
                X, blank = reframe_batch(images, method)
                pred = np.asarray(predictor.predict_proba(X)).argmax(1)
                pred[blank] = -1  # core.evaluation.BLANK: wrong for every digit
                rows.append({"source": source, "variant": name, "method": method, "n": int(len(y)),
                             "blank": int(blank.sum()), "accuracy": float((pred == y).mean()) if len(y) else 0.0})
    table = pd.DataFrame(rows, columns=["source", "variant", "method", "n", "blank", "accuracy"])
    table.attrs["provenance"] = provenance
    return table


def choose_default(table) -> dict:
    """The method with the best mean accuracy over every (source, variant) row of `table` together.

    Ties go to the better worst case, then to METHODS order. Returns the chosen `method`, its `mean` and its
    `worst` (accuracy, source, variant), and the same per method in `per_method`, best first.
    """
    per = []
    for method, g in table.groupby("method", sort=False):
        worst = g.loc[g["accuracy"].idxmin()]
        per.append({"method": method, "mean": float(g["accuracy"].mean()), "cells": int(len(g)),
                    "worst": {"accuracy": float(worst["accuracy"]), "source": worst["source"],
                              "variant": worst["variant"]}})
    if not per:
        raise ValueError("choose_default needs at least one row.")
    order = {m: i for i, m in enumerate(METHODS)}
    per.sort(key=lambda r: (-r["mean"], -r["worst"]["accuracy"], order.get(r["method"], len(order))))
    return {**per[0], "per_method": per}


def pivot(table):
    """The table as rows (source, variant) by columns (method), accuracies, in VARIANTS and method order."""
    wide = table.pivot_table(index=["source", "variant"], columns="method", values="accuracy", sort=False)
    return wide[[m for m in table["method"].unique()]]
