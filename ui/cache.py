"""st.cache_* wrappers around core: the model is loaded once per process, data sets once per session."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from core import models


WARMUP_SPINNER = "Getting the model ready: TensorFlow is warming up in the background (once per server start)..."


def predictor(path: str | None = None) -> models.Predictor:
    """The predictor of a model file (None: the shipped reused model), loaded once per process.

    The shipped model normally comes ready from ui.warmup's background thread (app.py starts it when the
    server's first page loads): returned as is, never loaded again. While that thread still runs, any load
    waits for it, with a spinner saying so: loading here too would import TensorFlow from two threads at once
    and fight it for the CPU. Without a warm-up (a page run on its own, DIGITLAB_WARMUP=0) or after a failed
    one, the model loads here as before, with the usual spinner and error.
    """
    from ui import warmup

    if warmup.state() == warmup.RUNNING:
        with st.spinner(WARMUP_SPINNER, show_time=True):
            warmup.wait()
    if _is_reused(path):
        warmed = warmup.ready()
        if warmed is not None:
            return warmed
    return _load_predictor(path)


def _is_reused(path: str | None) -> bool:
    if path in (None, ""):
        return True
    try:
        return Path(path).resolve() == models.reused_model_path().resolve()
    except OSError:
        return False


@st.cache_resource(show_spinner="Loading the model (TensorFlow starts once per process)...", max_entries=12)
def _load_predictor(path: str | None = None) -> models.Predictor:
    return models.Predictor.load(path)


@st.cache_data(show_spinner=False)
def reused_model_info() -> dict:
    """run.json and metrics.json of the shipped reused model ({} when it is missing)."""
    from core.config import REUSED_MODEL_DIR
    from core.runs import read_json

    info = {}
    for name in ("run.json", "metrics.json"):
        if (REUSED_MODEL_DIR / name).exists():
            info.update(read_json(REUSED_MODEL_DIR / name))
    return info


@st.cache_data(show_spinner=False, max_entries=64)
def classify(_predictor: models.Predictor, image, method: str, model_key: str = "reused") -> models.Prediction:
    # Keyed by the image's bytes, the method and model_key: a rerun with the same drawing costs nothing.
    return models.classify(_predictor, image, method)


@st.cache_data(show_spinner=False)
def examples():
    from core.datasets import load_sklearn_digits

    return load_sklearn_digits()


def target(name: str):
    """A built-in or collected target data set, loaded once per content: my digits change (a save, a relabel,
    a delete on another page), so their cache key is the list of their files, not just the name."""
    version = ()
    if name == "collected":
        from core.collected import list_collected

        version = tuple((str(d.path), d.label) for d in list_collected())
    return _target(name, version)


@st.cache_data(show_spinner="Loading the data set...", max_entries=8)
def _target(name: str, version: tuple):
    from core.datasets import load_target

    return load_target(name)


@st.cache_data(show_spinner="Checking and extracting the archive...", max_entries=4)
def uploaded_target(data: bytes, filename: str):
    """An uploaded zip as a data set (keyed by its bytes: the same upload is extracted once)."""
    from core.datasets import load_zip

    return load_zip(data, filename)
