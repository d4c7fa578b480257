"""Input reframing: make a production digit image look like an MNIST training image.

The reused model is never changed; all the effort goes into its input (Pacchiotti et al., EJS 23(1) 2024).
`reframe(image, method)` returns every intermediate image with its name, so a page can show the strip and a
test can check each stage. Three methods:

- ``naive``: grayscale and resize only. Dark ink on white paper stays dark on white, which looks nothing like
  MNIST's white ink on black: the model answers one or two digits for almost everything. Kept because it teaches.
- ``paper``: the paper's four stages: single channel; pad the shorter side to a square; add an MNIST-like
  margin; resize to 28x28 and invert to white ink on black.
- ``mnist``: MNIST's own normalisation: crop to the ink, scale to fit 20x20 keeping the aspect ratio, place in
  28x28 with the ink's centre of mass at the centre; when a small scan had to be enlarged, sharpen its strokes.

All stage images are float32 in [0, 1]. The final image is 28x28, float32, white ink on black.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from core.errors import InvalidImageError, InvalidOptionError

METHODS: tuple[str, ...] = ("naive", "paper", "mnist")
#: The default everywhere: the paper's method, the best measured on the target domain (see the README).
DEFAULT_METHOD = "paper"
MIN_SIDE = 8
MAX_SIDE = 4096
SIZE = 28
#: MNIST digits fit a 20x20 box inside the 28x28 field: a 4-pixel margin on each side.
BOX = 20
#: An image whose ink stands less than this far above its background is blank (paper texture, sensor noise).
BLANK_CONTRAST = 0.2


@dataclass(frozen=True)
class Stage:
    """One named step of a reframing, with the image it produced."""

    name: str
    image: np.ndarray
    note: str = ""


@dataclass(frozen=True)
class Reframed:
    """The result of reframing one image: every stage, and the 28x28 model input (None when blank)."""

    method: str
    stages: tuple[Stage, ...]
    blank: bool
    polarity: str  # "dark-on-light" or "light-on-dark"
    bbox: tuple[int, int, int, int] | None = field(default=None)  # x, y, w, h of the ink in the input

    @property
    def image(self) -> np.ndarray | None:
        return None if self.blank else self.stages[-1].image


def check_image(image: np.ndarray) -> np.ndarray:
    """The image as an array of a shape and size every method accepts, or InvalidImageError saying why not.

    Gray (HxW or HxWx1), RGB or RGBA, each side from MIN_SIDE to MAX_SIDE pixels. Image decoding ends with
    this check too, so a file that was read can always be reframed.
    """
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise InvalidImageError(
            f"An image must be HxW (gray), HxWx3 (RGB) or HxWx4 (RGBA); got shape {a.shape}."
        )
    h, w = a.shape[:2]
    if min(h, w) < MIN_SIDE or max(h, w) > MAX_SIDE:
        raise InvalidImageError(
            f"An image must be between {MIN_SIDE}x{MIN_SIDE} and {MAX_SIDE}x{MAX_SIDE} pixels; got {w}x{h}."
        )
    return a


def to_gray(image: np.ndarray) -> np.ndarray:
    """Any digit image (gray, RGB or RGBA; bool, integer or float) as a float32 gray image in [0, 1].

    RGBA with a varying alpha (a drawing on a transparent background) is composited over a background
    that contrasts with the ink, so transparent-with-dark-ink and transparent-with-light-ink both work.
    """
    a = check_image(image)
    if a.dtype == np.uint8 and a.ndim == 3:
        # The common case (canvas, photos): convert colour on uint8, 4x less memory traffic than float.
        code = cv2.COLOR_RGBA2GRAY if a.shape[2] == 4 else cv2.COLOR_RGB2GRAY
        gray = cv2.cvtColor(np.ascontiguousarray(a), code).astype(np.float32) * np.float32(1 / 255)
        alpha = a[:, :, 3] if a.shape[2] == 4 else None
        return _composite(gray, alpha, 255)
    f = _as_unit_float(a)
    if f.ndim == 2:
        return f
    gray = cv2.cvtColor(np.ascontiguousarray(f[:, :, :3]), cv2.COLOR_RGB2GRAY)
    return _composite(gray, f[:, :, 3] if f.shape[2] == 4 else None, 1.0)


def _composite(gray: np.ndarray, alpha: np.ndarray | None, opaque: float) -> np.ndarray:
    """Drawings on a transparent background: put them on a backdrop that contrasts with their ink."""
    if alpha is None or alpha.min() >= 0.99 * opaque:
        return gray
    a = alpha.astype(np.float32) * np.float32(1 / opaque)
    inked = a > 0.5
    if not inked.any():
        return np.ones_like(gray)  # fully transparent: nothing drawn
    backdrop = 1.0 if gray[inked].mean() < 0.5 else 0.0
    return gray * a + backdrop * (1.0 - a)


def _as_unit_float(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.bool_:
        return a.astype(np.float32)
    if a.dtype == np.uint8:
        return a.astype(np.float32) * np.float32(1 / 255)
    if a.dtype == np.uint16:
        return a.astype(np.float32) * np.float32(1 / 65535)
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise InvalidImageError(f"Pixel values must be numbers; got dtype {a.dtype}.")
    f = a.astype(np.float32)
    if not np.isfinite(f).all():
        raise InvalidImageError("The image contains NaN or infinite values.")
    lo, hi = float(f.min()), float(f.max())
    if lo < 0 or hi > 255:
        raise InvalidImageError(f"Pixel values must lie in [0, 1] or [0, 255]; got [{lo:g}, {hi:g}].")
    return f / 255 if hi > 1 else f


def _border(a: np.ndarray) -> np.ndarray:
    return np.concatenate([a[0], a[-1], a[1:-1, 0], a[1:-1, -1]])


@dataclass(frozen=True)
class _Ink:
    """What the methods share: polarity, background level, contrast and where the ink is."""

    dark_on_light: bool
    background: float  # background level in the gray image
    contrast: float  # how far the ink stands out from the background, 0..1
    bbox: tuple[int, int, int, int] | None
    mask: np.ndarray | None = field(default=None, repr=False, compare=False)  # uint8, 1 where ink is

    @property
    def blank(self) -> bool:
        return self.bbox is None


def find_ink(gray: np.ndarray) -> _Ink:
    """Polarity, background, contrast, and where the ink is (mask and bounding box) in a gray image."""
    # The border is mostly paper, whatever the digit: its median tells the polarity and the background.
    background = float(np.median(_border(gray)))
    dark_on_light = background > 0.5
    ink = (1.0 - gray) if dark_on_light else gray
    ink_background = (1.0 - background) if dark_on_light else background
    # A 3x3 median ignores isolated noisy pixels on photos; tiny images have no such noise to ignore.
    peak_source = cv2.medianBlur(ink, 3) if min(ink.shape) >= 64 else ink
    contrast = float(peak_source.max()) - ink_background
    if contrast < BLANK_CONTRAST:
        return _Ink(dark_on_light, background, max(contrast, 0.0), None)
    mask = (ink > ink_background + 0.5 * contrast).astype(np.uint8)
    return _Ink(dark_on_light, background, contrast, cv2.boundingRect(mask), mask)


def _resize(a: np.ndarray, width: int, height: int) -> np.ndarray:
    # INTER_AREA averages when shrinking (no aliasing of thin strokes); it is blocky when enlarging.
    shrinking = width * height <= a.shape[0] * a.shape[1]
    return cv2.resize(a, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def _level(a: np.ndarray, ink: _Ink, invert: bool) -> np.ndarray:
    """White ink on black with the background at exactly 0 and the strongest ink at 1, as in MNIST."""
    bg = (1.0 - ink.background) if ink.dark_on_light else ink.background
    x = (1.0 - a) if invert else a
    return np.clip((x - bg) / max(ink.contrast, 1e-6), 0.0, 1.0).astype(np.float32)


def _pad_to_square(a: np.ndarray, value: float) -> np.ndarray:
    h, w = a.shape
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    return cv2.copyMakeBorder(
        a, top, side - h - top, left, side - w - left, cv2.BORDER_CONSTANT, value=float(value)
    )


def _naive(gray: np.ndarray, ink: _Ink) -> list[Stage]:
    return [Stage("resize 28x28", _resize(gray, SIZE, SIZE), "no inversion, no centring")]


def _paper(gray: np.ndarray, ink: _Ink) -> list[Stage]:
    x, y, w, h = ink.bbox
    square = _pad_to_square(gray[y : y + h, x : x + w], ink.background)
    margin = round(square.shape[0] * (SIZE - BOX) / (2 * BOX))
    framed = cv2.copyMakeBorder(square, margin, margin, margin, margin, cv2.BORDER_CONSTANT, value=ink.background)
    small = _resize(framed, SIZE, SIZE)
    inverted = _level(small, ink, invert=ink.dark_on_light)
    invert_note = "white ink on black" if ink.dark_on_light else "already light ink on dark: levelled only"
    return [
        Stage("pad to square", square, "cropped to the ink, shorter side padded"),
        Stage("margin", framed, "digit fills 20/28 of the side, as in MNIST"),
        Stage("resize 28x28", small),
        Stage("invert", inverted, invert_note),
    ]


def _centre_of_mass(a: np.ndarray) -> tuple[float, float]:
    # Not cv2.moments: it reads an Nx2 array (a 20x2 fitted "1") as a contour of points, not as an image.
    total = float(a.sum())
    if total <= 0:
        return (a.shape[1] - 1) / 2, (a.shape[0] - 1) / 2
    cx = float(a.sum(axis=0) @ np.arange(a.shape[1])) / total
    cy = float(a.sum(axis=1) @ np.arange(a.shape[0])) / total
    return cx, cy


def _mnist(gray: np.ndarray, ink: _Ink) -> list[Stage]:
    inverted = _level(gray, ink, invert=ink.dark_on_light)
    x, y, w, h = ink.bbox
    crop = inverted[y : y + h, x : x + w]
    scale = BOX / max(w, h)
    fitted = _resize(crop, max(1, round(w * scale)), max(1, round(h * scale)))
    stages = [Stage("invert", inverted, "white ink on black" if ink.dark_on_light else "levelled only"),
              Stage("crop to ink", crop), Stage("fit 20x20", fitted, "aspect ratio kept")]
    if scale > 1.2:
        # Enlarging a small scan (8x8 -> 20x20) smears each stroke into a wide ramp that reads as a thick pen;
        # MNIST strokes have a bright core and a thin edge. A gamma that grows with the enlargement restores that.
        gamma = 1.0 + min(1.0, (scale - 1.0) / 1.5)
        fitted = fitted**gamma
        stages.append(Stage("sharpen strokes", fitted, f"gamma {gamma:.2f}: enlarged {scale:.1f}x"))
    cx, cy = _centre_of_mass(fitted)
    # Pixel centres run 0..27, so the field's centre is 13.5; cx, cy are in the same pixel-centre frame.
    shift = np.float32([[1, 0, (SIZE - 1) / 2 - cx], [0, 1, (SIZE - 1) / 2 - cy]])
    centred = cv2.warpAffine(fitted, shift, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderValue=0.0)
    return stages + [
        Stage("centre of mass", np.clip(centred, 0.0, 1.0), "ink's centre of mass at the centre of 28x28"),
    ]


_PIPELINES = {"naive": _naive, "paper": _paper, "mnist": _mnist}


def reframe(image: np.ndarray, method: str = DEFAULT_METHOD) -> Reframed:
    """Reframe one digit image for an MNIST model, keeping every stage.

    A blank image (no ink) gets only its grayscale stage and ``blank=True``: it must not be classified.
    Raises InvalidImageError for malformed or out-of-range images, InvalidOptionError for an unknown method.
    """
    if method not in _PIPELINES:
        raise InvalidOptionError("reframing", method, METHODS)
    gray = to_gray(image)
    ink = find_ink(gray)
    polarity = "dark-on-light" if ink.dark_on_light else "light-on-dark"
    stages = [Stage("grayscale", gray)]
    if not ink.blank:
        stages += _PIPELINES[method](gray, ink)
    return Reframed(method, tuple(stages), ink.blank, polarity, ink.bbox)


def reframe_batch(images, method: str = DEFAULT_METHOD) -> tuple[np.ndarray, np.ndarray]:
    """Reframe many images: returns (X of shape (n, 28, 28) float32, blank mask of shape (n,)).

    Blank images get an all-zero input; callers use the mask so they are never counted as predictions.
    """
    images = list(images)
    X = np.zeros((len(images), SIZE, SIZE), np.float32)
    blank = np.zeros(len(images), bool)
    for i, img in enumerate(images):
        r = reframe(img, method)
        blank[i] = r.blank
        if not r.blank:
            X[i] = r.image
    return X, blank
