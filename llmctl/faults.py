"""Named fault points for the fault-injection tests. `LLMCTL_FAULT=NAME` (or `NAME@K`: the K-th time the point is
reached, counting from 1) makes the process kill itself with SIGKILL at `point(NAME)`, as a power cut or the OOM
killer would; `NAME:enospc` raises "No space left on device" there instead, as a full disk would; `hit(NAME)`
is true there (a test makes that step's loss NaN). Unset (always, outside the tests), a point costs one
environment lookup."""

from __future__ import annotations

import os
import signal

_hits: dict[str, int] = {}


def _due(name: str) -> str | None:
    """The fault's kind ("kill", "enospc", "hit") when point `name` is reached for the K-th time, else None."""
    spec = os.environ.get("LLMCTL_FAULT")
    if not spec:
        return None
    target, _, nth = spec.partition("@")
    target, _, kind = target.partition(":")
    if target != name:
        return None
    _hits[name] = _hits.get(name, 0) + 1
    return (kind or "kill") if _hits[name] == int(nth or 1) else None


def point(name: str) -> None:
    kind = _due(name)
    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif kind == "enospc":
        import errno

        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), name)


def hit(name: str) -> bool:
    return _due(name) is not None
