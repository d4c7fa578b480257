import os
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """Every test gets its own data home: no test sees another's runs, jobs or collected digits."""
    monkeypatch.setenv("DIGITLAB_HOME", str(tmp_path / "home"))


def canvas(strokes, size=280, ink=0, paper=255, width=18, rgba=True):
    """A canvas image like streamlit-drawable-canvas returns: RGBA, opaque white, black strokes."""
    img = np.full((size, size, 4 if rgba else 3), paper, np.uint8)
    if rgba:
        img[:, :, 3] = 255
    for (x0, y0), (x1, y1) in strokes:
        cv2.line(img, (x0, y0), (x1, y1), (ink, ink, ink, 255)[: img.shape[2]], width)
    return img


def mnist_test_available() -> bool:
    from core.datasets import load_mnist_test

    return load_mnist_test() is not None
