"""Digit Reuse Lab core: reframing, data sets, models, training, jobs, runs and evaluation (no Streamlit here)."""
import os

# TensorFlow's C++ start-up chatter (CUDA probing, CPU feature notes) hides real messages from users.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
