"""Faults in training runs and jobs: nothing lost, nothing half-written, every run and job resolves.

Each test builds its own run store under the per-test DIGITLAB_HOME (tests/conftest.py). Subprocesses cost a
TensorFlow import each, so only the faults that need a real process (kill, two workers) use one.
"""
import errno
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from core import cli, jobs, runs
from core.errors import InvalidOptionError, JobError, StorageError
from core.training import RunConfig, train
from tests.conftest import ROOT, tiny, wait_for


@pytest.fixture(autouse=True)
def offline(offline_keras):
    pass



def spawn(*args):
    return subprocess.Popen([sys.executable, "-m", "core", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ))



def run_cli(argv, capsys):
    """core.cli.main in this process (no TensorFlow import unless the command trains): (status, out, err)."""
    status = cli.main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def snapshot(folder: Path) -> dict:
    """Every file under a folder with its bytes: to check that a fault changed nothing it should not."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- every run and job has its own folder -------------------------------------------------------------------

def test_two_jobs_queued_in_the_same_second_by_one_process_get_two_folders(monkeypatch):
    monkeypatch.setattr(runs, "new_run_id", lambda arch: "20261123-101010-mlp")  # the same second, for sure
    first, second = jobs.submit(tiny(epochs=1), start_worker=False), jobs.submit(tiny(epochs=2), start_worker=False)
    assert first.run_dir != second.run_dir
    assert jobs.run_worker() == 2
    h1, h2 = (runs.read_history(Path(jobs.get_job(j.id).run_dir) / "history.csv") for j in (first, second))
    assert (len(h1), len(h2)) == (1, 2)  # each kept its own history: nothing overwritten
    listed = {r.path: r for r in runs.list_runs(include_reference=False)}
    assert listed[first.run_dir].status == listed[second.run_dir].status == "done"


def test_allocated_run_folders_are_unique_and_created(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "new_run_id", lambda arch: "same")
    made = [runs.allocate_run_dir("cnn", tmp_path) for _ in range(3)]
    assert [p.name for p in made] == ["same", "same-2", "same-3"] and all(p.is_dir() for p in made)


def test_a_run_store_that_cannot_be_written_names_the_folder_and_cause(tmp_path, monkeypatch):
    def read_only(self, *a, **k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(StorageError, match=r"Could not write in .*runs: the file system is read-only"):
        runs.allocate_run_dir("cnn")


# --- one damaged run costs only itself ----------------------------------------------------------------------

DAMAGE = {
    "garbage run.json": ("run.json", b"{not json", "run.json is not valid JSON"),
    "empty run.json": ("run.json", b"", "run.json is empty"),
    "run.json a list": ("run.json", b"[1, 2]", "run.json holds a list"),
    "garbage metrics.json": ("metrics.json", b"\x00\xff garbage", "metrics.json is not valid JSON"),
    "metrics not a number": ("metrics.json", b'{"test_accuracy": "high"}', "test_accuracy is 'high', not a number"),
    "garbage config.json": ("config.json", b"nope", "config.json is not valid JSON"),
    "history not numeric": ("history.csv", b"epoch,loss\n1,0.5\n2,abc\n", "history.csv: line 3, column 'loss'"),
}


def make_run(folder: Path, status="done") -> Path:
    w = runs.RunWriter(folder)
    w.write_config({"architecture": "mlp", "batch_size": 16})
    w.update_info(status=status, title="good run", dataset="mnist-subset")
    w.append_epoch({"epoch": 1, "loss": 1.0, "accuracy": 0.5, "val_loss": 1.1, "val_accuracy": 0.4, "seconds": 1})
    w.write_metrics({"test_accuracy": 0.5})
    return folder


@pytest.mark.parametrize("case", DAMAGE)
def test_a_damaged_run_is_listed_with_its_reason_and_the_others_still_load(case):
    user = runs.user_runs_dir()
    make_run(user / "a-good")
    bad = make_run(user / "b-bad")
    name, content, reason = DAMAGE[case]
    (bad / name).write_bytes(content)
    listed = {r.id: r for r in runs.list_runs()}
    assert listed["a-good"].status == "done" and listed["a-good"].test_accuracy == 0.5
    assert listed["b-bad"].status == "damaged" and reason in listed["b-bad"].problem
    assert "lab3-mnist-digit-cnn" in listed  # the reference runs are still there
    assert "b-bad" not in {r.id for r in runs.runs_with_models()}  # the Draw page never loads a damaged run


def test_runs_cli_lists_damaged_runs_with_reasons_and_exits_0(capsys):
    user = runs.user_runs_dir()
    for k, (name, content, _) in enumerate(DAMAGE.values()):
        (make_run(user / f"bad-{k}") / name).write_bytes(content)
    status, out, err = run_cli(["runs", "--json"], capsys)
    assert status == 0 and "Traceback" not in out + err
    damaged = [r for r in json.loads(out) if r["status"] == "damaged"]
    assert len(damaged) == len(DAMAGE) and all(r["problem"] for r in damaged)
    status, out, _ = run_cli(["runs"], capsys)
    assert status == 0 and "damaged: run.json is empty" in out


def test_a_damaged_reference_index_is_one_damaged_entry(tmp_path):
    (tmp_path / "runs.json").write_text('[{"id": "x", "history_csv": "missing.csv"}, 7]')
    listed = runs.load_reference_runs(tmp_path)
    assert [r.status for r in listed] == ["damaged", "damaged"]
    assert "KeyError" in listed[0].problem and "entry 2" in listed[1].problem


# --- runs and jobs always resolve ---------------------------------------------------------------------------

def test_a_killed_foreground_run_reads_as_interrupted(tmp_path):
    out = tmp_path / "fg"
    proc = spawn("train", "--arch", "mlp", "--epochs", "500", "--max-samples", "200", "--early-stopping", "0",
                 "--out", str(out))
    try:
        assert wait_for(lambda: len(runs.read_history(out / "history.csv")) >= 1), proc.stderr.read()
        before = runs.load_project_run(out)
        assert before.status == "running"
        proc.kill()  # SIGKILL: no chance to write anything
        proc.wait(30)
    finally:
        proc.kill()
    after = runs.load_project_run(out)
    assert after.status == "interrupted" and "epochs it finished are kept" in after.problem
    assert after.epochs >= 1  # the finished epochs are still there


def test_sigterm_marks_a_foreground_run_interrupted_at_once(tmp_path):
    out = tmp_path / "fg"
    proc = spawn("train", "--arch", "mlp", "--epochs", "500", "--max-samples", "200", "--early-stopping", "0",
                 "--out", str(out))
    try:
        assert wait_for(lambda: len(runs.read_history(out / "history.csv")) >= 1)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "Traceback" not in err
    assert runs.read_json(out / "run.json")["status"] == "interrupted"


def test_a_worker_killed_mid_epoch_fails_its_job_and_the_queue_goes_on():
    first = jobs.submit(RunConfig.preset("mlp", epochs=500, max_samples=200, early_stopping=None))
    second = jobs.submit(tiny(), start_worker=False)
    assert wait_for(lambda: jobs.get_job(first.id).epoch >= 1)
    os.kill(jobs.get_job(first.id).pid, signal.SIGKILL)
    assert wait_for(lambda: jobs.get_job(first.id).status == "failed", 30)
    failed = jobs.get_job(first.id)
    assert "stopped unexpectedly" in failed.error
    assert runs.load_project_run(Path(failed.run_dir)).status == "failed"
    # the queued job waits for no one: reading the queue as the page and CLI do starts a worker for it
    jobs.list_jobs(start_worker=True)
    assert wait_for(lambda: jobs.get_job(second.id).status == "done")


def test_two_workers_started_at_once_run_each_job_exactly_once():
    queued = [jobs.submit(tiny(), start_worker=False) for _ in range(2)]
    procs = [spawn("worker"), spawn("worker")]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    ran = sorted(int(o.split()[2]) for o in outputs)  # "worker ran N job(s)"
    assert sum(ran) == 2 and ran[0] in (0, 1)
    done = [jobs.get_job(j.id) for j in queued]
    assert [j.status for j in done] == ["done", "done"] and done[0].run_dir != done[1].run_dir


def test_a_job_cancelled_while_queued_leaves_no_run_folder():
    job = jobs.submit(tiny(), start_worker=False)
    assert Path(job.run_dir).is_dir()  # reserved when queued
    cancelled = jobs.cancel(job.id)
    assert cancelled.status == "cancelled" and cancelled.run_dir is None
    assert not Path(job.run_dir).exists()


def test_a_running_job_being_cancelled_shows_cancelling(capsys):
    job = jobs.submit(tiny(), start_worker=False)
    with jobs._connect() as con:
        con.execute("UPDATE jobs SET status='running', pid=? WHERE id=?", (os.getpid(), job.id))
    status, out, _ = run_cli(["jobs", "cancel", str(job.id)], capsys)
    assert status == 0 and "cancelling (stops after the current epoch)" in out
    assert jobs.get_job(job.id).shown_status == "cancelling"
    assert json.loads(run_cli(["jobs", "--json"], capsys)[1])[0]["shown_status"] == "cancelling"


# --- a corrupt job database is set aside, kept, and replaced ------------------------------------------------

def test_a_garbage_job_database_is_set_aside_and_a_fresh_queue_starts(capsys):
    jobs.jobs_dir().mkdir(parents=True)
    jobs._db_path().write_bytes(b"this is not a database" * 100)
    assert jobs.list_jobs() == []
    aside = jobs.set_aside_databases()
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not a database")  # kept, not deleted
    assert "set aside as" in capsys.readouterr().err
    assert jobs.submit(tiny(), start_worker=False).id == 1  # the fresh queue works


def test_a_truncated_job_database_is_set_aside(capsys):
    for _ in range(3):
        jobs.submit(tiny(), start_worker=False)
    jobs._checked.clear()  # as a new process would: check the file again
    db = jobs._db_path()
    with sqlite3.connect(db) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 2])
    status, out, err = run_cli(["jobs", "--json"], capsys)
    assert status == 0 and json.loads(out) == [] and "Traceback" not in err
    assert len(jobs.set_aside_databases()) == 1


# --- nothing half-written -----------------------------------------------------------------------------------

def test_disk_full_while_saving_the_model_leaves_no_file_and_says_so(tmp_path, monkeypatch):
    from core import training

    class HalfSave:
        def __init__(self, model):
            pass

        def save(self, path):
            Path(path).write_bytes(b"PK\x03\x04 half a model")
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(training, "inference_copy", HalfSave)
    job = jobs.submit(tiny(), start_worker=False)
    jobs.run_worker(once=True)
    failed = jobs.get_job(job.id)
    assert failed.status == "failed"
    assert failed.error.splitlines()[0] == f"Could not write in {failed.run_dir}: no space left on device."
    run_dir = Path(failed.run_dir)
    assert not (run_dir / "model.keras").exists() and not list(run_dir.glob(".*tmp*"))
    info = runs.read_json(run_dir / "run.json")
    assert info["status"] == "failed" and "no space left on device" in info["error"]


def test_a_failure_leaves_the_other_runs_unchanged(monkeypatch):
    good = make_run(runs.user_runs_dir() / "kept")
    before = snapshot(good)
    monkeypatch.setattr("core.training.load_data", lambda cfg: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError):
        train(tiny(), runs.user_runs_dir() / "new")
    assert snapshot(good) == before
    assert runs.load_project_run(runs.user_runs_dir() / "new").status == "failed"


# --- every option is checked before anything starts ---------------------------------------------------------

@pytest.mark.parametrize("option, value, message", [
    ("epochs", 0, "epochs must be an integer from 1 to 1000; got 0"),
    ("epochs", 10**9, "epochs must be an integer from 1 to 1000"),
    ("batch_size", 0, "batch_size must be an integer from 1 to 4096; got 0"),
    ("learning_rate", -1.0, "learning_rate must be a number from 1e-07 to 1; got -1.0"),
    ("learning_rate", float("nan"), "learning_rate must be a number"),
    ("max_samples", 0, "max_samples must be an integer from 20 to 60000 (or none); got 0"),
    ("max_samples", 1, "max_samples must be an integer from 20 to 60000"),
    ("early_stopping", -1, "early_stopping must be an integer from 1 to 100 (or none); got -1"),
    ("elastic_copies", 99, "elastic_copies must be an integer from 0 to 20"),
    ("input_size", 32, "input_size must be 28; got 32"),
    ("fine_tune_layers", 3, "fine_tune_layers must be 0; got 3"),
    ("epochs", 2.5, "epochs must be an integer"),
    ("weights", "imagenet", "weights must be 'none' for mlp"),
])
def test_bad_options_name_the_valid_range(option, value, message):
    with pytest.raises(InvalidOptionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        RunConfig.preset("mlp", **{option: value})


@pytest.mark.parametrize("arch, option, value, message", [
    ("vgg16", "input_size", 200, "input_size must be an integer from 32 to 96; got 200"),
    ("vgg16", "fine_tune_layers", 20, "fine_tune_layers must be an integer from 0 to 19; got 20"),
    ("mobilenetv2", "fine_tune_epochs", -1, "fine_tune_epochs must be an integer from 0 to 1000"),
    ("mobilenetv2", "fine_tune_learning_rate", 0.0, "fine_tune_learning_rate must be a number from 1e-08 to 1"),
])
def test_bad_transfer_options_name_the_valid_range(arch, option, value, message):
    with pytest.raises(InvalidOptionError, match=message):
        RunConfig.preset(arch, weights="none", **{option: value})


def test_backbone_layer_limits_match_keras():
    import keras

    from core.training import BACKBONE_LAYERS

    assert len(keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3)).layers) == \
        BACKBONE_LAYERS["vgg16"]
    assert len(keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(32, 32, 3),
                                              pooling="avg").layers) == BACKBONE_LAYERS["mobilenetv2"]


@pytest.mark.parametrize("argv", [
    ["train", "--batch-size", "0"], ["train", "--max-samples", "1"], ["train", "--lr", "-1"],
    ["train", "--epochs", "1000000000"], ["train", "--early-stopping", "-1", "--background"],
    ["train", "--arch", "vgg16", "--weights", "none", "--input-size", "20", "--background"],
])
def test_the_cli_refuses_bad_options_before_anything_starts(argv, capsys):
    status, out, err = run_cli([*argv, "--json"], capsys)
    assert status == 2 and "must be" in json.loads(out)["error"] and "Traceback" not in out + err
    assert jobs.list_jobs() == [] and not runs.user_runs_dir().exists()


def test_an_unexpected_error_prints_one_line_and_logs_the_traceback(monkeypatch, capsys):
    def broken(args):
        raise RuntimeError("something odd")

    monkeypatch.setattr(cli, "cmd_runs", broken)
    status, out, err = run_cli(["runs", "--json"], capsys)
    assert status == 1 and "Traceback" not in out + err
    assert json.loads(out)["error"].startswith("unexpected RuntimeError: something odd (details in ")
    log = Path(os.environ["DIGITLAB_HOME"]) / "logs" / "cli.log"
    assert "Traceback" in log.read_text() and "something odd" in log.read_text()


def test_job_errors_are_plain(monkeypatch):
    with pytest.raises(JobError, match="No job with id 5"):
        jobs.cancel(5)


# --- the pages show faults as messages, never as exceptions -------------------------------------------------

def test_training_page_lists_damaged_and_interrupted_runs_and_the_set_aside_queue():
    from streamlit.testing.v1 import AppTest

    user = runs.user_runs_dir()
    make_run(user / "a-good")
    (make_run(user / "b-bad") / "metrics.json").write_text("{")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    killed = runs.RunWriter(make_run(user / "c-killed"))
    killed.update_info(status="running", process={"pid": dead.pid, "host": socket.gethostname()})
    jobs.jobs_dir().mkdir(parents=True)
    jobs._db_path().write_bytes(b"garbage" * 50)
    at = AppTest.from_file("../pages/training.py", default_timeout=120).run()
    assert not at.exception
    table = at.dataframe[1].value.set_index("id")  # the details table: every column, the problem too
    assert table.loc["a-good", "status"] == "done"
    assert table.loc["b-bad", "status"] == "damaged" and "metrics.json" in table.loc["b-bad", "problem"]
    assert table.loc["c-killed", "status"] == "interrupted"
    warnings = " ".join(w.value for w in at.warning)
    assert "b-bad" in warnings and "c-killed" in warnings and "set aside as" in warnings


def test_training_page_shows_a_pending_cancel_as_cancelling():
    from streamlit.testing.v1 import AppTest

    job = jobs.submit(tiny(), start_worker=False)
    with jobs._connect() as con:
        con.execute("UPDATE jobs SET status='running', pid=?, cancel_requested=1 WHERE id=?", (os.getpid(), job.id))
    at = AppTest.from_file("../pages/training.py", default_timeout=120).run()
    assert not at.exception
    assert any("cancelling" in m.value for m in at.markdown)
    assert at.button(key=f"cancel_{job.id}").disabled


def test_draw_page_compares_models_beside_a_damaged_run():
    from streamlit.testing.v1 import AppTest

    from tests.conftest import canvas
    from tests.test_pages import _upload, png

    (make_run(runs.user_runs_dir() / "bad") / "run.json").write_text("")
    at = AppTest.from_file("../pages/draw.py", default_timeout=120).run()
    _upload(at, "one.png", png(canvas([((140, 50), (140, 230))], rgba=False)))
    at.toggle(key="others").set_value(True).run()
    assert not at.exception and len(at.dataframe[-1].value) >= 3
