"""Writing files whole or not at all, and saying plainly why a write failed.

Every file the product writes (run files, model files, collected digits, caches, extracted uploads) goes
through `atomic_output`: it is written under a temporary name in the same folder, then renamed in one
`os.replace`. A crash, a full disk or a killed process leaves the previous complete version (or nothing),
never half a file. An OSError becomes a `StorageError` that names the folder and the cause in words.
"""
from __future__ import annotations

import errno
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from core.errors import StorageError

#: The causes users meet, in their words (errno -> text); anything else falls back to the OS message.
_CAUSES = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENAMETOOLONG: "a file name or path is too long for the file system",
}


def describe_os_error(e: OSError) -> str:
    """An OSError's cause in plain words, without a traceback or errno noise."""
    return _CAUSES.get(e.errno, e.strerror or str(e) or type(e).__name__)


def storage_error(e: OSError, path: Path | str, action: str = "write") -> StorageError:
    """A StorageError that names the folder (or file) and the cause: 'Could not write in X: no space...'."""
    return StorageError(f"Could not {action} in {Path(path)}: {describe_os_error(e)}.", path=Path(path),
                        cause=describe_os_error(e))


@contextmanager
def atomic_output(path: Path | str, mode: int = 0o644) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block succeeds, rename it onto `path`.

    Works for writers that want a file name (Keras' `model.save`, `np.savez`): the name keeps the suffix.
    On any failure the temporary file is removed and an OSError is raised as a StorageError.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
        os.close(fd)
    except OSError as e:
        raise storage_error(e, path.parent) from None
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, mode)  # mkstemp creates 0600; our files are meant to be shared and committed
        os.replace(tmp_path, path)
    except OSError as e:
        tmp_path.unlink(missing_ok=True)
        raise storage_error(e, path.parent) from None
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write a whole file or nothing (see atomic_output)."""
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the rename makes them visible


def atomic_write_text(path: Path | str, text: str) -> None:
    """Write a whole UTF-8 text file or nothing."""
    atomic_write_bytes(path, text.encode("utf-8"))
