import json
import subprocess
import sys

import cv2
import numpy as np

from tests.conftest import ROOT, canvas


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_predict_json(tmp_path):
    one, blank, bad = tmp_path / "one.png", tmp_path / "blank.png", tmp_path / "bad.png"
    cv2.imwrite(str(one), canvas([((140, 50), (140, 230))], rgba=False))
    cv2.imwrite(str(blank), np.full((100, 100), 255, np.uint8))
    bad.write_text("not an image")
    r = run_cli("predict", str(one), str(blank), str(bad), "--reframing", "paper", "--json")
    out = json.loads(r.stdout)
    assert r.returncode == 1  # one file failed
    assert [o["file"] for o in out] == [str(one), str(blank), str(bad)]
    assert out[0]["digit"] == 1 and out[0]["blank"] is False and out[0]["reframing"] == "paper"
    assert len(out[0]["probabilities"]) == 10 and abs(sum(out[0]["probabilities"]) - 1) < 1e-4
    assert out[0]["confidence"] == max(out[0]["probabilities"])
    assert out[1]["blank"] is True and out[1]["digit"] is None
    assert "not an image" in out[2]["error"]


def test_bad_reframing_names_valid_values():
    r = run_cli("predict", "x.png", "--reframing", "magic")
    assert r.returncode == 2 and "naive" in r.stderr and "mnist" in r.stderr
