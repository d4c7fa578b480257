"""Few-shot adaptation: what k labelled target digits per class buy, against the model as it is.

Queues `core.adaptation` as a background job (the page never trains) and draws its learning curve. Renders
without TensorFlow: it reads the job queue and saved results.
"""
import hashlib

import pandas as pd
import streamlit as st

from core import adaptation, jobs
from core.config import data_home, read_only
from core.errors import DigitLabError
from core.wording import pct, plural
from core.runs import runs_with_models
from core.storage import atomic_write_bytes
from ui import cache, pickers, render
from ui.nav import ensure_app_navigation
from ui.pickers import SOURCES
from ui.runs_view import job_signature
from ui.safe import guarded, md_escape, read_only_note, show_error

ensure_app_navigation()

st.title("Few-shot adaptation")
st.caption("Zero-shot reuse asks for no labels. How many would close the gap? Adapt the model with k labelled "
           "target digits per class, four ways, each repeated with several seeds, and test every adapted "
           "model on the same held-out part of the target set, and on MNIST (to see what it forgets).")

with st.expander("The four strategies", expanded=False):
    st.markdown(
        "- **last-layer**: only the final Dense layer learns; the MNIST features stay as they are.\n"
        "- **fine-tune**: every layer learns at a low rate; a quarter of every batch is MNIST digits "
        "(*replay*), so the source domain is not forgotten.\n"
        "- **self-training**: fine-tune, let that model label your other scans (neither the k labelled ones nor "
        "the test part) wherever its confidence (top class probability) is at least "
        f"{pct(adaptation.PSEUDO_CONFIDENCE, 0)}, then fine-tune the original model again on the labelled and "
        "the self-labelled scans together. Their true labels are never read: a form team has such unlabelled "
        "scans anyway.\n"
        "- **scratch**: the same architecture, freshly initialised, trained on the k images only: what the "
        "labels are worth without MNIST.\n\n"
        "Each fit runs the same number of gradient steps whatever k is, on the k images per class enlarged by "
        "elastic distortion. The test part is a fixed stratified share of the target set.")


#: The k a user can pick (the default is core.adaptation.DEFAULT_SHOTS).
SHOT_CHOICES = [1, 2, 5, 10, 20, 50, 100]

st.subheader("Run an adaptation")
if read_only():
    st.info(read_only_note("queueing adaptation jobs is turned off; saved results are shown below"))
else:
    c1, c2 = st.columns(2)
    target = c1.selectbox("Target data set", list(SOURCES), format_func=SOURCES.get, key="adapt_target")
    models = {"": "Shipped reused model (simple CNN)"}
    models.update({r.path: r.title for r in runs_with_models() if r.id != "reused-cnn"})
    model = c2.selectbox("Model to adapt", list(models), format_func=models.get, key="adapt_model")
    upload, unusable = None, False
    if target == "upload":
        upload = st.file_uploader("A .zip of images in folders 0..9", type=["zip"], key="adapt_zip")
    elif target == "collected":
        try:  # nothing saved yet, or a digit saved once: said now, not by a job that fails later
            adaptation.split_target(cache.target(target).labels)
        except DigitLabError as e:
            show_error(e)
            unusable = True
    with st.form("adapt_form"):
        # Full width: at 1024 px a half-width picker hides its last values (a teacher must see what is queued).
        shots = st.multiselect("Labelled images per class (k)", SHOT_CHOICES,
                              default=list(adaptation.DEFAULT_SHOTS), key="adapt_shots",
                              help="Values the target set cannot give (too few images in a class) are skipped.")
        strategies = st.multiselect("Strategies", adaptation.STRATEGIES, default=list(adaptation.STRATEGIES),
                                   key="adapt_strategies")
        a, b, c = st.columns(3)
        seeds = a.slider("Seeds per (strategy, k)", 1, 5, adaptation.MIN_SEEDS, key="adapt_seeds",
                         help=f"The report and the Domain shift page cite a result of at least "
                              f"{adaptation.MIN_SEEDS} seeds first; a quicker one is kept and shown here.")
        test_fraction = b.slider("Share kept for testing", 0.2, 0.8, 0.5, 0.05, key="adapt_test_fraction")
        keep = c.multiselect("Keep as runs (seed 0)", [f"{s}:{k}" for s in adaptation.STRATEGIES
                                                         for k in SHOT_CHOICES],
                             key="adapt_keep", help="Kept models appear among the runs and can be used on every "
                                                    "page. Each must be among the strategies and k chosen.")
        submitted = st.form_submit_button("Queue adaptation", type="primary", disabled=unusable)
    if submitted:
        try:
            if target == "upload":
                if upload is None:
                    raise DigitLabError("Upload a .zip of images in folders 0..9 first.")
                data = upload.getvalue()
                spec = str(data_home() / "uploads" / f"{hashlib.sha256(data).hexdigest()[:16]}.zip")
                atomic_write_bytes(spec, data)  # the worker reads the archive from disk
            else:
                spec = target
            if not shots or not strategies:
                raise DigitLabError("Choose at least one k and one strategy.")
            kept = [(s, int(k)) for s, k in (item.split(":") for item in keep)]
            # A form cannot narrow "Keep as runs" to the k and strategies chosen above it: checked on submit.
            stray = [f"{s}:{k}" for s, k in kept if s not in strategies or k not in shots]
            if stray:
                raise DigitLabError(f"Keep as runs: {', '.join(stray)} {'is' if len(stray) == 1 else 'are'} not "
                                    "among the chosen strategies and k; choose them too, or leave them out of the "
                                    "models to keep.")
            job = jobs.submit_adaptation(
                {"target": spec, "model": model or None, "shots": sorted(shots), "strategies": list(strategies),
                 "seeds": int(seeds), "test_fraction": float(test_fraction), "reframing": "paper",
                 "keep": [[s, k] for s, k in kept]},
                title=f"Few-shot adaptation on {upload.name if upload is not None else target}")
            st.toast(f"Queued adaptation job {job.id}.", icon=":material/schedule:")
        except DigitLabError as e:
            show_error(e)


#: Ended adaptation jobs shown as cards (newest first): a failure is said here, where it was queued.
RECENT_JOBS = 3


def adaptation_jobs_listed() -> list[jobs.Job]:
    return [j for j in jobs.list_jobs(limit=50, start_worker=True) if j.what == "adaptation"]


try:
    listed = adaptation_jobs_listed()
except DigitLabError:
    listed = []  # the job monitor below lists the queue again and shows why it cannot
st.session_state["adapt_job_signature"] = job_signature(listed)


@st.fragment(run_every="2s")
@guarded
def adaptation_jobs() -> None:
    polled = adaptation_jobs_listed()
    if job_signature(polled) != st.session_state.get("adapt_job_signature"):
        # A job started, finished, failed or was cancelled: rerun the page, so that its result (or its error)
        # shows below without a reload.
        st.rerun(scope="app")
    for job in polled:
        if job.status in jobs.ACTIVE:
            running_card(job)


def running_card(job: jobs.Job) -> None:
    with st.container(border=True):
        c1, c2 = st.columns([4, 1])
        c1.text(f"Job {job.id} · {job.shown_status} · {job.title}")
        what = (job.last_metrics or {}).get("what", "")
        c1.progress(job.progress, text=f"{job.epoch}/{job.epochs} fits" + (f" · last: {what}" if what else ""))
        if not read_only() and c2.button("Cancel", key=f"cancel_adapt_{job.id}", disabled=job.cancel_requested):
            try:
                jobs.cancel(job.id)
            except DigitLabError as e:
                show_error(e)


def ended_card(job: jobs.Job) -> None:
    with st.container(border=True):
        st.text(f"Job {job.id} · {job.status} · {job.title}")
        if job.status == "failed":
            st.error(md_escape((job.error or "failed").splitlines()[0]))
            if job.error and "\n" in job.error.strip():
                with st.expander("Error details"):
                    st.code(job.error)
        elif job.status == "done":
            took = f" in {job.finished - job.started:.0f} s" if job.finished and job.started else ""
            st.caption(f"Finished{took}: its result is among those below.")
        else:
            st.caption(f"{job.status.capitalize()}: {job.epoch} of {job.epochs} fits ran; nothing was saved.")


adaptation_jobs()
for ended in [j for j in listed if j.status not in jobs.ACTIVE][:RECENT_JOBS]:
    ended_card(ended)

st.subheader("Results")
results = adaptation.load_results()
if not results:
    st.info("No adaptation has finished yet. Queue one above (about a minute per strategy on this machine), "
            "or run `python -m core adapt --target sklearn-digits` in a terminal.")
    st.stop()


r = pickers.choose_result(results, key="adapt_result", label="Result")  # every saved result, newest first
summary = pd.DataFrame(r["summary"])
st.caption(md_escape(f"{r['provenance']}. Reframing: {r['reframing']}. Model: {r['model']}."))

best_k = max((k for k in summary["shots"].unique() if k <= 10), default=None) if len(summary) else None
# A wrapping row of metrics as wide as their text: in three equal columns at 1024 px, the label or the delta
# naming the strategy was cut ("(fin...").
with st.container(horizontal=True, gap="large"):
    st.metric("Zero-shot accuracy (test part)", pct(r['zero_shot']), width="content")
    if best_k is not None:
        best = summary[summary["shots"] == best_k].sort_values("mean").iloc[-1]
        gain, kept = best["mean"] - r["zero_shot"], best["mnist_mean"] - r["zero_shot_mnist"]
        # no arrow on a change that rounds to nothing: an up arrow on "+0.0 %" read as a gain
        st.metric(f"Best with {plural(int(best_k), 'label')} per class ({best['strategy']})", pct(best['mean']),
                  f"{pct(gain, sign=True)} vs zero-shot", delta_arrow="auto" if round(gain, 3) else "off",
                  width="content", help="The strategy with the best mean at k = 10 labels per class (or the largest "
                                        "k up to 10 in this result): a budget a team can label by hand. Every k is in "
                                        "the charts and the table below.")
        st.metric("MNIST accuracy after that adaptation", pct(best['mnist_mean']),
                  f"{pct(kept, sign=True)} vs before", delta_color="normal",
                  delta_arrow="auto" if round(kept, 3) else "off", width="content")

c1, c2 = st.columns(2)
c1.vega_lite_chart(render.learning_curve(summary, "mean", title="Accuracy on the test part",
                                         baseline=r["zero_shot"]), width="stretch", key="adapt_curve")
c2.vega_lite_chart(render.learning_curve(summary, "mnist_mean", title="MNIST accuracy after adapting",
                                         baseline=r["zero_shot_mnist"], baseline_label="before", spread=None),
                   width="stretch", key="adapt_forgetting")
st.caption("Left: accuracy on the target's fixed test part, mean over seeds with a band of ± 1 standard deviation; "
           "dashed: zero-shot. Right: MNIST accuracy after adapting (forgetting); dashed: before adapting.")

table = summary.rename(columns={"mean": "accuracy (mean)", "std": "std over seeds", "n": "seeds",
                                "mnist_mean": "MNIST accuracy (mean)"})
# Shown in points with a space before the sign, as shares are written on every page ("98.18 %"; spread "0.34"),
# and still sorted as numbers; the CSV keeps fractions, as the JSON does.
shown = table.assign(**{c: pd.to_numeric(table[c]) * 100
                        for c in ("accuracy (mean)", "std over seeds", "MNIST accuracy (mean)")})
st.dataframe(shown.rename(columns={"std over seeds": "± over seeds"}), hide_index=True, width="stretch",
             column_config={"accuracy (mean)": st.column_config.NumberColumn(format="%.2f %%"),
                            "± over seeds": st.column_config.NumberColumn(
                                format="%.2f", help="Standard deviation over the seeds, in percentage points"),
                            "MNIST accuracy (mean)": st.column_config.NumberColumn(format="%.2f %%")})
c1, c2 = st.columns(2)
c1.download_button("Download the summary (CSV)", table.to_csv(index=False), f"adaptation-{r['id']}.csv",
                   "text/csv", key="dl_adapt_summary")
c2.download_button("Download every fit (CSV)", pd.DataFrame(r["results"]).to_csv(index=False),
                   f"adaptation-{r['id']}-fits.csv", "text/csv", key="dl_adapt_fits")
if r.get("skipped_shots"):
    st.caption(f"Skipped k = {r['skipped_shots']}: the smallest class of the target set has too few images.")
for kept in r.get("kept", []):
    st.caption(md_escape(f"Kept {kept['strategy']} (k={kept['shots']}) as run {kept['run_id']}: choose it as the "
                         "model on the Draw and Report pages."))
