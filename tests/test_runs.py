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


# --- rename and delete own runs --------------------------------------------------------------------------------

def own_run(run_id="r1", title="tiny", status="done", **config):
    """A run in the user's run store (the per-test DIGITLAB_HOME), written as training writes it."""
    w = runs.RunWriter(runs.user_runs_dir() / run_id)
    w.write_config({"architecture": "mlp", "batch_size": 32, **config})
    w.update_info(status=status, title=title, dataset="mnist-subset", params=10, trainable_params=10)
    w.append_epoch({"epoch": 1, "loss": 1.0, "accuracy": 0.5, "val_loss": 1.1, "val_accuracy": 0.4, "seconds": 2})
    w.write_metrics({"test_accuracy": 0.61})
    return w.path


def test_rename_run_rewrites_only_the_title():
    path = own_run()
    before = runs.read_json(path / "run.json")
    renamed = runs.rename_run("r1", "  Better\n name  ")
    assert renamed.title == "Better name" and runs.get_run("r1").title == "Better name"  # one line
    after = runs.read_json(path / "run.json")
    assert after == {**before, "title": "Better name"}
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "history.csv", "metrics.json", "run.json"]


@pytest.mark.parametrize("title, message", [("   ", "cannot be empty"), ("x" * 201, "at most 200 characters")])
def test_rename_run_refuses_an_empty_or_overlong_title(title, message):
    own_run()
    with pytest.raises(DigitLabError, match=message):
        runs.rename_run("r1", title)
    assert runs.get_run("r1").title == "tiny"


@pytest.mark.parametrize("run_id, why", [
    ("reused-cnn", "reused model shipped with the project"),
    ("mlp-mnist-subset", r"shipped with the project \(models/runs\)"),
    ("lab3-mnist-digit-cnn", "published reference run"),
])
def test_shipped_and_reference_runs_are_read_only(run_id, why):
    before = {p: p.read_bytes() for p in runs.config.MODELS_DIR.rglob("*.json")}
    with pytest.raises(DigitLabError, match=f"Cannot rename run '{run_id}': it is (the|a) .*{why}"):
        runs.rename_run(run_id, "mine now")
    with pytest.raises(DigitLabError, match=f"Cannot delete run '{run_id}': it is (the|a) .*{why}"):
        runs.delete_run(run_id)
    assert {p: p.read_bytes() for p in runs.config.MODELS_DIR.rglob("*.json")} == before
    assert runs.get_run(run_id)  # still listed


def test_unknown_run_cannot_be_renamed_or_deleted():
    with pytest.raises(DigitLabError, match="No run with id 'nope'"):
        runs.rename_run("nope", "x")
    with pytest.raises(DigitLabError, match="No run with id 'nope'"):
        runs.delete_run("nope")


def test_delete_run_removes_the_folder_and_leaves_no_trash():
    own_run("r1")
    own_run("r2")
    runs.delete_run("r1")
    assert [p.name for p in runs.user_runs_dir().iterdir()] == ["r2"]
    assert "r1" not in {r.id for r in runs.list_runs()}


def test_delete_run_moves_the_folder_aside_in_one_rename(monkeypatch):
    """If removing the files fails halfway, the run is already gone from every listing (hidden trash)."""
    own_run("r1")
    monkeypatch.setattr(runs.shutil, "rmtree", lambda *a, **k: None)  # removal "fails": nothing is removed
    runs.delete_run("r1")
    left = [p.name for p in runs.user_runs_dir().iterdir()]
    assert len(left) == 1 and left[0].startswith(".trash-r1-")
    assert "r1" not in {r.id for r in runs.list_runs()}
    monkeypatch.undo()
    own_run("r2")
    runs.delete_run("r2")  # the next delete removes the leftover too
    assert list(runs.user_runs_dir().iterdir()) == []


def test_delete_run_of_a_damaged_run_works():
    (own_run("bad") / "run.json").write_text("{")
    assert runs.get_run("bad").status == "damaged"
    with pytest.raises(DigitLabError, match="its files cannot be read"):
        runs.rename_run("bad", "x")
    runs.delete_run("bad")
    assert not (runs.user_runs_dir() / "bad").exists()


def test_delete_run_refuses_a_run_that_is_still_training(monkeypatch):
    from core import jobs
    from core.process import process_token
    from core.training import RunConfig

    path = own_run("live", status="running")
    runs.RunWriter(path).update_info(process=process_token())  # this process: alive
    with pytest.raises(DigitLabError, match="still training; stop its training first"):
        runs.delete_run("live")
    job = jobs.submit(RunConfig.preset("mlp", epochs=1), start_worker=False)
    own_run(runs.Path(job.run_dir).name, status="done")  # its job is queued (a worker may not have started)
    with pytest.raises(DigitLabError, match=f"still training; cancel job {job.id} first"):
        runs.delete_run(runs.Path(job.run_dir).name)
    assert path.exists() and runs.Path(job.run_dir).exists()


def test_rename_and_delete_are_refused_on_a_read_only_server(monkeypatch):
    from core.errors import ReadOnlyError

    own_run()
    monkeypatch.setenv("DIGITLAB_READ_ONLY", "1")
    with pytest.raises(ReadOnlyError, match="renaming runs is disabled"):
        runs.rename_run("r1", "x")
    with pytest.raises(ReadOnlyError, match="deleting runs is disabled"):
        runs.delete_run("r1")
    assert runs.get_run("r1").title == "tiny"


def test_cli_renames_and_deletes_own_runs(capsys):
    from core import cli

    own_run()
    assert cli.main(["runs", "rename", "r1", "From the CLI", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["title"] == "From the CLI"
    assert cli.main(["runs", "delete", "reused-cnn", "--json"]) == 2
    refused = capsys.readouterr()
    assert "read-only" in refused.out + refused.err and (runs.config.REUSED_MODEL_DIR / "run.json").exists()
    assert cli.main(["runs", "delete", "r1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"id": "r1", "deleted": True}
    assert not (runs.user_runs_dir() / "r1").exists()


def test_run_settings_of_project_and_reference_runs():
    own_run(learning_rate=0.001, optimizer="adam")
    mine = runs.run_settings(runs.get_run("r1"))
    assert list(mine)[:6] == list(runs.COMMON_SETTINGS)
    assert mine["batch_size"] == 32 and mine["learning_rate"] == 0.001 and mine["architecture"] == "MLP"
    ref = runs.run_settings(runs.get_run("lab3-mnist-digit-cnn"))
    assert ref == {"architecture": "CNN", "dataset": "MNIST (54k train / 6k val / 10k test)", "epochs run": 20,
                   "batch_size": 128}  # what was published, nothing invented
    assert runs.run_settings(runs.get_run("prac2-fashion-cnn-simple"))["params"] == 50186


@pytest.mark.parametrize("architecture, weights, start", [
    ("VGG16", "imagenet", "ImageNet"), ("MobileNetV2", "none", "scratch"), ("VGG16", "/data/my.h5", "weights file"),
    ("CNN", "none", ""), ("VGG16", "", ""),
])
def test_backbone_start_tells_transfer_from_scratch(architecture, weights, start):
    run = runs.RunInfo(id="r", kind="project", architecture=architecture, title="", dataset="", status="done",
                       epochs=1, test_accuracy=None, weights=weights)
    assert runs.backbone_start(run) == start


def test_published_transfer_and_scratch_runs_say_how_they_started():
    starts = {r.id: runs.backbone_start(r) for r in runs.load_reference_runs()}
    assert starts["prac2-fashion-vgg16-transfer"] == "ImageNet" and starts["tec-fashion-mobilenetv2"] == "ImageNet"
    assert starts["prac2-fashion-vgg16-scratch"] == "scratch" and starts["lab3-mnist-digit-cnn"] == ""
