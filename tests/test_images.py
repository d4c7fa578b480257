import cv2
import numpy as np
import pytest

from core.errors import InvalidImageError
from core.images import MAX_SIDE, decode_image, encode_png, read_image


def png(img) -> bytes:
    return cv2.imencode(".png", img)[1].tobytes()


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".tiff"])
def test_supported_formats_decode(ext):
    img = np.full((40, 30, 3), 255, np.uint8)
    img[5:35, 10:20] = 0
    out = decode_image(cv2.imencode(ext, img)[1].tobytes(), f"x{ext}")
    assert out.shape[:2] == (40, 30) and out.dtype == np.uint8


def test_rgba_png_keeps_alpha_and_rgb_order():
    img = np.zeros((20, 20, 4), np.uint8)
    img[..., 2] = 255  # red in BGRA
    img[..., 3] = 200
    out = decode_image(png(img))
    assert out.shape == (20, 20, 4) and out[0, 0, 0] == 255 and out[0, 0, 3] == 200


def test_photo_larger_than_4096_is_shrunk_not_refused():
    img = np.full((5000, 600), 255, np.uint8)
    out = decode_image(png(img), "tall.png")
    assert max(out.shape[:2]) <= MAX_SIDE


@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (b"hello, I am a text file", "not an image"),
    (b"GIF89a" + b"\x00" * 50, "not an image|not supported|corrupt"),
])
def test_non_images_get_a_clear_error(data, message):
    with pytest.raises(InvalidImageError, match=message):
        decode_image(data, "upload")


def test_truncated_png_is_reported_corrupt():
    data = png(np.full((64, 64), 255, np.uint8))
    with pytest.raises(InvalidImageError, match="corrupt|could not be decoded"):
        decode_image(data[: len(data) // 2], "half.png")


def test_decompression_bomb_is_refused_from_its_header():
    import io
    from PIL import Image

    buf = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buf, format="PNG")  # tiny file, 400 million pixels
    with pytest.raises(InvalidImageError, match="too large"):
        decode_image(buf.getvalue(), "bomb.png")


def test_read_image_missing_file(tmp_path):
    with pytest.raises(InvalidImageError, match="no such file"):
        read_image(tmp_path / "nope.png")


def test_encode_png_round_trip():
    a = np.linspace(0, 1, 28 * 28, dtype=np.float32).reshape(28, 28)
    back = decode_image(encode_png(a))
    assert np.abs(back / 255 - a).max() < 0.01
