"""The Reused-model report page's views: st.cache_* wrappers, figures, and one @st.fragment per view.

Each view is a fragment: a toggle, selectbox or page change inside it reruns only that view, never the
evaluation or the other views. The page (pages/report.py) chooses the data set, model and method, evaluates
(core caches every evaluation on disk), and calls the one view the reader chose.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

if TYPE_CHECKING:  # pandas is imported where a table is built: a Report's title, metrics and headline reach
    import pandas as pd  # the browser before its ~0.4-s import on a fresh server
import streamlit as st

from core import config, report, svg
from core.datasets import Dataset
from core.errors import DigitLabError
from core.evaluation import BLANK, Evaluation
from core.images import EXTENSIONS, decode_image, thumbnail
from core.reframing import METHODS, reframe
from core.wording import pct, plural
from ui import pickers
from ui.safe import guarded, md_escape, show_error

#: Built-in data sets whose content never changes: their name is their identity (no hashing every rerun).
STABLE_TARGETS = ("sklearn-digits", "mnist-test")
TILE_SIDE = 52
TILE_WIDTH = 2 * TILE_SIDE + 6  # the pair and the gap between them, at 1:1
TILE_NAME = 16  # characters of a file name under a tile: a saved digit's 28 took five lines


@dataclass
class Context:
    """What every view needs: the evaluation and where it came from. `token` names (data set, model, method):
    widgets keyed on it start afresh when any of them changes."""

    dataset: Dataset
    ev: Evaluation
    summary: dict
    method: str
    model_path: Path
    model_key: str
    identity: dict
    factory: Callable
    token: str


# --- cached pieces -------------------------------------------------------------------------------------------

@st.cache_data(show_spinner=False, max_entries=32)
def model_identity(path: str, mtime: float, size: int) -> dict:
    """core.report.describe_model, once per file version (mtime and size in the key), without TensorFlow."""
    return report.describe_model(path)


@st.cache_data(show_spinner=False, max_entries=32)
def analysis(token: str, _ev: Evaluation, target_accuracy: float) -> dict:
    """Evaluation.as_dict at a target accuracy: metrics, risk-coverage, automation (keyed by token)."""
    return _ev.as_dict(target_accuracy)


@st.cache_data(show_spinner=False, ttl=30, max_entries=16)
def adaptations_for(target: str, model_path: str, method: str, home: str) -> list[dict]:
    """The saved few-shot results for this data set and model, the one to cite first (core.adaptation)."""
    from core.adaptation import load_results, results_to_cite

    return results_to_cite(load_results(target), model_path, method)


@st.cache_data(show_spinner="Reading 300 numbers...", max_entries=8)
def builtin_numbers(model_key: str, method: str, _factory: Callable) -> dict:
    """The 300 built-in numbers read by this model (keyed by the model's hash and the method)."""
    from core.numbers import compose_numbers, evaluate_numbers

    images, labels = compose_numbers()
    out = evaluate_numbers(_factory(), images, labels, method)
    out["provenance"] = f"{len(labels)} numbers 0-303 composed from scikit-learn digit scans"
    return out


@st.cache_data(show_spinner=False, max_entries=32)
def read_number(model_key: str, image: np.ndarray, method: str, _factory: Callable):
    """One number image split, classified and recomposed (keyed by the model, the image and the method)."""
    from core.numbers import read_number as core_read_number

    return core_read_number(_factory(), image, method)


@st.cache_data(show_spinner="Reading the numbers...", max_entries=4)
def numbers_zip(model_key: str, data: bytes, filename: str, method: str, _factory: Callable) -> dict:
    """An uploaded .zip of labelled number images read by this model."""
    from core.numbers import evaluate_numbers, load_numbers_zip

    images, labels, _, skipped = load_numbers_zip(data, filename)
    out = evaluate_numbers(_factory(), images, labels, method)
    out.update(skipped_files=skipped, provenance=f"{len(labels)} labelled number images in {filename}")
    return out


def dataset_token(name: str, dataset: Dataset) -> str:
    """A short name for the data set's content: built-in sets by name, others by a hash of images and labels."""
    from core.evaluation import fingerprint

    if name in STABLE_TARGETS:
        return name
    return fingerprint(dataset.images, dataset.labels)[:12]


def csv_download(label: str, frame: pd.DataFrame, file_name: str, key: str, index: bool = False) -> None:
    """A CSV download made only when clicked (nothing sent with every rerun) and that reruns nothing."""
    st.download_button(label, lambda: frame.to_csv(index=index), file_name, "text/csv", key=key, on_click="ignore")


def home() -> str:
    return str(config.data_home())


# --- the model under test -------------------------------------------------------------------------------------

def identity_caption(identity: dict) -> str:
    """The model's identity in one line of Markdown (user text escaped)."""
    shape = identity.get("input_shape")
    parts = [f"**{md_escape(identity.get('title') or identity.get('name') or identity.get('file', ''))}**"]
    if identity.get("name"):
        parts.append(md_escape(identity["name"]))
    if identity.get("params"):
        parts.append(f"{identity['params']:,} parameters")
    if shape:
        parts.append("input " + "x".join("?" if s is None else str(s) for s in shape))
    parts.append(f"SHA-256 `{identity['sha256'][:12]}`")
    parts.append(f"trained on: {md_escape(identity.get('trained_on', 'not known'))}")
    return "Identity: " + " · ".join(parts)


# --- headline ---------------------------------------------------------------------------------------------------

def automation_headline(a: dict) -> str:
    """'**Automate X % of digits at ≥ T accuracy** (threshold c; accuracy a, 95 % CI l-h %)' in Markdown."""
    claim, details = report.automation_claim(a)
    if details is None:
        return f"**{claim}** on this set: every digit needs a person's check."
    return f"**{claim}** ({details})"


# --- confusion matrix and the images behind a cell ---------------------------------------------------------------

#: The "Row-normalised" switch is a checkbox of the chart itself (a Vega-Lite parameter bound to it): the labels
#: change in the browser, with no rerun at all. As a Streamlit toggle it reran the whole view, drill-down tiles
#: included (0.6-1.1 s in bench/page_speed.py against the 0.5 s target).
SHARE_PARAM = "share"


def confusion_cells(cm: np.ndarray, shares: pd.DataFrame, selected: tuple[int, int] | None) -> pd.DataFrame:
    """The chart's data: one row per (true, predicted) cell with its count, share of the row, both labels, its
    shade and whether it is the chosen cell. `shares` is report.confusion_frame(..., normalise=True), the table
    also offered as CSV: rows total every image of the true digit, blanks included, unreadable ones left out."""
    import pandas as pd

    cm = np.asarray(cm)
    shares = shares.to_numpy()  # a "blank" column, when there is one, comes after the ten digits'
    t, p = np.divmod(np.arange(100), 10)
    counts = cm[t, p].astype(int)
    share = shares[t, p]
    chosen = np.zeros(100, bool) if selected is None else (t == selected[0]) & (p == selected[1])
    # empty cells stay blank; shares are written as whole percent without the sign: three characters fit a
    # cell at 1024 px with the sidebar open (the checkbox says they are percentages); a cell that is not empty
    # never reads 0 beside the empty ones
    return pd.DataFrame({
        "true": t, "predicted": p, "images": counts, "share": share, "shade": np.sqrt(share),
        "count_label": np.where(counts == 0, "", counts.astype(str)),
        "share_label": np.where(counts == 0, "", [_share_label(v) for v in share]),
        "chosen": chosen})


def _share_label(share: float) -> str:
    """A share as whole percent, never rounded to 0 or to 100 when it is neither: '<1', '>99'."""
    if 0 < share < 0.005:
        return "<1"
    if 0.995 <= share < 1:
        return ">99"
    return f"{100 * share:.0f}"


def confusion_spec() -> dict:
    """The matrix as a Vega-Lite heatmap (data: confusion_cells) whose cells are clicked to choose them (a point
    selection on the true and predicted digit), the chosen cell outlined, and a "Row-normalised" checkbox that
    switches the labels from counts to percentages of the row in the browser.

    The spec never changes, only its data: Streamlit then replaces the data in the drawn chart instead of
    drawing it anew, so the checkbox keeps its state when a cell is clicked (a choice in the boxes below draws
    the chart anew: see _chosen_in_boxes). Vega-Lite draws on a canvas: a
    redraw costs the browser about half what the same plotly heatmap costs (Chromium's long tasks). Cells are
    shaded by the square root of their share of the row: the diagonal's 90 % would otherwise leave a 10 %
    confusion as pale as an empty cell.
    """
    axis = {"labelAngle": 0, "ticks": False, "domain": False, "labelFontSize": 12}
    return {
        "height": 380,
        "params": [{"name": SHARE_PARAM, "value": False,
                    "bind": {"input": "checkbox", "name": "Row-normalised (% of each true digit)"}}],
        "encoding": {"x": {"field": "predicted", "type": "ordinal", "title": "predicted digit", "axis": axis},
                     "y": {"field": "true", "type": "ordinal", "title": "true digit", "axis": axis}},
        "layer": [
            {"params": [{"name": "cell", "select": {"type": "point", "fields": ["true", "predicted"]}}],
             "mark": {"type": "rect", "cursor": "pointer"},
             "encoding": {
                 "color": {"field": "shade", "type": "quantitative", "legend": None,
                           "scale": {"domain": [0, 1], "range": ["#f7fbff", "#08306b"]}},
                 "stroke": {"value": "#ffffff"}, "strokeWidth": {"value": 1},
                 "tooltip": [{"field": "true", "title": "true digit"}, {"field": "predicted", "title": "read as"},
                             {"field": "images", "title": "images"},
                             {"field": "share", "title": "share of the true digit", "format": ".1%"}]}},
            {"transform": [{"filter": "datum.chosen"}],  # the chosen cell's outline, above its neighbours
             "mark": {"type": "rect", "fill": None, "stroke": "#ff7f0e", "strokeWidth": 3}},
            {"transform": [{"calculate": f"{SHARE_PARAM} ? datum.share_label : datum.count_label", "as": "label"}],
             "mark": {"type": "text", "fontSize": 11, "cursor": "pointer"},
             "encoding": {"text": {"field": "label"},
                          "color": {"condition": {"test": "datum.shade > 0.6", "value": "#ffffff"},
                                    "value": "#222222"}}},
        ]}


def cell_from_selection(state) -> tuple[int, int] | None:
    """(true digit, predicted digit) of the clicked cell in the chart's selection state, or None (nothing
    chosen, e.g. a second click on the same cell, which Vega-Lite reads as letting go)."""
    try:
        points = state["selection"]["cell"]
    except (KeyError, TypeError):
        return None
    for pt in points or []:
        if pt.get("true") is not None and pt.get("predicted") is not None:
            return int(pt["true"]), int(pt["predicted"])
    return None


def commonest_mistake(cm: np.ndarray, true_digit: int | None = None) -> tuple[int, int]:
    """The largest off-diagonal cell (of one row when true_digit is given); the diagonal when there is none."""
    rows = range(10) if true_digit is None else [true_digit]
    # ties go to the lowest digits, as a reader scans the matrix
    best = max(((int(cm[t, p]), t, p) for t in rows for p in range(10) if p != t),
               key=lambda c: (c[0], -c[1], -c[2]), default=(0, 0, 0))
    if best[0] == 0:
        t = true_digit if true_digit is not None else 0
        return t, t
    return best[1], best[2]


def _keys(token: str) -> tuple[str, str]:
    return f"cell_true-{token}", f"cell_pred-{token}"


def _on_click(chart_key: str, token: str) -> None:
    cell = cell_from_selection(st.session_state.get(chart_key))
    if cell is not None:
        st.session_state[_keys(token)[0]], st.session_state[_keys(token)[1]] = cell


def _chart_generation(token: str) -> str:
    return f"cm_gen-{token}"


def _chosen_in_boxes(token: str) -> None:
    """A cell chosen in the boxes: the chart is drawn anew (a new key), so that it lets go of the cell last
    clicked. Vega-Lite keeps a clicked cell selected, and a click on it again changes nothing, so no rerun
    would follow: the drill-down stayed on the boxes' cell."""
    key = _chart_generation(token)
    st.session_state[key] = st.session_state.get(key, 0) + 1


def _on_true_digit(cm: np.ndarray, token: str) -> None:
    t_key, p_key = _keys(token)
    st.session_state[p_key] = commonest_mistake(cm, st.session_state[t_key])[1]
    _chosen_in_boxes(token)


@st.fragment
@guarded
def confusion_view(ctx: Context) -> None:
    ev = ctx.ev
    cm = np.asarray(ctx.summary["confusion_matrix"])
    t_key, p_key = _keys(ctx.token)
    t0, p0 = commonest_mistake(cm)
    st.session_state.setdefault(t_key, t0)  # a new data set, model or method: start at its commonest mistake
    st.session_state.setdefault(p_key, p0)
    left, right = st.columns([1, 1], gap="medium")
    with left:
        # a line above the chart: its hover toolbar sits there, not over the view switch above (where a click
        # meant for "Per digit" opened the chart's raw data)
        st.markdown("**Confusion matrix**")
        chart_key = f"cm-{ctx.token}-{st.session_state.get(_chart_generation(ctx.token), 0)}"
        shares = report.confusion_frame(cm, ev.y_true, normalise=True, y_pred=ev.y_pred)  # drawn and downloadable
        cells = confusion_cells(cm, shares, (st.session_state[t_key], st.session_state[p_key]))
        st.vega_lite_chart(cells, confusion_spec(), key=chart_key,
                           on_select=functools.partial(_on_click, chart_key, ctx.token), selection_mode="cell",
                           width="stretch")
        with st.container(horizontal=True, gap="small"):
            csv_download("Download counts (CSV)", report.confusion_frame(cm, ev.y_true, y_pred=ev.y_pred),
                         f"confusion-{ev.target}-{ctx.method}.csv", "dl_cm", index=True)
            csv_download("Download row shares (CSV)", shares, f"confusion-shares-{ev.target}-{ctx.method}.csv",
                         "dl_cm_shares", index=True)
    with right:
        st.markdown("**Images behind a cell**")
        st.caption("Click a cell of the matrix, or choose it here.")
        a, b = st.columns(2)
        a.selectbox("True digit", range(10), key=t_key, on_change=_on_true_digit, args=(cm, ctx.token))
        t = st.session_state[t_key]
        options = list(range(10)) + ([BLANK] if ev.blank else [])
        blanks_in_row = int(((ev.y_true == t) & (ev.y_pred == BLANK)).sum())
        b.selectbox("Predicted digit", options, key=p_key, on_change=_chosen_in_boxes, args=(ctx.token,),
                    format_func=lambda p: f"blank ({blanks_in_row})" if p == BLANK else f"{p} ({int(cm[t, p])})")
        cell_images(ctx, t, st.session_state[p_key])


def cell_images(ctx: Context, t: int, p: int) -> None:
    """The images of one cell as tiles (as given | as the model saw it, one caption), most confident first,
    TILES_PER_PAGE to a page."""
    order = report.cell_order(ctx.ev, t, p)
    read = "blank (no ink)" if p == BLANK else f"read as {p}"
    if not order:
        st.info(f"No images of a true {t} {read}.")
        return
    pages = math.ceil(len(order) / report.TILES_PER_PAGE)
    page = 1
    if pages > 1:
        page = st.number_input(f"Page (of {pages})", 1, pages, 1, key=f"cell_page-{ctx.token}-{t}-{p}")
    start = (page - 1) * report.TILES_PER_PAGE
    shown = order[start:start + report.TILES_PER_PAGE]
    st.caption(f"True {t}, {read}: {plural(len(order), 'image')}"
               + (f", {start + 1}-{start + len(shown)} shown" if pages > 1 else "")
               + ". Each: as given | as the model saw it; most confident first.")
    images = ctx.dataset.images
    # One picture per image (as given | as the model saw it) in a wrapping row: as many per line as fit, and
    # an original can never sit beside another image's reframing.
    with st.container(horizontal=True, gap="small"):
        for i in shown:
            tile = report.pair_tile(images[i], report.reframed_image(images[i], ctx.method), TILE_SIDE)
            st.image(tile, caption=md_escape(report.tile_caption(ctx.ev, i, ctx.dataset.files, TILE_NAME)), clamp=True,
                     width=TILE_WIDTH)


# --- per digit -------------------------------------------------------------------------------------------------

def _with_interval(value: float, low: float, high: float) -> str:
    """'84.6 % [78.7-89.1]': a share and its 95 % interval in one cell; 'n/a' without an interval."""
    import pandas as pd

    return "n/a" if pd.isna(value) or pd.isna(low) else f"{pct(value)} [{100 * low:.1f}-{100 * high:.1f}]"


def rates_table(rates: pd.DataFrame):
    """The per-digit rates to read (the CSV keeps the numbers): each interval beside its value, so six columns
    fit a 1024-px screen, and the weakest recall, precision and F1 highlighted."""
    import pandas as pd

    shown = pd.DataFrame({
        "digit": rates["digit"], "images": rates["images"], "one-vs-rest accuracy": rates["accuracy"].map(pct),
        "recall (95 % CI)": [_with_interval(*r) for r in rates[["recall", "recall_low", "recall_high"]].to_numpy()],
        "precision (95 % CI)": [_with_interval(*r) for r in
                                rates[["precision", "precision_low", "precision_high"]].to_numpy()],
        "F1": rates["f1"].map(pct)})
    weakest = {"recall (95 % CI)": "recall", "precision (95 % CI)": "precision", "F1": "f1"}
    # a digit the set lacks (recall and F1 0 by convention) or the model never predicts (precision) has no
    # such rate to be weakest at
    defined = {"recall": rates["images"] > 0, "precision": rates["precision_low"].notna(),
               "f1": rates["images"] > 0}

    def highlight(column: pd.Series) -> list[str]:
        name = weakest[column.name]
        values = rates[name].where(defined[name])
        return _mark(values, values.min(), values.min() < values.max())  # all equal: none is the weakest

    return shown.style.apply(highlight, subset=list(weakest)).hide(axis="index")


def _mark(values, which, any_at_all: bool) -> list[str]:
    """The style of the cells equal to `which` (highlighted), when `any_at_all`."""
    return ["background-color: #fdd" if any_at_all and v == which else "" for v in values]


def counts_table(counts: pd.DataFrame):
    """TP, TN, FP, FN per digit with the most false positives and false negatives highlighted (none when a column
    has no error at all)."""
    return counts.style.apply(lambda c: _mark(c, c.max(), c.max() > 0), subset=["fp", "fn"]).hide(axis="index")


@st.fragment
@guarded
def per_digit_view(ctx: Context) -> None:
    import pandas as pd

    ev, per = ctx.ev, pd.DataFrame(ctx.summary["per_digit"])
    st.markdown("**TP, TN, FP, FN per digit** (each row sums to the data set size; most errors highlighted)")
    counts = per[report.COUNT_COLUMNS]
    # Ten rows each: static tables (HTML), which the browser lays out at once; an interactive grid costs this
    # view switch twice as much (bench/page_speed.py) and adds nothing to ten rows.
    st.table(counts_table(counts))
    csv_download("Download TP/TN/FP/FN (CSV)", counts, f"per-digit-counts-{ev.target}-{ctx.method}.csv", "dl_counts")
    st.markdown("**Accuracy, recall, precision, F1 per digit**, recall and precision with their 95 % Wilson "
                "interval (weakest highlighted)")
    st.caption("Accuracy here is the paper's one-vs-rest accuracy, (TP + TN) / all images: every other digit's "
               "images count too, so it stays high for a digit that is often misread. Recall says how often the "
               "digit itself is read right.")
    rates = report.rates_frame(ctx.summary["per_digit"])
    st.table(rates_table(rates))
    csv_download("Download per-digit metrics (CSV)", rates, f"per-digit-metrics-{ev.target}-{ctx.method}.csv",
                 "dl_rates")


# --- automation ------------------------------------------------------------------------------------------------

def coverage_chart(summary: dict) -> dict:
    """A Vega-Lite spec: accuracy on the accepted images against the share accepted, with its 95 % Wilson band,
    the target (dashed) and the chosen operating point (red). Vega-Lite, as every chart on this page: a view
    switch that draws a first plotly chart waits for plotly.js (the switch to Automation took 1.38-1.50 s with
    plotly, 0.26-0.39 s with this chart; four fresh servers each, a probe of bench/page_speed.py's steps)."""
    rows = sorted(({k: r[k] for k in ("coverage", "accuracy", "low", "high", "threshold")}
                   for r in summary["coverage"] if r["accepted"]), key=lambda r: r["coverage"])
    a = summary["automation"]
    y_min = report.coverage_floor(rows, a["target_accuracy"])
    x = {"field": "coverage", "type": "quantitative", "title": "coverage: share of images accepted",
         "scale": {"domain": [0, 1.02], "nice": False}, "axis": {"format": ".0%", "tickCount": 10}}  # nice: to 110 %
    y = {"type": "quantitative", "title": "accuracy on accepted images", "scale": {"domain": [y_min, 1.005]},
         "axis": {"format": ".0%"}}
    target = {"values": [{"target": a["target_accuracy"], "label": f"target {pct(a['target_accuracy'])}"}]}
    layers = [
        # the band answers no hover (it lies under most of the plot): the points of the curve do
        {"mark": {"type": "area", "opacity": 0.2, "color": "#1f77b4", "clip": True, "tooltip": False},
         "encoding": {"x": x, "y": {"field": "low", **y}, "y2": {"field": "high"}}},
        {"mark": {"type": "line", "color": "#1f77b4", "clip": True, "tooltip": False},
         "encoding": {"x": x, "y": {"field": "accuracy", **y}}},
        {"mark": {"type": "point", "size": 120, "opacity": 0, "clip": True},  # invisible, wide hover targets
         "encoding": {"x": x, "y": {"field": "accuracy", **y},
                      "tooltip": [{"field": "threshold", "format": ".2f"},
                                  {"field": "coverage", "title": "accepted", "format": ".1%"},
                                  {"field": "accuracy", "title": "accuracy on them", "format": ".2%"},
                                  {"field": "low", "title": "95 % CI from", "format": ".1%"},
                                  {"field": "high", "title": "to", "format": ".1%"}]}},
        {"data": target, "mark": {"type": "rule", "strokeDash": [6, 4], "color": "#555"},
         "encoding": {"y": {"field": "target", **y}}},
        {"data": target, "mark": {"type": "text", "align": "left", "baseline": "top", "dx": 4, "dy": 4,
                                  "color": "#555"},
         "encoding": {"x": {"datum": 0, "type": "quantitative"}, "y": {"field": "target", **y},
                      "text": {"field": "label"}}},
    ]
    if report.marks_operating_point(a):
        layers.append({"data": {"values": [{"coverage": a["coverage"], "accuracy": a["accuracy"],
                                            "threshold": a["threshold"]}]},
                       "mark": {"type": "point", "filled": True, "size": 130, "color": "#d62728"},
                       "encoding": {"x": x, "y": {"field": "accuracy", **y},
                                    "tooltip": [{"field": "threshold", "format": ".3f"},
                                                {"field": "coverage", "title": "automated", "format": ".1%"},
                                                {"field": "accuracy", "format": ".2%"}]}})
    return {"height": 340, "data": {"values": rows}, "layer": layers}


def automation_table(table: pd.DataFrame, target_accuracy: float):
    """report.automation_frame to read: shares as the report writes them, the interval beside the accuracy, and
    whether the images accepted are enough to show the target at all (core.coverage.images_to_show)."""
    import pandas as pd

    from core.coverage import images_to_show

    needed = images_to_show(target_accuracy)
    return pd.DataFrame({
        "predicted digit": table["predicted digit"], "images": table["images"],
        "threshold": ["never predicted" if n == 0 else "none reaches the target" if pd.isna(v) else f"{v:.3f}"
                      for v, n in zip(table["threshold"], table["images"])],
        "automated": table["automated"].map(pct), "automated images": table["automated images"],
        "accuracy (95 % CI)": [_with_interval(*r) for r in
                               table[["accuracy", "accuracy_low", "accuracy_high"]].to_numpy(dtype=float)],
        "enough images to show it": ["" if pd.isna(v) else f"no: {k:,} of {needed:,}" if few and needed else
                                     "no: none can show 100 %" if few else "yes"
                                     for v, k, few in zip(table["threshold"], table["automated images"],
                                                          table["too few"])],
    }).style.hide(axis="index")


@st.fragment
@guarded
def automation_view(ctx: Context) -> None:
    import pandas as pd

    s = ctx.summary
    st.caption("A form pipeline accepts the model's answer when its confidence reaches a threshold and sends the "
               "rest to a person. As the threshold falls, more images are accepted (coverage) and accuracy on "
               "them drops. The threshold is chosen on these same images: confirm it on new labelled ones.")
    st.vega_lite_chart(coverage_chart(s), key="coverage_chart", width="stretch")
    st.caption("Line: accuracy on the images accepted at each threshold (hover for the threshold); band: its 95 % "
               "interval; dashed: the target"
               + (". Too few images to show the target: no point is chosen." if s["automation"].get("too_few")
                  else "; red dot: the threshold chosen, the lowest that keeps the target." if s["automation"].get(
                   "threshold") is not None else ". No threshold keeps the target: no point is chosen."))
    st.markdown("**Per predicted digit** (what a pipeline knows when it decides)")
    table = report.automation_frame(s["automation_per_digit"])
    # ten rows: a static table, laid out at once and fitting 1024 px
    st.table(automation_table(table, s["automation"]["target_accuracy"]))
    csv_download("Download per predicted digit (CSV)", table,
                 f"automation-per-digit-{ctx.ev.target}-{ctx.method}.csv", "dl_automation")
    curve = pd.DataFrame(s["coverage"])
    csv_download("Download risk-coverage (CSV)", curve, f"risk-coverage-{ctx.ev.target}-{ctx.method}.csv",
                 "dl_coverage")


# --- methods compared ------------------------------------------------------------------------------------------

def compare(ctx: Context) -> dict[str, Evaluation]:
    """Every reframing method on the data set; a method not yet cached shows its progress."""
    from core.evaluation import evaluate

    out = {}
    bar = st.empty()
    for k, m in enumerate(METHODS):
        if m == ctx.method:
            out[m] = ctx.ev
            continue

        def progress(f, k=k, m=m):
            bar.progress((k + f) / len(METHODS), text=f"Evaluating with {m}: {pct(f, 0)}")

        out[m] = evaluate(ctx.factory, ctx.dataset, m, model_path=ctx.model_path, progress=progress)
    bar.empty()
    return out


def method_colours(comp: pd.DataFrame) -> dict:
    """The colour encoding of the methods, the same in both charts of the Methods view (tab10, in their order)."""
    return {"field": "method", "type": "nominal", "sort": None, "legend": None,
            "scale": {"domain": list(comp["method"]), "range": list(svg.PALETTE[:len(comp)])}}


def methods_accuracy_chart(comp: pd.DataFrame) -> dict:
    """A Vega-Lite spec: each method's accuracy as a bar, labelled, with its 95 % interval."""
    rows = [{"method": r["method"], "accuracy": float(r["accuracy"]), "low": float(r["accuracy_low"]),
             "high": float(r["accuracy_high"]), "label": pct(r["accuracy"])} for _, r in comp.iterrows()]
    x = {"field": "method", "type": "nominal", "sort": None, "axis": {"labelAngle": 0}}
    y = {"type": "quantitative", "title": "accuracy", "scale": {"domain": [0, 1.05]}, "axis": {"format": ".0%"}}
    return {
        "title": "Accuracy (95 % interval)", "height": 320, "data": {"values": rows},
        "layer": [
            {"mark": {"type": "bar"},
             "encoding": {"x": x, "y": {"field": "accuracy", **y}, "color": method_colours(comp),
                          "tooltip": [{"field": "method"}, {"field": "accuracy", "format": ".2%"},
                                      {"field": "low", "title": "95 % CI from", "format": ".2%"},
                                      {"field": "high", "title": "to", "format": ".2%"}]}},
            {"mark": {"type": "rule", "color": "#222"},
             "encoding": {"x": x, "y": {"field": "low", **y}, "y2": {"field": "high"}}},
            {"mark": {"type": "text", "dy": -8},  # above the interval's top
             "encoding": {"x": x, "y": {"field": "high", **y}, "text": {"field": "label"}}},
        ],
    }


def methods_recall_chart(comp: pd.DataFrame) -> dict:
    """A Vega-Lite spec: recall per true digit, one bar per method side by side, every digit labelled, each with
    its 95 % interval (on two images of a digit, a recall of 50 % reaches from 9 % to 91 %)."""
    import pandas as pd

    def known(v):  # a digit the set lacks has no interval: null, which Vega-Lite leaves undrawn (NaN breaks JSON)
        return None if v is None or pd.isna(v) else float(v)

    rows = [{"method": r["method"], "digit": str(d), "recall": float(r[f"recall_{d}"]),
             "low": known(r[f"recall_{d}_low"]), "high": known(r[f"recall_{d}_high"])}
            for _, r in comp.iterrows() for d in range(10)]
    x = {"field": "digit", "type": "ordinal", "title": "true digit", "sort": None, "axis": {"labelAngle": 0}}
    y = {"type": "quantitative", "scale": {"domain": [0, 1.05]}, "axis": {"format": ".0%"}}
    return {
        "title": "Recall per digit (95 % interval)", "height": 380, "data": {"values": rows},
        "encoding": {"x": x, "xOffset": {"field": "method", "sort": None}},
        "layer": [
            {"mark": {"type": "bar"},
             "encoding": {"y": {"field": "recall", **y},
                          "color": method_colours(comp) | {"legend": {"orient": "top"}},
                          "tooltip": [{"field": "method"}, {"field": "digit"},
                                      {"field": "recall", "format": ".1%"},
                                      {"field": "low", "title": "95 % CI from", "format": ".1%"},
                                      {"field": "high", "title": "to", "format": ".1%"}]}},
            {"mark": {"type": "rule", "color": "#333333"},
             "encoding": {"y": {"field": "low", **y, "title": "recall"}, "y2": {"field": "high"}}},
        ],
    }


@st.fragment
@guarded
def methods_view(ctx: Context) -> None:
    evaluations = compare(ctx)
    comp = report.comparison_frame(evaluations)
    st.vega_lite_chart(methods_accuracy_chart(comp), key="acc_methods", width="stretch")
    st.vega_lite_chart(methods_recall_chart(comp), key="recall_methods", width="stretch")
    top, share = report.commonest_answers(evaluations["naive"]) if "naive" in evaluations else ([], 0.0)
    if share >= 0.5 and len(top) == 2:  # said only when this set shows it (on MNIST itself, naive reads well)
        st.caption(f"`naive` keeps the image's own polarity, and a dark-on-light digit is one the MNIST model never "
                   f"saw: {pct(share, 0)} of its answers here are {top[0]} or {top[1]}, so the recall of most digits "
                   "collapses.")
    csv_download("Download comparison (CSV)", comp, f"methods-{ctx.ev.target}.csv", "dl_methods")


# --- numbers ---------------------------------------------------------------------------------------------------

def numbers_key(ctx: Context) -> str:
    return f"numbers-{ctx.model_key}-{ctx.method}"


@st.fragment
@guarded
def numbers_view(ctx: Context) -> None:
    import pandas as pd

    method = ctx.method
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
                                 height=180, width=480, drawing_mode="freedraw", return_image_data=True,
                                 key="number_canvas").image_data
    if number_image is not None:
        reading = read_number(ctx.model_key, number_image, method, ctx.factory)
        if not reading.splits:
            st.info("No ink found: write a number of one to three digits.")
        else:
            st.metric("Recomposed number", reading.number)
            cols = st.columns(max(len(reading.splits), 1) * 2)
            for k, (sp, d, c) in enumerate(zip(reading.splits, reading.digits, reading.confidences)):
                cols[2 * k].image(thumbnail(sp.image, 84), caption=f"digit {k + 1}: cut out", clamp=True)
                cols[2 * k + 1].image(thumbnail(reframe(sp.image, method).image, 84), clamp=True,
                                      caption=f"reframed -> {d} ({pct(c, 0)})")

    st.markdown("**Evaluate on labelled numbers**")
    numbers_source = st.radio("Numbers set", ["built in", "upload a .zip"], horizontal=True, key="numbers_set",
                              help="Built in: 300 numbers 0-303 composed from scikit-learn digit scans. Upload: "
                                   "images whose file names start with the number, e.g. 127_0001.png.")
    nres = None
    try:
        if numbers_source == "built in":
            key = numbers_key(ctx)
            slot = st.empty()  # the button goes once the numbers are read, in the run that reads them
            if key not in st.session_state and slot.button("Read the 300 built-in numbers", key="read_numbers"):
                st.session_state[key] = builtin_numbers(ctx.model_key, method, ctx.factory)
                slot.empty()
            nres = st.session_state.get(key)
        else:
            nzip = st.file_uploader("A .zip of number images named like 127_0001.png", type=["zip"], key="nzip")
            if nzip:
                nres = numbers_zip(ctx.model_key, nzip.getvalue(), nzip.name, method, ctx.factory)
    except DigitLabError as e:
        show_error(e)
    if nres:
        a, b = st.columns([1, 2])
        from core.coverage import wilson_interval

        correct = int(round(nres["accuracy"] * nres["n"]))
        low, high = wilson_interval(correct, nres["n"]) if nres["n"] else (None, None)
        a.metric("Numbers read exactly right", pct(nres["accuracy"], 1), report.ci_text(low, high),
                 delta_color="off", delta_arrow="off",
                 help=f"{plural(nres['n'], 'number')}; included in the HTML report")
        per_length = pd.DataFrame(nres["per_length"]).rename(columns={"digits": "digits in the number"})
        per_length["accuracy"] = per_length["accuracy"].map(pct)  # written as the metric beside it
        b.dataframe(per_length, hide_index=True)
        if nres.get("skipped_files"):
            with st.expander(f"{plural(len(nres['skipped_files']), 'file')} skipped"):
                st.text("\n".join(nres["skipped_files"][:500]))


# --- the HTML report ---------------------------------------------------------------------------------------------

@st.fragment
@guarded
def html_view(ctx: Context, target_accuracy: float) -> None:
    adaptation = pickers.adaptation_result(adaptations_for(ctx.dataset.name, str(ctx.model_path), ctx.method,
                                                           home()), key="report_adaptation",
                                           scope="this data set with this model")
    st.markdown("**Verdict** (written from the measured numbers; it opens the HTML report)")
    lines = report.verdict(ctx.summary, adaptation, ctx.dataset.name, ctx.model_path)
    st.markdown("\n".join(f"- {md_escape(v)}" for v in lines))
    comparison = compare(ctx)
    numbers = st.session_state.get(numbers_key(ctx))
    included = ["the model's identity", "the data set", "every table with 95 % intervals",
                "confusion matrix, recall, risk-coverage charts", "the three methods compared"]
    included += ["the few-shot learning curve"] if adaptation else []
    included += ["the built-in numbers"] if numbers else []
    st.caption("Included: " + ", ".join(included) + "." + ("" if numbers else
               " To include the numbers of several digits, read them in the Numbers view first."))
    ev, dataset, summary, identity = ctx.ev, ctx.dataset, ctx.summary, ctx.identity

    def build() -> str:  # only when the button is pressed (deferred download): nothing here loads a model
        note = report.describe_dataset(dataset.name, dataset.provenance, dataset.labels, dataset.images,
                                       len(dataset.skipped))
        return report.build_html(ev, dataset.images, comparison, model=identity, dataset_note=note,
                                 numbers=numbers, adaptation=adaptation, target_accuracy=target_accuracy,
                                 files=dataset.files, summary=summary)

    st.download_button("Download the whole report (HTML, opens offline)", build,
                       f"report-{ev.target}-{ctx.method}.html", "text/html", key="dl_html", type="primary",
                       on_click="ignore", icon=":material/download:")
    st.caption("Or from a terminal: `python -m core report --target TARGET [--model M] [--adaptation ID] "
               "--out report.html`.")
