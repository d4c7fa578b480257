"""The pickers several pages share: the target data set and the model under test.

Each renders its widgets, returns what was chosen, and raises core's DigitLabError for a bad upload (the page
shows it where it wants with ui.safe.show_error). Light on purpose: no pandas or TensorFlow at import.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from core import config
from core.datasets import Dataset
from ui import cache

SOURCES = {"sklearn-digits": "scikit-learn digits (8x8 scans)", "mnist-test": "MNIST test set (source domain)",
           "collected": "my digits (saved on the Draw page)", "upload": "upload a .zip"}
SHIPPED = "shipped"
UPLOAD = "upload"


def target_dataset(source: str) -> Dataset | None:
    """The data set chosen in a SOURCES box: a built-in one, or the user's .zip (None until one is uploaded,
    with a line saying what to upload)."""
    if source != "upload":
        return cache.target(source)
    upload = st.file_uploader("A .zip of images in folders 0..9 (any depth, e.g. mydigits/7/scan12.png)",
                              type=["zip"], key="zip")
    if upload is None:
        st.info("Upload a .zip whose folders 0..9 hold PNG, JPEG, BMP or TIFF images of those digits.")
        return None
    return cache.uploaded_target(upload.getvalue(), upload.name)


@st.cache_data(show_spinner=False, ttl=10, max_entries=8)
def model_choices(home: str) -> list[dict]:
    """Finished runs with a model (id, title, path), the shipped model left out (it is its own choice).

    `home` (the data folder) is part of the key: another data folder has other runs. Ten seconds old at most,
    so a run that just finished shows up without a reload.
    """
    from core.runs import runs_with_models

    return [{"id": r.id, "title": r.title or r.id, "path": str(Path(r.path) / "model.keras")}
            for r in runs_with_models() if r.id != "reused-cnn"]


@st.cache_data(show_spinner="Checking the model...", max_entries=8)
def uploaded_model(data: bytes, name: str, home: str) -> str:
    """An uploaded .keras/.h5 file kept in the data folder and checked to load; its path. ModelError says why
    not (an error is not cached: a fixed file can be uploaded again)."""
    from core.models import save_uploaded_model
    from ui import warmup

    # Checked where it will run: in the model process when it serves (no TensorFlow in the server), else here.
    return str(save_uploaded_model(data, name, warmup.predictor))


def adaptation_label(result: dict) -> str:
    """A saved few-shot result in a few words: data set · model · k measured · seeds · id."""
    from core.adaptation import result_seeds
    from core.wording import plural

    model = Path(str(result.get("model", "")))
    if model.parts[-2:] == ("reused-cnn", "model.keras"):
        name = "shipped model"
    else:  # a run's folder names it; an uploaded file its own name
        name = model.parent.name if model.name == "model.keras" else model.name
    shots = sorted({int(r["shots"]) for r in result.get("summary") or []})
    k = "" if not shots else f"k {shots[0]}" if len(shots) == 1 else f"k {shots[0]}-{shots[-1]}"
    return " · ".join(x for x in (SOURCES.get(result.get("target"), result.get("target", "")), name, k,
                                  plural(result_seeds(result), "seed"), result.get("id", "")) if x)


def choose_result(results: list[dict], key: str, label: str, help: str | None = None) -> dict:
    """A box of saved few-shot results (non-empty; the first is the default), each named by adaptation_label;
    the chosen one."""
    by_id = {r["id"]: r for r in results}
    # ids, not positions: a result saved meanwhile comes first and would shift a position to another result
    chosen = st.selectbox(label, list(by_id), format_func=lambda i: adaptation_label(by_id[i]), key=key, help=help)
    return by_id.get(chosen, results[0])


def adaptation_result(results: list[dict], key: str, scope: str = "this data set") -> dict | None:
    """A box to choose among saved few-shot results when there are several (`results` ranked, the first is the
    default: core.adaptation.results_to_cite; `scope` says which were listed); the chosen one, the only one, or
    None."""
    from core.adaptation import MIN_SEEDS

    if len(results) <= 1:
        return results[0] if results else None
    return choose_result(results, key, "Few-shot result",
                         help=f"Saved adaptations of {scope}, the one cited by default first: the newest with at "
                              f"least {MIN_SEEDS} seeds per point, the page's reframing first.")


def model_label(choice: str, runs: list[dict]) -> str:
    if choice == SHIPPED:
        return "Shipped MNIST convnet (reused-cnn)"  # short: the box is about 250 px wide at 1024 px
    if choice == UPLOAD:
        return "Upload a .keras or .h5 model..."
    run = next((r for r in runs if r["id"] == choice), None)
    return f"{run['title']} ({choice})" if run else choice


@dataclass
class ModelChoice:
    """What the model picker chose: `path` is None for the shipped model (one cached predictor per process),
    and for an upload still to come (`waiting`)."""

    path: str | None
    waiting: bool = False


def model_under_test(key: str, upload_key: str, uploader_label: str) -> ModelChoice:
    """The model-under-test box: the shipped model, any finished run (adapted models included) or the user's
    Keras file, loaded in safe mode. Raises DigitLabError when the uploaded file is not a usable model."""
    home = str(config.data_home())
    runs = model_choices(home)
    choice = st.selectbox("Model under test", [SHIPPED] + [r["id"] for r in runs] + [UPLOAD], key=key,
                          format_func=lambda c: model_label(c, runs),
                          help="The shipped reused model, any finished run with a model (Training Runs, adapted "
                               "models included), or your own Keras file.")
    if choice == SHIPPED:
        return ModelChoice(None)
    if choice == UPLOAD:
        model_file = st.file_uploader(uploader_label, type=["keras", "h5"], key=upload_key)
        if model_file is None:
            return ModelChoice(None, waiting=True)
        return ModelChoice(uploaded_model(model_file.getvalue(), model_file.name, home))
    run = next((r for r in runs if r["id"] == choice), None)
    if run is None:  # the run was deleted or renamed since the box was drawn: back to the shipped model
        return ModelChoice(None)
    return ModelChoice(run["path"])
