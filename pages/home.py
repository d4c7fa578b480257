import streamlit as st

from core.config import REUSED_MODEL_DIR
from core.runs import read_json
from core.wording import pct
from ui.nav import ensure_app_navigation

ensure_app_navigation()

st.title("Digit Reuse Lab")
st.markdown(
    """
**Model reuse** means taking a model trained for one job, here a small convolutional network trained on MNIST
handwritten digits, and putting it to work on data it has never seen, such as digits from your scanned forms,
*without retraining it*.

The catch is **domain shift**: your images differ from the training images in ways the model never learned.
A phone photo has dark ink on white paper, lots of margin and uneven light; MNIST has white ink on black, the
digit centred in a 20x20 box inside 28x28. Fed a raw photo, the model answers one or two digits for almost everything.

**Input reframing** (Pacchiotti et al., *Electronic Journal of Statistics* 23(1), 2024) leaves the model
unchanged and puts the effort into the input: single channel, pad to a square, add an MNIST-like margin,
resize to 28x28, invert. Each page here lets you see and measure what that buys.
"""
)



def reused_model_info() -> dict:
    """run.json and metrics.json of the shipped model ({} when missing or unreadable).

    Read here, not through ui.cache: that module imports core.models, hence NumPy and OpenCV, which cost the
    first page of a fresh server ~1.3 s (profiled) and which this page does not need; the background warm-up
    imports them right after. Two small files: read on every run, so a retrained model shows at once.
    """
    info = {}
    for name in ("run.json", "metrics.json"):
        try:
            info.update(read_json(REUSED_MODEL_DIR / name))
        except FileNotFoundError:
            pass
        except (OSError, ValueError):  # damaged: say the model is missing rather than fail the home page
            return {}
    return info


info = reused_model_info()
if "test_accuracy" in info:
    c1, c2, c3 = st.columns(3)
    c1.metric("MNIST test accuracy", pct(info['test_accuracy'], 2), help=info.get("test_set", ""))
    c2.metric("Trainable parameters", f"{info['trainable_params']:,}")
    c3.metric("Trained on", f"{info['data']['train']['n']:,} digits", help=info["data"]["train"]["provenance"])
else:
    st.warning("The reused model is missing from models/reused-cnn; see the README to train it.")

st.subheader("Pages")
# Short link labels (a page link never wraps: long ones are cut at 1024 px), then what the page does.
PAGES = [
    ("pages/draw.py", "Draw & Reframe", ":material/draw:", "draw or upload a digit; every reframing stage"),
    ("pages/report.py", "Reused-model report", ":material/table_chart:",
     "accuracy with its interval, confusion matrix, automation, a stakeholder report"),
    ("pages/shift.py", "Domain shift", ":material/compare_arrows:", "what differs between MNIST and your digits"),
    ("pages/adapt.py", "Few-shot adaptation", ":material/model_training:", "what k labels per class buy"),
    ("pages/my_digits.py", "My digits", ":material/collections:", "the digits you drew and labelled"),
    ("pages/training.py", "Training Runs", ":material/monitoring:", "MLP, CNN, VGG16, MobileNetV2 and published runs"),
]
for path, title, icon, what in PAGES:
    link, text = st.columns([1, 2], vertical_alignment="center")
    link.page_link(path, label=title, icon=icon)
    text.caption(what)
