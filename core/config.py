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
    return Path(os.environ.get("DIGITLAB_HOME", ROOT / ".digitlab"))


def mnist_test_dir() -> Path:
    """The official MNIST test set in IDX format, when this machine has it (development only)."""
    return Path(os.environ.get("DIGITLAB_MNIST_TEST_DIR", ROOT.parent / "shared" / "data" / "mnist"))


def keras_home() -> Path:
    """Keras' cache (datasets/, models/), as Keras itself resolves it."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
