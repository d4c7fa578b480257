import numpy as np

from core.evaluation import BLANK, Evaluation
from core.report import build_html, confusion_frame, per_digit_frame


def tiny_evaluation():
    imgs = np.full((4, 28, 28), 255, np.uint8)
    for i in range(3):
        imgs[i, 4:24, 10 + i:14 + i] = 0
    y_true, y_pred = np.array([1, 1, 7, 3]), np.array([1, 7, 7, BLANK])
    proba = np.eye(10, dtype=np.float32)[np.maximum(y_pred, 0)]
    return Evaluation("tiny", "four constructed images", "paper", y_true, y_pred, proba, ["x.png: corrupt"]), imgs


def test_html_report_is_self_contained_and_formats_counts_as_integers():
    ev, imgs = tiny_evaluation()
    html = build_html(ev, imgs)
    assert "<script" not in html and "http" not in html  # opens offline
    assert "<td>4</td>" in html and "4.0000" not in html  # image count, an integer
    assert "<td>0.5000</td>" in html  # accuracy 2 / 4
    assert html.count("data:image/png;base64,") == 2  # the one mistake (1 read as 7): original and reframed
    assert "x.png: corrupt" in html and "1 images had no ink" in html


def test_row_normalised_confusion_keeps_blanks_in_the_row_total():
    ev, _ = tiny_evaluation()
    cm = confusion_frame(ev, normalise=True)
    assert cm.loc["true 1", "pred 1"] == 0.5 and cm.loc["true 1", "pred 7"] == 0.5
    assert cm.loc["true 3"].sum() == 0.0  # its only image was blank
    assert list(per_digit_frame(ev).columns[:5]) == ["digit", "tp", "tn", "fp", "fn"]
