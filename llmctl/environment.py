"""What a reader needs to reproduce or compare a run: llmctl's version (and git commit in a checkout), the versions
of the libraries that shape training, the device, and the content hash of every data file.

`describe` never fails: anything it cannot find out is None. torch is imported only inside it (for the GPUs), so
importing this module stays cheap.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

PACKAGES = ("torch", "transformers", "datasets", "accelerate", "peft", "tokenizers")

# /proc/cpuinfo flags (x86) or features (ARM) that mean the CPU computes in bfloat16 natively.
_BF16_FLAGS = {"amx_bf16", "avx512_bf16", "bf16"}


def describe(data_files: list[str]) -> dict:
    """llmctl, packages, python, platform, device and data (path -> sha256) of this process's environment."""
    return {
        "llmctl": _llmctl(),
        "packages": {name: _version(name) for name in PACKAGES},
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device(),
        "data": {str(p): _digest(p) for p in dict.fromkeys(str(f) for f in data_files)},
    }


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _llmctl() -> dict:
    info = {"version": _version("llmctl")}
    info.update(git_state(Path(__file__).resolve().parent.parent))
    return info


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5,
                              env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def git_state(checkout: Path) -> dict:
    """{"git_commit", "git_dirty"} when `checkout` is the top of a git work tree (llmctl run from a checkout),
    else {} (an installed package, even one installed inside some other repository's virtualenv)."""
    if not (checkout / ".git").exists():
        return {}
    top = _git(["rev-parse", "--show-toplevel"], checkout)
    if top is None or Path(top).resolve() != checkout.resolve():
        return {}
    commit = _git(["rev-parse", "HEAD"], checkout)
    if commit is None:
        return {}
    status = _git(["status", "--porcelain", "--untracked-files=no"], checkout)
    return {"git_commit": commit, "git_dirty": None if status is None else bool(status)}


def _cpuinfo() -> tuple[str | None, set[str]]:
    """(model name, flags) from /proc/cpuinfo; (None, set()) where there is none."""
    name, flags = None, set()
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return name, flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "model name" and name is None:
            name = value.strip() or None
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return name, flags


def device() -> dict:
    name, flags = _cpuinfo()
    info = {
        "cpu": name or platform.processor() or platform.machine() or None,
        "cpu_count": os.cpu_count(),
        "native_bf16": bool(flags & _BF16_FLAGS),
        "gpus": [],
        "gpu_count": 0,
    }
    try:
        import torch

        if torch.cuda.is_available():
            count = torch.cuda.device_count()
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(count)]
            info["gpu_count"] = count
            info["gpu_bf16"] = bool(torch.cuda.is_bf16_supported())
    except Exception:  # noqa: BLE001 - a broken driver must not fail a finished run
        pass
    return info


def _digest(path: str) -> str | None:
    from llmctl.data import file_digest

    try:
        return file_digest(Path(path))
    except OSError:
        return None


if __name__ == "__main__":  # pragma: no cover - a quick look: python -m llmctl.environment FILE...
    import json

    print(json.dumps(describe(sys.argv[1:]), indent=2))
