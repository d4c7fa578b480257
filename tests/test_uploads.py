"""Target data sets from folders and zips: nested folders, bad files, traversal, links, limits, missing classes."""
import io
import stat
import zipfile

import cv2
import numpy as np
import pytest

from core import datasets
from core.errors import DatasetError, NothingYetError


def png(value=0) -> bytes:
    img = np.full((20, 20), 255, np.uint8)
    img[3:17, 8:12] = value
    return cv2.imencode(".png", img)[1].tobytes()


def make_zip(entries) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries:
            if isinstance(data, zipfile.ZipInfo):
                zf.writestr(data, b"../../etc/passwd")
            else:
                zf.writestr(name, data)
    return buf.getvalue()


def test_nested_folders_any_depth_and_skipped_files():
    data = make_zip([("mydigits/7/scan12.png", png()), ("a/b/c/3/x.png", png()), ("mydigits/7/notes.txt", b"hi"),
                     ("mydigits/7/broken.png", b"\x89PNG broken"), ("loose.png", png()),
                     ("__MACOSX/7/._scan12.png", b"meta")])
    ds = datasets.load_zip(data, "mydigits.zip")
    assert sorted(ds.labels.tolist()) == [3, 7]
    reasons = " | ".join(ds.skipped)
    assert "notes.txt: not a PNG" in reasons and "broken.png" in reasons and "loose.png: not inside" in reasons
    assert len(ds.skipped) == 3  # __MACOSX metadata is ignored, not counted
    assert ds.missing_classes() == [0, 1, 2, 4, 5, 6, 8, 9]


@pytest.mark.parametrize("evil", ["../evil.png", "a/../../evil.png", "/abs/evil.png", "..\\win\\evil.png"])
def test_path_traversal_is_not_extracted(tmp_path, evil):
    dest = tmp_path / "out"
    skipped = datasets.safe_extract(make_zip([(evil, png()), ("ok/1/fine.png", png())]), dest)
    assert any("not extracted" in s for s in skipped)
    assert not (tmp_path / "evil.png").exists() and not list(tmp_path.glob("**/evil.png"))
    assert (dest / "ok" / "1" / "fine.png").exists()


def test_symlink_members_are_not_extracted(tmp_path):
    link = zipfile.ZipInfo("digits/1/link.png")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    skipped = datasets.safe_extract(make_zip([("digits/1/link.png", link), ("digits/1/a.png", png())]),
                                    tmp_path)
    assert skipped == ["digits/1/link.png: a link, not extracted"]
    assert not (tmp_path / "digits" / "1" / "link.png").exists()


def test_thousands_of_files_are_refused(monkeypatch, tmp_path):
    monkeypatch.setattr(datasets, "MAX_FILES", 50)
    data = make_zip([(f"d/1/{i}.png", b"x") for i in range(51)])
    with pytest.raises(DatasetError, match="51 files; the limit is 50"):
        datasets.safe_extract(data, tmp_path)
    assert not any(tmp_path.iterdir())  # refused before writing anything


def test_zip_bomb_by_uncompressed_size_is_refused(monkeypatch, tmp_path):
    monkeypatch.setattr(datasets, "MAX_TOTAL_BYTES", 1000)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("d/1/zeros.png", b"\0" * 5000)
    with pytest.raises(DatasetError, match="unpacks to"):
        datasets.safe_extract(buf.getvalue(), tmp_path)


def test_not_a_zip_and_empty_zip():
    with pytest.raises(DatasetError, match="not a valid .zip"):
        datasets.load_zip(b"hello")
    with pytest.raises(DatasetError, match=r"upload.zip: no readable digit images .*readme.txt: not a PNG"):
        datasets.load_zip(make_zip([("readme.txt", b"nothing here")]))


def test_folder_target_and_links_not_followed(tmp_path):
    (tmp_path / "set" / "4").mkdir(parents=True)
    (tmp_path / "set" / "4" / "a.png").write_bytes(png())
    (tmp_path / "secret.png").write_bytes(png())
    (tmp_path / "set" / "4" / "link.png").symlink_to(tmp_path / "secret.png")
    ds = datasets.load_target(str(tmp_path / "set"))
    assert ds.labels.tolist() == [4] and ds.skipped == ["4/link.png: a link, not followed"]


def test_collected_digits_round_trip():
    with pytest.raises(NothingYetError, match="No digits saved yet"):
        datasets.load_target("collected")
    img = np.full((280, 280), 255, np.uint8)
    img[40:240, 130:150] = 0
    datasets.save_collected(img, 1)
    datasets.save_collected(img, 1)
    ds = datasets.load_target("collected")
    assert ds.labels.tolist() == [1, 1] and ds.images[0].shape == (280, 280)


def test_unknown_target_names_valid_ones():
    from core.errors import InvalidOptionError

    with pytest.raises(InvalidOptionError, match="sklearn-digits, mnist-test, collected"):
        datasets.load_target("imagenet")
