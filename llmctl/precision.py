"""Which precision a training run uses: `train.precision` resolved against the hardware it runs on.

    "fp32"  full precision everywhere.
    "bf16"  bfloat16 autocast (weights, gradients and optimizer state stay fp32); on a GPU or a CPU.
    "fp16"  float16 autocast with a gradient scaler; GPUs only.
    "auto"  GPU: bf16 where the GPU supports it, else fp16 with a gradient scaler.
            CPU: bf16 when the CPU multiplies bf16 matrices natively (AMX or AVX512-BF16 in its flags) *and* a
            short matrix-product probe finds bf16 at least `SPEEDUP_NEEDED` times faster than fp32; fp32
            otherwise. The flags alone are not enough: on a CPU without native bf16 the same autocast is many
            times slower than fp32, and a flag can be present on a machine where oneDNN does not use it.

The probe (about a second) runs once per machine: its result is cached in `cache_file()`, keyed by the CPU model
and the torch version, and the processes of one launch read the first one's result (a file lock), so they all
choose the same. The result is a `Choice`: Accelerate's mixed_precision value, a short label and a one-line
reason for the console.

Heavy imports stay inside the functions that need them (the CLI imports the recipe layer on every start).
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# bf16 must beat fp32 by this factor on the probe for "auto" to pick it on a CPU. Autocast adds casts that a
# bare matrix product does not have, so a CPU that is merely as fast in bf16 would train slower; the machines
# with AMX measure 6-20x, those without far below 1x, so the exact threshold decides nothing in practice.
SPEEDUP_NEEDED = 1.5

# CPU flags (Linux /proc/cpuinfo names) that mean bf16 matrix products run in hardware.
BF16_FLAGS = ("amx_bf16", "avx512_bf16")

# The probe's product: (m x k) @ (k x n), the size of a transformer layer's projection on a micro-batch of
# about a thousand tokens. Large enough to reach the GEMM kernels' steady rate, small enough that a CPU with
# emulated bf16 (around 5 GFLOP/s) finishes the probe in about a second.
PROBE_SHAPE = (1024, 768, 768)


class PrecisionError(ValueError):
    """A precision the hardware cannot run (one line)."""


@dataclass(frozen=True)
class Choice:
    mixed_precision: str  # Accelerate's value: "no", "bf16" or "fp16"
    label: str  # "fp32", "bf16" or "fp16": what results.json and the run header show
    reason: str  # one line: why this precision on this hardware

    def __str__(self) -> str:
        return f"{self.label} ({self.reason})"


def resolve(choice: str, *, cuda: bool | None = None, cpu_speedup: Callable[[], "Probe"] | None = None) -> Choice:
    """`train.precision` ("auto", "fp32", "bf16", "fp16") -> Choice for this machine.

    `cuda` defaults to torch.cuda.is_available(); `cpu_speedup` (the cached probe, `cpu_bf16_probe`) is only
    called for "auto" on a CPU with native-bf16 flags, so fp32, bf16 and fp16 never run it.
    """
    if choice not in ("auto", "fp32", "bf16", "fp16"):
        raise PrecisionError(f"train.precision must be one of auto, fp32, bf16, fp16, got {choice!r}")
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    if choice == "fp32":
        return Choice("no", "fp32", "train.precision = \"fp32\"")
    if cuda:
        return _gpu(choice)
    return _cpu(choice, cpu_speedup or cpu_bf16_probe)


def _gpu(choice: str) -> Choice:
    import torch

    name = torch.cuda.get_device_name(torch.cuda.current_device())
    bf16 = torch.cuda.is_bf16_supported()
    if choice == "bf16":
        note = "" if bf16 else "; this GPU has no native bf16 and emulates it slowly"
        return Choice("bf16", "bf16", f"train.precision = \"bf16\" on {name}{note}")
    if choice == "fp16":
        return Choice("fp16", "fp16", f"train.precision = \"fp16\" on {name}, with a gradient scaler")
    if bf16:
        return Choice("bf16", "bf16", f"auto: {name} supports bf16")
    return Choice("fp16", "fp16", f"auto: {name} has no bf16; fp16 with a gradient scaler")


def _cpu(choice: str, cpu_speedup: Callable[[], "Probe"]) -> Choice:
    flags = cpu_bf16_flags()
    if choice == "fp16":
        raise PrecisionError("train.precision = \"fp16\" needs a GPU (a CPU has no fp16 autocast with a gradient "
                             "scaler); use \"auto\", \"bf16\" or \"fp32\" on CPU")
    if choice == "bf16":
        if flags:
            return Choice("bf16", "bf16", f"train.precision = \"bf16\"; the CPU has native bf16 ({', '.join(flags)})")
        return Choice("bf16", "bf16", "train.precision = \"bf16\", but the CPU has no native bf16 (no "
                                      f"{' or '.join(BF16_FLAGS)}): expect it to be much slower than fp32")
    if not flags:
        return Choice("no", "fp32", f"auto: the CPU has no native bf16 ({' or '.join(BF16_FLAGS)})")
    probe = cpu_speedup()
    measured = f"bf16 GEMM {probe.speedup:.1f}x fp32 ({probe.bf16_gflops:,.0f} vs {probe.fp32_gflops:,.0f} GFLOP/s"
    measured += ", cached)" if probe.cached else ")"
    if probe.speedup >= SPEEDUP_NEEDED:
        return Choice("bf16", "bf16", f"auto: the CPU has native bf16 ({', '.join(flags)}); {measured}")
    return Choice("no", "fp32", f"auto: the CPU lists {', '.join(flags)} but {measured}, below the "
                                f"{SPEEDUP_NEEDED}x that pays for autocast")


# ------------------------------------------------------------------------------------------------ the CPU


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo); empty where they cannot be read (macOS, Windows)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return set()
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def cpu_bf16_flags(cpuinfo: str | None = None) -> list[str]:
    """The native-bf16 flags this CPU has, in BF16_FLAGS order ([] = none)."""
    flags = cpu_flags(cpuinfo)
    return [f for f in BF16_FLAGS if f in flags]


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model name ("Intel(R) Xeon(R) Platinum 8480+"), or platform.processor() as a fallback."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            cpuinfo = ""
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "model name":
            return " ".join(value.split())
    return platform.processor() or platform.machine() or "unknown CPU"


# ----------------------------------------------------------------------------------------- the GEMM probe


@dataclass(frozen=True)
class Probe:
    fp32_gflops: float
    bf16_gflops: float
    cached: bool = False

    @property
    def speedup(self) -> float:
        return self.bf16_gflops / self.fp32_gflops if self.fp32_gflops > 0 else 0.0


def gemm_gflops(dtype, shape: tuple[int, int, int] = PROBE_SHAPE, *, repeats: int = 3) -> float:
    """GFLOP/s of one (m x k) @ (k x n) product in `dtype` on the CPU: the best of `repeats` after a warm-up
    (the best, not the mean: other processes on a shared machine only ever slow a run down)."""
    import torch

    m, k, n = shape
    g = torch.Generator().manual_seed(0)
    a = torch.randn(m, k, generator=g).to(dtype)
    b = torch.randn(k, n, generator=g).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * m * k * n / max(best, 1e-9) / 1e9


def measure() -> Probe:
    """Run the probe: fp32 and bf16 matrix products on this CPU (about a second)."""
    import torch

    return Probe(fp32_gflops=gemm_gflops(torch.float32), bf16_gflops=gemm_gflops(torch.bfloat16))


def cache_file() -> Path:
    """$LLMCTL_HOME/cache/precision.json, else $XDG_CACHE_HOME/llmctl/precision.json (~/.cache by default)."""
    home = os.environ.get("LLMCTL_HOME")
    if home:
        return Path(home).expanduser() / "cache" / "precision.json"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "llmctl" / "precision.json"


def cache_key() -> str:
    """What the probe's result depends on: the CPU model and the torch build (its oneDNN kernels)."""
    import torch

    return f"{cpu_model()} | torch {torch.__version__}"


def cpu_bf16_probe(*, measure_fn: Callable[[], Probe] = measure, path: Path | None = None) -> Probe:
    """The probe's result for this machine: from the cache, or measured now and cached.

    A file lock serialises the processes of one launch, so the first measures (alone, undisturbed by the
    others) and the rest read its result. A cache that cannot be read or written costs a probe, never an error.
    """
    path = path or cache_file()
    key = cache_key()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(path.with_suffix(".lock"), "a+")
    except OSError:
        return measure_fn()
    with lock:
        _lock(lock)
        entries = _read(path)
        entry = entries.get(key)
        if isinstance(entry, dict):
            try:
                return Probe(float(entry["fp32_gflops"]), float(entry["bf16_gflops"]), cached=True)
            except (KeyError, TypeError, ValueError):
                pass
        probe = measure_fn()
        entries[key] = {"fp32_gflops": round(probe.fp32_gflops, 1), "bf16_gflops": round(probe.bf16_gflops, 1),
                        "measured": time.strftime("%Y-%m-%dT%H:%M:%S")}
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        try:
            tmp.write_text(json.dumps(entries, indent=1, sort_keys=True) + "\n", encoding="utf-8")
            tmp.replace(path)
        except OSError:
            tmp.unlink(missing_ok=True)
        return probe


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _lock(f) -> None:
    try:
        import fcntl
    except ImportError:  # Windows: no lock; concurrent first probes only cost time
        return
    fcntl.flock(f.fileno(), fcntl.LOCK_EX)  # released when the file is closed
