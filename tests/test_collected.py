"""core.collected: my digits listed, counted, relabelled and deleted, only inside the collected folder."""
import os

import numpy as np
import pytest

from core.collected import counts, delete_collected, list_collected, relabel_collected
from core.datasets import collected_dir, load_target, save_collected
from core.errors import DatasetError, DigitLabError, InvalidOptionError, ReadOnlyError
from tests.conftest import canvas


def _one():
    return canvas([((140, 50), (140, 230))])


def test_nothing_saved_yet():
    assert list_collected() == []
    assert counts() == dict.fromkeys(range(10), 0)


def test_saved_digits_are_listed_and_counted_by_label():
    paths = [save_collected(_one(), label) for label in (7, 1, 7)]
    digits = list_collected()
    assert [d.label for d in digits] == [1, 7, 7]
    assert {d.path for d in digits} == set(paths)
    assert counts() == {**dict.fromkeys(range(10), 0), 1: 1, 7: 2}
    assert all(d.created.year >= 2024 and d.key == f"{d.label}/{d.name}" for d in digits)


def test_temporary_and_foreign_files_are_not_listed():
    save_collected(_one(), 3)
    folder = collected_dir() / "3"
    (folder / ".x.png.tmp.png").write_bytes(b"half written")
    (folder / "notes.txt").write_text("not a digit")
    (collected_dir() / "notes").mkdir()
    assert len(list_collected()) == 1


@pytest.mark.parametrize("old, new", [(1, 7), (7, 1), (0, 9), (4, 4)])
def test_relabel_moves_the_file_and_the_data_set_follows(old, new):
    path = save_collected(_one(), old)
    moved = relabel_collected(path, new)
    assert moved.parent.name == str(new) and moved.name == path.name and moved.exists()
    assert not path.exists() or old == new
    assert load_target("collected").labels.tolist() == [new]


def test_relabel_never_replaces_a_digit_of_the_same_name():
    path = save_collected(_one(), 2)
    other = collected_dir() / "5" / path.name
    other.parent.mkdir(parents=True)
    other.write_bytes(b"another digit")
    moved = relabel_collected(path, 5)
    assert moved != other and moved.parent == other.parent and moved.name.startswith(path.stem)
    assert other.read_bytes() == b"another digit"
    assert counts()[5] == 2 and counts()[2] == 0


@pytest.mark.parametrize("label", [10, -1, True, "3", 2.5])
def test_relabel_to_a_label_that_is_not_a_digit_is_refused(label):
    path = save_collected(_one(), 2)
    with pytest.raises(InvalidOptionError):
        relabel_collected(path, label)
    assert path.exists()


def test_delete_removes_only_that_digit():
    keep, gone = save_collected(_one(), 4), save_collected(_one(), 4)
    delete_collected(gone)
    assert not gone.exists() and keep.exists()
    assert [d.path for d in list_collected()] == [keep]


def _outside(tmp_path, kind):
    """A path that is not one of my digits, by kind."""
    save_collected(_one(), 1)
    root = collected_dir()
    victim = tmp_path / "victim.png"
    victim.write_bytes(b"precious")
    if kind == "elsewhere":
        return victim
    if kind == "dotdot":
        return root / "1" / ".." / ".." / ".." / "victim.png"
    if kind == "not a digit folder":
        (root / "x").mkdir()
        (root / "x" / "a.png").write_bytes(b"precious")
        return root / "x" / "a.png"
    if kind == "nested":
        (root / "1" / "deep").mkdir()
        (root / "1" / "deep" / "a.png").write_bytes(b"precious")
        return root / "1" / "deep" / "a.png"
    if kind == "link":
        link = root / "1" / "link.png"
        os.symlink(victim, link)
        return link
    if kind == "linked folder":
        os.symlink(tmp_path, root / "2")
        return root / "2" / "victim.png"
    if kind == "not an image":
        (root / "1" / "notes.txt").write_text("precious")
        return root / "1" / "notes.txt"
    if kind == "the folder":
        return root / "1"
    if kind == "missing":
        return root / "1" / "nothing-here.png"
    raise AssertionError(kind)


KINDS = ["elsewhere", "dotdot", "not a digit folder", "nested", "link", "linked folder", "not an image",
         "the folder", "missing"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("action", ["delete", "relabel"])
def test_a_path_that_is_not_one_of_my_digits_is_refused(tmp_path, kind, action):
    path = _outside(tmp_path, kind)
    before = sorted(p for p in tmp_path.rglob("*"))
    with pytest.raises(DatasetError):
        delete_collected(path) if action == "delete" else relabel_collected(path, 3)
    assert sorted(p for p in tmp_path.rglob("*")) == before
    assert (tmp_path / "victim.png").read_bytes() == b"precious"
    assert [d.label for d in list_collected()] == [1]


@pytest.mark.parametrize("action, words", [("delete", "deleting digits"), ("relabel", "relabelling digits")])
def test_read_only_server_refuses_changes(monkeypatch, action, words):
    path = save_collected(_one(), 6)
    monkeypatch.setenv("DIGITLAB_READ_ONLY", "1")
    with pytest.raises(ReadOnlyError, match=words) as err:
        delete_collected(path) if action == "delete" else relabel_collected(path, 8)
    assert isinstance(err.value, DigitLabError)
    assert path.exists() and counts()[6] == 1
    assert len(list_collected()) == 1  # looking is still allowed


def test_read_only_refuses_even_a_path_outside(monkeypatch, tmp_path):
    monkeypatch.setenv("DIGITLAB_READ_ONLY", "yes")
    with pytest.raises(ReadOnlyError):
        delete_collected(tmp_path / "whatever.png")


def test_a_digit_deleted_meanwhile_gets_a_clear_message():
    path = save_collected(_one(), 0)
    path.unlink()
    with pytest.raises(DatasetError, match="no longer"):
        relabel_collected(path, 1)


def test_listed_images_read_back_as_saved():
    from core.images import read_image

    save_collected(_one(), 9)
    (digit,) = list_collected()
    img = read_image(digit.path)
    assert img.shape[:2] == (280, 280) and np.asarray(img).min() == 0


def test_the_pages_cached_my_digits_follow_saves_relabels_and_deletes():
    import numpy as np

    from core.collected import delete_collected, list_collected, relabel_collected
    from core.datasets import save_collected
    from ui import cache

    img = np.full((28, 28), 255, np.uint8)
    img[5:23, 12:16] = 0
    save_collected(img, 1)
    assert cache.target("collected").labels.tolist() == [1]
    save_collected(img, 1)
    assert len(cache.target("collected")) == 2
    relabel_collected(list_collected()[0].path, 7)
    assert sorted(cache.target("collected").labels.tolist()) == [1, 7]
    delete_collected(list_collected()[0].path)
    assert len(cache.target("collected")) == 1 and "1 digit saved" in cache.target("collected").provenance
