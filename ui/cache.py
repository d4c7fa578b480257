"""st.cache_* wrappers around core: a model is loaded once per server (in its model process), data sets once per
session."""
from __future__ import annotations

import streamlit as st

from core import models


WARMUP_SPINNER = "Getting the model ready: TensorFlow is warming up in the background (once per server start)..."


def predictor(path: str | None = None):
    """The predictor of a model file (None: the shipped reused model), loaded once per server.

    Normally a RemotePredictor of ui.warmup's model process (app.py starts it with the server's first page):
    the shipped model comes ready from its warm-up, any other file loads there once. While the warm-up still
    runs, a page waits for it, with a spinner saying so. Without a model process (a page run on its own,
    DIGITLAB_WARMUP=0) or after a failed warm-up, the model loads in this process as before, with the usual
    spinner and error.
    """
    from ui import warmup

    warmup.recover()  # a child that died: started again, and waited for below, rather than TensorFlow here
    if warmup.state() == warmup.RUNNING:
        with st.spinner(WARMUP_SPINNER, show_time=True):
            warmup.wait()
    if warmup.state() == warmup.READY:
        with st.spinner("Loading the model...", show_time=True):
            remote = warmup.predictor(path)
        if remote is not None:
            return remote
    return _load_predictor(path)


def quick_predictor(path: str | None = None):
    """For a few images at a time (a drawing): the model's OpenCV twin when it has a valid one, else predictor().

    A twin (core.twin) needs no TensorFlow, so a stroke drawn the moment a fresh server shows the Draw page is
    answered at once instead of waiting for the model process's warm-up. It has no penultimate-layer features:
    pages that need them use predictor().
    """
    from core.models import resolve_model_path
    from core.twin import twin_paths

    p = resolve_model_path(path)
    # The files' stamps are part of the key: a model or twin written while the server runs is seen.
    twin = _twin(str(p.resolve()), tuple(_stamp(f) for f in (p, *twin_paths(p))))
    return twin if twin is not None else predictor(path)  # no twin, or no model file: predictor() says why


def _stamp(path) -> tuple[int, int] | None:
    try:
        st_ = path.stat()
    except OSError:
        return None
    return st_.st_mtime_ns, st_.st_size


@st.cache_resource(show_spinner=False, max_entries=12)
def _twin(path: str, stamp: tuple):  # stamp: part of the cache key only
    from core.twin import load_twin

    return load_twin(path)


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
def classify(_predictor, image, method: str, model_key: str = "reused") -> models.Prediction:
    # Keyed by the image's bytes, the method and model_key: a rerun with the same drawing costs nothing. The
    # predictor (a core.models.Predictor, core.model_process.RemotePredictor or core.twin.TwinPredictor) is not
    # part of the key: all three give the same probabilities.
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
