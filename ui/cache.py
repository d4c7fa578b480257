"""st.cache_* wrappers around core: the model is loaded once per process, data sets once per session."""
from __future__ import annotations

import streamlit as st

from core import models


@st.cache_resource(show_spinner="Loading the reused model (TensorFlow starts once per process)...")
def predictor(path: str | None = None) -> models.Predictor:
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
