"""Training Runs: compare own and published runs, launch new ones in the background, watch the queue.

Renders without TensorFlow: it reads the run store and the job queue; training happens in a worker process.
"""
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core import jobs
from core.config import read_only
from core.errors import DigitLabError
from core.models import ARCHITECTURES, DISPLAY_NAMES
from core.runs import HISTORY_COLUMNS, list_runs
from core.training import RunConfig, limits
from ui.nav import ensure_app_navigation
from ui.safe import guarded, md_escape, read_only_note, show_error, shown_path

ensure_app_navigation()

st.title("Training Runs")
st.caption("MLP, CNN, VGG16 and MobileNetV2 trained on digits by this project, next to the runs published in "
           "the seed reports (marked *reference*, with their own data set and source).")

runs = {r.id: r for r in list_runs()}
table = pd.DataFrame([{
    "id": r.id, "kind": r.kind, "architecture": r.architecture, "dataset": r.dataset,
    "test acc": r.test_accuracy, "best val acc": r.best_val_accuracy, "params": r.params,
    "trainable params": r.trainable_params, "epochs": r.epochs, "s / epoch": r.seconds_per_epoch,
    "title": r.title, "status": r.status, "problem": r.problem, "weights": shown_path(r.weights or ""), "device": r.device,
    "source": r.source,
    "model file": "here" if r.has_model else r.extra.get("info", {}).get("model_note", "published figures only"),
} for r in runs.values()])

st.subheader("Runs")
troubled = [r for r in runs.values() if r.status in ("damaged", "interrupted")]
if troubled:  # one bad run folder is listed with its reason; it never hides the others
    st.warning("\n".join(f"- **{md_escape(r.id)}** is {r.status}: {md_escape(r.problem)}" for r in troubled))
st.dataframe(
    table, hide_index=True, width="stretch",
    column_config={
        "kind": st.column_config.TextColumn(help="project: trained here; reference: published, read-only"),
        "best val acc": st.column_config.NumberColumn(format="%.4f"),
        "test acc": st.column_config.NumberColumn(format="%.4f"),
        "s / epoch": st.column_config.NumberColumn(format="%.1f"),
        "params": st.column_config.NumberColumn(format="localized"),
        "trainable params": st.column_config.NumberColumn(format="localized"),
    },
)
st.download_button("Download the runs table (CSV)", table.to_csv(index=False), "runs.csv", "text/csv",
                   key="dl_runs")

st.subheader("Curves")
project = [i for i, r in runs.items() if r.kind == "project"]
default = project[:3] + [i for i in runs if i == "lab3-mnist-digit-cnn"]
chosen = st.multiselect("Runs to overlay", list(runs), default=default, key="chosen",
                        format_func=lambda i: f"{'[reference] ' if runs[i].kind == 'reference' else ''}{i}")
c1, c2, c3 = st.columns(3)
x_axis = c1.radio("x axis", ["epoch", "wall time (s)"], horizontal=True, key="x_axis")
smoothing = c2.slider("Smoothing", 0.0, 0.9, 0.0, 0.1, key="smoothing",
                      help="Exponential moving average weight of the previous value; 0 shows the raw values.")
show = c3.radio("Curves", ["train and validation", "validation only"], horizontal=True, key="show")


def curve(history: pd.DataFrame, column: str) -> pd.Series:
    s = history[column]
    return s.ewm(alpha=1 - smoothing, adjust=False, ignore_na=True).mean() if smoothing else s


histories = {}
for i in chosen:
    h = pd.DataFrame(runs[i].history(), columns=list(HISTORY_COLUMNS))
    h["wall time (s)"] = h["seconds"].fillna(0).cumsum()
    histories[i] = h

if histories:
    cols = st.columns(2)
    for col, metric in zip(cols, ["loss", "accuracy"]):
        fig = go.Figure()
        for k, (i, h) in enumerate(histories.items()):
            color = f"hsl({(k * 67) % 360}, 65%, 45%)"
            x = h["epoch"] if x_axis == "epoch" else h["wall time (s)"]
            if show == "train and validation" and h[metric].notna().any():
                fig.add_trace(go.Scatter(x=x, y=curve(h, metric), name=f"{i} train", mode="lines+markers",
                                         line=dict(color=color)))
            if h[f"val_{metric}"].notna().any():
                fig.add_trace(go.Scatter(x=x, y=curve(h, f"val_{metric}"), name=f"{i} validation",
                                         mode="lines+markers", line=dict(color=color, dash="dash")))
        fig.update_layout(title=metric, height=380, xaxis_title=x_axis, margin=dict(l=10, r=10, t=40, b=10),
                          legend=dict(orientation="h", y=-0.25))
        col.plotly_chart(fig, width="stretch", key=f"curve_{metric}")
    st.caption("Solid: training; dashed: validation. Reference runs that logged no validation show training "
               "only. Wall time sums each run's seconds per epoch, on the machine it ran on.")
    combined = pd.concat([h.assign(run=i) for i, h in histories.items()], ignore_index=True)
    st.download_button("Download these histories (CSV)", combined.to_csv(index=False), "histories.csv",
                       "text/csv", key="dl_hist")
else:
    st.info("Choose runs above to overlay their curves.")

st.subheader("Train a new run")
if read_only():  # visitors of a shared server neither queue jobs nor name server files (weights)
    st.info(read_only_note("queueing and cancelling training runs is turned off"))
else:
    arch = st.selectbox("Architecture", ARCHITECTURES, key="arch",
                        format_func=lambda a: {"cnn": "CNN (simple convnet, the reused model)",
                                               "cnn-deep": "CNN (Conv-BN-Dropout)"}.get(a, DISPLAY_NAMES[a]))
    preset = RunConfig.preset(arch)
    lim = limits(arch)  # the same ranges RunConfig checks: the form cannot offer what a run would refuse
    with st.form("launch"):
        a, b, c = st.columns(3)
        epochs = a.number_input("Epochs", *lim["epochs"], preset.epochs)
        batch = b.number_input("Batch size", *lim["batch_size"], preset.batch_size)
        lr = c.number_input("Learning rate", *lim["learning_rate"], preset.learning_rate, format="%.6f")
        a, b, c = st.columns(3)
        max_samples = a.number_input(f"Training images (0 = all 4,500; else at least {lim['max_samples'][0]})",
                                     0, lim["max_samples"][1], 0, step=500)
        augment = b.checkbox("Augmentation", preset.augment,
                             help="Rotation, shear, shift, zoom, stroke width and resolution jitter.")
        elastic = b.number_input("Elastic copies per image (with augmentation)", *lim["elastic_copies"],
                                 preset.elastic_copies)
        patience = c.number_input("Early stopping patience (0 = off)", 0, lim["early_stopping"][1],
                                  preset.early_stopping or 0)
        if preset.is_transfer:
            a, b, c = st.columns(3)
            input_size = a.slider("Input size", *lim["input_size"], preset.input_size, 8)
            weights = b.text_input("Weights: imagenet, none, or a .h5 file path", preset.weights)
            fine_tune = c.number_input("Fine-tune the last N layers (0 = head only)", *lim["fine_tune_layers"],
                                       preset.fine_tune_layers)
            fine_tune_epochs = c.number_input("Fine-tuning epochs", *lim["fine_tune_epochs"],
                                              preset.fine_tune_epochs)
        title = st.text_input("Title (optional)")
        submitted = st.form_submit_button("Queue training", type="primary")
    if submitted:
        overrides = dict(epochs=int(epochs), batch_size=int(batch), learning_rate=float(lr), augment=augment,
                         elastic_copies=int(elastic),
                         max_samples=int(max_samples) or None, early_stopping=int(patience) or None)
        if preset.is_transfer:
            overrides.update(input_size=int(input_size), weights=weights.strip() or "none",
                             fine_tune_layers=int(fine_tune), fine_tune_epochs=int(fine_tune_epochs))
        try:
            cfg = RunConfig.preset(arch, **overrides)
            if cfg.is_transfer:
                from core.models import resolve_imagenet_weights

                resolve_imagenet_weights(cfg.architecture, cfg.weights, cfg.input_size)
            job = jobs.submit(cfg, title=title or None)
            st.toast(f"Queued job {job.id}.", icon=":material/schedule:")
        except DigitLabError as e:
            show_error(e)


@st.fragment(run_every="2s")
@guarded  # a fragment reruns on its own, outside app.py's guard
def job_monitor() -> None:
    st.subheader("Jobs")
    visitor = read_only()  # a shared read-only server: no cancel buttons, no error details, no server paths
    listed = jobs.list_jobs(limit=20, start_worker=True)  # queued jobs never wait for a worker that died
    for aside in jobs.set_aside_databases()[:1]:
        st.warning(f"The job database was damaged and was set aside as {md_escape(shown_path(str(aside)))} "
                   "(kept, not deleted); a fresh queue was started. Delete that file when you no longer need it.")
    if not listed:
        st.caption("No jobs yet: queued and running trainings appear here, live.")
        return
    for job in listed:
        with st.container(border=True):
            c1, c2 = st.columns([4, 1])
            name = job.title or f"{DISPLAY_NAMES[job.config['architecture']]} ({job.config['architecture']})"
            c1.markdown(f"**Job {job.id}** · `{job.shown_status}`")
            c1.text(name)  # a user's title: plain text, never Markdown
            if job.status in ("running", "queued"):
                m = job.last_metrics or {}
                text = (f"epoch {job.epoch}/{job.epochs}" + (f" · val acc {m['val_accuracy']:.4f}"
                                                              if m.get("val_accuracy") is not None else ""))
                c1.progress(job.progress, text=text)
                if job.shown_status == "cancelling":
                    c1.caption("Cancelling: the run stops after its current epoch; the epochs so far are kept.")
                if not visitor and c2.button("Cancel", key=f"cancel_{job.id}", disabled=job.cancel_requested):
                    try:
                        jobs.cancel(job.id)
                    except DigitLabError as e:
                        show_error(e)
            elif job.status == "failed":
                c1.error(md_escape((job.error or "failed").splitlines()[0]))
                if job.error and not visitor:
                    with c1.expander("Error details"):
                        st.code(job.error)
            else:
                c1.caption(f"{job.epoch} epochs · run folder {md_escape(shown_path(job.run_dir))}" if job.run_dir
                           else "Cancelled before it started: no run was created.")


job_monitor()
