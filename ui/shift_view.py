"""The Domain shift page's cached computations and charts (core.shift does the work)."""
from __future__ import annotations

import numpy as np
import pandas as pd
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


@st.cache_data(show_spinner=False, max_entries=24)
def chance_levels(method: str, n: int) -> pd.DataFrame:
    """What n MNIST digits show by chance (core.shift.chance_levels): 0.8-1.7 s against 10,000 MNIST digits,
    the same for every target of n images, so kept per method and n."""
    return shift.chance_levels(source_properties(method), n)


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


def histograms(long: pd.DataFrame, prop: str) -> dict:
    """A Vega-Lite spec: overlaid histograms of one property, source vs target, before reframing above after it
    (the same bins and axes, so a shift along x reads straight down).

    Binned here with numpy: the browser gets 40 bars per domain and view instead of every image's value. Stacked,
    not side by side: Streamlit fits only stacked panels to the column's width. Vega-Lite, as every chart of the
    product: a page's first plotly chart waited for plotly.js to load.
    """
    label, unit, _ = shift.PROPERTIES[prop]
    values = {(view, dom): long.loc[(long["view"] == view) & (long["domain"] == dom), prop].to_numpy(dtype=float)
              for view in ("before", "after") for dom in ("source", "target")}
    # width / height takes few distinct values (ratios of small whole numbers): fewer bins, no comb of gaps
    edges = _edges(list(values.values()), 24 if prop == "aspect" else 40)
    rows, top = [], 0.0
    for (view, dom), v in values.items():
        v = v[np.isfinite(v)]
        pct = np.histogram(v, edges)[0] / max(len(v), 1) * 100  # of all images, those off the chart too
        top = max(top, float(pct.max(initial=0)))
        rows += [{"view": view, "domain": DOMAIN_NAMES[dom], "start": float(a), "end": float(b), "pct": float(p)}
                 for a, b, p in zip(edges[:-1], edges[1:], pct) if p > 0]
    colour = {"field": "domain", "type": "nominal", "legend": None,  # the page says once which colour is which
              "scale": {"domain": list(DOMAIN_NAMES.values()), "range": [DOMAIN_COLOURS[d] for d in DOMAIN_NAMES]}}

    def panel(view: str, last: bool) -> dict:
        return {
            "title": {"text": f"{view} reframing", "fontSize": 12, "fontWeight": "normal", "anchor": "start"},
            "height": 80, "transform": [{"filter": {"field": "view", "equal": view}}],
            "mark": {"type": "bar", "opacity": 0.6, "binSpacing": 0},
            "encoding": {
                "x": {"field": "start", "type": "quantitative", "scale": {"domain": [float(edges[0]),
                                                                                     float(edges[-1])]},
                      "title": unit if last else None, "axis": {} if last else {"labels": False, "ticks": False}},
                "x2": {"field": "end"},
                "y": {"field": "pct", "type": "quantitative", "stack": None, "title": "% of images",
                      "scale": {"domain": [0, top * 1.08 or 1]}},
                "y2": {"datum": 0},  # bars up from 0: with x and x2 alone, Vega-Lite lays them on their side
                "color": colour,
                "tooltip": [{"field": "domain"}, {"field": "start", "title": "from", "format": ".3g"},
                            {"field": "end", "title": "to", "format": ".3g"},
                            {"field": "pct", "title": "% of images", "format": ".1f"}]}}

    return {"title": {"text": label, "anchor": "start"}, "data": {"values": rows}, "spacing": 14,
            "vconcat": [panel("before", False), panel("after", True)]}


COLOUR_BY = {"domain": "domain", "right or wrong": "result", "digit": "digit"}


SHAPES = {"source": "circle", "target": "cross"}


def feature_scatter(table: pd.DataFrame, xy: np.ndarray, colour_by: str, title: str) -> dict:
    """A Vega-Lite spec of the 2-D map: one point per image, MNIST as circles and the target as crosses,
    coloured as asked (wrong answers drawn last, so a handful stay visible among a thousand right ones)."""
    column = COLOUR_BY[colour_by]
    d = pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "domain": table["domain"].map(DOMAIN_NAMES),
                      "result": np.where(table["correct"], "right", "wrong"), "digit": table["label"].astype(str),
                      "predicted": table["predicted"], "confidence": table["confidence"].astype(float)})
    if column == "result":
        d = d.sort_values("result", kind="stable")
    scales = {"domain": {"domain": list(DOMAIN_NAMES.values()), "range": [DOMAIN_COLOURS[k] for k in DOMAIN_NAMES]},
              "result": {"domain": ["right", "wrong"], "range": ["#2ca02c", "#d62728"]},
              "digit": {"domain": [str(k) for k in range(10)], "scheme": "tableau10"}}
    hidden = {"labels": False, "ticks": False, "title": None, "grid": False}  # the map's axes have no units
    legend = {"orient": "top", "columns": 5 if column == "digit" else 2}
    # the domains' legend: with the colours' when they are the domains (Vega-Lite merges equal ones), else under
    # the map (beside the colours' legend at its top, it was cut in half on a 1024-px page)
    domain_legend = legend if column == "domain" else {"orient": "bottom"}
    domains = list(DOMAIN_NAMES.values())
    return {
        "title": {"text": title, "anchor": "start"}, "height": 380, "data": {"values": d.to_dict("records")},
        "mark": {"type": "point", "filled": True, "opacity": 0.7},
        "encoding": {
            "x": {"field": "x", "type": "quantitative", "axis": hidden, "scale": {"zero": False}},
            "y": {"field": "y", "type": "quantitative", "axis": hidden, "scale": {"zero": False}},
            "color": {"field": column, "type": "nominal", "scale": scales[column], "title": None, "legend": legend},
            "shape": {"field": "domain", "type": "nominal", "title": None, "legend": domain_legend,
                      "scale": {"domain": domains, "range": [SHAPES[k] for k in DOMAIN_NAMES]}},
            # the target's points larger: twenty drawn digits are otherwise lost among a thousand MNIST ones (in
            # the same legend as the shapes: a legend of its own, or none, took the shapes' away)
            "size": {"field": "domain", "type": "nominal", "title": None, "legend": domain_legend,
                     "scale": {"domain": domains, "range": [22, 60]}},
            "tooltip": [{"field": "domain"}, {"field": "digit", "title": "true"}, {"field": "predicted"},
                        {"field": "confidence", "format": ".0%"}],
        },
    }


def adaptations(target_name: str, method: str) -> list[dict]:
    """The saved few-shot results for this target, the one to show first: the shipped model's (the page measures
    it), then other models' (core.adaptation.results_to_cite: the newest with enough seeds, the page's reframing
    method first)."""
    from core.adaptation import load_results, results_to_cite
    from core.models import reused_model_path

    saved = load_results(target_name)
    shipped = results_to_cite(saved, reused_model_path(), method)
    return shipped + [r for r in results_to_cite(saved, None, method) if r not in shipped]


def adaptation_summary(result: dict) -> pd.DataFrame:
    """A saved adaptation's summary (one row per strategy and shots, in the order saved, as on the Adapt page),
    for ui.render.learning_curve."""
    return pd.DataFrame(result["summary"])

