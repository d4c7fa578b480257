"""Small renderers shared by pages: stage strips and charts."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from core.images import thumbnail
from core.reframing import Reframed


def stage_strip(reframed: Reframed, size: int = 112) -> None:
    """Every reframing stage as a labelled square thumbnail, left to right (gray padding is not image)."""
    cols = st.columns(len(reframed.stages))
    for i, (col, stage) in enumerate(zip(cols, reframed.stages), start=1):
        h, w = stage.image.shape[:2]
        col.image(thumbnail(stage.image, size), caption=f"{i}. {stage.name} ({w}x{h})", clamp=True)
        if stage.note:
            col.caption(stage.note)


def probability_bars(probabilities, height: int = 260) -> go.Figure:
    p = np.asarray(probabilities)
    colors = ["#d62728" if i == int(p.argmax()) else "#7f7f7f" for i in range(10)]
    fig = go.Figure(go.Bar(x=[str(d) for d in range(10)], y=p, marker_color=colors,
                           hovertemplate="digit %{x}: %{y:.2%}<extra></extra>"))
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=30, b=10), yaxis=dict(range=[0, 1], tickformat=".0%"), xaxis=dict(type="category"),
                      xaxis_title="digit", yaxis_title="probability", title="Class probabilities")
    return fig
