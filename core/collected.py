"""My digits: the digits users drew on the Draw page and saved with a label, listed, counted, relabelled, deleted.

They live as image files in `collected/<digit>/` under the data home (`core.datasets.collected_dir`, written by
`core.datasets.save_collected`). Only files directly inside a digit folder are managed here, which is where
saving puts them. Every change is refused on a read-only server, and only ever touches a file inside the
collected folder: a path from anywhere else (another folder, `..`, a link) is refused, whatever the caller.
"""
from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from core.config import require_writable
from core.datasets import collected_dir
from core.errors import DatasetError, InvalidOptionError
from core.images import EXTENSIONS
from core.storage import storage_error

#: Digit folder names. Not str.isdigit(), which also accepts characters such as '²'.
_LABELS = {str(d): d for d in range(10)}
#: How save_collected names a file: "20240312-140501-1a2b3c4d.png" (local time, then a random part).
_STAMP = "%Y%m%d-%H%M%S"


@dataclass(frozen=True)
class CollectedDigit:
    """One saved digit: its file, its label (the folder it is in) and when it was saved."""

    path: Path
    label: int
    created: datetime

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def key(self) -> str:
        """'<label>/<file name>': unique among collected digits, stable while the digit is unchanged."""
        return f"{self.label}/{self.path.name}"


def _created(path: Path) -> datetime:
    # The saved name carries the time of saving; a file copied in by hand falls back to its modification time.
    try:
        return datetime.strptime(path.name[:15], _STAMP)
    except ValueError:
        try:
            return datetime.fromtimestamp(path.stat().st_mtime)
        except OSError:
            return datetime.fromtimestamp(0)


def _is_digit_file(path: Path) -> bool:
    # Hidden names are half-written temporary files (core.storage) or OS metadata; links are never followed.
    return (not path.name.startswith(".") and path.suffix.lower() in EXTENSIONS
            and not path.is_symlink() and path.is_file())


def list_collected() -> list[CollectedDigit]:
    """Every saved digit, by label, newest first within a label. An empty list when none were saved."""
    root = collected_dir()
    found = []
    for folder_name, label in _LABELS.items():
        folder = root / folder_name
        if folder.is_symlink() or not folder.is_dir():
            continue
        try:
            paths = [p for p in folder.iterdir() if _is_digit_file(p)]
        except OSError as e:
            raise storage_error(e, folder, "read") from None
        found += [CollectedDigit(p, label, _created(p)) for p in paths]
    return sorted(found, key=lambda d: (d.label, -d.created.timestamp(), d.path.name))


def counts(digits: list[CollectedDigit] | None = None) -> dict[int, int]:
    """How many digits are saved per label, every label 0..9 present (0 when none)."""
    out = dict.fromkeys(range(10), 0)
    for d in list_collected() if digits is None else digits:
        out[d.label] += 1
    return out


def _checked(path: str | Path) -> tuple[Path, int]:
    """`path` as a saved digit's file inside collected/<digit>/, with its label; DatasetError otherwise."""
    p = Path(os.path.abspath(path))  # '..' resolved by name, so a link is seen as a link below
    root = collected_dir().resolve()
    folder = p.parent
    label = _LABELS.get(folder.name)
    if label is None or folder.is_symlink() or folder.resolve() != root / folder.name:
        raise DatasetError(f"{p.name} is not one of my digits: only files in {root}/<digit>/ can be changed.")
    if p.is_symlink() or (p.exists() and not p.is_file()) or p.suffix.lower() not in EXTENSIONS:
        raise DatasetError(f"{p.name} is not a saved digit image: only image files in {root}/<digit>/ can be "
                           "changed.")
    if not p.exists():
        raise DatasetError(f"{p.name} is no longer among my digits (deleted or relabelled meanwhile?).")
    return p, label


def delete_collected(path: str | Path) -> None:
    """Delete one saved digit for good. Refused on a read-only server and for any file outside my digits."""
    require_writable("deleting digits")
    p, _ = _checked(path)
    try:
        p.unlink()
    except FileNotFoundError:
        raise DatasetError(f"{p.name} is no longer among my digits (deleted or relabelled meanwhile?).") from None
    except OSError as e:
        raise storage_error(e, p.parent, "delete") from None


def relabel_collected(path: str | Path, new_label: int) -> Path:
    """Move one saved digit to the folder of `new_label`; returns its new path (the same one if unchanged).

    The file is moved in one rename and keeps its name unless the new folder already has a file of that name;
    then it gets a new random part, so no digit is ever replaced. Refused on a read-only server and for any
    file outside my digits.
    """
    require_writable("relabelling digits")
    if isinstance(new_label, bool) or new_label not in range(10):
        raise InvalidOptionError("label", new_label, range(10))
    p, label = _checked(path)
    if label == new_label:
        return p
    dest_folder = collected_dir().resolve() / str(new_label)
    try:
        dest_folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise storage_error(e, dest_folder) from None
    dest = dest_folder / p.name
    while dest.exists() or dest.is_symlink():  # a fresh random part; the timestamp at the front is kept
        dest = dest_folder / f"{p.stem}-{secrets.token_hex(4)}{p.suffix}"
    try:
        os.replace(p, dest)  # one rename on the same file system: the digit is in one folder or the other
    except FileNotFoundError:
        raise DatasetError(f"{p.name} is no longer among my digits (deleted or relabelled meanwhile?).") from None
    except OSError as e:
        raise storage_error(e, dest_folder) from None
    return dest


def saved_at(digit: CollectedDigit) -> str:
    """When a digit was saved, for a caption: '12 Mar 14:05' (with the year when it is not this year)."""
    fmt = "%d %b %H:%M" if digit.created.year == time.localtime().tm_year else "%d %b %Y"
    return digit.created.strftime(fmt)
