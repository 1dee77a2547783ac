"""Run directories: the only place that knows artifact paths.

    runs/<name>/
      recipe.toml         the resolved recipe, written before any work
      tokenizer/          the trained (or copied) tokenizer
      data/               the preprocessed, packed splits (datasets.save_to_disk) and meta.json (the cache key)
      log.jsonl           one JSON object per logged optimizer step
      checkpoints/step-N  weights, optimizer and RNG states without pickles, checksummed (checkpoint.py)
      final/              save_pretrained model + tokenizer
      results.json        written last: a run is complete iff it exists

Files are written atomically (temporary file, then rename), so an interrupted run never leaves a half-written
JSON file or checkpoint behind.
"""

from __future__ import annotations

import json
import math
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


# ------------------------------------------------------------------------------------------ ownership marker
#
# llmctl writes only into a directory it made or may take: a new one, an empty one, or one that holds its marker
# (or, for runs made before the marker existed, its layout). It never deletes anything in any other directory,
# so `-o .` in a project, or a typo naming a home folder, cannot lose a file.

MARKER_NAME = ".llmctl-run.json"
# The top-level names llmctl writes in a run directory (the marker lists them): `preprocess`, `pretrain` and
# `finetune` write the first ones; `eval` writes eval/ and `report` writes report/ of a finished run.
RUN_OUTPUTS = ("recipe.toml", "tokenizer", "data", "log.jsonl", "checkpoints", "best", "final", "adapter",
               "predictions.jsonl", "results.json", "tracking", "eval", "report")
# What `--overwrite` removes: everything the replaced training run made. The recipe is rewritten, and data/ and
# tokenizer/ are a cache keyed by their inputs (reused when unchanged, rebuilt otherwise), so they stay.
TRAINING_OUTPUTS = ("results.json", "log.jsonl", "checkpoints", "best", "best.tmp", "best.old", "final",
                    "final.tmp", "final.old", "adapter", "predictions.jsonl", "tracking", "eval", "report")
# The first line of every recipe.toml llmctl writes (recipe.dumps): how a run from before the marker is known.
_RECIPE_HEADER = "# Resolved recipe written by llmctl"


def _llmctl_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llmctl")
    except PackageNotFoundError:  # pragma: no cover - a source tree that is not installed
        return "unknown"


def read_marker(root: Path) -> dict | None:
    """The run's marker (kind, created, llmctl_version, writes), or None when there is none or it is not one."""
    try:
        info = json.loads((Path(root) / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and isinstance(info.get("kind"), str) else None


def _legacy_run(root: Path) -> bool:
    """A run made before llmctl marked its runs: its resolved recipe.toml (llmctl's header line) next to a log,
    checkpoints, results or a preprocessed-data cache."""
    try:
        with open(root / "recipe.toml", encoding="utf-8") as f:
            first = f.readline()
    except (OSError, UnicodeDecodeError):
        return False
    if not first.startswith(_RECIPE_HEADER):
        return False
    return any(p.exists() for p in (root / "log.jsonl", root / "checkpoints", root / "results.json",
                                    root / "data" / "meta.json"))


def check_output_dir(root: Path) -> str:
    """Whether llmctl may write into `root`, decided before anything is written there (not even the lock file):
    "new" (absent), "empty" (nothing but llmctl's lock file), "marked" (it holds llmctl's marker) or "legacy" (an
    llmctl run from before the marker). Anything else raises a one-line RunError naming the directory."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise RunError(f"{root}: output path exists and is not a directory")
    if not root.exists():
        return "new"
    try:
        # llmctl's lock file, and a marker being written by another llmctl process right now (write_text's
        # temporary name), do not make a directory foreign.
        names = sorted(p.name for p in root.iterdir() if p.name != LOCK_NAME
                       and not (p.name.startswith(f".{MARKER_NAME}.") and p.name.endswith(".tmp")))
    except OSError as exc:
        raise RunError(f"{root}: cannot read this output directory: {exc.strerror or exc}") from None
    if not names:
        return "empty"
    if (root / MARKER_NAME).exists():
        if read_marker(root) is None:
            raise RunError(f"{root / MARKER_NAME}: not a valid llmctl run marker; refusing to write into {root}")
        return "marked"
    if _legacy_run(root):
        return "legacy"
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    raise RunError(f"{root}: not an llmctl run directory and not empty (it holds {shown}); llmctl writes only into "
                   "a new or empty directory or one it made, and deletes nothing elsewhere: choose another "
                   "--output-dir")


def mark_run(root: Path, kind: str) -> None:
    """Write the run's marker if it has none (a new run, or an unmarked one from before the marker)."""
    from datetime import datetime

    root = Path(root)
    if read_marker(root) is not None:
        return
    adopted = (root / "recipe.toml").exists()
    info = {"kind": kind, "created": datetime.now().astimezone().isoformat(timespec="seconds"),
            "llmctl_version": _llmctl_version(), "writes": list(RUN_OUTPUTS)}
    if adopted:
        info["adopted"] = "made by an llmctl that did not mark its runs"
    root.mkdir(parents=True, exist_ok=True)
    write_json(root / MARKER_NAME, info)


def start_run(run: Run, *, kind: str, resume: bool, overwrite: bool) -> None:
    """The changes on disk a training run makes before it starts, once every check has passed: mark the
    directory; with --overwrite, remove the replaced run's outputs (TRAINING_OUTPUTS, nothing else); with
    --resume, remove results.json (the run is not complete while it trains on; it comes back at the end)."""
    check_output_dir(run.root)
    mark_run(run.root, kind)
    if overwrite:
        for name in TRAINING_OUTPUTS:
            remove(run.root / name)
    elif resume:
        remove(run.results)


# ------------------------------------------------------------------------------------- temporary directories


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists but belongs to someone else
        return True
    return True


def temp_dir(prefix: str, parent: Path | None = None) -> Path:
    """A new temporary directory `<prefix><host>-<pid>-<random>` under `parent` (default: the system's), after
    removing the ones of this prefix that a killed llmctl process left there: those of this host whose process is
    gone, and ones from before the name carried a pid that are more than a day old. The caller removes its own."""
    import re
    import socket
    import time

    base = Path(parent) if parent is not None else Path(tempfile.gettempdir())
    host = re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname())[:40] or "host"
    own = re.compile(re.escape(prefix) + r"(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)-[^/]+$")
    try:
        entries = [p for p in base.iterdir() if p.name.startswith(prefix) and p.is_dir()]
    except OSError:
        entries = []
    for p in entries:
        m = own.match(p.name)
        try:
            if m:
                stale = m.group("host") == host and not _pid_alive(int(m.group("pid")))
            else:
                stale = time.time() - p.stat().st_mtime > 86400
        except OSError:
            continue
        if stale:
            shutil.rmtree(p, ignore_errors=True)
    base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{host}-{os.getpid()}-", dir=base))


# ---------------------------------------------------------------------------------------------- durability


def sha256(path: Path) -> str:
    """The SHA-256 of a file's content, in hex (read 1 MiB at a time)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fsync_path(path: Path) -> None:
    """Flush a file's or a directory's data and metadata to the disk (directories: best effort where the
    platform cannot open them)."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if Path(path).is_dir() else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def recover(path: Path) -> None:
    """After a kill in the middle of swap_in: put the set-aside copy back if the new one never arrived."""
    old = path.with_name(path.name + ".old")
    if old.is_dir() and not path.exists():
        old.rename(path)


def swap_in(tmp: Path, path: Path) -> None:
    """Replace directory `path` by the complete directory `tmp` so that a kill at any moment leaves the old copy
    or the new one: flush `tmp` to disk, set the old copy aside, rename the new one in, then delete the old."""
    from llmctl import faults

    for f in tmp.rglob("*"):
        if f.is_file():
            fsync_path(f)
    fsync_path(tmp)
    faults.point("export")
    recover(path)
    old = path.with_name(path.name + ".old")
    remove(old)
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    fsync_path(path.parent)
    remove(old)


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


def finite(obj):
    """A copy of `obj` whose NaN and infinite floats are None: JSON has no such numbers, and readers of
    log.jsonl and results.json must get valid JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(finite(obj), indent=2, ensure_ascii=False, allow_nan=False) + "\n")


def read_json(path: Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_log(path: Path) -> list[dict]:
    """The records of a log.jsonl (a torn last line from a killed process is skipped, and so is any line that is
    not a JSON object: bytes that are not UTF-8, a value, nesting too deep to read)."""
    out = []
    try:
        raw = Path(path).read_bytes() if Path(path).is_file() else b""
    except OSError:
        raw = b""
    for line in raw.splitlines():
        try:
            rec = json.loads(line.decode("utf-8"))
        except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            continue
        if isinstance(rec, dict):
            out.append(rec)
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
        # What the lock guards, for the refusal: "{where}: another llmctl process (...) is {using}".
        self.where, self.using = self.run.root, "using this run directory"

    @classmethod
    def for_file(cls, target: Path) -> "RunLock":
        """The lock of an output file that commands append to (`summarize --output F`): the same flock on a
        hidden `.F.llmctl.lock` next to it."""
        target = Path(target)
        lock = cls(Run(target.parent))
        lock.path = target.parent / f".{target.name}.llmctl.lock"
        lock.where, lock.using = target, "writing to this output file"
        return lock

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
            raise RunError(f"{self.where}: this lock is already held")
        try:
            import fcntl
        except ImportError:  # pragma: no cover - no flock on this platform: run unlocked
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
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
                        raise RunError(f"{self.where}: another llmctl process{who} is {self.using}"
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
