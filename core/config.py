"""Where things live. Every path can be moved with an environment variable, so tests use tmp_path."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Models and runs that ship with the project (tracked by git).
MODELS_DIR = ROOT / "models"
#: The reused model: the Keras "Simple MNIST convnet" trained on MNIST digits.
REUSED_MODEL_DIR = MODELS_DIR / "reused-cnn"
#: Published runs from the seed reports, copied from ../shared/reference-runs (read-only).
REFERENCE_RUNS_DIR = MODELS_DIR / "reference-runs"
#: Project runs trained here and shipped with the repo.
SHIPPED_RUNS_DIR = MODELS_DIR / "runs"


def data_home() -> Path:
    """User data (own runs, job queue, collected digits, caches): never tracked by git."""
    # An empty DIGITLAB_HOME counts as unset: Path("") is the working directory, never meant as a data home.
    return Path(os.environ.get("DIGITLAB_HOME") or ROOT / ".digitlab")


def mnist_test_dir() -> Path:
    """The official MNIST test set in IDX format, when this machine has it (development only)."""
    return Path(os.environ.get("DIGITLAB_MNIST_TEST_DIR", ROOT.parent / "shared" / "data" / "mnist"))


def keras_home() -> Path:
    """Keras' cache (datasets/, models/), as Keras itself resolves it."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))


#: `DIGITLAB_READ_ONLY` values that turn read-only mode on (case-insensitive); anything else leaves it off.
READ_ONLY_VALUES = ("1", "true", "yes")


def read_only() -> bool:
    """True on a shared demo server (`DIGITLAB_READ_ONLY=1`): visitors may look, draw, upload and evaluate,
    but nothing that changes the server (queue or cancel jobs, save digits) or names a server path."""
    return os.environ.get("DIGITLAB_READ_ONLY", "").strip().lower() in READ_ONLY_VALUES


def require_writable(action: str) -> None:
    """Refuse `action` (e.g. "queueing training jobs") on a read-only server with a ReadOnlyError.

    Called first by every core function that changes the server on a visitor's behalf, so the mode holds
    whatever the page shows.
    """
    if read_only():
        from core.errors import ReadOnlyError

        raise ReadOnlyError(f"This server is read-only (DIGITLAB_READ_ONLY=1): {action} is disabled. "
                            "Its owner enables it by starting the server without DIGITLAB_READ_ONLY.")
