"""Draw & Reframe: draw or upload a digit, see every reframing stage and what the models predict."""
import hashlib
from pathlib import Path

import numpy as np
import streamlit as st

from core.config import read_only
from core.datasets import save_collected
from core.errors import DigitLabError
from core.images import EXTENSIONS, decode_image
from core.models import model_identity, reused_model_path
from core.reframing import DEFAULT_METHOD, METHODS
from core.runs import runs_with_models
from core.wording import pct, plural
from ui import cache, pickers, render
from ui.nav import ensure_app_navigation
from ui.safe import md_escape, read_only_note, show_error

ensure_app_navigation()

st.title("Draw & Reframe")
st.caption("Draw a digit or upload a photo or scan of one: see what the reused MNIST model predicts, and every "
           "stage of the reframing that got it there.")

METHOD_HELP = {
    "naive": "grayscale + resize only (what many tutorials do)",
    "paper": "Pacchiotti et al. 2024: pad to square, margin, resize, invert",
    "mnist": "MNIST's own normalisation: fit 20x20, centre of mass",
}

#: The canvas's side in px. It must fit the left column at 1024x768 with the sidebar open (~270 px there);
#: the image comes back at this size and every reframing accepts any size, so ink maps 1:1.
CANVAS_PX = 256
PEN_WIDTH = (6, 30, 16)  # min, max, default: 16 px on 256 is MNIST's stroke on 28x28


def _clear_canvas() -> None:
    # A new key mounts a new, empty canvas (the component has no "clear" argument).
    st.session_state["canvas_n"] = st.session_state.get("canvas_n", 0) + 1


left, right = st.columns([1, 1], gap="medium")
with left:
    source = st.segmented_control("Input", ["Draw", "Upload", "Example"], default="Draw", key="source")
    image, unreadable = None, False
    if source == "Upload":
        upload = st.file_uploader("Photo or scan of one digit", type=[e.lstrip(".") for e in EXTENSIONS])
        if upload is not None:
            try:
                image = decode_image(upload.getvalue(), upload.name)
                st.image(image, caption=f"{md_escape(upload.name)}: {image.shape[1]}x{image.shape[0]}",
                         width=CANVAS_PX)
            except DigitLabError as e:
                unreadable = True
                show_error(e)
    elif source == "Example":
        examples = cache.examples()
        i = st.slider("Example from scikit-learn digits (8x8 scans)", 0, len(examples.labels) - 1, 0)
        image = examples.images[i]
        st.image(render.framed(image, 140), caption=f"true label {examples.labels[i]}", clamp=True)
    else:
        from streamlit_drawable_canvas import st_canvas  # a components-v2 package: import inside the runtime

        # This line also makes room for the canvas's own toolbar (undo, redo, reset), which floats above the
        # canvas's right half: kept short so the toolbar covers no text and no other widget.
        st.caption("Draw one digit:")
        pen = st.session_state.get("pen", PEN_WIDTH[2])
        result = st_canvas(stroke_width=pen, stroke_color="#000000", background_color="#FFFFFF",
                           height=CANVAS_PX, width=CANVAS_PX, drawing_mode="freedraw", return_image_data=True,
                           key=f"canvas-{st.session_state.get('canvas_n', 0)}")
        image = result.image_data
        pen_col, clear_col = st.columns([3, 2], vertical_alignment="bottom", gap="small")
        pen_col.slider("Pen width (px)", *PEN_WIDTH, key="pen")
        clear_col.button("Clear", key="clear", icon=":material/delete:", on_click=_clear_canvas,
                         help="Start again on an empty canvas")
        st.caption("Black ink on white, like a pen on paper. Undo and redo: the toolbar above the canvas.")
    method = st.radio("Reframing method", METHODS, index=METHODS.index(DEFAULT_METHOD), key="method",
                      format_func=lambda m: f"{m}: {METHOD_HELP[m]}")
    # The model under test: the shipped one, any finished run (adapted models included) or the user's file.
    try:
        model_choice = pickers.model_under_test("draw_model", "draw_model_upload",
                                          "A .keras or .h5 model (safe mode: no Lambda or custom layers)")
    except DigitLabError as e:
        show_error(e)
        model_choice = pickers.ModelChoice(None, waiting=True)
    model_path = model_choice.path

with right:
    if image is None:
        if unreadable:
            st.info("That file could not be read as an image (see the message on the left): upload a PNG, JPEG, "
                    "BMP or TIFF photo or scan of one digit, or draw one.")
        elif source == "Upload":
            st.info("Upload a photo or scan of one digit to see it reframed and classified.")
        else:
            st.info("Draw a digit on the canvas (or upload an image) to see it reframed and classified.")
        st.stop()
    if model_choice.waiting:
        st.info("Upload a Keras model on the left (one digit image in, 10 classes out), or choose another.")
        st.stop()
    try:
        predictor = cache.quick_predictor(model_path)
        results = {m: cache.classify(predictor, image, m, model_key=model_path or "reused") for m in METHODS}
    except DigitLabError as e:
        show_error(e)
        st.stop()
    chosen = results[method]
    if chosen.reframed.blank:
        st.info("The image is blank: draw a digit (dark strokes on the white canvas) and it will be classified."
                if source == "Draw" else "The image is blank (no ink found): upload one that shows a digit.")
        st.stop()
    # The answer first: at 1024x768 it is then in view as soon as the stroke ends.
    st.metric("Predicted digit", chosen.digit, f"{pct(chosen.confidence)} confident", delta_color="off",
              delta_arrow="off")
    ident = model_identity(model_path or reused_model_path(), predictor.describe())
    st.caption(md_escape(f"Model: {ident['name']} · {ident['params']:,} parameters · input "
                         f"{tuple(ident['input_shape'])} · SHA-256 {ident['sha256'][:12]} · trained on "
                         f"{ident['trained_on']}"))
    render.stage_strip(chosen.reframed)
    st.vega_lite_chart(render.probability_chart(chosen.probabilities), width="stretch", key="proba")
    if read_only():  # a shared server keeps no visitor's drawings
        st.popover("Save to my digits", icon=":material/add:", disabled=True,
                   help=read_only_note("saving digits to my digits is turned off"))
    else:
        with st.popover("Save to my digits", icon=":material/add:"):
            st.caption("Collected digits are kept on disk: see and manage them on the My digits page, and "
                       "evaluate them as a data set on the Report page.")
            label = st.selectbox("True label", range(10), index=chosen.digit, key="label")
            drawing = (hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest(), label)
            saved = st.session_state.get("saved_drawing")  # (drawing, file name) of this session's last save
            if st.button("Save", key="save", type="primary"):
                if saved and saved[0] == drawing:  # a second click on the same drawing adds no copy
                    st.toast(f"Already saved as a {label} ({md_escape(saved[1])}).", icon=":material/info:")
                else:
                    try:
                        path = save_collected(image, label)
                        st.session_state["saved_drawing"] = (drawing, path.name)
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
        st.image(render.framed(r.reframed.image, 140), clamp=True)
        st.metric(f"{m}: predicted", r.digit, f"{pct(r.confidence)} confident", delta_color="off",
                  delta_arrow="off")

st.subheader("The other models on the same input")
under_test = Path(model_path or reused_model_path()).resolve()
others = [r for r in runs_with_models() if (Path(r.path) / "model.keras").resolve() != under_test]
compare = f"Compare with the {plural(len(others), 'other trained model')} (loads each once)"
if st.toggle(compare, key="others", disabled=not others):
    rows = []
    image_28 = results[method].reframed.image
    for r in others:
        # The answer first: at 1024 px the long titles would push it out of view. Shares in percent.
        row = {"model": r.title, "predicted digit": None, "confidence": None,
               "MNIST test accuracy": None if r.test_accuracy is None else 100 * r.test_accuracy,
               "architecture": r.architecture, "note": ""}
        try:
            p = cache.quick_predictor(str(Path(r.path) / "model.keras")).predict_proba(image_28[None])[0]
            row.update({"predicted digit": int(p.argmax()), "confidence": 100 * float(p.max())})
        except DigitLabError as e:
            row["note"] = str(e)
        rows.append(row)
    if not any(row["note"] for row in rows):
        for row in rows:
            del row["note"]  # a column only when a model could not answer
    st.dataframe(rows, hide_index=True, width="stretch", column_config={
        "model": st.column_config.TextColumn(width="medium"),
        "confidence": st.column_config.ProgressColumn(min_value=0, max_value=100, format="%.1f %%"),
        "MNIST test accuracy": st.column_config.NumberColumn(format="%.1f %%"),
        "note": st.column_config.TextColumn(width="medium")})
    st.caption(f"All get the same `{method}`-reframed 28x28 input; transfer models resize it internally.")
