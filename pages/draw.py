"""Draw & Reframe: draw or upload a digit, see every reframing stage and what the models predict."""
from pathlib import Path

import streamlit as st

from core.config import read_only
from core.datasets import save_collected
from core.errors import DigitLabError
from core.runs import runs_with_models
from core.images import EXTENSIONS, decode_image, thumbnail
from core.reframing import DEFAULT_METHOD, METHODS
from ui import cache, render
from ui.nav import ensure_app_navigation
from ui.safe import md_escape, read_only_note, show_error

ensure_app_navigation()

st.title("Draw & Reframe")
st.caption("Draw a digit or upload a photo or scan of one. Every stage of the reframing is shown, "
           "then what the reused MNIST model predicts.")

METHOD_HELP = {
    "naive": "grayscale + resize only (what many tutorials do)",
    "paper": "Pacchiotti et al. 2024: pad to square, margin, resize, invert",
    "mnist": "MNIST's own normalisation: fit 20x20, centre of mass",
}

left, right = st.columns([1, 2], gap="large")
with left:
    source = st.segmented_control("Input", ["Draw", "Upload", "Example"], default="Draw", key="source")
    image = None
    if source == "Upload":
        upload = st.file_uploader("Photo or scan of one digit", type=[e.lstrip(".") for e in EXTENSIONS])
        if upload is not None:
            try:
                image = decode_image(upload.getvalue(), upload.name)
                st.image(image, caption=f"{md_escape(upload.name)}: {image.shape[1]}x{image.shape[0]}", width=280)
            except DigitLabError as e:
                show_error(e)
    elif source == "Example":
        examples = cache.examples()
        i = st.slider("Example from scikit-learn digits (8x8 scans)", 0, len(examples.labels) - 1, 0)
        image = examples.images[i]
        st.image(image, caption=f"true label {examples.labels[i]}", width=140)
    else:
        from streamlit_drawable_canvas import st_canvas  # a components-v2 package: import inside the runtime

        result = st_canvas(stroke_width=18, stroke_color="#000000", background_color="#FFFFFF",
                           height=280, width=280, drawing_mode="freedraw", return_image_data=True,
                           key="canvas")
        image = result.image_data
        st.caption("Black ink on white, like a pen on paper. Use the canvas toolbar to undo or clear.")
    method = st.radio("Reframing method", METHODS, index=METHODS.index(DEFAULT_METHOD), key="method",
                      format_func=lambda m: f"{m}: {METHOD_HELP[m]}")

with right:
    if image is None:
        st.info("Draw a digit on the canvas (or upload an image) to see it reframed and classified.")
        st.stop()
    predictor = cache.predictor()
    try:
        results = {m: cache.classify(predictor, image, m) for m in METHODS}
    except DigitLabError as e:
        show_error(e)
        st.stop()
    chosen = results[method]
    if chosen.reframed.blank:
        st.info("The canvas is blank: draw a digit (dark strokes on the white canvas) and it will be classified.")
        st.stop()
    render.stage_strip(chosen.reframed)
    c1, c2 = st.columns([1, 3])
    c1.metric("Predicted digit", chosen.digit)
    c1.metric("Confidence", f"{chosen.confidence:.1%}")
    c2.plotly_chart(render.probability_bars(chosen.probabilities), width="stretch", key="proba")
    if read_only():  # a shared server keeps no visitor's drawings
        c1.popover("Save to my digits", icon=":material/add:", disabled=True,
                   help=read_only_note("saving digits to my digits is turned off"))
    else:
        with c1.popover("Save to my digits", icon=":material/add:"):
            st.caption("Collected digits are kept on disk and can be evaluated as a data set on the Report page.")
            label = st.selectbox("True label", range(10), index=chosen.digit, key="label")
            if st.button("Save", key="save", type="primary"):
                try:
                    path = save_collected(image, label)
                    st.toast(f"Saved as a {label} ({md_escape(path.name)}).", icon=":material/check:")
                except DigitLabError as e:
                    show_error(e)

st.subheader("The same input, three reframings")
st.caption("The model is the same in each column; only its input changes. `naive` keeps dark ink on white paper, "
           "which the MNIST model has never seen.")
cols = st.columns(len(METHODS))
for col, m in zip(cols, METHODS):
    r = results[m]
    with col:
        st.markdown(f"**{m}**")
        st.image(thumbnail(r.reframed.image, 140), clamp=True)
        st.metric(f"{m}: predicted", r.digit, f"{r.confidence:.1%} confident", delta_color="off")

st.subheader("The other models on the same input")
others = [r for r in runs_with_models() if r.id != "reused-cnn"]
if st.toggle(f"Compare with the {len(others)} other trained models (loads each once)", key="others",
             disabled=not others):
    rows = []
    image_28 = results[method].reframed.image
    for r in others:
        try:
            p = cache.predictor(str(Path(r.path) / "model.keras")).predict_proba(image_28[None])[0]
            rows.append({"model": r.title, "architecture": r.architecture, "predicted digit": int(p.argmax()),
                         "confidence": float(p.max()), "MNIST test accuracy": r.test_accuracy})
        except DigitLabError as e:
            rows.append({"model": r.title, "architecture": r.architecture, "predicted digit": None,
                         "confidence": None, "MNIST test accuracy": str(e)})
    st.dataframe(rows, hide_index=True, width="stretch", column_config={
        "confidence": st.column_config.ProgressColumn(min_value=0, max_value=1, format="percent"),
        "MNIST test accuracy": st.column_config.NumberColumn(format="%.4f")})
    st.caption(f"All get the same `{method}`-reframed 28x28 input; transfer models resize it internally.")
