"""Reused-model report: the paper's evaluation tables on any labelled digit data set."""
import pandas as pd
import plotly.express as px
import streamlit as st

from core import report
from core.errors import DigitLabError
from core.evaluation import BLANK, compare_methods, evaluate
from core.images import EXTENSIONS, decode_image, thumbnail
from core.reframing import DEFAULT_METHOD, METHODS, reframe
from ui import cache
from ui.nav import ensure_app_navigation
from ui.safe import md_escape, show_error

ensure_app_navigation()

st.title("Reused-model report")
st.caption("The reused MNIST model, unchanged, on a target domain: accuracy, the confusion matrix and the "
           "per-digit tables of Pacchiotti et al. (2024), Tables 2-4.")

SOURCES = {"sklearn-digits": "scikit-learn digits (8x8 scans)", "mnist-test": "MNIST test set (source domain)",
           "collected": "my drawn digits", "upload": "upload a .zip"}
c1, c2 = st.columns([2, 1])
source = c1.selectbox("Data set", list(SOURCES), format_func=SOURCES.get, key="source")
method = c2.radio("Reframing", METHODS, index=METHODS.index(DEFAULT_METHOD), horizontal=True, key="method")

try:
    if source == "upload":
        upload = st.file_uploader("A .zip of images in folders 0..9 (any depth, e.g. mydigits/7/scan12.png)",
                                  type=["zip"], key="zip")
        if upload is None:
            st.info("Upload a .zip whose folders 0..9 hold PNG, JPEG, BMP or TIFF images of those digits.")
            st.stop()
        dataset = cache.uploaded_target(upload.getvalue(), upload.name)
    else:
        dataset = cache.target(source)
except DigitLabError as e:
    show_error(e)
    st.stop()

st.caption(f"{md_escape(dataset.provenance)}.")  # names the uploaded file: shown as typed
if dataset.missing_classes():
    missing = ", ".join(map(str, dataset.missing_classes()))
    st.warning(f"This data set has no images of digit(s) {missing}: their recall and F1 are 0 by convention "
               "and they pull the macro averages down.")
if dataset.skipped:
    with st.expander(f"{len(dataset.skipped)} files skipped"):
        st.text("\n".join(dataset.skipped[:500]))

predictor = cache.predictor()
bar = st.progress(0.0, text=f"Reframing and classifying {len(dataset):,} images...")
# core caches every evaluation on disk per (model, data, method): switching views re-reads, never recomputes
ev = evaluate(predictor, dataset, method, progress=bar.progress)
bar.empty()
summary = ev.as_dict()

m = st.columns(5)
m[0].metric("Images", f"{ev.n:,}", help=f"{ev.blank} blank (no ink) counted as wrong" if ev.blank else None)
m[1].metric("Accuracy", f"{summary['accuracy']:.2%}")
m[2].metric("Macro precision", f"{summary['macro']['precision']:.2%}")
m[3].metric("Macro recall", f"{summary['macro']['recall']:.2%}")
m[4].metric("Macro F1", f"{summary['macro']['f1']:.2%}")

tab_cm, tab_digits, tab_cells, tab_methods, tab_numbers = st.tabs(
    ["Confusion matrix", "Per digit", "Images behind a cell", "Methods compared", "Numbers"])

with tab_cm:
    normalise = st.toggle("Row-normalised (share of each true digit)", key="normalise")
    cm = report.confusion_frame(ev, normalise)
    fig = px.imshow(cm.values, x=[str(d) for d in range(10)], y=[str(d) for d in range(10)],
                    text_auto=".2f" if normalise else True, color_continuous_scale="Blues", aspect="equal",
                    labels={"x": "predicted digit", "y": "true digit", "color": "share" if normalise else "images"})
    fig.update_layout(height=520, margin=dict(l=10, r=10, t=10, b=10), xaxis_dtick=1, yaxis_dtick=1)
    st.plotly_chart(fig, width="stretch", key="cm")
    st.download_button("Download confusion matrix (CSV)", cm.to_csv(), f"confusion-{ev.target}-{method}.csv",
                       "text/csv", key="dl_cm")

with tab_digits:
    per = report.per_digit_frame(ev)
    st.markdown("**TP, TN, FP, FN per digit** (each row sums to the data set size; most errors highlighted)")
    counts = per[report.COUNT_COLUMNS]
    st.dataframe(counts.style.highlight_max(subset=["fp", "fn"], color="#fdd"), hide_index=True, width="stretch")
    st.download_button("Download TP/TN/FP/FN (CSV)", counts.to_csv(index=False),
                       f"per-digit-counts-{ev.target}-{method}.csv", "text/csv", key="dl_counts")
    st.markdown("**Accuracy, recall, precision, F1 per digit** (weakest highlighted)")
    rates = per[report.RATE_COLUMNS]
    st.dataframe(rates.style.highlight_min(subset=["accuracy", "recall", "precision", "f1"], color="#fdd")
                 .format("{:.4f}", subset=["accuracy", "recall", "precision", "f1"]),
                 hide_index=True, width="stretch")
    st.download_button("Download per-digit metrics (CSV)", rates.to_csv(index=False),
                       f"per-digit-metrics-{ev.target}-{method}.csv", "text/csv", key="dl_rates")

with tab_cells:
    cmat = ev.confusion_matrix()
    a, b = st.columns(2)
    true_d = a.selectbox("True digit", range(10), key="cell_true")
    options = [p for p in range(10) if cmat[true_d, p] > 0] + ([BLANK] if ev.blank else [])
    worst = max((p for p in options if p != true_d), key=lambda p: cmat[true_d, p] if p >= 0 else 0,
                default=true_d)
    pred_d = b.selectbox("Predicted digit", options, index=options.index(worst) if worst in options else 0,
                         format_func=lambda p: "blank" if p == BLANK else f"{p} ({cmat[true_d, p]} images)",
                         key="cell_pred")
    idx = ev.cell(true_d, pred_d)
    st.caption(f"{len(idx)} images; showing up to 40, each as uploaded and as the model saw it.")
    cols = st.columns(10)
    for k, i in enumerate(idx[:40]):
        r = reframe(dataset.images[i], method)
        with cols[(2 * k) % 10]:
            st.image(thumbnail(dataset.images[i], 64), clamp=True)
        with cols[(2 * k + 1) % 10]:
            st.image(thumbnail(r.image if r.image is not None else r.stages[0].image, 64), clamp=True,
                     caption=f"{ev.probabilities[i].max():.0%}" if pred_d != BLANK else "blank")

with tab_methods:
    comparison = compare_methods(predictor, dataset)
    comp = report.comparison_frame(comparison)
    fig = px.bar(comp, x="method", y="accuracy", text_auto=".1%", range_y=[0, 1], height=300)
    st.plotly_chart(fig, width="stretch", key="acc_methods")
    recall = comp.melt(id_vars="method", value_vars=[f"recall_{d}" for d in range(10)], var_name="digit",
                       value_name="recall")
    recall["digit"] = recall["digit"].str.removeprefix("recall_")
    fig = px.bar(recall, x="digit", y="recall", color="method", barmode="group", range_y=[0, 1], height=320)
    st.plotly_chart(fig, width="stretch", key="recall_methods")
    st.caption("`naive` keeps dark ink on white: the model answers one or two digits for nearly everything, so "
               "their recall is high and every other digit's is near zero.")
    st.download_button("Download comparison (CSV)", comp.to_csv(index=False), f"methods-{ev.target}.csv",
                       "text/csv", key="dl_methods")

with tab_numbers:
    st.markdown("Numbers of one to three digits, as in the paper (0-303): split into digits with OpenCV, each "
                "digit reframed and classified, the number recomposed.")
    kind = st.segmented_control("Number", ["Draw", "Upload"], default="Draw", key="number_source")
    number_image = None
    if kind == "Upload":
        up = st.file_uploader("Photo or scan of a number", type=[e.lstrip(".") for e in EXTENSIONS],
                              key="number_upload")
        if up is not None:
            try:
                number_image = decode_image(up.getvalue(), up.name)
            except DigitLabError as e:
                show_error(e)
    else:
        from streamlit_drawable_canvas import st_canvas

        number_image = st_canvas(stroke_width=14, stroke_color="#000000", background_color="#FFFFFF",
                                 height=180, width=520, drawing_mode="freedraw", return_image_data=True,
                                 key="number_canvas").image_data
    if number_image is not None:
        reading = cache.read_number(predictor, number_image, method)
        if not reading.splits:
            st.info("No ink found: write a number of one to three digits.")
        else:
            st.metric("Recomposed number", reading.number)
            cols = st.columns(max(len(reading.splits), 1) * 2)
            for k, (sp, d, c) in enumerate(zip(reading.splits, reading.digits, reading.confidences)):
                cols[2 * k].image(thumbnail(sp.image, 84), caption=f"digit {k + 1}: cut out", clamp=True)
                cols[2 * k + 1].image(thumbnail(reframe(sp.image, method).image, 84), clamp=True,
                                      caption=f"reframed -> {d} ({c:.0%})")

    st.markdown("**Evaluate on labelled numbers**")
    numbers_source = st.radio("Numbers set", ["built in", "upload a .zip"], horizontal=True, key="numbers_set",
                              help="Built in: 300 numbers 0-303 composed from scikit-learn digit scans. Upload: "
                                   "images whose file names start with the number, e.g. 127_0001.png.")
    try:
        if numbers_source == "built in":
            nres = cache.evaluate_builtin_numbers(predictor, method)
        else:
            nzip = st.file_uploader("A .zip of number images named like 127_0001.png", type=["zip"], key="nzip")
            nres = cache.evaluate_numbers_zip(predictor, nzip.getvalue(), nzip.name, method) if nzip else None
    except DigitLabError as e:
        show_error(e)
        nres = None
    if nres:
        a, b = st.columns([1, 2])
        a.metric("Numbers read exactly right", f"{nres['accuracy']:.2%}", help=f"{nres['n']} numbers")
        b.dataframe(pd.DataFrame(nres["per_length"]).rename(columns={"digits": "digits in the number"}),
                    hide_index=True, column_config={"accuracy": st.column_config.NumberColumn(format="percent")})
        if nres.get("skipped_files"):
            with st.expander(f"{len(nres['skipped_files'])} files skipped"):
                st.text("\n".join(nres["skipped_files"][:500]))

st.download_button("Download the whole report (HTML, opens offline)",
                   report.build_html(ev, dataset.images, comparison),
                   f"report-{ev.target}-{method}.html", "text/html", key="dl_html", type="primary")
