"""Bad input and faults: every odd file, archive or disk fault gets a plain message, and costs only itself.

The corpus is built here, in tmp_path, from tiny literal data. Each case checks the message (clear, no
traceback), that the rest of the work goes on, that nothing is written outside the data folder, and that no
collected digit is changed. A few CLI runs (each pays TensorFlow's import) check exit statuses and JSON.
"""
from __future__ import annotations

import errno
import functools
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from core import datasets, evaluation, storage
from core.datasets import Dataset
from core.errors import DatasetError, InvalidImageError, StorageError
from core.images import MAX_SIDE, decode_image, read_image
from core.reframing import METHODS, reframe
from tests.conftest import ROOT

# --- the corpus: tiny literal images and files ---------------------------------------------------------


def png(img: np.ndarray) -> bytes:
    return cv2.imencode(".png", img)[1].tobytes()


def digit(column: int = 8) -> np.ndarray:
    """A 20x20 scan of a dark vertical stroke on white paper (a "1"), its column chosen by the caller."""
    img = np.full((20, 20), 255, np.uint8)
    img[3:17, column:column + 4] = 0
    return img


GOOD = png(digit())


def pil_bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def float_tiff(lo: float = 0.0, hi: float = 1000.0, nan: bool = False) -> bytes:
    """A 32-bit float TIFF (as scientific scanners write): a bright stroke of `hi` on a background of `lo`."""
    a = np.full((24, 24), lo, np.float32)
    a[4:20, 10:14] = hi
    if nan:
        a[0, 0] = np.nan
    return pil_bytes(Image.fromarray(a, "F"), "TIFF")


@functools.cache  # built once per session: Pillow takes most of a second to write it
def strip_png() -> bytes:
    """1,000,000 x 100 pixels (100 million, within the pixel limit): a 12 kB PNG that OpenCV shrank to 0 rows."""
    return pil_bytes(Image.new("1", (1_000_000, 100), 1), "PNG")


@functools.cache
def bad_images() -> dict[str, tuple[bytes, str]]:
    """file name -> (bytes, what the message must say): every kind of image file that must be refused."""
    half = png(np.full((64, 64), 255, np.uint8))
    return {
        "empty.png": (b"", "empty"),
        "text.png": (b"hello, I am a text file", "not an image"),
        "truncated.png": (half[: len(half) // 2], "corrupt|could not be decoded"),
        "bomb.png": (pil_bytes(Image.new("1", (20000, 20000)), "PNG"), "too large"),
        "strip.png": (strip_png(), "too elongated"),
        "gif.png": (pil_bytes(Image.new("L", (20, 20)), "GIF"), "GIF images are not supported"),
        "tiny.png": (png(np.zeros((4, 4), np.uint8)), "smaller than 8x8"),
        "nan.tiff": (float_tiff(nan=True), "NaN or infinite"),
    }


def assert_plain(message: str) -> None:
    assert message and "Traceback" not in message and "cv2.error" not in message and "OpenCV(" not in message


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def home(tmp_path) -> Path:
    """The test's data folder, with one collected digit already in it (it must never change)."""
    home = Path(os.environ["DIGITLAB_HOME"])
    (home / "collected" / "3").mkdir(parents=True)
    (home / "collected" / "3" / "kept.png").write_bytes(GOOD)
    return home


@pytest.fixture
def system_tmp(tmp_path, monkeypatch) -> Path:
    """Python's temporary folder, moved into tmp_path so a test can see what was left there."""
    folder = tmp_path / "system-tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def assert_collected_unchanged(home: Path) -> None:
    assert snapshot(home / "collected") == {"3/kept.png": GOOD}


class FakePredictor:
    """Says the digit whose band of columns holds the most ink: evaluate() without TensorFlow."""

    def predict_proba(self, X):
        X = np.asarray(X).reshape(-1, 28, 28)
        bands = np.stack([X[:, :, 4 + 2 * d: 6 + 2 * d].sum(axis=(1, 2)) for d in range(10)], 1)
        e = np.exp(bands - bands.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)


# --- one image ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(bad_images()))
def test_each_bad_image_gets_a_clear_error_naming_it(name):
    data, expected = bad_images()[name]
    with pytest.raises(InvalidImageError, match=expected) as e:
        decode_image(data, name)
    assert str(e.value).startswith(f"{name}: ")
    assert_plain(str(e.value))


def test_elongated_image_names_the_limit():
    with pytest.raises(InvalidImageError) as e:
        decode_image(strip_png(), "strip.png")
    assert "1000000x100" in str(e.value) and "512:1" in str(e.value)


@pytest.mark.parametrize("shape", [(9, 4100), (100, 40000), (4100, 9)])
def test_elongated_images_within_the_limit_decode_and_reframe(shape):
    # the reduced decode (1/2 .. 1/8) and the shrink to 4096 px must never leave a side under 8 px
    img = np.full(shape, 255, np.uint8)
    h, w = shape
    img[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 0
    out = decode_image(png(img), "long.png")
    assert MAX_SIDE >= max(out.shape[:2]) and min(out.shape[:2]) >= 8
    assert (out.shape[0] > out.shape[1]) == (h > w)
    for method in METHODS:
        assert reframe(out, method).image.shape == (28, 28)


@pytest.mark.parametrize("lo, hi", [(0.0, 1000.0), (0.0, 1.0), (-5.0, 3.0), (0.0, 255.0)])
def test_float_tiff_is_normalised_to_8_bits(lo, hi):
    out = decode_image(float_tiff(lo, hi), "float.tiff")
    assert out.dtype == np.uint8
    assert out[0, 0] == 0 and out[10, 11] == 255  # background and stroke keep their order, full range
    assert reframe(out, "paper").image is not None


def test_signed_16_bit_tiff_is_normalised():
    a = np.full((24, 24), -300, np.int16)
    a[4:20, 10:14] = 2000
    out = decode_image(cv2.imencode(".tiff", a)[1].tobytes(), "signed.tiff")
    assert out.dtype == np.uint8 and out[0, 0] == 0 and out[10, 11] == 255


def _marked(h: int = 40, w: int = 20) -> np.ndarray:
    """A tall gray image with a white mark in its top-left corner, to follow through a rotation."""
    a = np.zeros((h, w), np.uint8)
    a[:6, :6] = 255
    return a


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def _corner(a: np.ndarray) -> str:
    """Which corner holds the mark."""
    g = a if a.ndim == 2 else a[..., 0]
    h, w = g.shape
    corners = {"top-left": g[:3, :3], "top-right": g[:3, w - 3:], "bottom-left": g[h - 3:, :3],
               "bottom-right": g[h - 3:, w - 3:]}
    return max(corners, key=lambda k: corners[k].mean())


@pytest.mark.parametrize("orientation, shape, corner", [
    (1, (40, 20), "top-left"),
    (6, (20, 40), "top-right"),  # the phone was turned: the picture is shown rotated 90 degrees clockwise
    (8, (20, 40), "bottom-left"),  # rotated 90 degrees counter-clockwise
    (3, (40, 20), "bottom-right"),
])
def test_exif_orientation_of_a_phone_photo_is_applied(orientation, shape, corner):
    data = pil_bytes(Image.fromarray(_marked()), "JPEG", exif=_exif(orientation), quality=95)
    out = decode_image(data, "photo.jpg")
    assert out.shape[:2] == shape and _corner(out) == corner


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_exif_orientation_matches_pillow_for_every_format(fmt, orientation):
    from PIL import ImageOps

    im = Image.fromarray(_marked())
    data = pil_bytes(im, fmt, exif=_exif(orientation))
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))
    out = decode_image(data, f"x.{fmt.lower()}")
    assert out.shape == expected.shape and (out == expected).all()


def test_exif_orientation_with_the_reduced_decode_of_a_huge_photo():
    a = np.full((300, 6000), 255, np.uint8)
    a[:60, :60] = 0  # a dark mark in the top-left corner of a wide photo
    data = pil_bytes(Image.fromarray(a), "JPEG", exif=_exif(6))
    out = decode_image(data, "huge.jpg")
    assert out.shape[0] > out.shape[1] and max(out.shape[:2]) <= MAX_SIDE  # tall now, and shrunk
    g = out if out.ndim == 2 else out[..., 0]
    assert g[:20, -20:].mean() < 60 and g[-20:, :20].mean() > 200  # the mark went to the top-right


def test_too_long_file_name_is_a_clear_error(tmp_path):
    with pytest.raises(InvalidImageError, match="too long for the file system") as e:
        read_image(tmp_path / ("a" * 300 + ".png"))
    assert_plain(str(e.value))


def test_a_folder_given_as_an_image(tmp_path):
    with pytest.raises(InvalidImageError, match="not a file"):
        read_image(tmp_path)


# --- a folder of images: one bad file costs only itself -------------------------------------------------


def _deep_folder(base: Path) -> tuple[str, str]:
    """Folders nested so deep that paths inside them are longer than the file system allows (4,095 bytes):
    one file there cannot be opened and one folder there cannot be listed. -> (that file, that folder)."""
    fd = os.open(base, os.O_RDONLY)
    path, part = base, "d" * 200
    try:
        while len(str(path)) <= 3840:  # stop where a 255-character name makes the path too long
            os.mkdir(part, dir_fd=fd)
            new = os.open(part, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd, path = new, path / part
        long_file, long_dir = "x" * 251 + ".png", "s" * 250
        with open(os.open(long_file, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "wb") as f:
            f.write(GOOD)
        os.mkdir(long_dir, dir_fd=fd)
        inner = os.open(long_dir, os.O_RDONLY, dir_fd=fd)
        with open(os.open("y.png", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=inner), "wb") as f:
            f.write(GOOD)
        os.close(inner)
    finally:
        os.close(fd)
    assert len(str(path)) <= 4095 < len(str(path / long_file))
    rel = path.relative_to(base.parent)
    return str(rel / long_file), str(rel / long_dir)


def make_folder(root: Path) -> dict[str, str]:
    """Good images in every class folder plus every kind of bad file; returns bad file -> expected reason."""
    for d in range(10):
        (root / "digits" / str(d)).mkdir(parents=True)
        (root / "digits" / str(d) / "good.png").write_bytes(png(digit(d % 8 + 2)))
    expected = {}
    for name, (data, reason) in bad_images().items():
        (root / "digits" / "7" / name).write_bytes(data)
        expected[f"7/{name}"] = reason
    (root / "digits" / "4" / "float.tiff").write_bytes(float_tiff())  # read, normalised and evaluated
    (root / "digits" / "²").mkdir()
    (root / "digits" / "²" / "x.png").write_bytes(GOOD)
    expected["²/x.png"] = "not inside a folder named 0..9"
    (root / "digits" / "5" / "link.png").symlink_to(root / "digits" / "5" / "good.png")
    expected["5/link.png"] = "a link, not followed"
    (root / "digits" / "1" / "notes.txt").write_text("hello")
    expected["1/notes.txt"] = "not a PNG/JPEG/BMP/TIFF"
    long_file, long_dir = _deep_folder(root / "digits" / "2")
    expected[long_file] = expected[long_dir] = "too long for the file system"
    return expected


def test_folder_with_every_kind_of_bad_file_evaluates_the_rest(tmp_path, home, system_tmp):
    expected = make_folder(tmp_path / "corpus")
    before = snapshot(tmp_path / "corpus" / "digits" / "7")
    ds = datasets.load_target(str(tmp_path / "corpus" / "digits"))
    assert len(ds) == 11 and ds.missing_classes() == []  # ten good images and the float TIFF
    reasons = dict(s.split(": ", 1) for s in ds.skipped)
    assert set(reasons) == set(expected), ds.skipped
    for file, reason in expected.items():
        assert re.search(reason, reasons[file]), (file, reasons[file])
        assert_plain(reasons[file])
    ev = evaluation.evaluate(FakePredictor(), ds, "paper", model_path=_fake_model(tmp_path))
    assert ev.n == 11 and ev.skipped == ds.skipped
    assert snapshot(tmp_path / "corpus" / "digits" / "7") == before  # inputs are only read
    assert_collected_unchanged(home)
    assert not any(system_tmp.iterdir())
    shutil.rmtree(tmp_path / "corpus")  # the deep folders, before pytest's own clean-up


def _fake_model(tmp_path: Path) -> Path:
    model = tmp_path / "model.keras"
    model.write_bytes(b"pretend model")
    return model


def test_unicode_digit_folders_are_not_classes(tmp_path):
    for name in ("²", "٣", "7"):
        (tmp_path / "set" / name).mkdir(parents=True)
        (tmp_path / "set" / name / "a.png").write_bytes(GOOD)
    ds = datasets.load_folder(tmp_path / "set")
    assert ds.labels.tolist() == [7] and len(ds.skipped) == 2


def test_an_image_that_cannot_be_reframed_is_skipped_in_evaluate(tmp_path):
    images = [digit(4), np.full((3, 3), 255, np.uint8), digit(6), np.full((20, 20), np.nan, np.float32)]
    ds = Dataset("in memory", images, np.array([0, 1, 1, 2]), "built in a test", ["a.png", "b.png", "c.png",
                                                                                  "d.png"])
    ev = evaluation.evaluate(FakePredictor(), ds, "mnist", model_path=_fake_model(tmp_path))
    assert ev.n == 2 and len(ev.y_pred) == 4 and ev.y_pred[0] >= 0 and ev.y_pred[2] >= 0
    assert (ev.y_pred[[1, 3]] == evaluation.UNREADABLE).all()  # kept aligned with the data set, not counted
    assert [s.split(":")[0] for s in ev.skipped] == ["b.png", "d.png"]
    assert "8x8" in ev.skipped[0] and "NaN" in ev.skipped[1]
    again = evaluation.evaluate(FakePredictor(), ds, "mnist", model_path=_fake_model(tmp_path))  # from the cache
    assert again.skipped == ev.skipped and (again.y_pred == ev.y_pred).all()
    assert ev.confusion_matrix().sum() == 2 and sum(r["tp"] + r["fn"] for r in ev.per_digit()) == 2
    assert ev.as_dict()["n"] == 2 and ev.as_dict()["skipped"] == 2


# --- zip archives ------------------------------------------------------------------------------------------


def _patch(data: bytearray, member: str, **fields) -> None:
    """Rewrite fields of one member in both its local header and the central directory (a damaged or forged zip)."""
    local = {"flags": (6, "<H"), "crc": (14, "<I"), "size": (22, "<I")}
    central = {"flags": (8, "<H"), "crc": (16, "<I"), "size": (24, "<I")}
    name = member.encode()
    for sig, table in ((b"PK\x03\x04", local), (b"PK\x01\x02", central)):
        name_at = 30 if sig == b"PK\x03\x04" else 46
        pos = data.find(sig)
        while pos >= 0:
            nlen_at = 26 if sig == b"PK\x03\x04" else 28
            (nlen,) = struct.unpack_from("<H", data, pos + nlen_at)
            if bytes(data[pos + name_at: pos + name_at + nlen]) == name:
                for key, value in fields.items():
                    off, fmt = table[key]
                    struct.pack_into(fmt, data, pos + off, value)
            pos = data.find(sig, pos + 4)


def make_zip(entries, damage: dict[str, dict] | None = None, compression=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    data = bytearray(buf.getvalue())
    for member, fields in (damage or {}).items():
        info = zipfile.ZipFile(io.BytesIO(bytes(data))).getinfo(member)
        fields = {k: (v(info) if callable(v) else v) for k, v in fields.items()}
        _patch(data, member, **fields)
    return bytes(data)


LONG_NAME = "digits/7/" + "n" * 300 + ".png"


def damaged_zip() -> tuple[bytes, dict[str, str]]:
    """Good images in every class plus damaged, forged, unsafe and unreadable members; -> (zip, expected)."""
    entries = [(f"digits/{d}/good.png", png(digit(d % 8 + 2))) for d in range(10)]
    entries += [(f"digits/7/{n}", data) for n, (data, _) in bad_images().items()]
    entries += [("digits/7/crc.png", GOOD), ("digits/7/locked.png", GOOD), ("digits/7/shorter.png", GOOD),
                ("digits/7/longer.png", GOOD), (LONG_NAME, GOOD), ("digits/²/x.png", GOOD),
                ("../evil.png", GOOD), ("digits/4/float.tiff", float_tiff())]
    damage = {"digits/7/crc.png": {"crc": lambda i: i.CRC ^ 0xFFFF},
              "digits/7/locked.png": {"flags": lambda i: i.flag_bits | 0x1},
              "digits/7/shorter.png": {"size": lambda i: i.file_size - 10},
              "digits/7/longer.png": {"size": lambda i: i.file_size + 5000}}
    expected = {f"digits/7/{n}": r for n, (_, r) in bad_images().items()}
    expected.update({"digits/7/crc.png": r"damaged in the archive \(CRC check failed\)",
                     "digits/7/locked.png": "encrypted, not supported",
                     "digits/7/shorter.png": "damaged in the archive",
                     "digits/7/longer.png": "damaged in the archive",
                     LONG_NAME: "too long for the file system",
                     "digits/²/x.png": "not inside a folder named 0..9",
                     "../evil.png": "climbs out of the archive"})
    return make_zip(entries, damage), expected


def test_zip_with_damaged_and_forged_members_evaluates_the_rest(tmp_path, home, system_tmp):
    data, expected = damaged_zip()
    ds = datasets.load_zip(data, "mydigits.zip")
    assert len(ds) == 11 and ds.missing_classes() == []
    reasons = dict(s.split(": ", 1) for s in ds.skipped)
    assert set(reasons) == set(expected), ds.skipped
    for member, reason in expected.items():
        assert re.search(reason, reasons[member]), (member, reasons[member])
        assert_plain(reasons[member])
        assert str(home) not in reasons[member]  # the user's names, never the internal extraction folder
    ev = evaluation.evaluate(FakePredictor(), ds, "paper", model_path=_fake_model(tmp_path))
    assert ev.n == 11
    assert not (tmp_path / "evil.png").exists() and not (home / "evil.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "model.keras", "system-tmp"]
    assert_collected_unchanged(home)
    assert not any(system_tmp.iterdir())


def _many_members(n: int = 10_000) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(n):
            zf.writestr(f"d/1/{i}.png", b"")
    return buf.getvalue()


@pytest.mark.parametrize("case, expected", [
    ("not a zip", "not a valid .zip archive"),
    ("10,000 members", "holds 10,000 files; the limit is 5,000"),
    ("declared 2 GB", "unpacks to 2,048 MB; the limit is 300 MB"),
    ("no images", "no readable digit images in folders 0..9"),
    ("truncated", "not a valid .zip archive"),
])
def test_a_problem_with_the_whole_archive_names_the_archive(case, expected, home, system_tmp):
    data = {"not a zip": lambda: b"hello, I am not a zip",
            "10,000 members": _many_members,
            "declared 2 GB": lambda: make_zip([("d/1/a.png", GOOD)] * 1,
                                              {"d/1/a.png": {"size": 2 * 2**30}}),
            "no images": lambda: make_zip([("readme.txt", b"nothing here"), ("d/1/bad.png", b"")]),
            "truncated": lambda: GOOD_ZIP[: len(GOOD_ZIP) // 2]}[case]()
    with pytest.raises(DatasetError) as e:
        datasets.load_zip(data, "mydigits.zip")
    message = str(e.value)
    assert message.startswith("mydigits.zip: ") and expected in message, message
    assert str(home) not in message and "uploads" not in message
    assert_plain(message)
    assert not list(home.glob("uploads/.*"))  # no temporary extraction left behind
    assert_collected_unchanged(home)
    assert not any(system_tmp.iterdir())


GOOD_ZIP = make_zip([(f"digits/{d}/good.png", png(digit(d % 8 + 2))) for d in range(10)])


def test_zip_bomb_member_by_compression_ratio_is_not_extracted(home):
    big = png(np.full((8, 8), 255, np.uint8)) + b"\0" * (30 * 2**20)  # 30 MB that compresses to 30 kB
    ds = datasets.load_zip(make_zip([("d/1/bomb.png", big), ("d/1/a.png", GOOD)]), "bomb.zip")
    assert len(ds) == 1 and ds.skipped == ["d/1/bomb.png: larger than 25 MB, not extracted"]


def test_extraction_is_atomic_and_a_second_load_reuses_it(home, monkeypatch):
    real = datasets._write_member
    calls = []

    def failing(target, content):
        calls.append(target)
        if len(calls) == 5:
            raise KeyboardInterrupt  # the process is stopped half-way through the archive
        real(target, content)

    monkeypatch.setattr(datasets, "_write_member", failing)
    with pytest.raises(KeyboardInterrupt):
        datasets.load_zip(GOOD_ZIP, "mydigits.zip")
    assert not list((home / "uploads").iterdir())  # no half-extracted folder, under any name
    monkeypatch.setattr(datasets, "_write_member", real)
    first = datasets.load_zip(GOOD_ZIP, "mydigits.zip")
    (folder,) = list((home / "uploads").iterdir())
    assert not folder.name.startswith(".")
    monkeypatch.setattr(datasets, "_write_member", failing)  # a second load must not extract again
    calls.clear()
    again = datasets.load_zip(GOOD_ZIP, "mydigits.zip")
    assert not calls and again.labels.tolist() == first.labels.tolist() and again.skipped == first.skipped


def _fault(monkeypatch, under: Path, code: int) -> None:
    """Make every file or folder created under `under` fail with `code` (a read-only or full disk)."""
    real_open, real_mkdir = os.open, os.mkdir

    def inside(path, dir_fd=None) -> bool:
        return dir_fd is None and str(os.path.abspath(path)).startswith(str(under))

    def fake_open(path, flags, mode=0o777, *, dir_fd=None):
        if flags & os.O_CREAT and inside(path, dir_fd):
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, flags, mode, dir_fd=dir_fd)

    def fake_mkdir(path, mode=0o777, *, dir_fd=None):
        if inside(path, dir_fd):
            raise OSError(code, os.strerror(code), str(path))
        return real_mkdir(path, mode, dir_fd=dir_fd)

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)


@pytest.mark.parametrize("code", [errno.EROFS, errno.ENOSPC])
def test_zip_upload_with_an_unwritable_data_folder_is_read_from_a_temporary_folder(code, home, system_tmp,
                                                                                    monkeypatch):
    _fault(monkeypatch, home, code)
    ds = datasets.load_zip(GOOD_ZIP, "mydigits.zip")
    assert len(ds) == 10
    (warning,) = ds.warnings
    assert f"Could not write in {home / 'uploads'}: {storage.describe_os_error(OSError(code, ''))}" in warning
    assert "temporary folder" in warning
    assert not any(system_tmp.iterdir())  # the temporary copy is removed once read
    assert not (home / "uploads").exists() or not any((home / "uploads").iterdir())


def test_disk_full_while_extracting_leaves_nothing_and_falls_back(home, system_tmp, monkeypatch):
    real = datasets._write_member

    def full(target, content):
        if str(target).startswith(str(home)):
            raise OSError(errno.ENOSPC, "No space left on device")
        real(target, content)

    monkeypatch.setattr(datasets, "_write_member", full)
    ds = datasets.load_zip(GOOD_ZIP, "mydigits.zip")
    assert len(ds) == 10 and "no space left on device" in ds.warnings[0]
    assert not any((home / "uploads").iterdir()) and not any(system_tmp.iterdir())


def test_no_room_anywhere_is_one_storage_error(home, system_tmp, monkeypatch):
    monkeypatch.setattr(datasets, "_write_member",
                        lambda target, content: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    with pytest.raises(StorageError, match=re.escape(f"Could not write in {home / 'uploads'}: no space left")):
        datasets.load_zip(GOOD_ZIP, "mydigits.zip")
    assert not any((home / "uploads").iterdir()) and not any(system_tmp.iterdir())


# --- collected digits and the evaluation cache: disk full, read-only ------------------------------------


@pytest.mark.parametrize("where", ["fsync", "replace", "create"])
def test_collected_digit_with_the_disk_full_is_never_half_written(where, home, monkeypatch):
    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    if where == "create":
        (home / "collected" / "1").mkdir()
        _fault(monkeypatch, home / "collected" / "1", errno.ENOSPC)
    else:
        monkeypatch.setattr(os, where, full)
    with pytest.raises(StorageError) as e:
        datasets.save_collected(digit(), 1)
    assert str(e.value) == f"Could not write in {home / 'collected' / '1'}: no space left on device."
    assert not [p for p in (home / "collected" / "1").iterdir()] if (home / "collected" / "1").exists() else True
    assert_collected_unchanged(home)


def test_collected_digit_in_a_read_only_data_folder(home, monkeypatch):
    _fault(monkeypatch, home, errno.EROFS)
    with pytest.raises(StorageError, match=re.escape(f"Could not write in {home / 'collected'}") + ".*read-only"):
        datasets.save_collected(digit(), 1)
    assert_collected_unchanged(home)


def test_collected_digits_never_overwrite_each_other(home):
    paths = {datasets.save_collected(digit(c), 2) for c in range(2, 12)}
    assert len(paths) == 10 and all(p.stat().st_size > 0 for p in paths)


@pytest.mark.parametrize("code", [errno.EROFS, errno.ENOSPC, errno.EACCES])
def test_evaluation_cache_that_cannot_be_written_never_fails_the_result(code, tmp_path, home, monkeypatch):
    ds = Dataset("tiny", np.stack([digit(4), digit(10)]), np.array([0, 3]), "two images")
    _fault(monkeypatch, home, code)
    ev = evaluation.evaluate(FakePredictor(), ds, "paper", model_path=_fake_model(tmp_path))
    assert ev.n == 2 and ev.y_pred.tolist() == ev.probabilities.argmax(1).tolist()
    (warning,) = ev.warnings
    assert warning.startswith(f"Could not write in {home / 'cache'}") or warning.startswith(
        f"Could not write in {home}")
    assert storage.describe_os_error(OSError(code, "")) in warning and "not cached" in warning
    assert ev.as_dict()["warnings"] == [warning]
    assert not list(home.rglob("*.npz")) and not list(home.rglob("*.tmp*"))


def test_evaluation_cache_with_the_disk_full_at_the_rename(tmp_path, home, monkeypatch):
    ds = Dataset("tiny", np.stack([digit(4), digit(10)]), np.array([0, 3]), "two images")
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    ev = evaluation.evaluate(FakePredictor(), ds, "paper", model_path=_fake_model(tmp_path))
    assert ev.n == 2 and "no space left on device" in ev.warnings[0]
    assert not list((home / "cache").rglob("*.*"))  # neither the cache file nor its temporary


def test_a_damaged_cache_file_is_recomputed(tmp_path, home):
    ds = Dataset("tiny", np.stack([digit(4), digit(10)]), np.array([0, 3]), "two images")
    model = _fake_model(tmp_path)
    first = evaluation.evaluate(FakePredictor(), ds, "paper", model_path=model)
    (cached,) = list(home.rglob("*.npz"))
    cached.write_bytes(b"")  # as a crash of an older version could leave it
    ev = evaluation.evaluate(FakePredictor(), ds, "paper", model_path=model)
    assert (ev.y_pred == first.y_pred).all() and not ev.warnings and cached.stat().st_size > 0


def test_sklearn_digits_evaluate_with_a_read_only_data_folder(tmp_path, home, monkeypatch):
    _fault(monkeypatch, home, errno.EROFS)
    ds = datasets.load_target("sklearn-digits")
    ev = evaluation.evaluate(FakePredictor(), ds, "paper", model_path=_fake_model(tmp_path))
    assert ev.n == 1797 and len(ev.warnings) == 1 and "read-only" in ev.warnings[0]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through chmod 0o555; the patched variants cover it")
def test_real_read_only_data_folder(tmp_path, home):
    home.chmod(0o555)
    try:
        ds = datasets.load_zip(GOOD_ZIP, "mydigits.zip")
        ev = evaluation.evaluate(FakePredictor(), ds, "paper", model_path=_fake_model(tmp_path))
        assert ev.n == 10 and ds.warnings and ev.warnings
    finally:
        home.chmod(0o755)


# --- the command line: exit statuses, JSON, no traceback (one TensorFlow import per run, so few runs) ----


def run_cli(tmp_path: Path, *args: str, home: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, TMPDIR=str(tmp_path / "system-tmp"), DIGITLAB_HOME=str(home or os.environ["DIGITLAB_HOME"]))
    (tmp_path / "system-tmp").mkdir(exist_ok=True)
    r = subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env=env)
    assert_plain(r.stdout + r.stderr)
    assert not any((tmp_path / "system-tmp").iterdir())
    return r


def test_cli_predict_reports_every_file_and_goes_on(tmp_path, home):
    files = {"good.png": GOOD, "float.tiff": float_tiff(), "empty.png": b"", "strip.png": strip_png(),
             "nan.tiff": float_tiff(nan=True)}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    paths = [str(tmp_path / n) for n in files] + [str(tmp_path / ("a" * 300 + ".png")), str(tmp_path / "none.png"),
                                                   str(tmp_path)]
    r = run_cli(tmp_path, "predict", *paths, "--json")
    assert r.returncode == 1, r.stderr
    out = json.loads(r.stdout)
    assert [o["file"] for o in out] == paths
    assert out[0]["digit"] is not None and out[1]["digit"] is not None and not out[0].get("error")
    errors = [o["error"] for o in out[2:]]
    for error, expected in zip(errors, ["empty", "too elongated", "NaN", "too long for the file system",
                                        "no such file", "not a file"]):
        assert expected in error, errors
    assert_collected_unchanged(home)


def test_cli_evaluate_folder_and_zip_list_skipped_files(tmp_path, home):
    make_folder(tmp_path / "corpus")
    r = run_cli(tmp_path, "evaluate", "--target", str(tmp_path / "corpus" / "digits"), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["n"] == 11 and out["skipped"] == len(out["skipped_files"]) == 13  # see make_folder
    assert any(s.startswith("7/strip.png: ") and "too elongated" in s for s in out["skipped_files"])
    shutil.rmtree(tmp_path / "corpus")
    data, expected = damaged_zip()
    (tmp_path / "mydigits.zip").write_bytes(data)
    (tmp_path / "many.zip").write_bytes(_many_members())
    r = run_cli(tmp_path, "evaluate", "--target", str(tmp_path / "mydigits.zip"), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["n"] == 11 and len(out["skipped_files"]) == len(expected)
    assert any("CRC check failed" in s for s in out["skipped_files"])
    r = run_cli(tmp_path, "evaluate", "--target", str(tmp_path / "many.zip"), "--json")
    assert r.returncode == 2 and "many.zip: the archive holds 10,000 files; the limit is 5,000." in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "many.zip", "mydigits.zip", "system-tmp"]
    assert_collected_unchanged(home)


def test_cli_evaluate_with_an_unwritable_data_folder_warns_once(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the data folder should be")  # every write under it fails (ENOTDIR)
    r = run_cli(tmp_path, "evaluate", "--target", "sklearn-digits", "--json", home=blocker / "home")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["n"] == 1797 and len(out["warnings"]) == 1 and "not cached" in out["warnings"][0]
    assert [line for line in r.stderr.splitlines() if line.startswith("warning: ")] == [
        f"warning: {out['warnings'][0]}"]


def test_cli_evaluate_numbers_folder_with_bad_files(tmp_path):
    folder = tmp_path / "numbers"
    folder.mkdir()
    (folder / "17_0001.png").write_bytes(png(np.hstack([digit(8), digit(8)])))
    (folder / "3_0002.png").write_bytes(b"")
    (folder / "4_0003.png").write_bytes(strip_png())
    r = run_cli(tmp_path, "evaluate-numbers", "--target", str(folder), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["n"] == 1 and out["skipped"] == 2
    assert sorted(s.split(":")[0] for s in out["skipped_files"]) == ["3_0002.png", "4_0003.png"]
