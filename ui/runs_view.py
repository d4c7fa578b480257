"""The Training Runs page's views: runs tables, overlaid curves, settings side by side. No TensorFlow.

Pure functions of core.runs' RunInfo (tables, figures, labels), so the page stays a list of widgets and these
stay testable without a browser.
"""
from __future__ import annotations

import html
import textwrap
from collections import Counter
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.colors import qualitative

from core.runs import COMMON_SETTINGS, HISTORY_COLUMNS, RunInfo, backbone_start, read_only_reason, run_settings

#: One colour per overlaid run, in order (train solid, validation dashed): D3's ten, the best known to tell apart
#: on white, then ten of Dark24 that are far from them (black, violet, magenta, teal, ochre, crimson, ...).
PALETTE = qualitative.D3 + ["#222A2A", "#511CFB", "#FB00D1", "#00A08B", "#B68100", "#AF0038", "#0D2A63",
                            "#A777F1", "#6C4516", "#FC0080"]
#: The runs table's essential columns; the rest are in the details table.
#: Ordered by what a comparison reads first, so on a narrow screen (1024 px, sidebar open) the numbers show and
#: only the data set needs a scroll.
COMPACT_COLUMNS = ["title", "status", "test acc", "best val acc", "epochs", "architecture", "kind", "dataset"]
#: A reference run shown in the overlay by default: the published MNIST CNN, the closest to ours.
DEFAULT_REFERENCE = "lab3-mnist-digit-cnn"
#: Statuses of runs that did not finish normally: marked, and never overlaid unless chosen.
UNFINISHED = ("cancelled", "failed", "interrupted", "damaged", "running", "unknown")

#: Rows of the compact table tall enough for three lines: Streamlit wraps a cell's text only in rows taller than
#: 64 px (4rem), so a title of up to about 100 characters reads whole in its column instead of being cut.
COMPACT_ROW_HEIGHT = 68
#: The compact table shows this many rows before it scrolls (the header and a border included in its height).
COMPACT_ROWS_SHOWN = 7


def compact_height(n_rows: int) -> int:
    """The compact table's height in pixels: every row up to COMPACT_ROWS_SHOWN, then it scrolls."""
    return 38 + COMPACT_ROW_HEIGHT * max(1, min(n_rows, COMPACT_ROWS_SHOWN))


#: Widths in pixels: the five first columns fit the 564 px a 1024 px screen leaves with the sidebar open.
COLUMN_CONFIG = {
    "title": st.column_config.TextColumn(width=250, pinned=True, help="the run's title (rename your own below)"),
    "status": st.column_config.TextColumn(width=80, help="done, running, cancelled, failed, interrupted (its "
                                                          "process died), damaged (unreadable files), published "
                                                          "(reference)"),
    "test acc": st.column_config.NumberColumn(width=70, format="%.4f"),
    "best val acc": st.column_config.NumberColumn(width=94, format="%.4f", help="best validation accuracy"),
    "epochs": st.column_config.NumberColumn(width=60, format="%d"),
    "architecture": st.column_config.TextColumn(width=100),
    "kind": st.column_config.TextColumn(width=82, help="project: trained here; reference: published, read-only"),
    "dataset": st.column_config.TextColumn(width="medium"),
    "s / epoch": st.column_config.NumberColumn(format="%.1f"),
    "params": st.column_config.NumberColumn(format="localized"),
    "trainable params": st.column_config.NumberColumn(format="localized"),
}


def run_labels(runs: dict[str, RunInfo]) -> dict[str, str]:
    """Each run's name as shown: its title, "[ref] " before a reference run's, and the id after a title that
    two runs share (so no two runs read the same)."""
    counts = Counter(r.title for r in runs.values())
    labels = {}
    for run_id, r in runs.items():
        name = r.title or run_id
        if counts[r.title] > 1:
            name = f"{name} ({run_id})"
        labels[run_id] = ("[ref] " if r.kind == "reference" else "") + name
    return labels


def option_label(run: RunInfo, label: str) -> str:
    """A run in the overlay chooser: its label, with its status when it did not finish normally."""
    return f"{label} [{run.status}]" if run.status in UNFINISHED else label


def architecture_label(run: RunInfo) -> str:
    """"VGG16 · ImageNet", "VGG16 · scratch", "CNN": the architecture and, where it can be either, its start."""
    start = backbone_start(run)
    return f"{run.architecture} · {start}" if start else run.architecture


def runs_frame(runs: list[RunInfo], shown_path=str) -> pd.DataFrame:
    """Every run, every column (the compact table is `COMPACT_COLUMNS` of it). Missing numbers are pandas NA,
    which the table shows blank; missing text is "". The architecture says how a transfer-capable backbone
    started (VGG16 · ImageNet, VGG16 · scratch), so every table tells transfer runs from scratch ones."""
    rows = [{
        "title": r.title, "kind": r.kind,
        "architecture": architecture_label(r), "dataset": r.dataset,
        "status": r.status, "epochs": r.epochs, "best val acc": r.best_val_accuracy, "test acc": r.test_accuracy,
        "id": r.id, "params": r.params, "trainable params": r.trainable_params, "s / epoch": r.seconds_per_epoch,
        "device": r.device, "weights": shown_path(r.weights) if r.weights else "", "source": r.source,
        "model file": "here" if r.has_model else
        ("" if r.status == "damaged" else r.extra.get("info", {}).get("model_note", "published figures only")),
        "problem": r.problem,
    } for r in runs]
    df = pd.DataFrame(rows, columns=COMPACT_COLUMNS + ["id", "params", "trainable params", "s / epoch", "device",
                                                       "weights", "source", "model file", "problem"])
    for col in ("epochs", "params", "trainable params"):
        df[col] = pd.array([None if pd.isna(v) else int(v) for v in df[col]], dtype="Int64")
    for col in ("best val acc", "test acc", "s / epoch"):
        df[col] = pd.array([None if pd.isna(v) else float(v) for v in df[col]], dtype="Float64")
    return df[["id"] + [c for c in df.columns if c != "id"]]


def default_overlay(runs: dict[str, RunInfo]) -> list[str]:
    """Runs overlaid when the page opens: finished runs only (the first shipped ones and your latest), runs
    training now (to watch them live), and the published MNIST CNN. Cancelled and failed runs are left out."""
    done = [i for i, r in runs.items() if r.kind == "project" and r.status == "done"]
    own_done = [i for i in done if not read_only_reason(runs[i])]
    training = [i for i, r in runs.items() if r.status == "running"]
    reference = [DEFAULT_REFERENCE] if DEFAULT_REFERENCE in runs else []
    return list(dict.fromkeys(done[:3] + own_done[-3:] + training + reference))


def history_frame(run: RunInfo) -> pd.DataFrame:
    """A run's history (read now: a running run's file grows every epoch) with its cumulative wall time;
    NaN where the run logged no time, so it is left out of the wall-time chart rather than drawn at 0."""
    h = pd.DataFrame(run.history(), columns=list(HISTORY_COLUMNS))
    h["wall time (s)"] = h["seconds"].astype(float).cumsum()
    return h


def legend_name(label: str, width: int = 26) -> str:
    """A label for a plotly legend: HTML-escaped (plotly renders tags in names; a title is shown as typed)
    and wrapped between words, so long titles keep the legend narrow without cutting them."""
    lines = textwrap.wrap(label, width, break_long_words=True, break_on_hyphens=False) or [label]
    return "<br>".join(html.escape(line, quote=False) for line in lines)


def curves_figure(histories: dict[str, pd.DataFrame], runs: dict[str, RunInfo], labels: dict[str, str], *,
                  x_axis: str = "epoch", log_x: bool = False, smoothing: float = 0.0,
                  validation_only: bool = False) -> go.Figure:
    """Loss above accuracy, sharing the x axis; one colour per run (train solid, validation dashed), one legend
    entry per run at the right, outside both plots (a click hides the run in both). Reference runs have
    "[ref]" in their label and open diamond markers; a run training now is marked "training"."""
    traces, legend_lines = [], 0
    for k, (run_id, h) in enumerate(histories.items()):
        run = runs[run_id]
        color = PALETTE[k % len(PALETTE)]
        name = legend_name(labels[run_id] + (" (training)" if run.status == "running" else ""))
        marker = (dict(symbol="diamond-open", size=7) if run.kind == "reference" else dict(symbol="circle", size=5))
        x = (h["epoch"] if x_axis == "epoch" else h["wall time (s)"]).tolist()
        in_legend = True
        for yaxis, metric in (("y", "loss"), ("y2", "accuracy")):
            parts = ([] if validation_only else [(metric, "train", "solid")]) + [(f"val_{metric}", "validation",
                                                                                   "dash")]
            for column, part, dash in parts:
                y = h[column].astype(float)
                if not y.notna().any():
                    continue
                if smoothing:
                    y = y.ewm(alpha=1 - smoothing, adjust=False, ignore_na=True).mean()
                traces.append(dict(
                    type="scatter", x=x, y=y.tolist(), xaxis="x", yaxis=yaxis, name=name, legendgroup=run_id,
                    showlegend=in_legend, mode="lines+markers",
                    line=dict(color=color, dash=dash, width=2 if run.kind == "project" else 1.5),
                    marker=dict(color=color, **marker),
                    hovertemplate=f"{part} {metric} %{{y:.4f}}<br>{x_axis} %{{x}}",
                ))
                if in_legend:
                    legend_lines += name.count("<br>") + 1
                in_legend = False
    wall_log = log_x and x_axis != "epoch"
    # One figure built in one go (one validation), not make_subplots + add_trace per curve: 5x faster, and
    # the page redraws it every two seconds while a run trains. One x axis serves both plots (at the bottom).
    return go.Figure(data=traces, layout=dict(
        height=max(560, 140 + 19 * legend_lines), margin=dict(l=10, r=10, t=10, b=10),
        xaxis=dict(anchor="y2", title=dict(text=x_axis + (", log scale" if wall_log else "")),
                   type="log" if wall_log else "-"),
        yaxis=dict(domain=[0.53, 1], title=dict(text="loss")),
        yaxis2=dict(domain=[0, 0.47], title=dict(text="accuracy")),
        legend=dict(x=1.01, xanchor="left", y=1, yanchor="top", groupclick="togglegroup", tracegroupgap=4,
                    title_text="runs (click to hide)", font=dict(size=11)),
        hoverlabel=dict(namelength=-1), uirevision="curves",  # zoom and hidden runs survive live updates
    ))


def _shown(key: str, value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) and key in ("params", "trainable_params"):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def settings_frame(runs: list[RunInfo], labels: dict[str, str]) -> pd.DataFrame:
    """The runs' settings side by side: one row per setting (config.json keys and the common ones, named in
    words: "batch size"), one column per run, as text; "" where a run does not state it (reference runs publish
    only some)."""
    settings = {labels[r.id]: run_settings(r) for r in runs}
    keys = list(COMMON_SETTINGS)
    for s in settings.values():
        keys += [k for k in s if k not in keys]
    keys = [k for k in keys if any(k in s for s in settings.values())]
    # rows named in words ("batch size"), as a reader says them; the CLI and JSON keep config.json's keys
    return pd.DataFrame({col: [_shown(k, s[k]) if k in s else "" for k in keys] for col, s in settings.items()},
                        index=pd.Index([k.replace("_", " ") for k in keys], name="setting"))


def differing_settings(frame: pd.DataFrame) -> list[str]:
    """Settings whose stated values differ between the runs (a value one run does not state does not count)."""
    return [k for k, row in frame.iterrows() if len({v for v in row if v != ""}) > 1]


#: How a differing setting is highlighted (a light amber that dark text stays readable on).
DIFFERS_STYLE = "background-color: #ffe8a3"


def highlight_differences(frame: pd.DataFrame):
    """A pandas Styler of `frame` with the rows of differing settings highlighted."""
    differs = set(differing_settings(frame))
    return frame.style.apply(lambda row: [DIFFERS_STYLE if row.name in differs else ""] * len(row), axis=1)


def job_signature(listed) -> tuple:
    """What, in the job list, changes the rest of the page: a job's status, and its run folder getting its
    first file (the run then exists). The job monitor reruns the whole page when this changes."""
    return tuple((j.id, j.status, bool(j.run_dir) and (Path(j.run_dir) / "run.json").exists()) for j in listed)


#: The comparison of a published run and its reproduction: one colour per source, the markers of the overlay
#: above (open diamonds: published), train solid and validation dashed.
COMPARISON_STYLE = {
    "published": dict(color=PALETTE[1], marker=dict(symbol="diamond-open", size=7), width=1.5, name="published"),
    "reproduction": dict(color=PALETTE[0], marker=dict(symbol="circle", size=5), width=2, name="ours"),
}


def comparison_figure(cmp: dict) -> go.Figure:
    """core.reproduce.comparison's series on the same axes: loss above accuracy (the panels of the metrics both
    runs logged), epoch along x, the published curve and ours in two colours, the legend right of the plot."""
    series = pd.DataFrame(cmp["series"], columns=["source", "label", "epoch", "metric", "value", "elapsed_seconds"])
    metrics = list(cmp["metrics"])
    panels = [(base, [m for m in (base, f"val_{base}") if m in metrics]) for base in ("loss", "accuracy")]
    panels = [(base, ms) for base, ms in panels if ms]
    n = len(panels)
    traces, layout = [], {}
    for k, (base, ms) in enumerate(panels):
        axis = "y" if k == 0 else f"y{k + 1}"
        top = 1 - k / n
        layout["yaxis" if k == 0 else f"yaxis{k + 1}"] = dict(
            domain=[max(0.0, top - 1 / n + (0.06 if k < n - 1 else 0)), top], title=dict(text=base))
        for source in ("published", "reproduction"):
            style = COMPARISON_STYLE[source]
            for metric in ms:
                part = "validation" if metric.startswith("val_") else "train"
                rows = series[(series["source"] == source) & (series["metric"] == metric)].sort_values("epoch")
                if rows.empty:
                    continue
                traces.append(dict(
                    type="scatter", x=rows["epoch"].tolist(), y=rows["value"].tolist(), xaxis="x", yaxis=axis,
                    name=f"{style['name']}, {part}", legendgroup=f"{source}-{part}", showlegend=k == 0 or
                    not any(t["legendgroup"] == f"{source}-{part}" for t in traces),
                    mode="lines+markers", line=dict(color=style["color"], width=style["width"],
                                                    dash="dash" if part == "validation" else "solid"),
                    marker=dict(color=style["color"], **style["marker"]),
                    hovertemplate=f"{style['name']} {part} {base} %{{y:.4f}}<br>epoch %{{x}}<extra></extra>"))
    return go.Figure(data=traces, layout=dict(
        height=220 + 190 * n, margin=dict(l=10, r=10, t=34, b=10),  # the toolbar above the legend, not on it
        xaxis=dict(anchor=f"y{n}" if n > 1 else "y", title=dict(text="epoch")), **layout,
        legend=dict(x=1.01, xanchor="left", y=1, yanchor="top", groupclick="togglegroup", font=dict(size=11),
                    title_text="curves"),
        hoverlabel=dict(namelength=-1)))


def accuracy_text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


EXECUTOR_NAMES = {"local": "local worker", "ray": "Ray cluster"}


def job_place(job, visitor: bool = False) -> str:
    """Where a job runs or ran: node, device and executor, those that are known ("" when none is). A visitor of
    a read-only server sees the device and executor, not the host name and address."""
    parts = [] if visitor or not job.node else [job.node]
    parts += [p for p in (job.device, EXECUTOR_NAMES.get(job.executor or "", job.executor)) if p]
    if not parts:
        return ""
    return ("running on " if job.status == "running" else "ran on ") + " · ".join(parts)


def reproduction_label(run, default_title: str) -> str:
    """A reproduction in its chooser: id, status and test accuracy (its title only when renamed: by default
    every reproduction of one published run has the same title)."""
    acc = "" if run.test_accuracy is None else f", test acc {run.test_accuracy:.4f}"
    return f"{run.id} ({run.status}{acc})" + ("" if run.title == default_title else f": {run.title}")
