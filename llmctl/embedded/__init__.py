"""The embedded demo data, addressed as `embedded:<name>` in recipes (e.g. `embedded:pretrain/corpus.txt`).

In a source checkout the names are the committed files under data/. An installed llmctl has no data/ folder; it
runs the packaged generator (generate.py, standard library only, byte-identical output on every run) once into a
per-user cache:

    $LLMCTL_HOME/data/<digest>/                 when LLMCTL_HOME is set
    $XDG_CACHE_HOME/llmctl/data/<digest>/       else (XDG_CACHE_HOME defaults to ~/.cache)

<digest> is the start of the generator's sha256, so a changed generator writes a fresh directory. This module
imports only the standard library: data/generate.py imports it through the package.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

PREFIX = "embedded:"
GENERATOR = Path(__file__).resolve().with_name("generate.py")


def names() -> list[str]:
    """The relative names of the files the generator writes, e.g. `qa/train.jsonl`, sorted."""
    from llmctl.embedded import generate

    found = ["pretrain/corpus.txt"]
    found += [f"{task}/{split}.jsonl" for task, _ in generate.TASKS for split in ("train", "validation")]
    return sorted(found)


def digest() -> str:
    """The first 12 hex digits of the generator source's sha256: the cache directory's name."""
    return hashlib.sha256(GENERATOR.read_bytes()).hexdigest()[:12]


def _checkout_data() -> Path | None:
    """The data/ folder of the source checkout llmctl runs from, or None for an installed llmctl."""
    import llmctl

    data = Path(llmctl.__file__).resolve().parent.parent / "data"
    # generate.py (the shim) marks a checkout's data/ folder, not just any `data` directory next to the package.
    return data if (data / "generate.py").is_file() else None


def cache_dir() -> Path:
    """Where an installed llmctl keeps the generated data (it may not exist yet)."""
    home = os.environ.get("LLMCTL_HOME")
    if home:
        base = Path(home).expanduser() / "data"
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "llmctl" / "data"
    return base / digest()


def resolve(path: str) -> str:
    """`embedded:<name>` -> a real file path (the checkout's data/<name>, else the generated cache); any other
    path is returned unchanged. Raises llmctl.data.DataError for a name the generator does not write."""
    if not path.startswith(PREFIX):
        return path
    name = path[len(PREFIX):].strip().lstrip("/")
    available = names()
    if name not in available:
        from llmctl.data import DataError

        raise DataError(f"{path}: no embedded file of that name (available: {', '.join(available)})")
    checkout = _checkout_data()
    if checkout is not None and (checkout / name).is_file():
        return str(checkout / name)
    target = cache_dir()
    if not (target / name).is_file():
        _generate(target)
    return str(target / name)


def _generate(target: Path) -> None:
    """Run the generator into a temporary sibling of `target`, then rename it into place (atomic: a reader sees
    no directory or a complete one). If another process got there first, keep its directory."""
    from llmctl.embedded import generate

    if target.exists():  # incomplete or tampered with (a file is missing): start over
        shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"generating the embedded demo data into {target} (once)", file=sys.stderr, flush=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        code = generate.main([str(tmp)])
        if code != 0:
            raise RuntimeError(f"the embedded data generator exited with {code}")
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
            # Another process renamed its complete copy into place first; the outputs are identical.
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
