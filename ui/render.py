"""Small renderers shared by pages: headline figures, stage strips, framed thumbnails and charts."""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import cv2
import numpy as np
import streamlit as st

from core.adaptation import strategy_colour
from core.images import thumbnail
from core.reframing import Reframed, Stage
from core.wording import pct
from ui.safe import md_escape

if TYPE_CHECKING:
    import pandas as pd

#: Around every thumbnail: a dark frame, so a white stage (pad, margin) shows its extent on a white page.
FRAME_VALUE = 0.3
FRAME_PX = 2
#: Inside the frame, what is not image (a non-square stage shown square) is light gray, not white paper.
PAD_VALUE = 0.82
#: Stages per row: at 1024 px with the sidebar open the strip's column is ~270 px, and at three per row the
#: longest word of a caption ("grayscale", "centre") still fits on one line.
STAGES_PER_ROW = 3

# What each stage changed, in a few words (the core notes are sentences, too long under a 80-px thumbnail).
_SHORT = {
    "grayscale": "one channel",
    "pad to square": "cropped to the ink, made square",
    "margin": "border: the digit fills 20/28",
    "resize 28x28": "shrunk to MNIST's size",
    "invert": "already light on dark: levelled",
    "crop to ink": "cut to the ink",
    "fit 20x20": "longest side 20 px",
    "centre of mass": "ink's centre in the middle",
}
_NOTE_MAX = 30  # a core note this short is shown as it is (it may carry numbers: "gamma 1.30: enlarged 2.5x")


def kpi_row(figures: Sequence[tuple], key: str) -> None:
    """Headline figures side by side, each `(label, value[, note])`, laid out as st.metric: a small label, the
    value large (a heading without its link), and a grey note under it; the row wraps on a narrow screen.

    Markdown and headings, not st.metric, because the browser draws them with the page. Streamlit loads an
    element type's script the first time a page shows one (st.metric's, and for Markdown with HTML an HTML
    parser), and React 18 then reveals it no sooner than 0.5 s after the last loading placeholder it drew for
    any element. A page's headline therefore waited for its select boxes, chart and images: the Report on a
    fresh server, evaluation cached, showed its accuracy 1.70-1.96 s (1.90 median) after the request with
    st.metric, and 1.23-1.43 s (1.32) this way (probes, five fresh servers each, the page's own clock).
    """
    with st.container(horizontal=True, gap="medium", key=key):
        for label, value, *note in figures:
            with st.container(gap=None, width="content"):
                st.markdown(f":small[{md_escape(label)}]")
                st.header(md_escape(value), anchor=False)
                if note and note[0]:
                    st.caption(md_escape(note[0]))


def framed(image: np.ndarray, size: int = 112) -> np.ndarray:
    """A stage or digit image as a size x size thumbnail inside a dark frame (float gray in [0, 1])."""
    inner = thumbnail(image, size - 2 * FRAME_PX, pad_value=PAD_VALUE)
    return cv2.copyMakeBorder(inner, *(FRAME_PX,) * 4, cv2.BORDER_CONSTANT, value=FRAME_VALUE)


def stage_caption(stage: Stage) -> str:
    """What a stage changed, short enough to wrap between words under a small thumbnail."""
    if stage.note and len(stage.note) <= _NOTE_MAX:
        return stage.note
    return _SHORT.get(stage.name, stage.note)


def stage_strip(reframed: Reframed, size: int = 112, per_row: int = STAGES_PER_ROW) -> None:
    """Every reframing stage as a framed, numbered thumbnail with its size and what it changed, in rows."""
    stages = list(reframed.stages)
    for start in range(0, len(stages), per_row):
        cols = st.columns(per_row)
        for i, (col, stage) in enumerate(zip(cols, stages[start:start + per_row]), start=start + 1):
            h, w = stage.image.shape[:2]
            col.image(framed(stage.image, size), caption=f"{i}. {stage.name}", clamp=True)
            # As wide as the thumbnail and centred under it, like the image's own caption, in any column width.
            col.caption(f"{w}x{h}: {stage_caption(stage)}", text_alignment="center", width=size)


def probability_chart(probabilities, height: int = 220) -> dict:
    """A Vega-Lite spec: the model's probability for each digit, the predicted one in red, every digit labelled.

    Vega-Lite, not plotly: a new tab loads plotly.js only for the first plotly chart it shows, and on the Draw
    page that was after the first stroke (mouse-up to the answer on a fresh tab: 1.6-2.3 s with plotly,
    0.8-0.9 s with this chart, 0.8-0.9 s with no chart; /tmp probe, 4 tabs each)."""
    p = [float(v) for v in probabilities]
    best = max(range(10), key=p.__getitem__)
    return {
        "title": "Class probabilities", "height": height,
        "data": {"values": [{"digit": str(d), "probability": p[d], "predicted": d == best} for d in range(10)]},
        "mark": {"type": "bar", "tooltip": True},
        "encoding": {
            "x": {"field": "digit", "type": "ordinal", "sort": None, "axis": {"labelAngle": 0}},
            "y": {"field": "probability", "type": "quantitative", "scale": {"domain": [0, 1]},
                  "axis": {"format": ".0%"}},
            "color": {"field": "predicted", "type": "nominal", "legend": None,
                      "scale": {"domain": [False, True], "range": ["#7f7f7f", "#d62728"]}},
            "tooltip": [{"field": "digit"}, {"field": "probability", "format": ".2%"}],
        },
    }


def count_bars(counts: dict[int, int], height: int = 220) -> dict:
    """A Vega-Lite spec: how many digits per label, every digit 0..9 on the axis (an empty class shows as a gap),
    each bar labelled with its count (Vega-Lite, as the Draw page's chart: no plotly.js to load)."""
    top = max(counts.values(), default=0)
    return {
        "title": "Saved digits per label", "height": height,
        "data": {"values": [{"label": str(d), "digits": counts.get(d, 0)} for d in range(10)]},
        "encoding": {
            "x": {"field": "label", "type": "ordinal", "sort": None, "axis": {"labelAngle": 0}},
            "y": {"field": "digits", "type": "quantitative", "scale": {"domain": [0, max(1, top) * 1.2]},
                  "axis": {"tickMinStep": 1, "format": "d"}},
        },
        "layer": [
            {"mark": {"type": "bar", "color": "#7f7f7f", "tooltip": True}},
            {"transform": [{"filter": "datum.digits > 0"}], "mark": {"type": "text", "dy": -8},
             "encoding": {"text": {"field": "digits"}}},
        ],
    }


def learning_curve(summary: pd.DataFrame, column: str = "mean", *, title: str, baseline: float,
                   baseline_label: str = "zero-shot", spread: str | None = "std", height: int = 360) -> dict:
    """A Vega-Lite spec of a few-shot adaptation's summary (core.adaptation: one row per strategy and shots):
    `column` against labelled images per class (log x, a tick at each k), one line per strategy, a band of
    +- `spread` when given, and the baseline dashed (zero-shot, before any adaptation)."""
    rows = []
    for r in summary.to_dict("records"):
        row = {"strategy": r["strategy"], "shots": int(r["shots"]), "value": float(r[column])}
        if spread:
            sd = r[spread]
            sd = 0.0 if sd is None or sd != sd else float(sd)  # one seed (None, NaN in a frame): no spread, no band
            row.update(low=max(0.0, row["value"] - sd), high=min(1.0, row["value"] + sd), band=r["strategy"])
        rows.append(row)
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    shots = sorted({r["shots"] for r in rows})
    # The k measured and a little room each side: a log scale rounded to powers of ten squeezed k = 5, 10 into
    # the right quarter (its axis began at 1), and put the k = 50 point under the baseline's label.
    x = {"field": "shots", "type": "quantitative", "title": "labels per class (k, log scale)",
         "scale": {"type": "log", **({"domain": [shots[0] / 1.3, shots[-1] * 1.3], "nice": False} if shots else {})},
         "axis": {"values": shots, "format": "d"}}
    # ".1~%": 98.4% on a narrow range (forgetting), 40% on a wide one
    y = {"type": "quantitative", "title": "accuracy", "axis": {"format": ".1~%"}, "scale": {"zero": False}}
    # the legend under the plot in two columns: in half a 1024-px page a row of three names was cut
    color = {"field": "strategy", "type": "nominal", "title": None,
             "legend": {"orient": "bottom", "columns": 2, "symbolType": "stroke"},
             "scale": {"domain": strategies, "range": [strategy_colour(s) for s in strategies]}}
    base = {"values": [{"baseline": baseline, "label": f"{baseline_label} {pct(baseline)}"}]}
    layers = [{"mark": {"type": "line", "point": True},
               "encoding": {"x": x, "y": {"field": "value", **y}, "color": color,
                            "tooltip": [{"field": "strategy"}, {"field": "shots", "title": "k"},
                                        {"field": "value", "title": "accuracy", "format": ".1%"}]}},
              {"data": base, "mark": {"type": "rule", "strokeDash": [6, 4], "color": "#333"},
               "encoding": {"y": {"field": "baseline", **y}}},
              {"data": base, "mark": {"type": "text", "align": "right", "baseline": "top", "dy": 4, "color": "#333"},
               "encoding": {"x": {"value": "width"}, "y": {"field": "baseline", **y}, "text": {"field": "label"}}}]
    if spread:
        layers.insert(0, {"mark": {"type": "area", "opacity": 0.15},
                          # its own field: a legend turned off for the strategy field is off in every layer
                          "encoding": {"x": x, "y": {"field": "low", **y}, "y2": {"field": "high"},
                                       "fill": {**color, "field": "band", "legend": None}}})
    return {"title": title, "height": height, "data": {"values": rows}, "layer": layers}
