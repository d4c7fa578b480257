"""The reused-model report as tables (pandas) and as one self-contained HTML file a stakeholder opens offline."""
from __future__ import annotations

import base64
import html
import time

import numpy as np
import pandas as pd

from core.evaluation import Evaluation, summary_metrics
from core.images import encode_png, thumbnail
from core.reframing import reframe

COUNT_COLUMNS = ["digit", "tp", "tn", "fp", "fn"]
RATE_COLUMNS = ["digit", "accuracy", "recall", "precision", "f1"]


def per_digit_frame(ev: Evaluation) -> pd.DataFrame:
    return pd.DataFrame(ev.per_digit())


def confusion_frame(ev: Evaluation, normalise: bool = False) -> pd.DataFrame:
    cm = ev.confusion_matrix().astype(float)
    if normalise:
        totals = np.bincount(ev.y_true, minlength=10)[:10].astype(float)  # blanks stay in the row's total
        cm = np.divide(cm, totals[:, None], out=np.zeros_like(cm), where=totals[:, None] > 0)
    df = pd.DataFrame(cm, index=[f"true {d}" for d in range(10)], columns=[f"pred {d}" for d in range(10)])
    return df if normalise else df.astype(int)


def comparison_frame(evaluations: dict[str, Evaluation]) -> pd.DataFrame:
    """Accuracy, macro F1 and per-digit recall of each reframing method on the same data set."""
    rows = []
    for method, ev in evaluations.items():
        s = summary_metrics(ev.y_true, ev.y_pred)
        row = {"method": method, "accuracy": s["accuracy"], "macro_f1": s["macro"]["f1"], "blank": ev.blank}
        row.update({f"recall_{r['digit']}": r["recall"] for r in ev.per_digit()})
        rows.append(row)
    return pd.DataFrame(rows)


def _img_tag(image, size: int = 56) -> str:
    data = base64.b64encode(encode_png(thumbnail(image, size))).decode()
    return f'<img src="data:image/png;base64,{data}" width="{size}" height="{size}">'


def _table(df: pd.DataFrame, weakest: list[str] = (), fmt: str = "{:.4f}") -> str:
    """An HTML table; the weakest value of each column in `weakest` is marked, as the paper does."""
    mins = {c: df[c].min() for c in weakest}
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = []
    for row in df.to_dict("records"):  # not iterrows(): it turns a row of ints and floats into all floats
        cells = []
        for c in df.columns:
            v = row[c]
            text = fmt.format(v) if isinstance(v, float) else html.escape(str(v))
            cls = ' class="weak"' if c in mins and v == mins[c] else ""
            cells.append(f"<td{cls}>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _heatmap(ev: Evaluation) -> str:
    cm = ev.confusion_matrix()
    totals = np.maximum(np.bincount(ev.y_true, minlength=10)[:10], 1)
    head = "<th>true \\ pred</th>" + "".join(f"<th>{d}</th>" for d in range(10))
    rows = []
    for t in range(10):
        cells = []
        for p in range(10):
            share = cm[t, p] / totals[t]
            color = f"rgba(31,119,180,{share:.2f})" if t == p else f"rgba(214,39,40,{min(1, 3 * share):.2f})"
            cells.append(f'<td style="background:{color}">{cm[t, p]}</td>')
        rows.append(f"<tr><th>{t}</th>{''.join(cells)}</tr>")
    return f"<table class='cm'><tr>{head}</tr>{''.join(rows)}</table>"


def build_html(ev: Evaluation, images, comparison: dict[str, Evaluation] | None = None,
               max_examples: int = 6) -> str:
    """One HTML file with every table, the confusion matrix and examples of the commonest mistakes."""
    s = summary_metrics(ev.y_true, ev.y_pred)
    per = per_digit_frame(ev)
    mistakes = []
    cm = ev.confusion_matrix()
    off = [(int(cm[t, p]), t, p) for t in range(10) for p in range(10) if t != p and cm[t, p] > 0]
    for count, t, p in sorted(off, reverse=True)[:8]:
        idx = ev.cell(t, p)[:max_examples]
        tags = "".join(_img_tag(images[i]) + _img_tag(reframe(images[i], ev.method).image) for i in idx)
        mistakes.append(f"<h4>true {t}, predicted {p}: {count} images (original, reframed)</h4><p>{tags}</p>")
    blanks = f"<p>{ev.blank} images had no ink and were not classified (counted as wrong).</p>" if ev.blank else ""
    skipped = (f"<p>{len(ev.skipped)} files were skipped:</p><ul>"
               + "".join(f"<li>{html.escape(x)}</li>" for x in ev.skipped[:50]) + "</ul>") if ev.skipped else ""
    comp = ""
    if comparison:
        comp = "<h2>Reframing methods compared</h2>" + _table(comparison_frame(comparison))
    css = ("body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;color:#222}"
           "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
           ".weak{background:#fdd;font-weight:bold}.cm td{min-width:2.5em}img{margin:2px;image-rendering:pixelated}")
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Reused-model report: {html.escape(ev.target)}</title>
<style>{css}</style></head><body>
<h1>Reused-model report</h1>
<p>Data set: <b>{html.escape(ev.target)}</b> ({html.escape(ev.provenance)}); {ev.n} images; reframing
method <b>{ev.method}</b>; generated {time.strftime('%Y-%m-%d %H:%M')} by Digit Reuse Lab.</p>
<h2>Headline</h2>
{_table(pd.DataFrame([{"images": ev.n, "accuracy": s["accuracy"], "macro precision": s["macro"]["precision"],
                        "macro recall": s["macro"]["recall"], "macro F1": s["macro"]["f1"]}]))}
{blanks}{skipped}
<h2>Confusion matrix</h2>{_heatmap(ev)}
<h2>Per digit: TP, TN, FP, FN</h2>{_table(per[COUNT_COLUMNS])}
<h2>Per digit: accuracy, recall, precision, F1 (weakest marked)</h2>
{_table(per[RATE_COLUMNS], weakest=["accuracy", "recall", "precision", "f1"])}
{comp}
<h2>Commonest mistakes</h2>{''.join(mistakes) or '<p>None.</p>'}
</body></html>"""

