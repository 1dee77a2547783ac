"""`train.compile`: torch.compile of the model for the training steps, and whether it pays back.

torch.compile (TorchInductor) fuses the elementwise work around the matrix products (bias, GELU, dropout,
layer norm, the casts bf16 autocast adds) into generated C++ or Triton kernels. It costs a one-off compile when
the first micro-batch runs, forward and backward; a run pays that back only when it is long enough. The
compiled module shares its parameters with the eager one, so evaluation, checkpoints and export keep using
the eager model (evaluation batches and generation have other shapes, which would compile again).

Shapes are kept static (`dynamic=False`) where the batches are: packed pretraining blocks all have
`data.block_size` tokens and every micro-batch is full, so the graph compiles once. Batches whose length varies
(fine-tuning) let torch mark the changing sizes dynamic after the first recompile.

The "auto" rule comes from measurements on 2 CPU cores (docs/speed.md): see `decide`.
"""

from __future__ import annotations

import time

# "auto" compiles when at least this many optimizer steps remain. Measured on 2 shared CPU cores
# (docs/speed.md, tests/bench_train.py): a cold compile (forward + backward) of the demo and 13.9M GPT-2 shapes
# costs 30-42 s. The payback ranged from 9 steps (13.9M, fp32: 2.5x faster steps) to 364 steps (the demo's
# 2.6M model in bf16, whose eager steps are already short: 1.29x, 0.36 -> 0.28 s). 400 covers the slowest
# payback measured and keeps short runs and tests free of the wait; the demo recipe (600 steps) compiles.
AUTO_MIN_STEPS = 400


def decide(setting: str | bool, *, steps: int, static_shapes: bool, world: int = 1) -> tuple[bool, str]:
    """(compile?, one-line reason) for `train.compile` ("auto", true or false) and the run ahead.

    "auto" compiles only when the batches have static shapes (else every new length recompiles), on one
    process (torch.compile of a DDP model under gradient accumulation recompiles around no_sync), and for at
    least AUTO_MIN_STEPS optimizer steps. true compiles regardless; false never does.
    """
    if setting is False or setting == "false":
        return False, "train.compile = false"
    if setting is True or setting == "true":
        return True, "train.compile = true"
    if setting != "auto":
        raise ValueError(f"train.compile must be \"auto\", true or false, got {setting!r}")
    if not static_shapes:
        return False, "auto: batch shapes vary, every new length would compile again"
    if world > 1:
        return False, f"auto: {world} processes (compile with train.compile = true)"
    if steps < AUTO_MIN_STEPS:
        return False, f"auto: {steps} steps are too few to pay back the compile time (needs {AUTO_MIN_STEPS})"
    return True, f"auto: {steps} steps pay back the compile time (static shapes)"


def compile_model(model, *, static_shapes: bool):
    """The model compiled for training (lazily: nothing compiles until the first call; see `warm_up`)."""
    import torch

    return torch.compile(model, dynamic=False if static_shapes else None)


def warm_up(compiled, batch: dict, accelerator) -> float:
    """Run one forward and backward pass of `compiled` on `batch` (train mode, the run's autocast), so the
    compile happens here and not inside the first timed step; return its seconds. The RNG state is the same
    afterwards (dropout draws nothing a run would see) and the gradients are dropped, so the run is unchanged."""
    import torch

    from llmctl.batches import REAL_TOKENS

    batch = {k: v for k, v in batch.items() if k != REAL_TOKENS}
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    was_training = compiled.training
    start = time.perf_counter()
    with torch.random.fork_rng(devices=devices):
        compiled.train()
        with accelerator.autocast():
            loss = compiled(**batch).loss
        loss.backward()
    if accelerator.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    for p in compiled.parameters():
        p.grad = None
    compiled.train(was_training)
    return seconds
