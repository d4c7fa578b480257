"""The Training Runs page's views: runs tables, overlaid curves, settings side by side. No TensorFlow.

Pure functions of core.runs' RunInfo (tables, figures, labels), so the page stays a list of widgets and these
stay testable without a browser.
"""
from __future__ import annotations

import textwrap
from collections import Counter
from pathlib import Path

import pandas as pd
import streamlit as st

from core import svg
from core.runs import COMMON_SETTINGS, HISTORY_COLUMNS, RunInfo, backbone_start, read_only_reason, run_settings

#: One colour per overlaid run, in order (train solid, validation dashed): D3's ten, the best known to tell apart
#: on white, then ten of Dark24 that are far from them (black, violet, magenta, teal, ochre, crimson, ...).
PALETTE = list(svg.PALETTE) + ["#222A2A", "#511CFB", "#FB00D1", "#00A08B", "#B68100", "#AF0038", "#0D2A63",
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


#: Each panel's height in pixels (loss above accuracy).
PANEL_HEIGHT = 220
#: Legend labels wrap between words at this many characters: Vega-Lite cuts a long label, never wraps it.
LEGEND_WRAP = 30
#: Train solid, validation dashed.
DASHES = {"train": [1, 0], "validation": [6, 3]}


def legend_label(label: str, width: int = LEGEND_WRAP) -> str:
    """A label wrapped between words onto lines joined by a newline (the chart splits it), so a long title keeps
    the legend narrow and reads whole. Vega renders it as text, never as markup: a title is shown as typed."""
    return "\n".join(textwrap.wrap(label, width, break_long_words=True, break_on_hyphens=False) or [label])


def curves_spec(series: list[str], colors: list[str], x_title: str, *,
                metrics: tuple[str, ...] | list[str] = ("loss", "accuracy"), log_x: bool = False,
                integer_x: bool = True, legend_title: str = "runs") -> dict:
    """A Vega-Lite spec of curves in long form (columns series, name, published, metric, part, x, y): one panel
    per metric (loss above accuracy) sharing the x axis, one colour per series in the order given, train solid
    and validation dashed, published curves with diamonds, ours with dots; the legend under the plots (a click
    singles a series out, Shift+click adds or removes one); drag the last panel to pan, Shift+wheel over it to
    zoom along x (the others follow).

    Vega-Lite, not plotly: plotly.js was about 1.5 s of this page's first visit in a new tab (the page with and
    without its chart: 2.32-4.45 s against 1.50-2.11 s, five fresh servers each). Each panel is one line mark
    with its points, not a layer: Streamlit fits a vconcat of plain views to the column, while a vconcat of
    layers got the column's width for its plots alone and overflowed by the width of the y axis."""
    x = {"field": "x", "type": "quantitative", "title": x_title,
         "scale": {"type": "log" if log_x else "linear", "zero": False, "nice": False, "padding": 10},
         "axis": {"tickMinStep": 1, "format": "d"} if integer_x and not log_x else {}}
    color = {"field": "series", "type": "nominal", "title": legend_title,
             "scale": {"domain": series, "range": colors},
             # below the plots, not right of them: Streamlit gives each panel the column's whole width
             "legend": {"labelExpr": "split(datum.label, '\\n')", "labelLimit": 0, "symbolType": "stroke",
                        "orient": "bottom", "direction": "vertical", "columns": 2, "columnPadding": 24}}
    tooltip = [{"field": "name", "title": legend_title[:-1] if legend_title.endswith("s") else legend_title},
               {"field": "part"}, {"field": "metric"}, {"field": "x", "title": x_title, "format": ",.4~f"},
               {"field": "y", "title": "value", "format": ".4f"}]
    last = len(metrics) - 1

    def panel(k: int, metric: str) -> dict:
        params = []
        if k == 0:  # one legend, shared by the panels: its selection is declared once
            params.append({"name": "pick", "select": {"type": "point", "fields": ["series"]}, "bind": "legend"})
        if k == last:
            # One zoom for the shared x scale: with one per panel, the scale followed only the last one. The
            # wheel zooms only with Shift held: a plain wheel over the chart scrolls the page, as everywhere else.
            params.append({"name": "zoom", "bind": "scales",
                           "select": {"type": "interval", "encodings": ["x"], "zoom": "wheel![event.shiftKey]"}})
        return {
            "height": PANEL_HEIGHT, "params": params,
            "transform": [{"filter": {"field": "metric", "equal": metric}}],
            "mark": {"type": "line", "strokeWidth": 2, "point": {"filled": True, "size": 30}},
            "encoding": {
                # the x axis once, under the last panel
                "x": x if k == last else x | {"axis": {"title": None, "labels": False, "ticks": False,
                                                       "domain": False}},
                "y": {"field": "y", "type": "quantitative", "title": metric, "scale": {"zero": False}},
                "color": color, "detail": {"field": "part"}, "tooltip": tooltip,
                "opacity": {"condition": {"param": "pick", "value": 1}, "value": 0.12},
                "strokeDash": {"field": "part", "type": "nominal", "title": "curve",
                               "scale": {"domain": list(DASHES), "range": list(DASHES.values())},
                               # above the plots: beside the runs' legend it was cut at the chart's edge
                               "legend": {"orient": "top", "direction": "horizontal", "symbolType": "stroke"}},
                "shape": {"field": "published", "type": "nominal", "legend": None,
                          "scale": {"domain": [False, True], "range": ["circle", "diamond"]}},
            },
        }

    return {"vconcat": [panel(k, m) for k, m in enumerate(metrics)], "resolve": {"scale": {"x": "shared"}},
            "spacing": 36}


def overlay_name(run: RunInfo, label: str) -> str:
    """A run's name in the overlay: its label, and "(training)" while it trains."""
    return label + (" (training)" if run.status == "running" else "")


def curve_rows(histories: dict[str, pd.DataFrame], runs: dict[str, RunInfo], labels: dict[str, str], *,
               x_axis: str = "epoch", smoothing: float = 0.0, validation_only: bool = False) -> pd.DataFrame:
    """The overlay's points in long form for `curves_spec`: a run's curves are named by its label ("training"
    after a run training now), wrapped for the legend; points without a value (a run that logged no time, a
    reference run that logged no validation) are left out."""
    frames = []
    for run_id, h in histories.items():
        run = runs[run_id]
        name = overlay_name(run, labels[run_id])
        x = (h["epoch"] if x_axis == "epoch" else h["wall time (s)"]).astype(float)
        for metric in ("loss", "accuracy"):
            for column, part in ((metric, "train"), (f"val_{metric}", "validation")):
                if validation_only and part == "train":
                    continue
                y = h[column].astype(float)
                if smoothing:
                    y = y.ewm(alpha=1 - smoothing, adjust=False, ignore_na=True).mean()
                frames.append(pd.DataFrame({"series": legend_label(name), "name": name, "run": run_id,
                                            "published": run.kind == "reference", "metric": metric, "part": part,
                                            "x": x, "y": y}))
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["series", "name", "run", "published", "metric", "part", "x", "y"])
    return rows.dropna(subset=["x", "y"]).reset_index(drop=True)


def curves_chart(histories: dict[str, pd.DataFrame], runs: dict[str, RunInfo], labels: dict[str, str], *,
                 x_axis: str = "epoch", log_x: bool = False, smoothing: float = 0.0,
                 validation_only: bool = False) -> tuple[pd.DataFrame, dict]:
    """The overlay of the chosen runs: its points and its Vega-Lite spec (one colour per run, kept by its place
    in the order chosen; log x only for wall time). A run with nothing to draw (no history, no logged time on the
    wall-time axis) is left out of the legend too."""
    rows = curve_rows(histories, runs, labels, x_axis=x_axis, smoothing=smoothing, validation_only=validation_only)
    wall_log = log_x and x_axis != "epoch"
    if wall_log:
        rows = rows[rows["x"] > 0].reset_index(drop=True)  # a log axis has no place for 0: one would blank it
    drawn = set(rows["series"])
    named = [(legend_label(overlay_name(runs[i], labels[i])), PALETTE[k % len(PALETTE)])
             for k, i in enumerate(histories)]
    named = [(name, colour) for name, colour in named if name in drawn]
    spec = curves_spec([n for n, _ in named], [c for _, c in named], x_axis + (", log scale" if wall_log else ""),
                       log_x=wall_log, integer_x=x_axis == "epoch")
    return rows, spec


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
#: above (diamonds: published), train solid and validation dashed.
COMPARISON_SOURCES = {"published": ("published", PALETTE[1]), "reproduction": ("ours", PALETTE[0])}


def comparison_chart(cmp: dict) -> tuple[pd.DataFrame, dict]:
    """core.reproduce.comparison's series on the same axes, as `curves_chart` draws runs: loss above accuracy
    (the panels of the metrics both runs logged), epoch along x, the published curve and ours in two colours."""
    series = pd.DataFrame(cmp["series"], columns=["source", "label", "epoch", "metric", "value", "elapsed_seconds"])
    series = series[series["metric"].isin(cmp["metrics"])]  # only what both logged is drawn
    rows = pd.DataFrame({
        "series": series["source"].map(lambda s: COMPARISON_SOURCES[s][0]), "name": series["label"],
        "published": series["source"] == "published", "metric": series["metric"].str.removeprefix("val_"),
        "part": series["metric"].map(lambda m: "validation" if m.startswith("val_") else "train"),
        "x": series["epoch"].astype(float), "y": series["value"].astype(float)})
    rows = rows[rows["metric"].isin(["loss", "accuracy"])].dropna(subset=["x", "y"]).reset_index(drop=True)
    panels = [m for m in ("loss", "accuracy") if (rows["metric"] == m).any()]
    names, colors = zip(*COMPARISON_SOURCES.values())
    return rows, curves_spec(list(names), list(colors), "epoch", metrics=panels, legend_title="curves")


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
