"""Reading image files (uploads, scans, photos) safely into arrays that every reframing method accepts."""
from __future__ import annotations

import io
import os
from pathlib import Path

import cv2
import numpy as np

from core.errors import DigitLabError, InvalidImageError
from core.reframing import MAX_SIDE, MIN_SIDE, check_image

#: Files bigger than this are refused before decoding.
MAX_FILE_BYTES = 25 * 1024 * 1024
#: Images with more pixels than this are refused (decompression bombs); up to it, big photos are shrunk.
MAX_PIXELS = 100_000_000
#: The most elongated image that still has MIN_SIDE pixels across once shrunk to MAX_SIDE (4096x8): 512:1.
MAX_ASPECT = MAX_SIDE // MIN_SIDE
EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "MPO")
_EXIF_ORIENTATION = 0x0112
_REDUCED = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}
# OpenCV prints its own C++ warnings about bad files ("PNG input buffer is incomplete") on stderr; the
# InvalidImageError raised here already says it, once and plainly.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


def decode_image(data: bytes, name: str = "image") -> np.ndarray:
    """Decode PNG/JPEG/BMP/TIFF bytes to a uint8 array (gray, RGB or RGBA) that every reframing method accepts.

    The EXIF orientation is applied, so a photo taken with the phone turned comes out upright. Photos larger
    than 4096 px on a side are decoded at 1/2, 1/4 or 1/8 scale (JPEG decodes them natively) and shrunk.
    16-bit images are scaled to 8 bits; float and signed images (scientific TIFFs) are scaled from [0, 1],
    kept in [0, 255], or stretched from their own range. Anything else (not an image, corrupt, an absurd size
    or shape, NaN pixels) raises InvalidImageError with a message that starts with `name`.
    """
    if len(data) == 0:
        raise InvalidImageError(f"{name}: the file is empty.")
    if len(data) > MAX_FILE_BYTES:
        raise InvalidImageError(f"{name}: the file is {len(data) / 2**20:.0f} MB; the limit is "
                                f"{MAX_FILE_BYTES // 2**20} MB.")
    width, height, orientation = _header(data, name)
    if width * height > MAX_PIXELS:
        raise InvalidImageError(f"{name}: {width}x{height} pixels is too large (limit {MAX_PIXELS:,} pixels).")
    if min(width, height) < MIN_SIDE:
        raise InvalidImageError(f"{name}: {width}x{height} is smaller than {MIN_SIDE}x{MIN_SIDE} pixels.")
    aspect = max(width, height) / min(width, height)
    if aspect > MAX_ASPECT:
        raise InvalidImageError(f"{name}: {width}x{height} pixels is too elongated (aspect ratio {aspect:,.0f}:1; "
                                f"the limit is {MAX_ASPECT}:1, e.g. {MAX_SIDE}x{MIN_SIDE}).")
    # Reduce while the image stays above MAX_SIDE and its short side keeps MIN_SIDE pixels.
    factor = 1
    while factor < 8 and max(width, height) / factor > MAX_SIDE and min(width, height) / (2 * factor) >= MIN_SIDE:
        factor *= 2
    try:
        if orientation in range(2, 9):
            img, bgr = _decode_oriented(data, factor), False
        else:
            buf = np.frombuffer(data, np.uint8)
            # Reduced modes would apply EXIF orientation by themselves (not for every format): never let them.
            flag = cv2.IMREAD_UNCHANGED if factor == 1 else _REDUCED[factor] | cv2.IMREAD_IGNORE_ORIENTATION
            img, bgr = cv2.imdecode(buf, flag), True
    except MemoryError:
        raise InvalidImageError(f"{name}: not enough memory to decode {width}x{height} pixels.") from None
    except (cv2.error, OSError, ValueError, SyntaxError, EOFError) as e:
        raise InvalidImageError(f"{name}: the image is corrupt ({_short(e)}).") from None
    if img is None:
        raise InvalidImageError(f"{name}: the image is corrupt or truncated (it could not be decoded).")
    img = _channels(_to_uint8(img, name), bgr, name)
    img = _fit(img)
    try:
        return check_image(img)
    except InvalidImageError as e:  # a decoder returned something unexpected: still one plain message
        raise InvalidImageError(f"{name}: {e}") from None


def _header(data: bytes, name: str) -> tuple[int, int, int]:
    """(width, height, EXIF orientation) from the header alone: the size is known before a pixel is decoded."""
    from PIL import Image, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = None  # our own limit applies, with a clearer message
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format not in _FORMATS:
                raise InvalidImageError(f"{name}: {im.format} images are not supported; use PNG, JPEG, BMP or TIFF.")
            try:
                orientation = int(im.getexif().get(_EXIF_ORIENTATION, 1))
            except Exception:  # a damaged EXIF block costs only the orientation, never the image
                orientation = 1
            return im.size[0], im.size[1], orientation
    except UnidentifiedImageError:
        raise InvalidImageError(f"{name}: not an image file (PNG, JPEG, BMP or TIFF expected).") from None
    except InvalidImageError:
        raise
    except Exception as e:  # any parser failure on untrusted bytes means the same thing to the user
        raise InvalidImageError(f"{name}: the image is corrupt ({_short(e)}).") from None


def _decode_oriented(data: bytes, factor: int) -> np.ndarray:
    """Decode with Pillow and apply the EXIF orientation (ImageOps.exif_transpose); RGB order, not BGR.

    OpenCV applies the tag in some modes and formats and not in others; Pillow does it the same way for all.
    A big JPEG is still decoded at reduced scale (`draft`), before the rotation.
    """
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data)) as im:
        if factor > 1 and im.format in ("JPEG", "MPO"):
            im.draft(im.mode, (im.width // factor, im.height // factor))
        im = ImageOps.exif_transpose(im)
    if im.mode in ("L", "RGB", "RGBA", "I", "F") or im.mode.startswith("I;16"):
        return np.asarray(im)
    if im.mode == "1":
        return np.asarray(im.convert("L"))
    if im.mode in ("LA", "La", "PA", "RGBa") or (im.mode == "P" and "transparency" in im.info):
        return np.asarray(im.convert("RGBA"))
    return np.asarray(im.convert("RGB"))  # palette, CMYK, YCbCr, LAB, ...


def _to_uint8(img: np.ndarray, name: str) -> np.ndarray:
    """Any decoded pixel type as uint8; the alpha channel is scaled on its own."""
    if img.dtype == np.uint8:
        return img
    if img.ndim == 3 and img.shape[2] in (2, 4):
        return np.dstack([_scale_to_uint8(img[..., :-1], name), _scale_to_uint8(img[..., -1], name)])
    return _scale_to_uint8(img, name)


def _scale_to_uint8(a: np.ndarray, name: str) -> np.ndarray:
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if a.dtype.kind == "u":  # 16- and 32-bit: the full range of the type is the full range of gray
        return (a / (np.iinfo(a.dtype).max / 255)).astype(np.uint8)
    if a.dtype.kind not in "fi":
        raise InvalidImageError(f"{name}: pixel values of type {a.dtype} are not supported.")
    f = a.astype(np.float32)
    if not np.isfinite(f).all():
        raise InvalidImageError(f"{name}: the image contains NaN or infinite pixel values.")
    lo, hi = float(f.min()), float(f.max())
    if a.dtype.kind == "f" and lo >= 0 and hi <= 1:
        f = f * 255
    elif lo < 0 or hi > 255:  # a range of its own (0..1000, -5..3): stretched, as an image viewer shows it
        f = (f - lo) * (255 / (hi - lo))
    return np.clip(np.rint(f), 0, 255).astype(np.uint8)


def _channels(img: np.ndarray, bgr: bool, name: str) -> np.ndarray:
    """Gray, RGB or RGBA in that channel order, whatever the decoder gave."""
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        return img
    channels = img.shape[2] if img.ndim == 3 else 0
    if channels == 2:  # gray and alpha
        return np.dstack([img[..., 0], img[..., 0], img[..., 0], img[..., 1]])
    if channels == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB) if bgr else img
    if channels == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA) if bgr else img
    raise InvalidImageError(f"{name}: images with {channels} channels are not supported (gray, RGB or RGBA).")


def _fit(img: np.ndarray) -> np.ndarray:
    """Shrink to MAX_SIDE pixels on the long side, never below MIN_SIDE on the short side."""
    h, w = img.shape[:2]
    if max(h, w) <= MAX_SIDE:
        return img
    scale = MAX_SIDE / max(h, w)
    size = tuple(int(min(MAX_SIDE, max(MIN_SIDE, round(side * scale)))) for side in (w, h))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


def read_image(path: str | Path, name: str | None = None) -> np.ndarray:
    """Read an image file from disk (see decode_image); every failure is an InvalidImageError.

    Messages call the file `name` when given (a path relative to what the user chose), else the path as
    given for a file that cannot be read, and its file name for an image that cannot be decoded.
    """
    p = Path(path)
    label = name or str(p)
    try:
        if not p.exists():
            raise InvalidImageError(f"{label}: no such file.")
        if p.is_dir():
            raise InvalidImageError(f"{label}: a folder, not a file.")
        if not p.is_file():  # a pipe or a device would block or never end
            raise InvalidImageError(f"{label}: not a regular file.")
        with open(p, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise InvalidImageError(f"{label}: {failure_reason(e)}.") from None
    if len(data) > MAX_FILE_BYTES:
        raise InvalidImageError(f"{label}: the file is larger than {MAX_FILE_BYTES // 2**20} MB.")
    return decode_image(data, name or p.name)


def failure_reason(e: BaseException) -> str:
    """Why one image failed, in a few plain words, whatever was raised (never a traceback)."""
    from core.storage import describe_os_error

    if isinstance(e, DigitLabError):
        return str(e)
    if isinstance(e, OSError) and e.errno is not None:
        return f"could not be read: {describe_os_error(e)}"
    if isinstance(e, MemoryError):
        return "not enough memory to process it"
    return f"could not be processed ({_short(e)})"


def _short(e: BaseException) -> str:
    """An exception's own first line (OpenCV's short reason, without its source paths)."""
    if isinstance(e, cv2.error):
        return f"OpenCV: {getattr(e, 'err', '') or 'error'}"
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def display_name(name: str) -> str:
    """A file name fit to print: bytes that are not UTF-8 (kept by Python as surrogates) shown as \\xNN."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def encode_png(image: np.ndarray) -> bytes:
    """A float [0, 1] or uint8 image as PNG bytes (for downloads and the HTML report)."""
    a = np.asarray(image)
    if a.dtype != np.uint8:
        a = np.clip(np.round(a * 255), 0, 255).astype(np.uint8)
    if a.ndim == 3 and a.shape[2] in (3, 4):
        a = cv2.cvtColor(a, cv2.COLOR_RGB2BGR if a.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    ok, buf = cv2.imencode(".png", a)
    if not ok:
        raise InvalidImageError(f"An image of shape {a.shape} and type {a.dtype} cannot be written as PNG.")
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
