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


def histograms(long: pd.DataFrame, prop: str) -> go.Figure:
    """Overlaid histograms of one property, source vs target, before | after reframing (shared x axis)."""
    label, unit, _ = shift.PROPERTIES[prop]
    data = long[["domain", "view", prop]].dropna()
    data = data.assign(domain=data["domain"].map(DOMAIN_NAMES))
    lo, hi = np.nanpercentile(data[prop], [0.5, 99.5]) if len(data) else (0.0, 1.0)
    if prop == "grey_levels" or hi - lo < 1e-9:
        lo, hi = float(data[prop].min()), float(data[prop].max())
    pad = (hi - lo) * 0.05 or 0.5
    fig = px.histogram(data, x=prop, color="domain", facet_col="view", barmode="overlay", histnorm="percent",
                       opacity=0.6, nbins=40, category_orders={"view": ["before", "after"],
                                                              "domain": list(DOMAIN_NAMES.values())},
                       color_discrete_map={DOMAIN_NAMES[k]: v for k, v in DOMAIN_COLOURS.items()},
                       range_x=[lo - pad, hi + pad], labels={prop: unit, "domain": ""})
    fig.for_each_annotation(lambda a: a.update(text=a.text.replace("view=", "") + " reframing"))
    fig.update_yaxes(title_text="", ticksuffix=" %")
    fig.update_yaxes(title_text="% of images", col=1)
    fig.update_layout(title=dict(text=label, x=0, y=0.98, font=dict(size=15)), height=270,
                      margin=dict(l=10, r=10, t=56, b=10), bargap=0.02,
                      legend=dict(orientation="h", yanchor="bottom", y=1.12, xanchor="right", x=1))
    return fig


COLOUR_BY = {"domain": "domain", "right or wrong": "result", "digit": "digit"}


def feature_scatter(table: pd.DataFrame, xy: np.ndarray, colour_by: str, title: str) -> go.Figure:
    """The 2-D map: one point per image, MNIST as circles and target as crosses."""
    d = table.assign(x=xy[:, 0], y=xy[:, 1], domain=table["domain"].map(DOMAIN_NAMES),
                     result=np.where(table["correct"], "right", "wrong"), digit=table["label"].astype(str))
    column = COLOUR_BY[colour_by]
    colours = ({DOMAIN_NAMES[k]: v for k, v in DOMAIN_COLOURS.items()} if column == "domain"
               else {"right": "#2ca02c", "wrong": "#d62728"} if column == "result" else None)
    # Wrong answers drawn last, so a handful of them stay visible among a thousand right ones.
    d = d.sort_values("result", kind="stable", ascending=True) if column == "result" else d
    fig = px.scatter(d, x="x", y="y", color=column, symbol="domain", color_discrete_map=colours,
                     symbol_map={DOMAIN_NAMES["source"]: "circle", DOMAIN_NAMES["target"]: "x"},
                     category_orders={"digit": [str(i) for i in range(10)], "result": ["right", "wrong"]},
                     hover_data={"label": True, "predicted": True, "confidence": ":.0%", "x": False, "y": False},
                     opacity=0.7, labels={"label": "true digit", "result": "", "domain": "", "digit": "digit"})
    fig.update_traces(marker=dict(size=5))
    fig.update_layout(title=dict(text=title, x=0, font=dict(size=15)), height=460,
                      margin=dict(l=10, r=10, t=40, b=10), xaxis_title="", yaxis_title="",
                      legend=dict(title_text="", itemsizing="constant"))
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    return fig
