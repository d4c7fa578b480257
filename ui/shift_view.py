"""The Domain shift page's cached computations and charts (core.shift does the work)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from core import shift

DOMAIN_COLOURS = {"source": "#1f77b4", "target": "#ff7f0e"}
DOMAIN_NAMES = {"source": "MNIST (source)", "target": "target"}


def dataset_key(dataset) -> str:
    """A content hash of a data set's images and labels: the cache key of everything measured on it."""
    from core.evaluation import fingerprint

    return fingerprint(dataset.images, dataset.labels)


@st.cache_data(show_spinner=False, max_entries=1)
def source_dataset():
    return shift.load_source()


@st.cache_data(show_spinner=False, max_entries=3)
def source_properties(method: str) -> shift.DomainProperties:
    """MNIST through both views (the same for every target: computed once per method and process)."""
    return shift.domain_properties(source_dataset(), method)


@st.cache_data(show_spinner=False, max_entries=12)
def target_properties(_dataset, key: str, method: str) -> shift.DomainProperties:
    # Keyed by the data set's content hash (key), not by hashing the images on every rerun.
    return shift.domain_properties(_dataset, method)


@st.cache_data(show_spinner=False, max_entries=8)
def features(_predictor, model_key: str, _target, target_key: str, method: str, per_domain: int,
             _source_index: np.ndarray, _target_index: np.ndarray) -> tuple[pd.DataFrame, np.ndarray]:
    return shift.feature_sample(_predictor, source_dataset(), _target, method, per_domain,
                                source_index=_source_index, target_index=_target_index)


@st.cache_data(show_spinner=False, max_entries=16)
def embedding(_features: np.ndarray, model_key: str, target_key: str, method: str, per_domain: int,
              kind: str) -> np.ndarray:
    # The features are those of features(...) with the same keys: the keys identify them.
    return shift.embed_2d(_features, kind)


def _edges(groups: list[np.ndarray], bins: int = 40) -> np.ndarray:
    """Shared bin edges for a property: one bin per value for small whole numbers (digit size), else `bins`
    bins from the lowest 0.5th to the highest 99.5th percentile of the groups (each domain and view), so that
    a few outliers do not squeeze the rest into a few bars and a small domain is not cut off by a large one."""
    groups = [g[np.isfinite(g)] for g in groups]
    groups = [g for g in groups if len(g)]
    if not groups:
        return np.array([0.0, 1.0])
    v = np.concatenate(groups)
    if np.allclose(v, np.round(v)) and v.max() - v.min() <= 60:
        return np.arange(v.min() - 0.5, v.max() + 1.0, 1.0)
    lo = min(np.percentile(g, 0.5) for g in groups)
    hi = max(np.percentile(g, 99.5) for g in groups)
    if hi - lo < 1e-9:
        lo, hi = v.min() - 0.5, v.max() + 0.5
    return np.linspace(lo, hi, bins + 1)


def histograms(long: pd.DataFrame, prop: str) -> go.Figure:
    """Overlaid histograms of one property, source vs target, before | after reframing (same bins and axes).

    Binned here with numpy: the browser gets 40 bars per trace instead of every image's value, and the y axis
    is set from the bars (Streamlit's plotly left it at [-1, 4] for faceted histograms: bars were cut off).
    """
    from plotly.subplots import make_subplots

    label, unit, _ = shift.PROPERTIES[prop]
    values = {(view, dom): long.loc[(long["view"] == view) & (long["domain"] == dom), prop].to_numpy(dtype=float)
              for view in ("before", "after") for dom in ("source", "target")}
    # width / height takes few distinct values (ratios of small whole numbers): fewer bins, no comb of gaps
    edges = _edges(list(values.values()), 24 if prop == "aspect" else 40)
    centres, widths = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.04,
                        subplot_titles=("before reframing", "after reframing"))
    top = 0.0
    for col, view in enumerate(("before", "after"), start=1):
        for dom in ("source", "target"):
            v = values[(view, dom)]
            v = v[np.isfinite(v)]
            pct = np.histogram(v, edges)[0] / max(len(v), 1) * 100  # of all images, those off the chart too
            top = max(top, float(pct.max(initial=0)))
            fig.add_trace(go.Bar(x=centres, y=pct, width=widths, name=DOMAIN_NAMES[dom], opacity=0.6,
                                 marker=dict(color=DOMAIN_COLOURS[dom], line_width=0), showlegend=False,
                                 hovertemplate="%{x:.3g}: %{y:.1f} %<extra>" + DOMAIN_NAMES[dom]
                                 + f", {view}</extra>"), row=1, col=col)
    fig.update_xaxes(title_text=unit, range=[edges[0], edges[-1]], title_font_size=12)
    fig.update_yaxes(range=[0, top * 1.08 or 1], ticksuffix=" %")
    fig.update_yaxes(title_text="% of images", title_font_size=12, col=1)
    fig.update_annotations(font_size=12)
    # No legend: at two charts per row on a 1024 px screen it wrapped into the plot; the page says which
    # colour is which once, above the charts.
    fig.update_layout(title=dict(text=label, x=0, y=0.97, font=dict(size=15)), height=270, barmode="overlay",
                      bargap=0, margin=dict(l=10, r=10, t=56, b=10))
    return fig


COLOUR_BY = {"domain": "domain", "right or wrong": "result", "digit": "digit"}


SYMBOLS = {"source": "circle", "target": "x"}


def feature_scatter(table: pd.DataFrame, xy: np.ndarray, colour_by: str, title: str) -> go.Figure:
    """The 2-D map: one point per image, MNIST as circles and the target as crosses, coloured as asked.

    One legend entry per colour (not per colour and shape: digits would make twenty), plus the two shapes.
    """
    d = table.assign(x=xy[:, 0], y=xy[:, 1], result=np.where(table["correct"], "right", "wrong"),
                     digit=table["label"].astype(str))
    column = COLOUR_BY[colour_by]
    if column == "domain":
        groups = [(DOMAIN_NAMES[k], DOMAIN_COLOURS[k], d["domain"] == k) for k in DOMAIN_NAMES]
    elif column == "result":  # wrong answers drawn last, so a handful stay visible among a thousand right ones
        groups = [("right", "#2ca02c", d["result"] == "right"), ("wrong", "#d62728", d["result"] == "wrong")]
    else:
        palette = px.colors.qualitative.T10
        groups = [(str(k), palette[k % len(palette)], d["label"] == k) for k in range(10)]
    fig = go.Figure()
    for name, colour, selected in groups:
        for dom, symbol in SYMBOLS.items():
            part = d[selected & (d["domain"] == dom)]
            if part.empty:
                continue
            fig.add_trace(go.Scatter(
                x=part["x"], y=part["y"], mode="markers", name=name, legendgroup=name,
                showlegend=not any(t.legendgroup == name for t in fig.data),
                marker=dict(color=colour, symbol=symbol, size=5, opacity=0.7),
                customdata=np.stack([part["label"], part["predicted"], part["confidence"] * 100], axis=1),
                hovertemplate=f"{DOMAIN_NAMES[dom]}<br>true %{{customdata[0]}}, predicted %{{customdata[1]}} "
                              "(%{customdata[2]:.0f} %)<extra></extra>"))
    if column != "domain":  # the shapes' key
        for dom, symbol in SYMBOLS.items():
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=DOMAIN_NAMES[dom],
                                       marker=dict(color="#777", symbol=symbol, size=7), hoverinfo="skip"))
    fig.update_layout(title=dict(text=title, x=0, font=dict(size=15)), height=440,
                      margin=dict(l=10, r=10, t=70, b=10), xaxis_title="", yaxis_title="",
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="left", x=0,
                                  itemsizing="constant", font=dict(size=11)))
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    return fig


def newest_adaptation(target_name: str, method: str) -> dict | None:
    """The newest saved few-shot adaptation result for this target, preferring the page's reframing method;
    None when there is none (or no core.adaptation in this build)."""
    try:
        from core.adaptation import load_results
    except ImportError:
        return None
    results = [r for r in load_results(target_name) if isinstance(r.get("summary"), list) and r["summary"]]
    if not results:
        return None
    return next((r for r in results if r.get("reframing") == method), results[0])


def adaptation_summary(result: dict) -> pd.DataFrame:
    """A saved adaptation's summary (one row per strategy and shots), for ui.render.learning_curve."""
    return pd.DataFrame(result["summary"]).sort_values(["strategy", "shots"])


def adaptation_sentence(result: dict) -> str:
    """What the most labels bought, from the summary: the best strategy at the largest k against zero-shot."""
    s = pd.DataFrame(result["summary"])
    k = int(s["shots"].max())
    best = s[s["shots"] == k].sort_values("mean", ascending=False).iloc[0]
    return (f"With {k} labelled target digits per class, {best['strategy']} reaches {best['mean']:.1%} "
            f"(± {best['std']:.1%} over {int(best['n'])} seeds) on the fixed test part, against {result['zero_shot']:.1%} "
            f"zero-shot; MNIST accuracy after it: {best['mnist_mean']:.1%}.")
