"""Reused-model report: the paper's evaluation tables on any labelled digit data set, for any model."""
import functools
from pathlib import Path

import streamlit as st

from core import report
from core.errors import DigitLabError
from core.evaluation import evaluate
from core.models import reused_model_path
from core.reframing import DEFAULT_METHOD, METHODS
from core.wording import pct, plural
from ui import cache, pickers, render, report_view as view
from ui.nav import ensure_app_navigation
from ui.safe import md_escape, show_error

ensure_app_navigation()

st.title("Reused-model report")
st.caption("A model, unchanged, on a target domain: accuracy with its confidence interval, the confusion matrix "
           "and the per-digit tables of Pacchiotti et al. (2024), and how much of the work it could take.")

c1, c2 = st.columns([1, 1], vertical_alignment="bottom")
source = c1.selectbox("Data set", list(pickers.SOURCES), format_func=pickers.SOURCES.get, key="source")
method = c2.radio("Reframing", METHODS, index=METHODS.index(DEFAULT_METHOD), horizontal=True, key="method")

try:
    chosen = pickers.model_under_test("model", "model_upload", "A Keras model: .keras or .h5 (loaded in safe "
                                      "mode: no Lambda or custom layers)")
    if chosen.waiting:
        st.info("Upload a .keras or .h5 model that takes a digit image and outputs 10 classes.")
        st.stop()
    model_path = Path(chosen.path) if chosen.path else reused_model_path()
    dataset = pickers.target_dataset(source)
    if dataset is None:
        st.stop()
    stat = model_path.stat()
    identity = view.model_identity(str(model_path), stat.st_mtime, stat.st_size)
except DigitLabError as e:
    show_error(e)
    st.stop()
except OSError as e:  # the chosen run's model vanished between listing and reading
    st.error(f"The model file cannot be read: {md_escape(e.strerror or e)}.")
    st.stop()

st.caption(view.identity_caption(identity))
if source == "mnist-test" and not chosen.path:  # the shipped model: Home's figure is its
    st.info("This is MNIST itself, the shipped model's own domain. `naive` gives the model these images as they are "
            "(the Home page's figure); `paper` and `mnist` frame again digits that are framed already, which can "
            "cost a little accuracy: the Methods view compares them.")
if dataset.missing_classes():
    missing = ", ".join(map(str, dataset.missing_classes()))
    st.warning(f"This data set has no images of digit(s) {missing}: the macro averages count their recall and F1 "
               "(and their precision, when the model never answers them) as 0, which pulls them down (the "
               "per-digit table shows their recall as n/a); the accuracy is not affected.")

# The shipped model under None: the model process's predictor (one load per server).
model_arg = chosen.path
bar = st.empty()
computed = []  # set when this run evaluates: the bar then stays until the page is drawn


def load_model():
    """The model for this page's evaluation, said on its bar. Not for the views: a view's own control reruns that
    view alone (a fragment), which may not write to the bar, an element outside it."""
    computed.append(True)
    bar.progress(0.0, text="Loading the model (TensorFlow starts once per process)...")
    return cache.predictor(model_arg)


def progress(fraction: float) -> None:
    bar.progress(fraction, text=f"Reframing and classifying: {round(fraction * len(dataset)):,} of "
                                f"{len(dataset):,} images")


try:
    # A factory: a cached evaluation (core keeps each on disk) never loads the model, nor TensorFlow.
    ev = evaluate(load_model, dataset, method, model_path=model_path, progress=progress)
except DigitLabError as e:
    bar.empty()
    show_error(e)
    st.stop()
if computed:
    bar.progress(1.0, text=f"Evaluated {len(dataset):,} images: computing the metrics and drawing the report...")
blanks = f" ({plural(ev.blank, 'blank image')}, no ink: counted as wrong)" if ev.blank else ""
st.caption(f"Data: {md_escape(dataset.provenance)}; **{plural(ev.n, 'image')} evaluated**{blanks}.")
for warning in dict.fromkeys(list(dataset.warnings) + list(ev.warnings)):
    st.warning(md_escape(warning))
if ev.skipped:
    with st.expander(f"{plural(len(ev.skipped), 'file')} skipped"):
        st.text("\n".join(ev.skipped[:500]))

token = f"{view.dataset_token(source, dataset)}-{identity['sha256'][:12]}-{method}"
target_pct = st.session_state.get("target_accuracy", 99.0)
summary = view.analysis(token, ev, target_pct / 100)
ctx = view.Context(dataset, ev, summary, method, model_path, identity["sha256"][:16], identity,
                   functools.partial(cache.predictor, model_arg), token)

low, high = summary["accuracy_ci"]
render.kpi_row([
    ("Accuracy", pct(summary["accuracy"], 1), f"95 % CI {100 * low:.1f}-{100 * high:.1f} %"),
    ("Macro precision", pct(summary["macro"]["precision"], 1)),
    ("Macro recall", pct(summary["macro"]["recall"], 1)),
    ("Macro F1", pct(summary["macro"]["f1"], 1)),
], key="headline")
h1, h2 = st.columns([3, 1], vertical_alignment="bottom")
h1.markdown(view.automation_headline(summary["automation"]))
h2.number_input("Target accuracy %", 50.0, 100.0, 99.0, 0.5, format="%.1f", key="target_accuracy",
                help="The accuracy the automated share must keep. The headline, the risk-coverage view and the "
                     "report follow it.")

VIEWS = ["Confusion matrix", "Per digit", "Automation", "Methods", "Numbers", "HTML"]
shown = st.segmented_control("View", VIEWS, default=VIEWS[0], key="view", required=True,
                             label_visibility="collapsed")
# Only the chosen view runs; each is a fragment, so a control inside it reruns that view alone.
if shown == "Per digit":
    view.per_digit_view(ctx)
elif shown == "Automation":
    view.automation_view(ctx)
elif shown == "Methods":
    view.methods_view(ctx)
elif shown == "Numbers":
    view.numbers_view(ctx)
elif shown == "HTML":
    view.html_view(ctx, target_pct / 100)
else:
    view.confusion_view(ctx)
if computed:
    bar.empty()
