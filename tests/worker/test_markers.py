"""Call markers: their layout, and how a worker tells its own, a run's, and a dead worker's apart."""

from __future__ import annotations

import os
import subprocess

from livestats_worker import children, procscan
from livestats_worker.containment import owned_by, owned_by_dead_worker, owned_by_run


def test_a_marker_names_the_worker_the_run_the_phase_the_call_and_the_attempt():
    marker = children.call_marker("run-1", "generate", 7, 2)
    namespace, pid, ticks = marker.split("/")[0].split(".")
    assert (namespace, int(pid)) == (procscan.pid_namespace(), os.getpid())
    assert int(ticks) == procscan.stat(os.getpid()).start_ticks
    assert marker.split("/")[1:5] == ["run-1", "generate", "7", "2"]
    assert len(marker.split("/")[5]) == 8
    assert marker != children.call_marker("run-1", "generate", 7, 2)  # a fresh nonce each time


def test_a_marker_of_a_running_worker_is_not_a_dead_workers():
    assert not owned_by_dead_worker(children.call_marker("r", "p", 0, 1).encode())


def test_a_marker_whose_worker_has_exited_is_a_dead_workers():
    gone = subprocess.Popen(["true"])
    gone.wait()
    tag = f"{procscan.pid_namespace()}.{gone.pid}.12345"
    assert owned_by_dead_worker(f"{tag}/r/p/0/1/abcdef01".encode())


def test_markers_of_another_pid_namespace_or_another_format_are_left_alone():
    assert not owned_by_dead_worker(b"1.999999.1/r/p/0/1/abcdef01")  # namespace inode 1: not ours
    assert not owned_by_dead_worker(b"garbage")
    assert not owned_by_dead_worker(b"")


def test_a_runs_markers_are_told_from_other_runs_and_other_workers():
    mine = children.call_marker("run-1", "generate", 0, 1).encode()
    assert owned_by_run("run-1")(mine)
    assert not owned_by_run("run-10")(mine)
    assert not owned_by_run("run-1")(children.call_marker("run-10", "generate", 0, 1).encode())  # a prefix is not a run
    assert not owned_by_run("run-1")(b"0.1.1/run-1/generate/0/1/abcdef01")
    assert owned_by(children.worker_tag())(mine)
