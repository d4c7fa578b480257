import errno
import json

import pytest

from core import runs, storage
from core.errors import DigitLabError, StorageError


def test_reference_runs_load_with_histories_and_sources():
    ref = runs.load_reference_runs()
    assert len(ref) == 11 and all(r.kind == "reference" for r in ref)
    assert {r.architecture for r in ref} == {"MLP", "CNN", "VGG16", "MobileNetV2"}
    lab3 = next(r for r in ref if r.id == "lab3-mnist-digit-cnn")
    assert lab3.test_accuracy == 0.9935 and "Valenzuela" in lab3.source and len(lab3.history()) == 20
    fashion = next(r for r in ref if r.id == "prac2-fashion-cnn-simple")
    assert fashion.best_val_accuracy is None  # training metrics only: no validation invented


def test_atomic_write_leaves_whole_files_and_no_temporaries(tmp_path):
    target = tmp_path / "run" / "history.csv"
    runs.atomic_write(target, "one")
    runs.atomic_write(target, "two")
    assert target.read_text() == "two" and [p.name for p in target.parent.iterdir()] == ["history.csv"]


def test_atomic_write_failure_keeps_the_previous_version(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    runs.atomic_write(target, "good")

    def boom(*a):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(storage.os, "replace", boom)
    with pytest.raises(StorageError, match=f"Could not write in {tmp_path}: no space left on device"):
        runs.atomic_write(target, "half")
    assert target.read_text() == "good" and len(list(tmp_path.iterdir())) == 1


def test_run_writer_and_listing(tmp_path):
    w = runs.RunWriter(tmp_path / "user" / "r1")
    w.write_config({"architecture": "mlp", "batch_size": 32})
    w.update_info(status="running", title="tiny", dataset="mnist-subset", params=10, trainable_params=10)
    w.append_epoch({"epoch": 1, "loss": 1.0, "accuracy": 0.5, "val_loss": 1.1, "val_accuracy": 0.4, "seconds": 2})
    w.append_epoch({"epoch": 2, "loss": 0.5, "accuracy": 0.7, "val_loss": 0.9, "val_accuracy": 0.6, "seconds": 4})
    w.write_metrics({"test_accuracy": 0.61})
    listed = {r.id: r for r in runs.list_runs(user_dir=tmp_path / "user")}
    r = listed["r1"]
    assert r.kind == "project" and r.architecture == "MLP" and r.epochs == 2
    assert r.best_val_accuracy == 0.6 and r.seconds_per_epoch == 3 and r.test_accuracy == 0.61
    assert "lab3-mnist-digit-cnn" in listed  # reference runs beside the project's


def test_unknown_run_id():
    with pytest.raises(DigitLabError, match="python -m core runs"):
        runs.get_run("nope")


def test_shipped_runs_cover_the_four_architectures():
    shipped = [r for r in runs.list_runs(include_reference=False) if r.path.startswith(str(runs.config.SHIPPED_RUNS_DIR))]
    assert {r.architecture for r in shipped} >= {"MLP", "CNN", "VGG16", "MobileNetV2"}
    for r in shipped:
        info = json.loads((runs.Path(r.path) / "run.json").read_text())
        assert r.status == "done" and r.epochs > 0 and r.test_accuracy is not None
        assert r.has_model or "rebuild" in info  # big models are rebuilt, not committed


def test_prune_large_model_keeps_the_run_and_says_how_to_rebuild(tmp_path):
    w = runs.RunWriter(tmp_path / "big")
    w.update_info(status="done", rebuild="python -m core train --arch vgg16")
    (tmp_path / "big" / "model.keras").write_bytes(b"\0" * 3000)
    assert runs.prune_large_model(tmp_path / "big", limit_mb=0.001)
    assert not (tmp_path / "big" / "model.keras").exists()
    assert "rebuild it with: python -m core train --arch vgg16" in runs.read_json(tmp_path / "big" / "run.json")["model_note"]
    w2 = runs.RunWriter(tmp_path / "small")
    w2.update_info(status="done")
    (tmp_path / "small" / "model.keras").write_bytes(b"\0" * 10)
    assert not runs.prune_large_model(tmp_path / "small", limit_mb=0.001) and (tmp_path / "small" / "model.keras").exists()
