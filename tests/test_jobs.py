"""The job queue: runs, reports progress, cancels, records failures, survives restarts, marks crashes."""
import json
import os
import subprocess
import sys

import pytest

from core import jobs
from core.errors import JobError
from core.training import RunConfig
from tests.conftest import ROOT, tiny, wait_for


@pytest.fixture(autouse=True)
def offline(offline_keras):
    pass



def cli(*args):
    r = subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env=dict(os.environ))
    return r



def test_a_queued_job_runs_and_reports_every_epoch():
    job = jobs.submit(tiny(epochs=2), title="tiny", start_worker=False)
    assert job.status == "queued" and job.epochs == 2 and job.progress == 0
    assert jobs.run_worker(once=True) == 1
    done = jobs.get_job(job.id)
    assert done.status == "done" and done.epoch == 2 and done.progress == 1.0
    assert set(done.last_metrics) >= {"loss", "accuracy", "val_loss", "val_accuracy", "seconds"}
    assert json.loads((jobs.Path(done.run_dir) / "run.json").read_text())["status"] == "done"


def test_cancel_a_queued_job_and_nothing_else():
    job = jobs.submit(tiny(), start_worker=False)
    assert jobs.cancel(job.id).status == "cancelled"
    assert jobs.run_worker() == 0  # nothing left to run
    with pytest.raises(JobError, match="already cancelled"):
        jobs.cancel(job.id)
    with pytest.raises(JobError, match="No job with id 999"):
        jobs.get_job(999)


def test_a_failing_job_records_its_error_and_the_worker_goes_on(tmp_path):
    weights = tmp_path / "w.h5"
    weights.write_bytes(b"not really weights")
    bad = jobs.submit(RunConfig.preset("mobilenetv2", weights=str(weights), epochs=1, max_samples=20),
                      start_worker=False)
    weights.unlink()  # gone by the time the worker gets to it
    good = jobs.submit(tiny(), start_worker=False)
    assert jobs.run_worker() == 2
    failed = jobs.get_job(bad.id)
    assert failed.status == "failed" and "ModelError" in failed.error and "does not exist" in failed.error
    assert jobs.get_job(good.id).status == "done"


def test_a_job_whose_worker_died_is_marked_failed():
    job = jobs.submit(tiny(), start_worker=False)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with jobs._connect() as con:
        con.execute("UPDATE jobs SET status='running', pid=? WHERE id=?", (dead.pid, job.id))
    from core.runs import RunWriter, read_json

    RunWriter(jobs.Path(job.run_dir)).update_info(status="running")  # as train() leaves it mid-run
    j = jobs.get_job(job.id)
    assert j.status == "failed" and "stopped unexpectedly" in j.error
    assert read_json(jobs.Path(job.run_dir) / "run.json")["status"] == "failed"  # the runs table agrees


def test_background_worker_cancel_running_job_and_queue_survives_restart():
    r = cli("train", "--arch", "mlp", "--epochs", "200", "--max-samples", "200", "--early-stopping", "0",
            "--background", "--json")
    assert r.returncode == 0, r.stderr
    job_id = json.loads(r.stdout)["id"]
    assert wait_for(lambda: jobs.get_job(job_id).epoch >= 2), "the worker reported no progress"
    assert jobs.get_job(job_id).status == "running"
    r = cli("jobs", "cancel", str(job_id), "--json")  # another process asks the worker to stop
    assert r.returncode == 0 and json.loads(r.stdout)["cancel_requested"] is True
    assert wait_for(lambda: jobs.get_job(job_id).status == "cancelled")
    listed = json.loads(cli("jobs", "--json").stdout)  # a fresh process reads the same queue from disk
    assert [(j["id"], j["status"]) for j in listed] == [(job_id, "cancelled")]
    assert 2 <= listed[0]["epoch"] < 200
    assert not jobs.worker_running() or wait_for(lambda: not jobs.worker_running(), 30)


def test_offline_imagenet_is_refused_before_queueing():
    r = cli("train", "--arch", "vgg16", "--background", "--json")
    assert r.returncode == 2 and "not available offline" in r.stderr
    assert jobs.list_jobs() == []


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


@pytest.mark.parametrize("holder, running", [("self", True), ("dead", False), ("", True)])
def test_a_lock_counts_as_held_only_while_its_worker_lives(holder, running):
    """A killed worker's lock outlives its main thread for a moment; a dead holder's pid must not keep the
    queue waiting (an unreadable or older lock file, with no pid, is trusted)."""
    import fcntl

    jobs.jobs_dir().mkdir(parents=True, exist_ok=True)
    with open(jobs._lock_path(), "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write({"self": str(os.getpid()), "dead": str(_dead_pid()), "": ""}[holder])
        held.flush()
        assert jobs.worker_running() is running


def test_a_new_worker_waits_for_a_dying_workers_lock_and_runs_the_queue():
    import fcntl
    import threading

    job = jobs.submit(tiny(), start_worker=False)
    jobs.jobs_dir().mkdir(parents=True, exist_ok=True)
    held = open(jobs._lock_path(), "a+")
    fcntl.flock(held, fcntl.LOCK_EX)
    held.write(str(_dead_pid()))
    held.flush()
    threading.Timer(1.0, held.close).start()  # the dead worker's lock goes a second later
    assert jobs.run_worker(wait_lock=0) == 0  # without waiting, the lock is busy: nothing runs
    assert jobs.run_worker(wait_lock=30) == 1
    assert jobs.get_job(job.id).status == "done"
    assert jobs._lock_path().read_text() == str(os.getpid())


def test_only_one_worker_waits_for_a_dying_workers_lock(monkeypatch):
    """The page polls every 2 s; while a dying worker still holds the lock, polls must not pile up waiters."""
    import fcntl
    import threading
    import time

    jobs.jobs_dir().mkdir(parents=True, exist_ok=True)
    held = open(jobs._lock_path(), "a+")
    fcntl.flock(held, fcntl.LOCK_EX)
    held.write(str(_dead_pid()))
    held.flush()
    waiter = threading.Thread(target=jobs.run_worker, kwargs={"wait_lock": 30})
    try:
        assert not jobs.worker_running() and not jobs._waiter_present()  # a poll now starts the one waiter
        waiter.start()
        assert wait_for(jobs._waiter_present, 5)
        started = []
        monkeypatch.setattr(jobs.subprocess, "Popen", lambda *a, **k: started.append(a))
        for _ in range(3):
            jobs.ensure_worker()
        assert started == []
        with open(jobs._lock_path(), "a+") as second:
            t0 = time.monotonic()
            assert not jobs._take_lock(second, 30)
            assert time.monotonic() - t0 < 5  # it leaves at once, instead of waiting its 30 s
    finally:
        held.close()  # the dead worker's lock goes: the waiter takes it
        waiter.join(10)
    assert not waiter.is_alive() and jobs._lock_path().read_text() == str(os.getpid())
    assert not jobs._waiter_present()


def test_looking_for_a_waiter_never_makes_the_waiter_give_up():
    """A poll's check takes the wait lock for microseconds; a waiter arriving then must not read it as a rival."""
    import fcntl
    import threading

    jobs.jobs_dir().mkdir(parents=True, exist_ok=True)
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            jobs._waiter_present()

    pollers = [threading.Thread(target=poll)]  # polling without pause: far more often than any page
    for t in pollers:
        t.start()
    try:
        for _ in range(2000):  # a collision is rare per try: enough tries that a single attempt fails
            with open(jobs._wait_lock_path(), "a+") as f:
                assert jobs._flock_within(f, 0.5)
                fcntl.flock(f, fcntl.LOCK_UN)
    finally:
        stop.set()
        for t in pollers:
            t.join()
