"""Reading image files (uploads, scans, photos) safely into arrays for reframing."""
from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np

from core.errors import InvalidImageError
from core.reframing import MAX_SIDE, MIN_SIDE

#: Files bigger than this are refused before decoding.
MAX_FILE_BYTES = 25 * 1024 * 1024
#: Images with more pixels than this are refused (decompression bombs); up to it, big photos are shrunk.
MAX_PIXELS = 100_000_000
EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def decode_image(data: bytes, name: str = "image") -> np.ndarray:
    """Decode PNG/JPEG/BMP/TIFF bytes to a uint8 array (gray, RGB or RGBA).

    Photos larger than 4096 px on a side are decoded at 1/2, 1/4 or 1/8 scale (OpenCV's reduced modes), so a
    phone photo works; anything that is not an image, is corrupt, or claims an absurd size gets a clear error.
    """
    if len(data) == 0:
        raise InvalidImageError(f"{name}: the file is empty.")
    if len(data) > MAX_FILE_BYTES:
        raise InvalidImageError(f"{name}: the file is {len(data) / 2**20:.0f} MB; the limit is "
                                f"{MAX_FILE_BYTES // 2**20} MB.")
    width, height = _header_size(data, name)
    if width * height > MAX_PIXELS:
        raise InvalidImageError(f"{name}: {width}x{height} pixels is too large (limit {MAX_PIXELS:,} pixels).")
    if min(width, height) < MIN_SIDE:
        raise InvalidImageError(f"{name}: {width}x{height} is smaller than {MIN_SIDE}x{MIN_SIDE} pixels.")
    buf = np.frombuffer(data, np.uint8)
    factor = 1
    while max(width, height) / factor > MAX_SIDE and factor < 8:
        factor *= 2
    if factor == 1:
        img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    else:
        flag = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}
        img = cv2.imdecode(buf, flag[factor])
    if img is None:
        raise InvalidImageError(f"{name}: the file could not be decoded as an image.")
    if max(img.shape[:2]) > MAX_SIDE:
        scale = MAX_SIDE / max(img.shape[:2])
        img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    if img.dtype != np.uint8:  # 16-bit PNG/TIFF
        img = (img / (np.iinfo(img.dtype).max / 255)).astype(np.uint8) if img.dtype.kind == "u" else img
    if img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA)
    return img


def _header_size(data: bytes, name: str) -> tuple[int, int]:
    # Pillow reads only the header here: the size is known before a single pixel is decoded.
    from PIL import Image, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = None  # our own limit applies, with a clearer message
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format not in ("PNG", "JPEG", "BMP", "TIFF", "MPO"):
                raise InvalidImageError(f"{name}: {im.format} images are not supported; use PNG, JPEG, BMP or TIFF.")
            return im.size
    except UnidentifiedImageError:
        raise InvalidImageError(f"{name}: not an image file (PNG, JPEG, BMP or TIFF expected).") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise InvalidImageError(f"{name}: the image is corrupt ({e}).") from None


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file from disk (see decode_image)."""
    p = Path(path)
    if not p.is_file():
        raise InvalidImageError(f"{p}: no such file.")
    if p.stat().st_size > MAX_FILE_BYTES:
        raise InvalidImageError(f"{p}: the file is larger than {MAX_FILE_BYTES // 2**20} MB.")
    return decode_image(p.read_bytes(), p.name)


def encode_png(image: np.ndarray) -> bytes:
    """A float [0, 1] or uint8 image as PNG bytes (for downloads and the HTML report)."""
    a = np.asarray(image)
    if a.dtype != np.uint8:
        a = np.clip(np.round(a * 255), 0, 255).astype(np.uint8)
    if a.ndim == 3 and a.shape[2] in (3, 4):
        a = cv2.cvtColor(a, cv2.COLOR_RGB2BGR if a.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    ok, buf = cv2.imencode(".png", a)
    return buf.tobytes()


def thumbnail(image: np.ndarray, size: int = 112, pad_value: float = 0.5) -> np.ndarray:
    """A float image shown in a size x size square: padded (mid-gray, so its true extent stays visible), then
    scaled. Small images are enlarged with nearest-neighbour so a 28x28 input shows its real pixels."""
    a = np.asarray(image)
    if a.dtype == np.uint8 or a.ndim == 3:  # an input image as read from a file: show its gray version
        from core.reframing import to_gray

        a = to_gray(a)
    a = np.clip(a.astype(np.float32), 0, 1)
    h, w = a.shape[:2]
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    a = cv2.copyMakeBorder(a, top, side - h - top, left, side - w - left, cv2.BORDER_CONSTANT, value=pad_value)
    interp = cv2.INTER_NEAREST if side <= size else cv2.INTER_AREA
    return cv2.resize(a, (size, size), interpolation=interp)
