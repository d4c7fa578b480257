"""Domain shift, measured: what differs between MNIST (the source) and a target set, before and after reframing.

Two views of every image, both 28x28 so that pixel measures are comparable:

- **before** ("as given"): the image converted to gray (`core.reframing.to_gray`) and resized to 28x28, nothing
  else: no crop, no margin, no centring, no inversion. The paper's brightness is kept and measured (property
  ``background``); the shape properties read the ink as its distance from the paper (the image inverted where
  its border is light), so that a dark-on-light scan and MNIST's light-on-dark digits are measured alike and
  polarity is counted once, in ``background``. ``grey_levels`` is counted on the image at its own size (a
  resize invents in-between levels that the scan never had).
- **after**: the 28x28 model input made by the chosen reframing method (`core.reframing.reframe`).

Source and target both go through the same view, so "after" compares what the model is given in each domain.
Per property the gap is scipy's Wasserstein distance (earth mover's distance: in the property's own unit, how
far the target's values must move to match the source's); divided by the source's spread as given (its
standard deviation, floored, see SCALE_FLOOR) it is scale-free and comparable across properties and views.
`explain_shift` turns the before/after distances into sentences, with the thresholds stated below. A target of
a few images differs from MNIST by chance alone: `chance_distance` measures how much, from as many MNIST digits
drawn at random, and a verdict that rests on a distance within it is "unsure", not a gap (nor the lack of one).

The penultimate-layer features (`penultimate_model`, `feature_sample`, `embed_2d`) show the same shift as
the model sees it. TensorFlow is imported only inside those functions.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import cv2
import numpy as np
import pandas as pd

from core.reframing import DEFAULT_METHOD, METHODS, SIZE, reframe, to_gray
from core.wording import plural

#: A pixel is ink when its ink level (0 paper .. 1 full ink) is above this.
INK_THRESHOLD = 0.5
#: MNIST's digit size in its 28x28 frame: stroke widths are given for a digit of this size.
STROKE_REFERENCE = 20

#: Every measured property: (label, unit, what it means). The order is the order of every table.
PROPERTIES: dict[str, tuple[str, str, str]] = {
    "background": ("Paper brightness", "0 black .. 1 white",
                   "median brightness of the image's border: MNIST is white ink on black paper (0)"),
    "ink_share": ("Ink share", "fraction of pixels", f"share of the 28x28 pixels whose ink level is above "
                                                     f"{INK_THRESHOLD}"),
    "size": ("Digit size", "px", "longest side of the ink's bounding box in the 28x28 frame (MNIST: 20)"),
    "com_offset": ("Centre-of-mass offset", "px", "distance of the ink's centre of mass from the frame's centre"),
    "aspect": ("Bounding-box aspect", "width / height", "width over height of the ink's bounding box"),
    "slant": ("Slant", "dx / dy", "lean of the strokes from second-order moments (-mu11/mu02, the classic "
                                  "deskew); positive leans right like italics"),
    "stroke_width": ("Stroke width", "px at 20 px size",
                     "pen width relative to the digit: 2 x mean distance-transform value on the strokes' ridge, "
                     "minus 1 (exact for odd widths, one pixel short for even ones), rescaled to a digit of "
                     "MNIST's size (20 px), so that drawing larger does not count as a thicker pen"),
    "grey_levels": ("Grey levels", "distinct values", "distinct ink levels after quantising to 256 (a 1-bit scan "
                                                      "has 2)"),
}

#: What each property tells about: reframing is built to close size, position and polarity, never style.
GROUPS: dict[str, str] = {
    "background": "polarity", "size": "size", "com_offset": "position", "ink_share": "amount of ink",
    "aspect": "handwriting style", "slant": "handwriting style", "stroke_width": "handwriting style",
    "grey_levels": "ink tones",  # a scanner's or a pen's: drawn digits have them too
}

#: The smallest spread used to scale a distance, in the property's unit. The source's own standard deviation
#: can be ~0 (every MNIST background is 0), and a gap is not noticeable below these amounts anyway.
SCALE_FLOOR: dict[str, float] = {
    "background": 0.05, "ink_share": 0.01, "size": 0.5, "com_offset": 0.25, "aspect": 0.05, "slant": 0.05,
    "stroke_width": 0.25, "grey_levels": 2.0,
}

#: Thresholds of `verdict`, in source standard deviations (the scaled distance).
NOTICEABLE = 0.25  # a gap below a quarter of the source's spread is too small to matter
NARROWED = 0.5  # after <= half of before: reframing narrowed the gap
WIDENED = 1.5  # after >= 1.5 x before: reframing widened it
#: Chance level of a gap (`chance_distance`): random draws of the source, and the percentile of their distances
#: a gap must reach to count as more than chance.
CHANCE_DRAWS = 20
CHANCE_PERCENTILE = 95

VERDICTS = ("closed", "narrowed", "remains", "widened", "opened", "unsure", "none")


# --- image properties ---------------------------------------------------------------------------------------

def _border_median(stack: np.ndarray) -> np.ndarray:
    border = np.concatenate([stack[:, 0], stack[:, -1], stack[:, 1:-1, 0], stack[:, 1:-1, -1]], axis=1)
    return np.median(border, axis=1)


def _as_unit_stack(images) -> np.ndarray:
    x = np.asarray(images)
    if x.ndim != 3:
        raise ValueError(f"property_table needs a stack of gray images (n, h, w); got shape {x.shape}.")
    if x.dtype == np.uint8:
        return x.astype(np.float32) * np.float32(1 / 255)
    return np.clip(x.astype(np.float32, copy=False), 0.0, 1.0)


def count_grey_levels(ink: np.ndarray) -> np.ndarray:
    """Distinct values per image of a stack (n, h, w) in [0, 1], after quantising to 256 levels."""
    n = len(ink)
    q = np.rint(np.asarray(ink, np.float32).reshape(n, -1) * 255).astype(np.uint8)
    q.sort(axis=1)  # sorted rows: each new value starts where a row changes (no np.unique per image)
    return 1 + (q[:, 1:] != q[:, :-1]).sum(axis=1) if q.shape[1] else np.zeros(n, np.int64)


def _stroke_width(mask: np.ndarray) -> np.ndarray:
    """2 x mean distance transform on the ridge (local maxima) of each ink mask, minus 1; 0 for no ink."""
    n, h, w = mask.shape
    # One distance transform for the whole stack: the images stacked into one tall image, each framed by a row
    # and column of background so that no distance crosses from one image into the next.
    padded = np.pad(mask, ((0, 0), (1, 1), (1, 1)))
    tall = padded.reshape(n * (h + 2), w + 2)
    dt = cv2.distanceTransform(tall, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)  # exact: the 3x3 mask reads 1 as 0.955
    ridge = (dt > 0) & (dt >= cv2.dilate(dt, np.ones((3, 3), np.uint8)))
    count = ridge.reshape(n, -1).sum(axis=1)
    total = (dt * ridge).reshape(n, -1).sum(axis=1, dtype=np.float64)
    # A stroke 2k+1 pixels wide has ridge value k+1 (distance to the nearest background pixel's centre).
    return np.where(count > 0, 2 * total / np.maximum(count, 1) - 1, 0.0)


def property_table(images, grey_levels: np.ndarray | None = None) -> pd.DataFrame:
    """Every property of PROPERTIES for a stack of gray images (n, h, w), one row per image.

    Images may be uint8 or float in [0, 1], light ink on dark or dark ink on light (read from the border, as
    reframing does). Geometric measures are in the images' own pixels: pass 28x28 images to compare with MNIST.
    `grey_levels` replaces the counted levels (the "before" view counts them at the image's own size).
    """
    x = _as_unit_stack(images)
    n, h, w = x.shape
    background = _border_median(x)
    ink = np.where((background > 0.5)[:, None, None], 1.0 - x, x)
    mask = ink > INK_THRESHOLD
    rows, cols = mask.any(axis=2), mask.any(axis=1)
    has_ink = rows.any(axis=1)
    top, bottom = rows.argmax(axis=1), h - 1 - rows[:, ::-1].argmax(axis=1)
    left, right = cols.argmax(axis=1), w - 1 - cols[:, ::-1].argmax(axis=1)
    box_h = np.where(has_ink, bottom - top + 1, 0)
    box_w = np.where(has_ink, right - left + 1, 0)

    # Moments weighted by ink level (not by the mask): antialiased edges count for what they are. Raw moments
    # as matrix products, then central ones: mu11 = m11 - cx cy m00, mu02 = m02 - cy^2 m00.
    ys, xs = np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32)
    row, col = ink.sum(axis=2, dtype=np.float64), ink.sum(axis=1, dtype=np.float64)  # (n, h), (n, w)
    mass = row.sum(axis=1)
    safe = np.maximum(mass, 1e-9)
    cy, cx = (row @ ys) / safe, (col @ xs) / safe
    m11 = ((ink @ xs) @ ys).astype(np.float64)
    mu11 = m11 - cx * cy * mass
    mu02 = row @ (ys.astype(np.float64) ** 2) - cy**2 * mass
    # Image rows grow downwards: a stroke leaning right ("/") has x falling as y grows, so mu11 < 0.
    slant = np.where(mu02 > 1e-6, -mu11 / np.maximum(mu02, 1e-6), 0.0)
    centre = ((w - 1) / 2, (h - 1) / 2)  # pixel centres run 0..w-1: the centre of 28 pixels is 13.5
    offset = np.where(mass > 0, np.hypot(cx - centre[0], cy - centre[1]), 0.0)
    size = np.maximum(box_h, box_w).astype(np.float64)
    # Stroke width at MNIST's digit size (20 px): a pen property, apart from how large the digit is drawn.
    stroke = _stroke_width(mask.view(np.uint8)) * STROKE_REFERENCE / np.maximum(size, 1)

    levels = count_grey_levels(ink) if grey_levels is None else np.asarray(grey_levels)
    return pd.DataFrame({
        "background": background.astype(np.float64),
        "ink_share": mask.mean(axis=(1, 2)),
        "size": size,
        "com_offset": offset,
        "aspect": np.where(box_h > 0, box_w / np.maximum(box_h, 1), np.nan),
        "slant": slant,
        "stroke_width": stroke,
        "grey_levels": levels.astype(np.float64),
    })


def _resize_stack(stack: np.ndarray) -> np.ndarray:
    """(n, h, w) float32 -> (n, 28, 28), as reframing resizes: area averaging to shrink, bilinear to enlarge."""
    n, h, w = stack.shape
    if (h, w) == (SIZE, SIZE):
        return stack
    interpolation = cv2.INTER_AREA if h * w >= SIZE * SIZE else cv2.INTER_LINEAR
    out = np.empty((n, SIZE, SIZE), np.float32)
    # OpenCV resizes many channels at once (up to 128 in OpenCV 5): the stack as a (h, w, n) image, in blocks of 128.
    for i in range(0, n, 128):
        block = np.ascontiguousarray(stack[i : i + 128].transpose(1, 2, 0))
        resized = cv2.resize(block, (SIZE, SIZE), interpolation=interpolation)
        out[i : i + 128] = resized.reshape(SIZE, SIZE, -1).transpose(2, 0, 1)
    return out


def as_given(images) -> tuple[np.ndarray, np.ndarray]:
    """The "before" view: (stack (n, 28, 28) float32 gray, grey levels of each image at its own size)."""
    if isinstance(images, np.ndarray) and images.ndim == 3 and images.dtype == np.uint8 and len(images):
        # The built-in sets (MNIST, scikit-learn digits): one gray uint8 stack, no per-image work.
        gray = images.astype(np.float32) * np.float32(1 / 255)
        ink = np.where((_border_median(gray) > 0.5)[:, None, None], 1.0 - gray, gray)
        return _resize_stack(gray), count_grey_levels(ink)
    frames, levels = [], []
    for img in images:
        gray = to_gray(img)
        flipped = 1.0 - gray if float(_border_median(gray[None])[0]) > 0.5 else gray
        levels.append(int(count_grey_levels(flipped[None])[0]))
        frames.append(_resize_stack(gray[None])[0])
    stack = np.stack(frames).astype(np.float32) if frames else np.zeros((0, SIZE, SIZE), np.float32)
    return stack, np.asarray(levels, np.int64)


def reframe_all(images, method: str = DEFAULT_METHOD,
                progress: Callable[[float], None] | None = None) -> tuple[np.ndarray, np.ndarray, list[tuple[int, str]]]:
    """The "after" view: (model inputs (n, 28, 28), blank mask, [(index, reason)] of images that failed)."""
    from core.images import failure_reason

    images = images if isinstance(images, np.ndarray) else list(images)
    n = len(images)
    X = np.zeros((n, SIZE, SIZE), np.float32)
    blank = np.zeros(n, bool)
    failed = []
    step = max(1, n // 20)
    for i in range(n):
        try:
            r = reframe(images[i], method)
        except Exception as e:  # one bad image is that image's problem: skip it, keep the others
            failed.append((i, failure_reason(e)))
            continue
        blank[i] = r.blank
        if not r.blank:
            X[i] = r.image
        if progress and (i + 1) % step == 0:
            progress((i + 1) / n)
    return X, blank, failed


@dataclass
class DomainProperties:
    """One domain's images through both views: property tables of the same images, row for row."""

    name: str
    provenance: str
    method: str
    before: pd.DataFrame
    after: pd.DataFrame
    index: np.ndarray  # positions in the data set of the rows (blank and unreadable images left out)
    labels: np.ndarray
    dropped: list[str] = field(default_factory=list)  # "file or image i: reason" for everything left out

    def __len__(self) -> int:
        return len(self.index)


def domain_properties(dataset, method: str = DEFAULT_METHOD,
                      progress: Callable[[float], None] | None = None) -> DomainProperties:
    """Property tables of a data set before and after reframing (images that are blank after it left out)."""
    from core.errors import InvalidOptionError

    if method not in METHODS:
        raise InvalidOptionError("reframing", method, METHODS)
    images = dataset.images
    X, blank, failed = reframe_all(images, method, progress)
    bad = {i for i, _ in failed}
    keep = np.array([i for i in range(len(blank)) if not blank[i] and i not in bad], np.int64)
    name_of = (lambda i: dataset.files[i]) if getattr(dataset, "files", None) else (lambda i: f"image {i}")
    dropped = list(getattr(dataset, "skipped", []))  # files the loader could not read, then images reframing left
    dropped += [f"{name_of(i)}: {reason}" for i, reason in failed]
    dropped += [f"{name_of(i)}: blank (no ink)" for i in np.flatnonzero(blank) if i not in bad]
    kept = images[keep] if isinstance(images, np.ndarray) else [images[i] for i in keep]
    stack, levels = as_given(kept)
    before = property_table(stack, grey_levels=levels)
    after = property_table(X[keep])
    return DomainProperties(dataset.name, dataset.provenance, method, before, after, keep,
                            np.asarray(dataset.labels)[keep], dropped)


# --- distances and their meaning -----------------------------------------------------------------------------

def source_scale(source_df: pd.DataFrame) -> pd.Series:
    """Per property, the source's standard deviation, floored at SCALE_FLOOR (the unit of a scaled distance)."""
    std = source_df[list(PROPERTIES)].std(ddof=0)
    return pd.Series({p: max(float(std[p]) if np.isfinite(std[p]) else 0.0, SCALE_FLOOR[p]) for p in PROPERTIES})


def shift_distances(source_df: pd.DataFrame, target_df: pd.DataFrame,
                    scale: pd.Series | None = None) -> pd.DataFrame:
    """Per property: the Wasserstein distance between source and target values (in the property's unit) and
    the same divided by `scale` (default: the source's standard deviation, floored), indexed by property."""
    from scipy.stats import wasserstein_distance

    scale = source_scale(source_df) if scale is None else scale
    rows = []
    for p in PROPERTIES:
        s, t = source_df[p].dropna().to_numpy(), target_df[p].dropna().to_numpy()
        d = float(wasserstein_distance(s, t)) if len(s) and len(t) else float("nan")
        rows.append({"property": p, "distance": d, "scale": float(scale[p]), "scaled": d / float(scale[p])})
    return pd.DataFrame(rows).set_index("property")


def chance_distance(source_df: pd.DataFrame, n: int, scale: pd.Series, draws: int = CHANCE_DRAWS,
                   random_state: int = 0) -> pd.Series:
    """Per property, the scaled distance that `n` images show by chance: between the source and `n` of its own
    images drawn at random (with replacement), at the CHANCE_PERCENTILE-th percentile of `draws` draws.

    A target of a few images differs from MNIST by chance alone: 20 MNIST digits drawn so lie 0.36-0.52 source
    standard deviations from MNIST as given on six of the eight properties (more than NOTICEABLE), 1,000 lie
    0.02-0.07 away (95th percentile of 20 draws, MNIST's test set).
    """
    from scipy.stats import wasserstein_distance

    rng = np.random.default_rng(random_state)
    out = {}
    for p in PROPERTIES:
        s = source_df[p].dropna().to_numpy()
        if not len(s) or n < 1:
            out[p] = float("nan")
            continue
        d = [wasserstein_distance(s, rng.choice(s, n)) for _ in range(draws)]
        out[p] = float(np.percentile(d, CHANCE_PERCENTILE)) / float(scale[p])
    return pd.Series(out)


def _known(chance: float) -> float:
    return chance if np.isfinite(chance) else 0.0  # an unknown chance level doubts nothing


def gap_state(scaled: float, chance: float = 0.0) -> str:
    """One scaled distance, given what the target's number of images shows by chance (`chance_distance`): "gap"
    (at least NOTICEABLE, and at least chance), "none" (under NOTICEABLE, with chance under it too: this many
    images could have shown a gap) or "unsure" (within chance, or not measured at all)."""
    if not np.isfinite(scaled):
        return "unsure"
    if scaled >= NOTICEABLE:
        return "gap" if scaled >= _known(chance) else "unsure"
    return "none" if _known(chance) < NOTICEABLE else "unsure"


def verdict(scaled_before: float, scaled_after: float, chance_before: float = 0.0, chance_after: float = 0.0) -> str:
    """What reframing did to one gap, from its scaled distances (thresholds NOTICEABLE, NARROWED, WIDENED) and
    their `gap_state`s. What is left after reframing decides first: a gap after it, whatever could be told before,
    is "remains" at least; no gap after it, with no gap told before, is "none". "unsure": no telling whether a gap
    is left, unless the gap before is at least twice what is left after it even with chance added ("narrowed")."""
    b, a = scaled_before, scaled_after
    before, after = gap_state(b, chance_before), gap_state(a, chance_after)
    if after == "gap":
        if before == "none":
            return "opened"
        if before == "gap" and a <= NARROWED * b:
            return "narrowed"
        return "widened" if before == "gap" and a >= WIDENED * b else "remains"
    if before == "gap" and after == "none":
        return "closed"
    if before == "gap" and a + _known(chance_after) <= NARROWED * b:
        return "narrowed"
    return "unsure" if after == "unsure" else "none"


def chance_levels(source: DomainProperties, n: int) -> pd.DataFrame:
    """`chance_distance` of `n` images in both views (columns before, after), scaled as `before_after` scales.

    It depends on the source, the reframing and n only, so a page can keep it for every target of that size.
    """
    scale = source_scale(source.before)
    return pd.DataFrame({"before": chance_distance(source.before, n, scale),
                         "after": chance_distance(source.after, n, scale)})


def before_after(source: DomainProperties, target: DomainProperties,
                 chance: pd.DataFrame | None = None) -> pd.DataFrame:
    """The table the page and the CLI show: per property the distance before and after reframing, what the
    target's number of images shows by chance (`chance`: chance_levels(source, len(target)), computed when not
    given) and the verdict.

    Both views are scaled by the same number, the source's spread as given (MNIST as the model learned it),
    so a scaled distance that falls means the gap itself fell.
    """
    scale = source_scale(source.before)
    b = shift_distances(source.before, target.before, scale)
    a = shift_distances(source.after, target.after, scale)
    chance = chance_levels(source, len(target)) if chance is None else chance
    cb, ca = chance["before"], chance["after"]
    rows = []
    for p, (label, unit, _) in PROPERTIES.items():
        sb, sa = b.at[p, "scaled"], a.at[p, "scaled"]
        rows.append({"property": p, "label": label, "unit": unit, "group": GROUPS[p],
                     "before": b.at[p, "distance"], "after": a.at[p, "distance"], "scale": scale[p],
                     "scaled_before": sb, "scaled_after": sa, "change": sa - sb,
                     "chance_before": cb[p], "chance_after": ca[p],
                     "open_after": gap_state(sa, ca[p]) == "gap",  # a gap left after reframing
                     "verdict": verdict(sb, sa, cb[p], ca[p])})
    return pd.DataFrame(rows)


def _join(words: list[str]) -> str:
    words = list(dict.fromkeys(words))  # each once, in order
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _by_group(d: pd.DataFrame, props: list[str]) -> str:
    """'polarity (paper brightness 20.00 -> 0.00) and size (digit size 15.98 -> 4.05)': grouped, in order."""
    groups: dict[str, list[str]] = {}
    for p in props:
        groups.setdefault(GROUPS[p], []).append(
            f"{d.at[p, 'label'].lower()} {d.at[p, 'scaled_before']:.2f} -> {d.at[p, 'scaled_after']:.2f}")
    return _join([f"{g} ({'; '.join(items)})" for g, items in groups.items()])


def explain_shift(distances: pd.DataFrame, n_target: int | None = None) -> list[str]:
    """Plain-language sentences from a `before_after` table: which gaps reframing closes, which stay, and which
    the target's `n_target` images are too few to tell from chance.

    Nothing is assumed: each sentence names a property only when its measured verdict says so (see
    `verdict`'s thresholds, in source standard deviations).
    """
    d = distances.set_index("property") if "property" in distances.columns else distances
    by = {v: [p for p in d.index if d.at[p, "verdict"] == v] for v in VERDICTS}
    if all(d.at[p, "verdict"] == "none" for p in d.index):
        return [f"The target looks like MNIST on every measured property: no gap reaches {NOTICEABLE} source "
                "standard deviations, before or after reframing."]
    out = [f"Gaps in source standard deviations, before -> after reframing; below {NOTICEABLE} counts as no gap."]
    if by["closed"]:
        out.append(f"Reframing closes the gaps in {_by_group(d, by['closed'])}.")
    if by["narrowed"]:
        out.append(f"It narrows, to half or less, the gaps in {_by_group(d, by['narrowed'])}.")
    if not by["closed"] and not by["narrowed"] and (by["remains"] or by["widened"] or by["opened"]):
        out.append("This reframing closes none of the measured gaps.")
    if by["remains"]:
        out.append(f"It does not close the gaps in {_by_group(d, by['remains'])}.")
    if by["widened"]:
        out.append(f"It widens the gaps in {_by_group(d, by['widened'])}.")
    if by["opened"]:
        out.append(f"It opens gaps that were not there before in {_by_group(d, by['opened'])}.")
    if by["unsure"]:
        few = f"{plural(n_target, 'MNIST digit')} drawn at random {'differs' if n_target == 1 else 'differ'}" \
            if n_target else "as many MNIST digits drawn at random differ"
        out.append(f"Too few target images to tell whether reframing leaves a gap in {_by_group(d, by['unsure'])}: "
                   f"{few} from MNIST about as much by chance. More target images would tell.")
    style = [p for p in by["remains"] + by["widened"] + by["opened"] if GROUPS[p] == "handwriting style"]
    if style:
        out.append("The handwriting itself still differs ("
                   + _join([d.at[p, "label"].lower() for p in style])
                   + "): reframing can move, scale and invert a digit, but no reframing redraws its strokes; what "
                     "the model has not seen it can only learn from labelled target digits, for example a few per "
                     "class.")
    left = [p for p in d.index if d.at[p, "open_after"]]
    if left:
        worst = max(left, key=lambda p: d.at[p, "scaled_after"])
        out.append(f"The largest gap left after reframing is {d.at[worst, 'label'].lower()} "
                   f"({d.at[worst, 'scaled_after']:.2f} source standard deviations).")
    elif not by["unsure"]:
        out.append(f"After reframing no measured gap reaches {NOTICEABLE} source standard deviations.")
    return out


def sentence_for(row) -> str:
    """One line per property for the CLI: the distances before -> after and the verdict in words."""
    words = {"closed": "closed by reframing", "narrowed": "narrowed by reframing", "remains": "not closed",
             "widened": "widened by reframing", "opened": "opened by reframing", "none": "no gap",
             "unsure": f"too few images to tell (chance {row['chance_before']:.2f} before, "
                       f"{row['chance_after']:.2f} after)"}
    return (f"{row['label']} ({row['unit']}): {row['before']:.3g} -> {row['after']:.3g}, "
            f"{row['scaled_before']:.2f} -> {row['scaled_after']:.2f} SD: {words[row['verdict']]}")


@dataclass
class ShiftResult:
    """Source and target through both views, the distances and their explanation."""

    source: DomainProperties
    target: DomainProperties
    distances: pd.DataFrame
    explanation: list[str]

    def long_table(self) -> pd.DataFrame:
        """Every image's properties with columns domain and view: the long form the page's histograms bin."""
        parts = []
        for dom, props in (("source", self.source), ("target", self.target)):
            for view in ("before", "after"):
                t = getattr(props, view).copy()
                t.insert(0, "view", view)
                t.insert(0, "domain", dom)
                t["label"] = props.labels
                parts.append(t)
        return pd.concat(parts, ignore_index=True)

    def as_dict(self) -> dict:
        rows = self.distances.replace({np.nan: None}).to_dict(orient="records")
        return {"source": self.source.name, "source_provenance": self.source.provenance,
                "target": self.target.name, "target_provenance": self.target.provenance,
                "reframing": self.target.method, "n_source": len(self.source), "n_target": len(self.target),
                "dropped_target": self.target.dropped, "thresholds": {
                    "noticeable": NOTICEABLE, "narrowed": NARROWED, "widened": WIDENED,
                    "chance_draws": CHANCE_DRAWS, "chance_percentile": CHANCE_PERCENTILE},
                "distances": rows, "explanation": self.explanation}


def analyse(source: DomainProperties, target: DomainProperties,
            chance: pd.DataFrame | None = None) -> ShiftResult:
    """Distances and explanation for two domains measured with the same reframing method (`chance`: see
    `before_after`)."""
    if source.method != target.method:
        raise ValueError(f"Both domains must be reframed alike; got {source.method} and {target.method}.")
    distances = before_after(source, target, chance)
    return ShiftResult(source, target, distances, explain_shift(distances, len(target)))


def load_source():
    """The source domain: the official MNIST test set when present, else the embedded subset's held-out part."""
    from core.datasets import load_mnist_target

    ds = load_mnist_target()
    ds.name = "mnist"
    return ds


# --- what the model sees: penultimate-layer features --------------------------------------------------------

def penultimate_model(model):
    """A Keras model from the classifier's input to the input of its last Dense layer (the features the
    classifier separates). Works for the shipped CNN (1,600 features), the MLP (128) and the deep CNN (256)."""
    import keras

    from core.errors import ModelError

    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    if not dense:
        raise ModelError(f"{model.name} has no Dense layer at its top level: its penultimate features cannot be "
                         "read (transfer models keep their head in a nested model).")
    return keras.Model(model.inputs, dense[-1].input, name=f"{model.name}_penultimate")


def stratified_sample(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Sorted positions of at most n items, the same share of each label (all of them when there are <= n)."""
    labels = np.asarray(labels)
    if len(labels) <= n:
        return np.arange(len(labels))
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    try:
        picked, _ = train_test_split(idx, train_size=n, stratify=labels, random_state=seed)
    except ValueError:  # a class with a single image cannot be stratified: a plain random sample then
        picked = np.random.default_rng(seed).choice(idx, n, replace=False)
    return np.sort(picked)


def feature_sample(predictor, source, target, method: str = DEFAULT_METHOD, per_domain: int = 1000,
                   seed: int = 0, source_index: np.ndarray | None = None,
                   target_index: np.ndarray | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """Penultimate features of a stratified sample of each domain, reframed with `method`.

    Returns (table with domain, index, label, predicted, confidence, correct; features (n, width)).
    `predictor` is a core.models.Predictor (or a core.model_process.RemotePredictor); `*_index` restrict the
    sample to those positions (non-blank images).
    """
    tables, feats = [], []
    for dom, ds, allowed in (("source", source, source_index), ("target", target, target_index)):
        allowed = np.arange(len(ds)) if allowed is None else np.asarray(allowed)
        labels = np.asarray(ds.labels)[allowed]
        pick = allowed[stratified_sample(labels, per_domain, seed)]
        images = ds.images[pick] if isinstance(ds.images, np.ndarray) else [ds.images[i] for i in pick]
        X, blank, failed = reframe_all(images, method)
        ok = ~blank
        ok[[i for i, _ in failed]] = False
        X, pick = X[ok], pick[ok]
        proba = predictor.predict_proba(X)
        y = np.asarray(ds.labels)[pick]
        tables.append(pd.DataFrame({"domain": dom, "index": pick, "label": y, "predicted": proba.argmax(1),
                                    "confidence": proba.max(1), "correct": proba.argmax(1) == y}))
        feats.append(predictor.features(X))
    return pd.concat(tables, ignore_index=True), np.concatenate(feats)


def embed_2d(features: np.ndarray, method: str = "pca", seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """A 2-D map of feature vectors: PCA, or t-SNE (on the first 50 principal components, as is usual)."""
    from sklearn.decomposition import PCA

    from core.errors import InvalidOptionError

    if method not in ("pca", "tsne"):
        raise InvalidOptionError("map", method, ("pca", "tsne"))
    from threadpoolctl import threadpool_limits

    f = np.asarray(features, np.float64)
    if len(f) < 3:
        from core.errors import DatasetError

        raise DatasetError(f"A 2-D map needs at least 3 images; got {len(f)}.")
    # One BLAS/OpenMP thread: on a busy 2-core server more threads spin against each other (measured on this
    # project's machine under load: PCA of a 2,000 x 1,600 matrix 6.6 s with the default threads, 0.4 s with one).
    with threadpool_limits(1):
        if method == "pca":
            return PCA(n_components=2, random_state=seed).fit_transform(f)
        from sklearn.manifold import TSNE

        reduced = PCA(n_components=min(50, *f.shape), random_state=seed).fit_transform(f)
        # perplexity must stay below the number of points; tiny sets (tests, a few collected digits) get less
        perp = min(perplexity, max(2.0, (len(f) - 1) / 3))
        return TSNE(n_components=2, perplexity=perp, init="pca", learning_rate="auto",
                    random_state=seed).fit_transform(reduced)
