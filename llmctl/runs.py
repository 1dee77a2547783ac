"""Run directories: the only place that knows artifact paths.

    runs/<name>/
      recipe.toml         the resolved recipe, written before any work
      tokenizer/          the trained (or copied) tokenizer
      data/               the preprocessed, packed splits (datasets.save_to_disk) and meta.json (the cache key)
      log.jsonl           one JSON object per logged optimizer step
      checkpoints/step-N  accelerator.save_state + trainer_state.json, for --resume
      final/              save_pretrained model + tokenizer
      results.json        written last: a run is complete iff it exists

Files are written atomically (temporary file, then rename), so an interrupted run never leaves a half-written
JSON file or checkpoint behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path


class RunError(Exception):
    """A problem with the run directory that the user must resolve (one line)."""


@dataclass(frozen=True)
class Run:
    root: Path

    @property
    def recipe(self) -> Path:
        return self.root / "recipe.toml"

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "log.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def final(self) -> Path:
        return self.root / "final"

    @property
    def results(self) -> Path:
        return self.root / "results.json"

    def is_complete(self) -> bool:
        return self.results.exists()

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / f"step-{step}"

    def list_checkpoints(self) -> list[tuple[int, Path]]:
        """Complete checkpoints, oldest first. Temporary (interrupted) ones are ignored."""
        found = []
        if self.checkpoints.is_dir():
            for p in self.checkpoints.iterdir():
                if p.is_dir() and p.name.startswith("step-") and p.name[5:].isdigit():
                    if (p / "trainer_state.json").exists():
                        found.append((int(p.name[5:]), p))
        return sorted(found)

    def latest_checkpoint(self) -> tuple[int, Path] | None:
        found = self.list_checkpoints()
        return found[-1] if found else None


def runs_root() -> Path:
    """Where runs go by default: $LLMCTL_HOME/runs when LLMCTL_HOME is set, else ./runs of the working directory."""
    home = os.environ.get("LLMCTL_HOME")
    return Path(home) / "runs" if home else Path("runs")


def default_root(name: str) -> Path:
    return runs_root() / name


def open_for_training(root: Path, *, resume: bool, overwrite: bool, apply: bool = True) -> Run:
    """Check that training may start in `root`; never deletes anything unless `overwrite` is given.

    A finished run is refused unless --overwrite (start over) or --resume (continue, e.g. to more steps).
    An unfinished run with checkpoints is refused unless --resume or --overwrite, so a typo cannot silently
    throw away hours of training. `apply=False` (non-main processes) only checks; it changes nothing on disk.
    """
    run = Run(Path(root))
    if resume and overwrite:
        raise RunError("--resume and --overwrite exclude each other")
    if run.root.exists() and not run.root.is_dir():
        raise RunError(f"{run.root}: output path exists and is not a directory")
    if overwrite:
        if apply:
            for path in (run.results, run.log, run.checkpoints, run.final):
                remove(path)
    elif not resume:
        if run.is_complete():
            raise RunError(
                f"{run.root} already holds a finished run ({run.results.name} exists); "
                "pass --overwrite to replace it or --resume to continue it"
            )
        if run.list_checkpoints():
            raise RunError(
                f"{run.root} holds an unfinished run with checkpoints; "
                "pass --resume to continue it or --overwrite to start over"
            )
    if apply:
        run.root.mkdir(parents=True, exist_ok=True)
        if resume:
            # The run is no longer complete while it trains on; results.json comes back at its end.
            remove(run.results)
    return run


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def write_text(path: Path, text: str) -> None:
    """Write atomically: a reader sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def read_json(path: Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_log(path: Path) -> list[dict]:
    """The records of a log.jsonl (a torn last line from a killed process is skipped)."""
    out = []
    if Path(path).exists():
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def truncate_log(path: Path, last_step: int) -> None:
    """Drop log lines after `last_step`, so a resumed run does not log the same steps twice."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= last_step:
                keep.append(line)
        except json.JSONDecodeError:
            break  # a torn last line from a killed process
    write_text(path, "".join(line + "\n" for line in keep))


def latest_run(base: Path | None = None, *, task: str | None = None) -> Path | None:
    """The most recently finished run under `base` (default: runs_root()), optionally of one task, by
    results.json time."""
    base = runs_root() if base is None else Path(base)
    best = None
    if base.is_dir():
        for results in base.glob("*/results.json"):
            if task is not None:
                try:
                    if read_json(results).get("task") != task:
                        continue
                except (OSError, ValueError):
                    continue
            if best is None or results.stat().st_mtime > best.stat().st_mtime:
                best = results
    return best.parent if best else None


# ---------------------------------------------------------------------------------------------------- run lock

LOCK_NAME = ".llmctl.lock"


def _lock_path(run: Run) -> Path:
    return Path(run.root) / LOCK_NAME


def _read_holder(fd: int) -> dict:
    """The JSON a lock holder wrote into the lock file; {} while it has not written it yet (or it is unreadable)."""
    try:
        raw = os.pread(fd, 65536, 0)
        info = json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def describe_holder(info: dict) -> str:
    """What lock_holder() returns, as "pid 123 on HOST, started TIME" (the parts it lacks left out)."""
    where = f"pid {info.get('pid', '?')}"
    if info.get("host"):
        where += f" on {info['host']}"
    if info.get("started"):
        where += f", started {info['started']}"
    return where


class RunLock:
    """Hold a run directory exclusively while a command works in it: `with RunLock(run): ...`.

    The lock is an exclusive `flock` on RUN/.llmctl.lock, which holds the holder's pid, host, start time and
    command line as JSON. A second llmctl process that tries to take it gets a RunError naming the holder. The
    kernel drops a flock when its process dies, however it dies, so a lock file left behind by a killed process
    is not held and the next command takes it over silently.

    On exit the lock file is emptied (while still locked) and then unlocked, but left in place: removing it would
    let a process that opened the old file just before the removal lock a file no longer on disk while another
    process locks a new one, and both would believe they hold the run. An empty or absent file means "not in
    use"; what counts is only whether a live process holds the flock (see lock_holder).

    The lock belongs to the open file, not the thread: taking it twice in one process fails like it would for
    two processes, so under a multi-process launch only one process (the main one) should take it. Without
    `fcntl` (Windows) the lock does nothing.
    """

    #: A lock_holder() probe holds a shared lock for a moment; so many short retries ride over one.
    _attempts = 5
    _retry_seconds = 0.02

    def __init__(self, run: Run):
        self.run = run if isinstance(run, Run) else Run(Path(run))
        self.path = _lock_path(self.run)
        self._fd: int | None = None

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        import socket
        import sys
        import time
        from datetime import datetime

        if self._fd is not None:
            raise RunError(f"{self.run.root}: this run lock is already held")
        try:
            import fcntl
        except ImportError:  # pragma: no cover - no flock on this platform: run unlocked
            return
        self.run.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            for attempt in range(self._attempts):
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if attempt == self._attempts - 1:
                        info = _read_holder(fd)
                        who = f" ({describe_holder(info)})" if info else ""
                        raise RunError(f"{self.run.root}: another llmctl process{who} is using this run directory"
                                       "; wait for it to finish or stop it") from None
                    time.sleep(self._retry_seconds)
            info = {"pid": os.getpid(), "host": socket.gethostname(),
                    "started": datetime.now().astimezone().isoformat(timespec="seconds"),
                    "command": " ".join(sys.argv)}
            data = (json.dumps(info, ensure_ascii=False) + "\n").encode("utf-8")
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
        except BaseException:
            os.close(fd)  # closing drops the flock too, if it was taken
            raise
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)  # still locked here, so no one reads a stale holder after the unlock
        except OSError:
            pass
        finally:
            os.close(fd)  # drops the flock


def lock_holder(run: Run | Path) -> dict | None:
    """Whether a live process holds the run's lock, without taking it: the holder's JSON (pid, host, started,
    command; {} if it has not written it yet), or None when the run is not in use."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover
        return None
    root = run.root if isinstance(run, Run) else Path(run)
    try:
        fd = os.open(_lock_path(Run(root)), os.O_RDONLY)
    except OSError:  # no lock file (never locked) or unreadable
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(fd)
        except OSError:
            return None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
