"""Training Runs: compare own and published runs, reproduce a published one, fetch data sets and ImageNet weights,
launch new runs in the background, watch the queue.

Renders without TensorFlow: it reads the run store and the job queue; training happens in a worker process.
While a run trains, its curves update live; when a job changes status, the whole page reruns (new runs appear).
"""
from pathlib import Path

import pandas as pd
import streamlit as st

from core import downloads, jobs, reproduce
from core.config import read_only
from core.errors import DigitLabError
from core.models import ARCHITECTURES, DISPLAY_NAMES
from core.runs import delete_run, list_runs, load_project_run, read_only_reason, rename_run
from core.training import RunConfig, limits
from ui import downloads_view, runs_view as view
from ui.nav import ensure_app_navigation
from ui.safe import guarded, md_escape, read_only_note, show_error, shown_path

ensure_app_navigation()

st.title("Training Runs")
st.caption("MLP, CNN, VGG16 and MobileNetV2 trained on digits by this project, next to the runs published in "
           "the seed reports (marked *reference*, with their own data set and source).")

visitor = read_only()  # a shared read-only server: no renaming, deleting, queueing or cancelling
runs = {r.id: r for r in list_runs()}
labels = view.run_labels(runs)
try:
    listed_jobs = jobs.list_jobs(limit=20)
except DigitLabError:
    listed_jobs = []  # the job monitor below lists the queue again and shows why it cannot
st.session_state["job_signature"] = view.job_signature(listed_jobs)
training_now = any(r.status == "running" for r in runs.values()) or any(j.status == "running" for j in listed_jobs)

# What is overlaid is kept in session state ("overlay"), apart from the widget: runs that appear (a job started
# or finished) join it, deleted runs leave it, and an overlaid run whose status changed gets its new label, by
# giving the multiselect a new key with that default. Setting a widget's value from the script while the live
# fragments poll loses the change to the browser's stale copy, and the browser keeps a chosen option's old label
# ("[running]" after the run finished) for as long as the widget lives.
overlay, generation = st.session_state.get("overlay"), st.session_state.get("overlay_generation", 0)
statuses = {i: r.status for i, r in runs.items()}
if overlay is None:
    overlay = view.default_overlay(runs)
else:
    known = st.session_state.get("known_runs")
    if not isinstance(known, dict):  # first run, or a session from before statuses were kept (a set of ids)
        known = {i: statuses.get(i) for i in (known or statuses)}
    fresh = [i for i, r in runs.items() if i not in known and r.kind == "project" and r.status in ("running", "done")]
    kept = [i for i in overlay if i in runs]
    relabelled = any(known.get(i) != statuses[i] for i in kept)
    if fresh or kept != overlay or relabelled:
        overlay, generation = kept + [i for i in fresh if i not in kept], generation + 1
st.session_state.update(overlay=overlay, overlay_generation=generation, known_runs=statuses)

st.subheader("Runs")
troubled = [r for r in runs.values() if r.status in ("damaged", "interrupted")]
if troubled:  # one bad run folder is listed with its reason; it never hides the others
    st.warning("\n".join(f"- **{md_escape(r.id)}** is {r.status}: {md_escape(r.problem)}" for r in troubled))
table = view.runs_frame(list(runs.values()), shown_path)
st.dataframe(table[view.COMPACT_COLUMNS], hide_index=True, width="stretch", column_config=view.COLUMN_CONFIG,
             placeholder="",  # a value a run does not have (a reference run's parameters) is blank
             row_height=view.COMPACT_ROW_HEIGHT, height=view.compact_height(len(table)))  # titles wrap, never cut
if len(table) > view.COMPACT_ROWS_SHOWN:  # the grid shows no scroll bar until the pointer is over it
    st.caption(f"{len(table)} runs: {view.COMPACT_ROWS_SHOWN} in view, scroll the table for the rest; a click on a "
               "column header sorts by it.")
with st.expander("Details: every column (id, parameters, time per epoch, device, weights, source, model file, "
                 "problem)"):
    st.dataframe(table, hide_index=True, width="stretch", column_config=view.COLUMN_CONFIG, placeholder="")
st.download_button("Download the runs table (CSV)", table.to_csv(index=False), "runs.csv", "text/csv",
                   key="dl_runs")


def _say(kind: str, text: str) -> None:
    st.session_state["manage_message"] = (kind, text)


def _rename(run_id: str) -> None:
    # A callback: it runs before the script, so the table above already shows the new title.
    try:
        run = rename_run(run_id, st.session_state.get(f"title_{run_id}", ""))
        _say("success", f"Renamed: {run.title}")
    except DigitLabError as e:
        _say("error", str(e))


def _delete(run_id: str) -> None:
    title = runs[run_id].title if run_id in runs else run_id
    try:
        delete_run(run_id)
        _say("success", f"Deleted: {title}")
    except DigitLabError as e:
        _say("error", str(e))


if not visitor:
    own = [i for i, r in runs.items() if not read_only_reason(r)]
    with st.container(border=True):
        st.markdown("**Your runs**: rename or delete one. The shipped runs, the reused model and the reference "
                    "runs are read-only.")
        if message := st.session_state.pop("manage_message", None):
            (st.success if message[0] == "success" else st.error)(md_escape(message[1]))
        if not own:
            st.caption("Runs you train appear here.")
        else:
            c1, c2 = st.columns(2)
            target = c1.selectbox("Run", own, format_func=lambda i: view.option_label(runs[i], labels[i]),
                                  key="manage_run")
            c2.text_input("Title", runs[target].title, key=f"title_{target}", max_chars=200)
            with st.container(horizontal=True):
                st.button("Rename", key="rename", on_click=_rename, args=(target,))
                with st.popover("Delete"):  # the confirmation: nothing is deleted by a single click
                    st.markdown("Delete this run and all its files (history, metrics, model)? This cannot be "
                                "undone.")
                    st.text(runs[target].title)
                    st.button("Delete for good", key="delete", type="primary", on_click=_delete, args=(target,))


@st.fragment(run_every="2s" if training_now else None)  # live curves only while something trains
@guarded  # a fragment reruns on its own, outside app.py's guard
def compare() -> None:
    st.subheader("Curves")
    generation = st.session_state.get("overlay_generation", 0)
    chosen = st.multiselect("Runs to overlay", list(runs), [i for i in st.session_state["overlay"] if i in runs],
                            key="chosen" if generation == 0 else f"chosen-{generation}",
                            format_func=lambda i: view.option_label(runs[i], labels[i]))
    st.session_state["overlay"] = chosen
    c1, c2 = st.columns(2)
    x_axis = c1.radio("x axis", ["epoch", "wall time (s)"], horizontal=True, key="x_axis")
    log_x = c1.toggle("Log scale for wall time", True, key="log_x", disabled=x_axis == "epoch",
                      help="A run of a few seconds and one of half an hour both show.")
    show = c2.radio("Curves", ["train and validation", "validation only"], horizontal=True, key="show")
    smoothing = c2.slider("Smoothing", 0.0, 0.9, 0.0, 0.1, key="smoothing",
                          help="Exponential moving average weight of the previous value; 0 shows the raw values.")
    if not chosen:
        st.info("Choose runs above to overlay their curves.")
        return
    histories = {i: view.history_frame(runs[i]) for i in chosen}
    points, spec = view.curves_chart(histories, runs, labels, x_axis=x_axis, log_x=log_x, smoothing=smoothing,
                                     validation_only=show == "validation only")
    st.vega_lite_chart(points, spec, width="stretch", key="curves")
    st.caption("One colour per run; solid: training, dashed: validation; diamonds and [ref]: published "
               "reference runs (their own data sets). A click on a run in the legend singles it out (Shift+click "
               "adds or removes one; with none left, all show); drag the accuracy panel to pan, Shift+wheel over "
               "it to zoom (the loss panel follows). Reference runs "
               "that logged no validation show training only; wall time sums each run's seconds per epoch, on the "
               "machine it ran on (runs that logged no time are left out of it)."
               + (" Curves of runs in training update every two seconds." if training_now else ""))
    combined = pd.concat([h.assign(run=i) for i, h in histories.items()], ignore_index=True)
    st.download_button("Download these histories (CSV)", combined.to_csv(index=False), "histories.csv",
                       "text/csv", key="dl_hist")

    st.subheader("Settings side by side")
    settings = view.settings_frame([runs[i] for i in chosen], labels)
    differs = view.differing_settings(settings)
    only = st.toggle("Only the settings that differ", False, key="only_differs")
    shown = settings.loc[differs] if only else settings
    st.dataframe(view.highlight_differences(shown), width="stretch", key="settings",
                 height=35 * (len(shown) + 1) + 3,  # every setting at once: no scrolling inside the table
                 column_config={"_index": st.column_config.TextColumn(width=170),  # "fine tune learning rate"
                                # 2-5 runs in view; a title cut at 180 px reads whole on hovering its header
                                **{c: st.column_config.TextColumn(width=180, help=c) for c in shown.columns}})
    st.caption(f"Highlighted: the {len(differs)} settings whose values differ between the chosen runs. Reference "
               "runs state only what was published (architecture, data set, epochs, batch size, parameters).")


compare()


def _queued(job: jobs.Job) -> None:
    st.toast(f"Queued job {job.id}.", icon=":material/schedule:")
    # The job monitor below lists it in this run: no need to rerun the page (and lose the toast).
    st.session_state["job_signature"] = view.job_signature(jobs.list_jobs(limit=20))


st.subheader("Published runs, reproduced")
st.caption("A published run trained again here on its own data set, with the same architecture and settings as "
           "far as this product has them; then its curve and ours on the same axes.")
plans = {p.id: p for p in reproduce.plans()}
if plans:
    ids = list(plans)
    ref_id = st.selectbox("Published run", ids, index=ids.index(view.DEFAULT_REFERENCE)
                          if view.DEFAULT_REFERENCE in ids else 0, key="reproduce_ref",
                          format_func=lambda i: plans[i].title + ("" if plans[i].reproducible else
                                                                  " (cannot be reproduced)"))
    plan = plans[ref_id]
    ref = runs.get(ref_id)
    if ref is not None:
        st.caption(f"Published on {md_escape(ref.dataset)} · source: {md_escape(ref.source)}")
    if not plan.reproducible:
        st.warning(md_escape(f"{plan.title} cannot be reproduced: {plan.reason}."))
    else:
        downloads_view.show_fetch_message("reproduce_fetch")
        if plan.missing:
            st.warning("Not in the Keras cache yet, needed before it can train: "
                       + "; ".join(md_escape(downloads.get_resource(m).title) for m in plan.missing) + "."
                       + ("" if visitor else " Fetch it here or under *Data sets and ImageNet weights* below."))
            for name in plan.missing:
                command = downloads.get_resource(name).command
                downloads_view.resource_row(name, "reproduce_fetch", caption=md_escape(
                    command if visitor else f"or by hand: {command}"), fetch=not visitor)
        with st.expander(f"How ours differs from the published run ({len(plan.differences)})"):
            st.markdown("\n".join(f"- {md_escape(d)}" for d in plan.differences))
        if not visitor:
            lim = limits(plan.config["architecture"])
            c1, c2 = st.columns(2)
            r_epochs = c1.number_input("Epochs", *lim["epochs"], plan.config["epochs"], key=f"repro_epochs_{ref_id}",
                                       help="The published number; fewer for a quicker look (the comparison "
                                            "says so).")
            r_images = c2.number_input(f"Training images (0 = all; else at least {lim['max_samples'][0]})", 0,
                                       lim["max_samples"][1], 0, step=1000, key=f"repro_images_{ref_id}",
                                       help="A part of the training set for a quicker look (the comparison says "
                                            "so).")
            if st.button("Reproduce", key="reproduce", type="primary", disabled=not plan.ready,
                         help=None if plan.ready else "Fetch what it needs first (above)."):
                overrides = {k: v for k, v in (("epochs", int(r_epochs)), ("max_samples", int(r_images) or None))
                             if v != plan.config.get(k)}
                try:
                    _queued(reproduce.queue(ref_id, **overrides))
                except DigitLabError as e:
                    show_error(e)
    mine, cmp = reproduce.reproductions(ref_id), None
    if mine:
        names = {r.id: view.reproduction_label(r, reproduce.title_for(plan.title)) for r in mine}
        run_id = st.selectbox("Reproduction to compare", list(names)[::-1], format_func=names.get,
                              key=f"reproduction_{ref_id}")  # newest first
        try:
            cmp = reproduce.comparison(ref_id, run_id)
        except DigitLabError as e:  # e.g. its files became unreadable: said here, the rest of the page still works
            show_error(e)
            cmp = None
    if cmp is not None:
        acc = cmp["test_accuracy"]
        c1, c2, c3 = st.columns(3)
        c1.metric("Published test acc", view.accuracy_text(acc["published"]))
        c2.metric("Our test acc", view.accuracy_text(acc["reproduction"]))
        c3.metric("Ours - published", "n/a" if acc["difference"] is None else f"{acc['difference']:+.4f}",
                  help="Difference in final test accuracy: ours minus the published figure (each on its own "
                       "test set: " + md_escape(cmp["run"]["test_set"] or "not recorded") + ").")
        for warning in cmp["warnings"]:
            st.warning(md_escape(warning))
        points, spec = view.comparison_chart(cmp)
        if not points.empty:
            st.vega_lite_chart(points, spec, width="stretch", key="reproduction_curves")
            st.caption("Published: diamonds; ours: dots; training solid, validation dashed. Only what both runs "
                       "logged is drawn. Drag the lower panel to pan, Shift+wheel over it to zoom.")
        else:
            st.info("The two runs logged no metric in common: nothing to draw on the same axes.")
        if cmp["differences"]:
            with st.expander("What differs in this run"):
                st.markdown("\n".join(f"- {md_escape(d)}" for d in cmp["differences"]))
    elif not mine and plan.reproducible:
        st.caption("No reproduction of this run yet: once one has trained, its curve is drawn here over the "
                   "published one.")

st.subheader("Train a new run")
if not read_only():  # a shared read-only server neither downloads nor shows server paths
    with st.expander("Data sets and ImageNet weights"):
        st.caption("What transfer runs and reproductions need, in the Keras cache. Nothing is downloaded "
                   "unless you press Fetch; offline, Fetch says within seconds how to provide the file by hand.")
        downloads_view.downloads_list()
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
            _queued(jobs.submit(cfg, title=title or None))
        except DigitLabError as e:
            show_error(e)


def _cancel(job_id: int) -> None:
    try:
        jobs.cancel(job_id)
    except DigitLabError as e:
        st.session_state["cancel_error"] = str(e)


def job_card(job: jobs.Job) -> None:
    """One job: its status, its run's title, then progress and Cancel, its error, or its test accuracy."""
    run = by_path.get(job.run_dir) if job.run_dir else None
    if run is None and job.run_dir and job.status in ("done", "cancelled", "failed"):
        run = load_project_run(Path(job.run_dir))  # finished since the page last read the run store
    with st.container(border=True):
        c1, c2 = st.columns([4, 1])
        status = "cancelling..." if job.shown_status == "cancelling" else job.shown_status
        c1.markdown(f"**Job {job.id}** · `{status}`")
        # The run's title when it has one (it may have been renamed), else the job's: plain text, never Markdown.
        c1.text(run.title if run is not None and run.status != "damaged" else
                job.title or f"{DISPLAY_NAMES[job.config['architecture']]} ({job.config['architecture']})")
        if place := view.job_place(job, visitor):
            c1.caption(md_escape(place))
        if job.status in ("running", "queued"):
            m = job.last_metrics or {}
            text = (f"epoch {job.epoch}/{job.epochs}" + (f" · val acc {m['val_accuracy']:.4f}"
                                                          if m.get("val_accuracy") is not None else ""))
            c1.progress(job.progress, text=text)
            if job.shown_status == "cancelling":
                c1.caption("Cancelling: the run stops after its current epoch; the epochs so far are kept.")
            if not visitor:  # a callback: the card says "cancelling..." on this very rerun
                c2.button("Cancel", key=f"cancel_{job.id}", disabled=job.cancel_requested, on_click=_cancel,
                          args=(job.id,))
        elif job.status == "failed":
            c1.error(md_escape((job.error or "failed").splitlines()[0]))
            if job.error and not visitor:
                with c1.expander("Error details"):
                    st.code(job.error)
        elif job.run_dir is None:
            c1.caption("Cancelled before it started: no run was created.")
        elif run is None and not Path(job.run_dir).exists():
            c1.caption(f"{job.epoch} epochs · its run was deleted")
        else:
            accuracy = run.test_accuracy if run is not None else None
            tested = run.extra.get("metrics", {}).get("test_n") if run is not None else None
            if accuracy is not None:
                c1.markdown(f"Test accuracy **{accuracy:.4f}**" + (f" on {tested:,} images" if tested else "")
                            + f" · {job.epoch} epochs")
            note = (" · cancelled: its curves are left out of the overlay unless you choose them"
                    if job.status == "cancelled" else "")
            c1.caption(("" if accuracy is not None else f"{job.epoch} epochs · ")
                       + f"run folder {md_escape(shown_path(job.run_dir))}{note}")


#: Finished jobs shown as cards; older ones are folded away (the queue keeps the last 20).
RECENT_JOBS = 5


@st.fragment(run_every="2s")
@guarded  # a fragment reruns on its own, outside app.py's guard
def live_jobs() -> None:
    """Queued and running jobs, redrawn every two seconds. Finished jobs are drawn once, below, outside this
    fragment: they change only with a status change, which reruns the whole page anyway."""
    if error := st.session_state.pop("cancel_error", None):
        st.error(md_escape(error))
    listed = jobs.list_jobs(limit=20, start_worker=True)  # queued jobs never wait for a worker that died
    if view.job_signature(listed) != st.session_state.get("job_signature"):
        # A job started, finished, failed or was cancelled: rerun the page, so its run joins the table and
        # the overlay (and the curves go live, or stop polling) without a reload.
        st.rerun(scope="app")
    for job in listed:
        if job.status in jobs.ACTIVE:
            job_card(job)
    if not listed:  # said here, from this fragment's own list: a job queued in this run is already in it
        st.caption("No jobs yet: queued and running trainings appear here, live.")


st.subheader("Jobs")
for aside in jobs.set_aside_databases()[:1]:
    st.warning(f"The job database was damaged and was set aside as {md_escape(shown_path(str(aside)))} "
               "(kept, not deleted); a fresh queue was started. Delete that file when you no longer need it.")
by_path = {r.path: r for r in runs.values()}
live_jobs()
finished = [job for job in listed_jobs if job.status not in jobs.ACTIVE]
for job in finished[:RECENT_JOBS]:
    job_card(job)
if finished[RECENT_JOBS:] and st.toggle(f"Show {len(finished) - RECENT_JOBS} older jobs", key="older_jobs"):
    for job in finished[RECENT_JOBS:]:  # a toggle, not an expander: a failed job's card holds an expander
        job_card(job)
