"""The reused-model report as tables (pandas), a verdict written from the numbers, and one self-contained HTML
file a stakeholder opens offline (no JavaScript, images inline as PNG, charts inline as SVG).

Every share is written as a percentage, and every accuracy with its 95 % Wilson interval (core.coverage).
"""
from __future__ import annotations

import base64
import html
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pandas is imported where a table is built: a Report's title, metrics and headline reach
    import pandas as pd  # the browser before its ~0.4-s import on a fresh server

from core import svg
from core.adaptation import strategy_colour
from core.coverage import DEFAULT_TARGET, wilson_interval
from core.evaluation import BLANK, Evaluation, summary_metrics
from core.images import encode_png, thumbnail
from core.reframing import reframe
from core.wording import pct, plural, spread

COUNT_COLUMNS = ["digit", "tp", "tn", "fp", "fn"]
#: The rates table with its intervals: recall and precision each with the low and high end of its 95 % CI.
RATE_CI_COLUMNS = ["digit", "images", "accuracy", "recall", "recall_low", "recall_high", "precision",
                   "precision_low", "precision_high", "f1"]
#: Tiles per page in the "images behind a cell" view: four rows of six at 1024 px.
TILES_PER_PAGE = 24


def ci_text(low: float | None, high: float | None, digits: int = 1) -> str:
    """'95 % CI 93.0-95.1 %'."""
    if low is None or high is None:
        return "95 % CI n/a"
    return f"95 % CI {100 * low:.{digits}f}-{100 * high:.{digits}f} %"


def automation_claim(a: dict) -> tuple[str, str | None]:
    """The automation figure (core.coverage.automation) as (claim, details) in plain text, for the page, the HTML
    report and the CLI alike: ('Automate 96.1 % of digits at ≥ 99.0 % accuracy', 'threshold 0.998; accuracy
    99.0 %, 95 % CI 98.5-99.4 %'), or ('No confidence threshold reaches 99.0 % accuracy', None).

    When so few images are accepted that even all of them right could not show the target (`too_few`), the
    claim says that instead: a "100 %" on five saved digits is no evidence.
    """
    target = pct(a["target_accuracy"])
    if a.get("threshold") is None:
        return f"No confidence threshold reaches {target} accuracy", None
    details = f"threshold {a['threshold']:.3f}; accuracy {pct(a['accuracy'])}, {ci_text(a['low'], a['high'])}"
    if a.get("too_few"):
        from core.coverage import images_to_show

        # at 100 % no set is big enough: "too few images" would send the user looking for more
        claim = (f"Too few images to show ≥ {target} accuracy" if images_to_show(a["target_accuracy"]) else
                 f"No number of images can show {target} accuracy")
        return claim, f"{plural(a['accepted'], 'image')} accepted; {_enough_text(a['target_accuracy'])}; {details}"
    return f"Automate {pct(a['coverage'])} of digits at ≥ {target} accuracy", details


def _enough_text(target_accuracy: float) -> str:
    """'at least 381, all right, would show 99.0 %' (core.coverage.images_to_show)."""
    from core.coverage import images_to_show

    needed = images_to_show(target_accuracy)
    return (f"at least {needed:,}, all right, would show {pct(target_accuracy)}" if needed else
            "no number of images can show 100 %")


# --- tables -------------------------------------------------------------------------------------------------

def per_digit_frame(ev: Evaluation) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(ev.per_digit())


def confusion_frame(cm, y_true, normalise: bool = False, y_pred=None) -> pd.DataFrame:
    """The 10x10 confusion matrix `cm` (Evaluation.confusion_matrix(), or the `confusion_matrix` of its
    as_dict(): saved, so no scikit-learn import) as a labelled table; normalised by each true digit's images.

    When some images were blank (no ink: no prediction), a last column "blank" counts them, so that every row
    totals its digit's images (and its shares 1). With `y_pred`, unreadable images are left out of the rows'
    totals, as they are of `cm` and of every rate: skipped, they are no answer at all."""
    import pandas as pd

    from core.evaluation import UNREADABLE

    cm = np.asarray(cm, dtype=float)
    y_true = np.asarray(y_true, dtype=int)
    if y_pred is not None:
        y_true = y_true[np.asarray(y_pred) != UNREADABLE]
    totals = np.bincount(y_true, minlength=10)[:10].astype(float)
    blank = np.clip(totals - cm.sum(axis=1), 0, None)  # the images of each row that are in no cell of cm
    table = np.column_stack([cm, blank]) if blank.any() else cm
    if normalise:
        table = np.divide(table, totals[:, None], out=np.zeros_like(table), where=totals[:, None] > 0)
    columns = [f"pred {d}" for d in range(10)] + (["blank"] if blank.any() else [])
    df = pd.DataFrame(table, index=[f"true {d}" for d in range(10)], columns=columns)
    return df if normalise else df.astype(int)


def rates_frame(rows: list[dict]) -> pd.DataFrame:
    """Per digit: images, accuracy, recall and precision each with its 95 % Wilson interval, F1.

    `rows` is Evaluation.per_digit() (or the `per_digit` of its as_dict()).
    """
    import pandas as pd

    out = []
    for r in rows:
        tp, fp, fn = r["tp"], r["fp"], r["fn"]
        rl, rh = wilson_interval(tp, tp + fn) if tp + fn else (None, None)
        pl, ph = wilson_interval(tp, tp + fp) if tp + fp else (None, None)
        out.append({"digit": r["digit"], "images": tp + fn, "accuracy": r["accuracy"], "recall": r["recall"],
                    "recall_low": rl, "recall_high": rh, "precision": r["precision"], "precision_low": pl,
                    "precision_high": ph, "f1": r["f1"]})
    return pd.DataFrame(out, columns=RATE_CI_COLUMNS)


def comparison_frame(evaluations: dict[str, Evaluation]) -> pd.DataFrame:
    """Accuracy (with its 95 % CI), macro F1 and per-digit recall (each with its 95 % CI: recall_d, recall_d_low,
    recall_d_high) of each reframing method on one data set."""
    import pandas as pd

    rows = []
    for method, ev in evaluations.items():
        s = summary_metrics(ev.y_true, ev.y_pred)
        n, correct = ev.n, int(round(s["accuracy"] * ev.n))
        low, high = wilson_interval(correct, n)
        row = {"method": method, "accuracy": s["accuracy"], "accuracy_low": low, "accuracy_high": high,
               "macro_f1": s["macro"]["f1"], "blank": ev.blank}
        for r in rates_frame(ev.per_digit()).to_dict("records"):  # the per-digit table's recall and interval
            d = r["digit"]
            row.update({f"recall_{d}": r["recall"], f"recall_{d}_low": r["recall_low"],
                        f"recall_{d}_high": r["recall_high"]})
        rows.append(row)
    return pd.DataFrame(rows)


def commonest_answers(ev: Evaluation, k: int = 2) -> tuple[list[int], float]:
    """The k digits a model answers most often on a data set, and the share of its answers (blanks left out)
    they make up: a model that never saw such inputs tends to give the same one or two answers to all."""
    answers = ev.y_pred[ev.y_pred >= 0]
    if not len(answers):
        return [], 0.0
    counts = np.bincount(answers, minlength=10)
    top = [int(d) for d in np.argsort(-counts, kind="stable")[:k] if counts[d]]
    return top, float(counts[top].sum() / len(answers))


def automation_frame(rows: list[dict]) -> pd.DataFrame:
    """The automation figure per predicted digit (core.coverage.automation_per_digit) as a table."""
    import pandas as pd

    return pd.DataFrame([{"predicted digit": r["digit"], "images": r["predicted"], "threshold": r["threshold"],
                          "automated": r["coverage"], "automated images": r["accepted"], "accuracy": r["accuracy"],
                          "accuracy_low": r["low"], "accuracy_high": r["high"], "too few": bool(r.get("too_few"))}
                         for r in rows])


def usual_confusions(summary: dict, digit: int, top: int = 2) -> list[tuple[str, int]]:
    """What a true digit is most often mistaken for: [(predicted digit or 'blank', images)], commonest first."""
    row = summary["confusion_matrix"][digit]
    wrong = [(str(p), int(row[p])) for p in range(10) if p != digit and row[p] > 0]
    per = next(r for r in summary["per_digit"] if r["digit"] == digit)
    blanks = per["fn"] - sum(c for _, c in wrong)  # misses that are not in the matrix: no ink found
    if blanks > 0:
        wrong.append(("blank", blanks))
    return sorted(wrong, key=lambda w: -w[1])[:top]


# --- the images behind a cell ----------------------------------------------------------------------------------

def _framed(image, size: int) -> np.ndarray:
    inner = thumbnail(image, size - 4, pad_value=0.82)
    out = np.full((size, size), 0.3, np.float32)  # a dark frame: a white image still shows its extent
    out[2:-2, 2:-2] = inner
    return out


def pair_tile(original, reframed, size: int = 64, gap: int = 6) -> np.ndarray:
    """One image as uploaded and as the model saw it, side by side in one picture (float gray in [0, 1]).

    One picture per image keeps the two together in any layout (separate images drift apart in a grid).
    `reframed` None (a blank image) is shown as an empty gray square.
    """
    right = _framed(reframed, size) if reframed is not None else np.full((size, size), 0.82, np.float32)
    return np.concatenate([_framed(original, size), np.ones((size, gap), np.float32), right], axis=1)


def cell_order(ev: Evaluation, true_digit: int, predicted: int) -> list[int]:
    """Indices of the images behind a cell, most confident first (ties in data set order)."""
    idx = ev.cell(true_digit, predicted)
    conf = np.asarray(ev.probabilities)[idx].max(axis=1) if len(idx) else np.zeros(0)
    return [int(i) for i in idx[np.argsort(-conf, kind="stable")]]


def tile_caption(ev: Evaluation, i: int, files: list[str] | None = None, max_name: int | None = None) -> str:
    """'scan12.png: true 3, read 8 (87 %)': the file name when known, else the image's number; a name longer than
    max_name is cut in the middle ('2026…bcd0000.png'), keeping its end, where scans and saved digits differ."""
    name = Path(files[i]).name if files and i < len(files) else f"#{i + 1}"
    if max_name and len(name) > max_name >= 4:  # fewer keeps too little of either end to be worth a cut
        head = max(1, max_name // 4)
        name = name[:head] + "…" + name[-(max_name - head - 1):]
    p = int(ev.y_pred[i])
    said = "blank" if p == BLANK else f"read {p} ({pct(ev.probabilities[i].max(), 0)})"
    return f"{name}: true {int(ev.y_true[i])}, {said}"


def reframed_image(image, method: str):
    """The 28x28 model input of one image (None when blank)."""
    return reframe(image, method).image


# --- the model and the data set --------------------------------------------------------------------------------

def _keras_config(path: Path) -> tuple[dict | None, int | None]:
    """(architecture config, number of weights) read from a .keras or .h5 file without TensorFlow."""
    import io
    import json
    import zipfile

    import h5py

    def count(group) -> int:
        total = 0

        def add(_name, obj):
            nonlocal total
            if isinstance(obj, h5py.Dataset):
                total += int(obj.size)

        group.visititems(add)
        return total

    try:
        if path.suffix.lower() == ".h5":
            with h5py.File(path, "r") as f:
                raw = f.attrs.get("model_config")
                raw = raw.decode() if isinstance(raw, bytes) else raw
                weights = f["model_weights"] if "model_weights" in f else f
                return (json.loads(raw) if raw else None), count(weights)
        with zipfile.ZipFile(path) as zf:
            cfg = json.loads(zf.read("config.json"))
            with h5py.File(io.BytesIO(zf.read("model.weights.h5")), "r") as f:
                # the model's own weights; an optimizer's state (saved with a compiled model) is not a parameter
                params = sum(count(f[k]) for k in ("layers", "vars") if k in f)
            return cfg, params
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None, None


def _input_shape(cfg: dict) -> list | None:
    inner = cfg.get("config", {}) if isinstance(cfg, dict) else {}
    if inner.get("build_input_shape"):
        return list(inner["build_input_shape"])[1:]
    for layer in inner.get("layers", []):
        c = layer.get("config", {})
        shape = c.get("batch_shape") or c.get("batch_input_shape")
        if shape:
            return list(shape)[1:]
    return None


def describe_model(path: str | Path) -> dict:
    """core.models.model_identity plus name, parameters and input shape read from the file itself.

    Without TensorFlow (a page showing a cached evaluation never loads it): the architecture comes from the
    file's stored config, the parameter count from its weights (what Keras' count_params counts).
    """
    from core.models import model_identity, reused_model_path

    path = Path(path)
    info = model_identity(path)
    cfg, params = _keras_config(path)
    if cfg:
        info["name"] = cfg.get("config", {}).get("name") or cfg.get("class_name", "")
        shape = _input_shape(cfg)
        if shape:
            info["input_shape"] = shape
    if params:
        info["params"] = params
    info["shipped"] = path.resolve() == reused_model_path().resolve()
    info["path"] = str(path)  # what `python -m core ... --model` takes, for the verdict's advice
    return info


def model_lines(identity: dict) -> list[tuple[str, str]]:
    """The identity as (label, value) rows, in the order a reader needs them."""
    shape = identity.get("input_shape")
    rows = [("model", identity.get("title") or identity.get("name") or identity.get("file", "")),
            ("architecture", identity.get("name", "")),
            ("parameters", f"{identity['params']:,}" if identity.get("params") else ""),
            ("input shape", "x".join("?" if s is None else str(s) for s in shape) if shape else ""),
            ("file", identity.get("file", "") + (f" (run {identity['run']})" if identity.get("run") else "")),
            ("SHA-256", identity.get("sha256", "")),
            ("trained on", identity.get("trained_on", ""))]
    return [(k, str(v)) for k, v in rows if v]


def describe_dataset(name: str, provenance: str, labels, images, skipped: int = 0) -> str:
    """One paragraph: where the images come from, how many per digit, their sizes."""
    labels = np.asarray(labels)
    counts = np.bincount(labels[(labels >= 0) & (labels <= 9)], minlength=10)[:10]
    shapes = {tuple(np.asarray(im).shape[:2]) for im in (images if len(images) <= 20000 else images[:20000])}
    if len(shapes) == 1:
        (h, w), = shapes
        sizes = f"every image {w}x{h} pixels"
    elif shapes:
        sides = sorted(max(s) for s in shapes)
        sizes = f"images from {sides[0]} to {sides[-1]} pixels on their longer side"
    else:
        sizes = "no images"
    per = ", ".join(f"{d}: {int(c):,}" for d, c in enumerate(counts))
    text = f"{provenance}. {plural(len(labels), 'image')} ({sizes}); per digit {per}."
    missing = [str(d) for d in range(10) if counts[d] == 0]
    if missing:
        text += f" No images of digit(s) {', '.join(missing)}."
    if skipped:
        text += f" {plural(skipped, 'file')} could not be read and {'was' if skipped == 1 else 'were'} skipped."
    return text


def pick_adaptation(results: list[dict], model_path: str | Path, method: str | None = None,
                    result_id: str | None = None) -> dict | None:
    """The saved few-shot result (core.adaptation.load_results) the report cites for this model: the one with that
    id, else core.adaptation.results_to_cite's first; None when there is none for this model."""
    from core.adaptation import results_to_cite

    ranked = results_to_cite(results, model_path, method)
    if result_id is not None:
        return next((r for r in ranked if r.get("id") == result_id), None)
    return ranked[0] if ranked else None


# --- the verdict ----------------------------------------------------------------------------------------------

def verdict(summary: dict, adaptation: dict | None = None, target_name: str | None = None,
            model_path: str | Path | None = None) -> list[str]:
    """A few sentences written from the measured numbers: accuracy with its interval, the weakest digits and
    their usual confusions, the automation figure, and what k labels per class bought (when measured).

    `summary` is Evaluation.as_dict(target_accuracy); `adaptation` a saved result of core.adaptation;
    `model_path` the model under test (None: the shipped one).
    """
    n, acc = summary["n"], summary["accuracy"]
    low, high = summary["accuracy_ci"]
    target_name = target_name or summary.get("target", "this data set")
    out = [f"The model reads {pct(acc)} of the {plural(n, 'digit')} right ({ci_text(low, high)})"
           + (f"; {plural(summary['blank'], 'image')} had no ink and count as wrong." if summary.get("blank")
              else ".")]
    present = [r for r in summary["per_digit"] if r["tp"] + r["fn"] > 0]
    weak = sorted((r for r in present if r["recall"] < 1.0), key=lambda r: (r["recall"], r["digit"]))[:2]
    if not present:
        out.append("The data set has no labelled images, so no digit can be judged.")
    elif not weak:
        out.append("Every digit is read right: no confusions.")
    else:
        parts = []
        for r in weak:
            lo, hi = wilson_interval(r["tp"], r["tp"] + r["fn"])
            conf = usual_confusions(summary, r["digit"])
            said = " or ".join(f"{'blank' if p == 'blank' else p} ({c} of {r['tp'] + r['fn']})" for p, c in conf)
            parts.append(f"{r['digit']} (recall {pct(r['recall'])}, {ci_text(lo, hi)}; most often misread as {said})")
        word = "Weakest digit" if len(parts) == 1 else "Weakest digits"
        out.append(f"{word}: {' and '.join(parts)}.")
    a = summary.get("automation") or {}
    target = a.get("target_accuracy", DEFAULT_TARGET)
    if a.get("threshold") is None:
        out.append(f"No confidence threshold reaches {pct(target)} accuracy on this set: at that target every "
                   "digit still needs a person's check.")
    elif a.get("too_few"):
        out.append(f"At a {pct(target)} accuracy target, this set is too small to say how much can be automated: "
                   f"the model is right on {pct(a['accuracy'])} of the {plural(a['accepted'], 'digit')} it is most "
                   f"confident of ({ci_text(a['low'], a['high'])}), and {_enough_text(target)}. Label more "
                   "digits.")
    else:
        text = (f"At a {pct(target)} accuracy target, {pct(a['coverage'])} of the digits "
                f"({a['accepted']:,} of {n:,}) can be automated: accept the model's answer when its confidence is "
                f"at least {a['threshold']:.3f}; on those it is right {pct(a['accuracy'])} of the time "
                f"({ci_text(a['low'], a['high'])}). The other {pct(1 - a['coverage'])} go to a person.")
        if a["low"] is not None and a["low"] < target:
            text += (f" The interval's lower end ({pct(a['low'])}) is below the target: the threshold was chosen "
                     "on these same images, so confirm it on new labelled ones.")
        out.append(text)
    out.append(adaptation_sentence(adaptation, target, target_name, model_path))
    return out


def _best_per_k(adaptation: dict) -> dict[int, dict]:
    best: dict[int, dict] = {}
    for r in adaptation.get("summary", []):
        k = int(r["shots"])
        if k not in best or r["mean"] > best[k]["mean"]:
            best[k] = r
    return dict(sorted(best.items()))


def adaptation_sentence(adaptation: dict | None, target_accuracy: float, target_name: str,
                        model_path: str | Path | None = None) -> str:
    """What k labelled target digits per class bought, from a saved few-shot result; or how to measure it (for the
    model at model_path: the command names it unless it is the shipped model, which `adapt` takes by default)."""
    if not adaptation or not adaptation.get("summary"):
        from core.models import reused_model_path

        shipped = model_path is None or Path(model_path).resolve() == reused_model_path().resolve()
        model = "" if shipped else f" --model {model_path}"
        return (f"No few-shot adaptation has been measured for this data set with this model: run "
                f"\"python -m core adapt --target {target_name}{model}\" to measure what a few labelled digits per "
                "class would buy.")
    best = _best_per_k(adaptation)
    k = 10 if 10 in best else max(best)
    r = best[k]
    text = (f"With {plural(k, 'labelled digit')} per class, {r['strategy']} adaptation reached {pct(r['mean'])} "
            f"({spread(r.get('std'), int(r.get('n', 1)))}) on a held-out "
            f"part of {adaptation.get('n_test', 0):,} images, against {pct(adaptation.get('zero_shot'))} "
            f"zero-shot; MNIST accuracy after it: {pct(r.get('mnist_mean'))}.")
    reach = [(kk, rr) for kk, rr in best.items() if rr["mean"] >= target_accuracy]
    if reach:
        kk, rr = reach[0]
        text += (f" The fewest labels that reached {pct(target_accuracy)}: {kk} per class ({rr['strategy']}, "
                 f"{pct(rr['mean'])}).")
    else:
        text += f" No k measured (up to {max(best)} per class) reached {pct(target_accuracy)}."
    return text


# --- charts (static SVG) ---------------------------------------------------------------------------------------

def confusion_svg(summary: dict) -> str:
    totals = [r["tp"] + r["fn"] for r in summary["per_digit"]]  # blanks stay in the row's total
    return svg.heatmap(summary["confusion_matrix"], "Confusion matrix (images)", row_totals=totals)


def recall_svg(summary: dict, comparison: dict[str, Evaluation] | None = None) -> str:
    digits = [str(d) for d in range(10)]
    if comparison:
        series = {m: [r["recall"] for r in ev.per_digit()] for m, ev in comparison.items()}
    else:
        series = {summary["reframing"]: [r["recall"] for r in summary["per_digit"]]}
    return svg.bar_chart(digits, series, "Recall per digit" + (" and reframing method" if comparison else ""),
                         x_label="true digit", y_label="recall")


def coverage_floor(rows: list[dict], target_accuracy: float) -> float:
    """The lower edge of a risk-coverage chart's accuracy axis (rows: the coverage rows with images accepted), a
    multiple of 5 %: under the curve, the target and the band where every image is accepted, where the band is
    narrowest. Not the whole band: where a handful is accepted it reaches down to 60 % and would squeeze the
    curve against the top. But on a small set the whole band is wide, and cutting it at the curve drew 20 images
    as a solid block from 95 to 100 %."""
    lows = [r["accuracy"] for r in rows] + [target_accuracy]
    if rows:
        lows.append(max(rows, key=lambda r: r["coverage"])["low"])
    return float(max(0.0, np.floor((min(lows) - 0.01) * 20) / 20))


def marks_operating_point(automation: dict) -> bool:
    """Whether a risk-coverage chart marks the automation's threshold: there is one, and enough images accepted
    to show the target (with too few, no threshold is claimed anywhere)."""
    return automation.get("threshold") is not None and not automation.get("too_few")


def coverage_svg(summary: dict) -> str:
    """Accuracy on the accepted images against the share accepted, as the threshold rises (Wilson band)."""
    rows = [r for r in summary["coverage"] if r["accepted"]]
    rows = sorted(rows, key=lambda r: r["coverage"])
    a = summary["automation"]
    lows = [r["low"] for r in rows]
    y_min = coverage_floor(rows, a.get("target_accuracy", DEFAULT_TARGET))
    points = []
    if marks_operating_point(a):
        points.append((a["coverage"], a["accuracy"], f"{pct(a['coverage'])} automated (threshold "
                                                     f"{a['threshold']:.3f})"))
    line = {"name": "accuracy on accepted images", "x": [r["coverage"] for r in rows],
            "y": [r["accuracy"] for r in rows], "low": lows, "high": [r["high"] for r in rows]}
    return svg.line_chart([line], "Risk-coverage: accuracy on the accepted images (95 % band)",
                          x_label="coverage: share of images accepted (threshold falls to the right)",
                          y_label="accuracy", y_range=(float(y_min), 1.0),
                          hlines=[(a.get("target_accuracy", DEFAULT_TARGET),
                                   f"target {pct(a.get('target_accuracy', DEFAULT_TARGET))}")], points=points)


def kshot_svg(adaptation: dict) -> str:
    """The few-shot learning curve: accuracy on the test part against labelled images per class."""
    rows = adaptation.get("summary", [])
    shots = sorted({int(r["shots"]) for r in rows})
    pos = {k: i for i, k in enumerate(shots)}  # evenly spaced: 1, 2, 5, 10, 20, 50 read like a log axis
    lines = []
    for strategy in dict.fromkeys(r["strategy"] for r in rows):
        mine = sorted((r for r in rows if r["strategy"] == strategy), key=lambda r: r["shots"])
        lines.append({"name": strategy, "x": [pos[int(r["shots"])] for r in mine], "y": [r["mean"] for r in mine],
                      "errors": [r.get("std") or 0 for r in mine], "markers": True, "color": strategy_colour(strategy)})
    lows = [r["mean"] - (r.get("std") or 0) for r in rows] + [adaptation.get("zero_shot") or 1.0]
    y_min = float(np.floor(max(0.0, min(lows) - 0.02) * 10) / 10)
    return svg.line_chart(lines, "Few-shot adaptation: accuracy on the held-out part", "labelled images per class",
                          "accuracy", x_range=(-0.3, max(len(shots) - 0.7, 0.7)), y_range=(y_min, 1.0),
                          x_ticks=[(i, str(k)) for k, i in pos.items()],
                          hlines=[(adaptation["zero_shot"], f"zero-shot {pct(adaptation['zero_shot'])}")]
                          if adaptation.get("zero_shot") is not None else ())


# --- the HTML file ---------------------------------------------------------------------------------------------

def _img_tag(image, caption: str = "") -> str:
    data = base64.b64encode(encode_png(image)).decode()
    h, w = np.asarray(image).shape[:2]
    img = f'<img src="data:image/png;base64,{data}" width="{w}" height="{h}" alt="{html.escape(caption)}">'
    return f"<figure>{img}<figcaption>{html.escape(caption)}</figcaption></figure>" if caption else img


#: How each kind of column is written in the HTML tables.
PERCENT_COLUMNS = {"accuracy", "recall", "precision", "f1", "macro_f1", "macro precision", "macro recall",
                   "macro F1", "automated", "mean", "std", "mnist_mean", "recall_low", "recall_high",
                   "precision_low", "precision_high", "accuracy_low", "accuracy_high", "zero-shot", "MNIST after"}


def _cell(column: str, v) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return ""
    if isinstance(v, (bool, np.bool_)):  # before int: a bool is one, and was written 1 or 0
        return "yes" if v else "no"
    if isinstance(v, (float, np.floating)):
        if column in PERCENT_COLUMNS or column.startswith("recall") or column in ("", "share"):
            return pct(v)
        return f"{v:.3f}"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    return html.escape(str(v))


def _table(df: pd.DataFrame, weakest: list[str] = ()) -> str:
    """An HTML table in a box that scrolls sideways rather than run past the page; the weakest value of each
    column in `weakest` is marked, as the paper does."""
    mins = {c: df[c].min() for c in weakest}
    head = "".join(f"<th>{html.escape(str(c)).replace('_', ' ')}</th>" for c in df.columns)
    body = []
    for row in df.to_dict("records"):  # not iterrows(): it turns a row of ints and floats into all floats
        cells = []
        for c in df.columns:
            v = row[c]
            cls = ' class="weak"' if c in mins and v == mins[c] else ""
            cells.append(f"<td{cls}>{_cell(c, v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<div class="wide"><table><tr>{head}</tr>{"".join(body)}</table></div>'


def _methods_section(comparison: dict[str, Evaluation]) -> str:
    import pandas as pd

    comp = comparison_frame(comparison)
    summary = comp[["method", "accuracy", "accuracy_low", "accuracy_high", "macro_f1", "blank"]]
    # Digits as rows, methods as columns: three columns fit any page, thirteen did not.
    recall = pd.DataFrame({"digit": list(range(10)),
                           **{f"recall {m}": [comp.loc[i, f"recall_{d}"] for d in range(10)]
                              for i, m in enumerate(comp["method"])}})
    return ("<h2>Reframing methods compared</h2>" + _table(summary)
            + "<h3>Recall per digit and method</h3>" + _table(recall))


def _adaptation_section(adaptation: dict) -> str:
    import pandas as pd

    # the spread in points, as the verdict writes it; blank for one seed, which measures none
    rows = pd.DataFrame([{"strategy": r["strategy"], "labelled per class": int(r["shots"]), "mean": r["mean"],
                          "± points": "" if r.get("std") is None else f"{100 * r['std']:.1f}",
                          "seeds": int(r.get("n", 1)), "MNIST after": r.get("mnist_mean")}
                         for r in adaptation.get("summary", [])])
    return (f"<h2>What a few labels per class buy</h2><p>Saved few-shot result "
            f"{html.escape(str(adaptation.get('id', '')))}: "
            f"{adaptation.get('n_test', 0):,} held-out images of {html.escape(str(adaptation.get('target', '')))}, "
            f"reframing {html.escape(str(adaptation.get('reframing', '')))}; zero-shot "
            f"{pct(adaptation.get('zero_shot'))}.</p>" + kshot_svg(adaptation) + _table(rows))


def _numbers_section(numbers: dict) -> str:
    import pandas as pd

    per = pd.DataFrame([{"digits in the number": r["digits"], "numbers": r["n"], "accuracy": r["accuracy"]}
                        for r in numbers.get("per_length", [])])
    n = int(numbers.get("n", 0))
    correct = int(round(numbers.get("accuracy", 0.0) * n))
    low, high = wilson_interval(correct, n)
    return (f"<h2>Numbers of several digits</h2><p>{html.escape(str(numbers.get('provenance', '')))}: split into "
            f"digits, each reframed ({html.escape(str(numbers.get('reframing', '')))}) and classified, the number "
            f"recomposed. <b>{pct(numbers.get('accuracy'))}</b> of {n:,} numbers read exactly right "
            f"({ci_text(low, high)}).</p>" + _table(per))


def build_html(ev: Evaluation, images, comparison: dict[str, Evaluation] | None = None, max_examples: int = 6, *,
               model: dict | None = None, dataset_note: str = "", numbers: dict | None = None,
               adaptation: dict | None = None, target_accuracy: float | None = None,
               files: list[str] | None = None, summary: dict | None = None) -> str:
    """One HTML file: verdict, the model's identity, the data set, every table with intervals, the charts
    inline (confusion matrix, recall, risk-coverage, k-shot curve), methods, numbers and the commonest mistakes.

    `model` is describe_model(path); `numbers` core.numbers.evaluate_numbers' result (with `provenance`);
    `adaptation` a saved few-shot result; `summary` ev.as_dict(target_accuracy) when already computed.
    """
    import pandas as pd

    s = summary or ev.as_dict(target_accuracy)
    a = s["automation"]
    low, high = s["accuracy_ci"]
    cm = np.asarray(s["confusion_matrix"])
    per = pd.DataFrame(s["per_digit"])
    mistakes = []
    off = [(int(cm[t, p]), t, p) for t in range(10) for p in range(10) if t != p and cm[t, p] > 0]
    for count, t, p in sorted(off, reverse=True)[:8]:
        idx = cell_order(ev, t, p)[:max_examples]
        tags = "".join(_img_tag(pair_tile(images[i], reframed_image(images[i], ev.method), 56),
                                tile_caption(ev, i, files)) for i in idx)
        mistakes.append(f"<h4>true {t}, read as {p}: {plural(count, 'image')} (each: as given, and as the model "
                        f"saw it; most confident first)</h4><div class='tiles'>{tags}</div>")
    blanks = (f"<p>{plural(ev.blank, 'image')} had no ink and {'was' if ev.blank == 1 else 'were'} not classified "
              "(counted as wrong).</p>") if ev.blank else ""
    skipped = (f"<p>{plural(len(ev.skipped), 'file')} {'was' if len(ev.skipped) == 1 else 'were'} skipped:</p><ul>"
               + "".join(f"<li>{html.escape(x)}</li>" for x in ev.skipped[:50]) + "</ul>") if ev.skipped else ""
    identity = ("<h2>Model under test</h2><table class='kv'>" + "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in model_lines(model))
        + "</table>") if model else ""
    headline = pd.DataFrame([{"images": ev.n, "accuracy": s["accuracy"], "accuracy_low": low, "accuracy_high": high,
                              "macro precision": s["macro"]["precision"], "macro recall": s["macro"]["recall"],
                              "macro F1": s["macro"]["f1"]}])
    claim, details = automation_claim(a)
    auto_text = (f"<b>{html.escape(claim)}</b> ({html.escape(details)})." if details else
                 f"<b>{html.escape(claim)}</b>: every digit needs a person's check.")
    css = ("body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}"
           "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
           "td{white-space:nowrap}"
           ".kv th{text-align:left;background:#f6f6f6}.kv td{text-align:left;white-space:normal;overflow-wrap:anywhere}"
           ".wide{max-width:100%;overflow-x:auto}.weak{background:#fdd;font-weight:bold}"
           ".verdict{background:#f3f7fb;border-left:4px solid #1f77b4;padding:.5em 1.5em}"
           ".tiles{display:flex;flex-wrap:wrap;gap:8px}figure{margin:0;font-size:12px;max-width:130px}"
           "figcaption{overflow-wrap:anywhere}img{image-rendering:pixelated}svg{display:block;margin:.5em 0}"
           "@media print{.wide{overflow:visible}}")
    sections = [
        "<h2>Verdict</h2><ul class='verdict'>"
        + "".join(f"<li>{html.escape(v)}</li>" for v in verdict(s, adaptation, ev.target, (model or {}).get("path")))
        + "</ul>",
        identity,
        f"<h2>Data set</h2><p>{html.escape(dataset_note or ev.provenance)}</p>",
        f"<h2>Headline</h2>{_table(headline)}<p>{auto_text}</p>{blanks}{skipped}",
        f"<h2>Confusion matrix</h2>{confusion_svg(s)}",
        f"<h2>Per digit</h2>{recall_svg(s, comparison)}<h3>TP, TN, FP, FN</h3>{_table(per[COUNT_COLUMNS])}"
        f"<h3>Accuracy, recall, precision, F1 (weakest marked; recall and precision with their 95 % CI)</h3>"
        f"{_table(rates_frame(s['per_digit']), weakest=['recall', 'precision', 'f1'])}",
        f"<h2>How much can be automated</h2><p>The model's answer is accepted when its confidence reaches a "
        f"threshold; the rest go to a person. {auto_text}</p>{coverage_svg(s)}"
        f"<h3>Per predicted digit</h3>{_table(automation_frame(s['automation_per_digit']))}",
        _methods_section(comparison) if comparison else "",
        _adaptation_section(adaptation) if adaptation and adaptation.get("summary") else "",
        _numbers_section(numbers) if numbers else "",
        f"<h2>Commonest mistakes</h2>{''.join(mistakes) or '<p>None.</p>'}",
    ]
    title = html.escape(ev.target)
    return (f'<!doctype html><html><head><meta charset="utf-8"><meta name="viewport" '
            f'content="width=device-width, initial-scale=1"><title>Reused-model report: {title}</title>'
            f"<style>{css}</style></head><body><h1>Reused-model report</h1>"
            f"<p>Data set: <b>{title}</b>; {plural(ev.n, 'image')}; reframing method <b>{html.escape(ev.method)}</b>; "
            f"generated {time.strftime('%Y-%m-%d %H:%M')} by Digit Reuse Lab.</p>"
            + "".join(sections) + "</body></html>")
