"""The run-directory lock (llmctl.runs.RunLock, lock_holder): one llmctl process per run directory, and a lock
left behind by a killed process taken over without a word."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from llmctl import runs
from llmctl.runs import RunError, RunLock, lock_holder

ROOT = Path(__file__).resolve().parents[2]

pytest.importorskip("fcntl")


def test_lock_writes_the_holder_and_releases_it(tmp_path):
    run = runs.Run(tmp_path / "run")  # not there yet: taking the lock creates it
    assert lock_holder(run) is None
    with RunLock(run) as lock:
        assert lock.held
        path = run.root / runs.LOCK_NAME
        info = json.loads(path.read_text(encoding="utf-8"))
        assert info["pid"] == os.getpid()
        assert info["host"] == socket.gethostname()
        assert info["command"] == " ".join(sys.argv)
        assert "T" in info["started"]  # an ISO time
        assert lock_holder(run) == info
        assert lock_holder(run.root) == info  # a path works too
    assert not lock.held
    # Released: the file stays (emptied), and no one holds it.
    assert path.exists() and path.read_text(encoding="utf-8") == ""
    assert lock_holder(run) is None
    with RunLock(run):  # and it can be taken again
        pass


def test_a_second_lock_in_the_same_process_is_refused(tmp_path):
    run = runs.Run(tmp_path)
    with RunLock(run):
        with pytest.raises(RunError, match=rf"another llmctl process \(pid {os.getpid()} on "):
            with RunLock(run):
                pass
        assert lock_holder(run)["pid"] == os.getpid()  # the failed attempt did not disturb the holder
    assert lock_holder(run) is None


def test_a_stale_lock_file_is_not_held(tmp_path):
    run = runs.Run(tmp_path)
    (tmp_path / runs.LOCK_NAME).write_text(json.dumps({"pid": 999999, "host": "elsewhere"}), encoding="utf-8")
    assert lock_holder(run) is None
    with RunLock(run):
        assert lock_holder(run)["pid"] == os.getpid()


def test_another_process_holds_the_lock_until_it_is_killed(tmp_path):
    run = runs.Run(tmp_path / "run")
    child_code = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from llmctl.runs import Run, RunLock
        with RunLock(Run(Path({str(run.root)!r}))):
            print("locked", flush=True)
            time.sleep(120)
    """)
    child = subprocess.Popen([sys.executable, "-c", child_code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
        holder = lock_holder(run)
        assert holder is not None and holder["pid"] == child.pid and holder["host"] == socket.gethostname()
        with pytest.raises(RunError) as exc:
            with RunLock(run):
                pass
        message = str(exc.value)
        assert message.startswith(f"{run.root}: another llmctl process (pid {child.pid} on {socket.gethostname()}, "
                                  f"started {holder['started']}) is using this run directory")
        # A killed process leaves its lock file behind, with its pid in it, but its flock dies with it.
        child.kill()
        child.wait(timeout=30)
        assert json.loads((run.root / runs.LOCK_NAME).read_text(encoding="utf-8"))["pid"] == child.pid
        assert lock_holder(run) is None
        with RunLock(run):
            assert lock_holder(run)["pid"] == os.getpid()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)
        child.stdout.close()
