"""Digit Reuse Lab: entry point. `streamlit run app.py`"""
import streamlit as st

from ui import warmup
from ui.safe import guard

st.set_page_config(page_title="Digit Reuse Lab", page_icon=":material/draw:", layout="wide")

PAGES = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/draw.py", title="Draw & Reframe", icon=":material/draw:", url_path="draw"),
    st.Page("pages/my_digits.py", title="My digits", icon=":material/collections:", url_path="my_digits"),
    st.Page("pages/report.py", title="Reused-model report", icon=":material/table_chart:", url_path="report"),
    st.Page("pages/shift.py", title="Domain shift", icon=":material/compare_arrows:", url_path="shift"),
    st.Page("pages/adapt.py", title="Few-shot adaptation", icon=":material/model_training:", url_path="adapt"),
    st.Page("pages/training.py", title="Training Runs", icon=":material/monitoring:", url_path="training"),
]

# TensorFlow and the shipped model load in a process of their own, started with the first page load of this
# server (later calls cost a lock): drawing then never waits for them, and no page shares an interpreter with
# the import. Started before the page runs but only launched once no page has loaded for
# ui.warmup.START_DELAY_S, so pages reach the browser first, unless a page needs a model (a first Report to
# evaluate: it then waits for the child instead of importing TensorFlow here). The Draw page's first stroke
# does not wait for it: the shipped model's OpenCV twin answers (core/twin.py).
with guard():  # an unexpected error: a short message here, the traceback in the server log
    page = st.navigation(PAGES)
    warmup.start()
    page.run()
