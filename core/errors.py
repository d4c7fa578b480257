"""One exception hierarchy for the whole product.

Pages catch `DigitLabError` and show its message with `st.error`; the CLI prints it and exits 2.
Messages say what was wrong and name the valid values, scikit-learn style.
"""
from __future__ import annotations


class DigitLabError(Exception):
    """Base class of every error the product reports to a user."""


class InvalidImageError(DigitLabError, ValueError):
    """An image that cannot be read or reframed (wrong shape, dtype, size, corrupt file)."""


class InvalidOptionError(DigitLabError, ValueError):
    """An option outside its valid values."""

    def __init__(self, name: str, value: object, valid: object) -> None:
        # A list of values reads "one of a, b, c"; a range is given as text ("an integer from 1 to 1000").
        valid_text = valid if isinstance(valid, str) else "one of " + ", ".join(map(str, valid))
        super().__init__(f"{name} must be {valid_text}; got {value!r}.")
        self.name, self.value, self.valid = name, value, valid


class DatasetError(DigitLabError, ValueError):
    """A data set that cannot be loaded or used (missing, empty, unsafe archive, missing classes)."""


class NothingYetError(DatasetError):
    """A data set with nothing in it yet (no digits saved from the Draw page): pages show a note, not an error."""


class ModelError(DigitLabError):
    """A model that cannot be found, loaded or built (e.g. ImageNet weights unavailable offline)."""


class JobError(DigitLabError):
    """A background job that cannot be queued, found or cancelled."""


class StorageError(DigitLabError):
    """A file or folder that cannot be written or read (disk full, read-only, permissions, name too long).

    The message names the folder and the cause; `path` and `cause` carry them for pages and JSON output.
    """

    def __init__(self, message: str, path=None, cause: str = "") -> None:
        super().__init__(message)
        self.path, self.cause = path, cause


class ReadOnlyError(DigitLabError):
    """An action that changes the server (queue or cancel a job, save a digit) on a read-only server.

    Raised by `core.config.require_writable` when `DIGITLAB_READ_ONLY` is set (a shared demo server).
    """
