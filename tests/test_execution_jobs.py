"""What a submitit job runs (`harness.execution.jobs.JobCall`) and what the coordinator gets
back, on submitit's local executor: a preempted job (SIGUSR2, as Slurm sends it) is requeued
and restarts its call once, completing its future once; the time-limit signal ends a job as
lost; messages a job emits reach `on_message`; where each job ran is reported; a job can be
attached by folder and id from another executor (a rerun coordinator) while it runs or after
it finished. Event-driven: jobs write marker files the test waits for; nothing is timed."""

from __future__ import annotations

import functools
import os
import signal
import sys
import time
from pathlib import Path

import cloudpickle
import pytest
import waiting

from harness.execution import ExecutorSettings, WorkerLost, make_executor, placement_summary
from harness.execution.jobs import JobCall, _FileConnection, _TimedOut, read_messages
from harness.execution.submitit_backend import placements
from harness.pool import emit

# the jobs import this module's functions by value: tests/ is not on the jobs' path
cloudpickle.register_pickle_by_value(sys.modules[__name__])
DEADLINE = 300.0
until = functools.partial(waiting.until, deadline=DEADLINE)


def start_then_wait(folder: str) -> int:
    """A job: record this start (its pid), emit it, then wait for `release` unless this is a
    restart. Returns how many times it started."""
    marker = Path(folder)
    starts = marker / "starts"
    with open(starts, "a") as handle:
        handle.write(f"{os.getpid()}\n")
    count = len(starts.read_text().split())
    emit(("start", count))
    while count == 1 and not (marker / "release").exists():
        time.sleep(0.05)
    return count


def _executor(tmp: Path, **changes):
    settings = ExecutorSettings(backend="submitit_local", n_workers=1,
                                folder=str(tmp / "executor"), **changes)  # fmt: skip
    return make_executor(settings, None)


def test_messages_cross_a_file_whole_records_only(tmp_path) -> None:
    path = tmp_path / "1_messages.pkl"
    connection = _FileConnection(path)
    connection.send(("message", ("report", 1, 0.25)))
    connection.send(("message", {"epoch": 2}))
    complete = path.stat().st_size
    with open(path, "ab") as handle:  # a record being written
        handle.write(b"\x40\x00\x00\x00partial")
    messages, offset = read_messages(path, 0)
    assert messages == [("report", 1, 0.25), {"epoch": 2}] and offset == complete
    assert read_messages(path, offset) == ([], offset)
    assert read_messages(tmp_path / "none.pkl", 0) == ([], 0)


def test_the_time_limit_signal_ends_the_job_a_preemption_resubmits_it() -> None:
    call = JobCall(divmod, None, 0, timeout_min=60)
    call._started = time.monotonic() - 60  # a minute in: preempted
    resubmitted = call.checkpoint((7, 2), {})
    assert resubmitted.function is call and call.restarts == 1
    assert resubmitted.args == ((7, 2), {})
    call._started = time.monotonic() - 59 * 60  # the signal 90 s before the limit
    with pytest.raises(_TimedOut):
        call.checkpoint((7, 2), {})


def test_a_preempted_job_restarts_once_and_completes_its_future_once(tmp_path) -> None:
    marker = tmp_path / "marker"
    marker.mkdir()
    with _executor(tmp_path) as executor:
        messages = []
        future = executor.submit(start_then_wait, str(marker))
        future.on_message = messages.append
        starts = marker / "starts"
        until(lambda: executor.wait([future], 0.05) or starts.exists(), "the job to start")
        (pid,) = starts.read_text().split()
        until(lambda: executor.wait([future], 0.05) or messages, "the job's first message")
        os.kill(int(pid), signal.SIGUSR2)  # what Slurm sends a job it preempts
        assert future.result(timeout=DEADLINE) == 2  # restarted once, from scratch
    assert messages == [("start", 1), ("start", 2)]
    assert future.placement["restarts"] == 1 and "host" in future.placement
    (line,) = placements(tmp_path / "executor")
    assert line["job_id"] == future.job_ref["job_id"] and line["device"]
    config = {"executor": {"name": "submitit_local", "folder": str(tmp_path / "executor")}}
    summary = placement_summary(config)  # the run manifest's "jobs"
    assert summary["jobs"] == 1 and summary["restarts"] == 1 and summary["lost"] == 0
    assert summary["by_node"] == {line["host"]: 1} and summary["by_device"] == {line["device"]: 1}
    assert placement_summary({"executor": {"name": "local"}}) is None


def test_a_job_is_attached_by_folder_and_id_while_running_or_finished(tmp_path) -> None:
    marker = tmp_path / "marker"
    marker.mkdir()
    first = _executor(tmp_path)
    future = first.submit(start_then_wait, str(marker))
    first.wait([future], 0)
    job_ref = future.job_ref
    assert job_ref["backend"] == "local" and job_ref["job_id"]
    first.close(cancel=False)  # the coordinator goes; its job runs on
    with _executor(tmp_path) as second:
        attached = second.attach(job_ref, label="trial 0")
        seen = []
        attached.on_message = seen.append
        until(lambda: second.wait([attached], 0.05) or seen, "the attached job's message")
        assert not attached.done()
        (marker / "release").touch()
        assert attached.result(timeout=DEADLINE) == 1
        again = second.attach(job_ref)  # finished: its result is read from the folder
        assert again.result(timeout=DEADLINE) == 1
        assert second.attach({**job_ref, "backend": "slurm"}) is None
        assert second.attach({**job_ref, "folder": str(tmp_path / "gone")}) is None


def test_an_attached_job_whose_process_is_gone_is_lost(tmp_path) -> None:
    with _executor(tmp_path) as executor:
        dead = os.fork()
        if dead == 0:
            os._exit(0)
        os.waitpid(dead, 0)
        folder = tmp_path / "executor" / "jobs" / str(dead)
        folder.mkdir(parents=True)
        future = executor.attach({"backend": "local", "folder": str(folder), "job_id": str(dead)})
        with pytest.raises(WorkerLost, match="ended without a result"):
            future.result(timeout=DEADLINE)
