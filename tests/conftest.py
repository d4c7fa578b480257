import json
import os
import re
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """Every test gets its own data home: no test sees another's runs, jobs or collected digits. No background
    warm-up either (it would load TensorFlow and freeze the heap under unrelated page tests); test_warmup.py
    turns it back on for its own tests."""
    monkeypatch.setenv("DIGITLAB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DIGITLAB_WARMUP", "0")


@pytest.fixture
def offline_keras(tmp_path, monkeypatch):
    """No Keras cache (so no ImageNet weights, no downloaded data sets) and no MNIST test set: a fresh machine."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("DIGITLAB_MNIST_TEST_DIR", str(tmp_path / "no-mnist"))
    return tmp_path / "keras"  # the Keras cache folder (not created), for tests that fill it


def saved_adaptation(target="sklearn-digits", name="adapt-1", seeds=3, model=None) -> Path:
    """A result.json as core.adaptation's background job writes it (only the fields the pages read), for the
    shipped model unless `model` names another; its path."""
    from core.adaptation import results_dir

    summary = [{"strategy": s, "shots": k, "mean": m, "std": 0.01 if seeds > 1 else None, "n": seeds,
                "mnist_mean": 0.97}
               for s, k, m in (("last-layer", 1, 0.95), ("last-layer", 50, 0.985), ("fine-tune", 1, 0.955),
                               ("fine-tune", 50, 0.99), ("scratch", 1, 0.3), ("scratch", 50, 0.9))]
    folder = results_dir() / name
    folder.mkdir(parents=True)
    (folder / "result.json").write_text(json.dumps({
        "target": target, "model": str(model or ROOT / "models" / "reused-cnn" / "model.keras"),
        "reframing": "paper", "n_test": 899, "n_pool": 898, "zero_shot": 0.94, "zero_shot_mnist": 0.98,
        "results": [], "summary": summary}))
    return folder / "result.json"


def tiny(epochs=1, **kw):
    """A training run that takes seconds: an MLP on 40 embedded digits."""
    from core.training import RunConfig

    return RunConfig.preset("mlp", epochs=epochs, max_samples=40, batch_size=16, early_stopping=None, **kw)


def wait_for(predicate, timeout=180, every=0.3) -> bool:
    """Poll until predicate() is true (True) or timeout seconds pass (False): for work in other processes."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return False


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


def headline(at) -> dict[str, tuple[str, str | None]]:
    """The page's headline figures (ui.render.kpi_row: a small label, a heading, a caption, in a block of their
    own): label -> (value, note), as shown."""
    def shown(text: str) -> str:
        return re.sub(r"\\(.)", r"\1", text).replace("\u2060", "")

    def blocks(node):
        children = list(getattr(node, "children", {}).values())
        if children:
            yield children
        for child in children:
            yield from blocks(child)

    out = {}
    for kids in blocks(at.main):
        types = [k.type for k in kids]
        label = re.fullmatch(r":small\[(.+)\]", kids[0].value) if types[:2] == ["markdown", "header"] else None
        if label and types[2:] in ([], ["caption"]):
            out[shown(label.group(1))] = (shown(kids[1].value), shown(kids[2].value) if len(kids) == 3 else None)
    return out
