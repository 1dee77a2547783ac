"""The one Accelerate training loop, shared by pretrain and finetune.

It knows batches, `.loss`, optimizer steps and checkpoints, not tasks: the caller supplies the datasets, the
collator and an `evaluate(model, final=False) -> dict` callback (with a "loss" key; `final=True` at the last
step, when a callback that samples the split for periodic checks must use all of it).

Two clocks: a *micro-batch* is one forward/backward pass of `micro_batch_size` sequences on one process; an
*optimizer step* consumes `batch_size` sequences = micro_batch_size x processes x accumulation. Every interval
(logging, evaluation, checkpoints) counts optimizer steps. The data order is a pure function of (seed, epoch),
and the position in it is a pure function of the optimizer step, which is what makes resume exact and O(1):
a resumed run skips to its position without reading the batches before it.

Preemption: SIGINT (Ctrl-C) and SIGTERM (how Slurm and Kubernetes stop a job) on any process set a flag; at every
optimizer-step boundary the processes agree on it with one small all-reduce, so all of them stop at the same
step, save one checkpoint together and exit with 130 or 143.
"""

from __future__ import annotations

import json
import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from llmctl import faults, runs


class TrainError(Exception):
    """A training set-up problem (one line)."""


class Preempted(KeyboardInterrupt):
    """Training stopped by SIGINT or SIGTERM after saving a checkpoint; `code` is the exit code (128 + signal)."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.code = 128 + signum


def make_sampler(n: int, seed: int, per_step_chunk: int, *, limit: int | None = None, stream: int = 0,
                 lengths=None):
    """A shuffling sampler whose order depends only on (seed, stream, epoch) and that can start part-way in.

    Each epoch yields a multiple of `per_step_chunk` (micro_batch_size x processes) indices, so every
    micro-batch is full and processes get equal shares; the few left-over blocks rotate in other epochs.
    `limit` caps an epoch below n (a process reading its own shards draws as many as the smallest share);
    `stream` separates the orders of processes that each sample their own data.
    `lengths` (tokens per example): group examples of similar length into each chunk (`batches.grouped`).
    """
    import torch

    class EpochSampler(torch.utils.data.Sampler):
        def __init__(self):
            self.epoch = 0
            self.skip = 0  # indices to skip at the start of the next iteration (resume)
            # A split smaller than one chunk (a handful of records) still fills it, with repeats: see __iter__.
            self.used = max(per_step_chunk, (min(n, limit or n) // per_step_chunk) * per_step_chunk)

        def set_epoch(self, epoch: int) -> None:
            self.epoch = epoch

        def __len__(self) -> int:
            return self.used - self.skip

        def __iter__(self):
            g = torch.Generator().manual_seed(seed * 100_003 + self.epoch + stream * 1_000_003)
            order = torch.randperm(n, generator=g).tolist()
            while len(order) < self.used:  # only when n < per_step_chunk
                order += torch.randperm(n, generator=g).tolist()
            order = order[: self.used]
            if lengths is not None:
                from llmctl.batches import grouped

                order = grouped(order, lengths, per_step_chunk, g)
            skip, self.skip = self.skip, 0
            return iter(order[skip:])

    return EpochSampler()


def lr_at(step: int, *, lr: float, min_lr: float, warmup: int, total: int) -> float:
    """Linear warmup to `lr`, then cosine decay to `min_lr` at `total` (step counts completed optimizer steps)."""
    if warmup and step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * progress))


def precision_for(choice: str):
    """The recipe's precision resolved for this machine (llmctl/precision.py): a Choice with Accelerate's
    mixed_precision value, a label and the one-line reason."""
    from llmctl import precision

    try:
        return precision.resolve(choice)
    except precision.PrecisionError as exc:
        raise TrainError(str(exc)) from None


# The package each tracker needs (tensorboard: torch.utils.tensorboard writes with the tensorboard package).
TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


def make_accelerator(choice: str, *, seed: int, report_to: list[str] = (), run: runs.Run | None = None):
    """(Accelerator, precision label) for a training command. cpu=True without GPUs lets a multi-process launch
    (accelerate launch, torchrun) form a gloo group on the CPU. `report_to` names experiment trackers, which
    write under <run>/tracking/. The whole precision choice, reason included, is `accelerator.precision_choice`
    (fit prints it)."""
    import importlib.util

    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    for name in report_to:
        if importlib.util.find_spec(TRACKER_PACKAGES[name]) is None:
            raise TrainError(f"train.report_to: {name} needs the {TRACKER_PACKAGES[name]!r} package, which is not "
                             "installed")
    chosen = precision_for(choice)
    tracking = {"log_with": list(report_to), "project_dir": str(run.root / "tracking")} if report_to and run else {}
    accelerator = Accelerator(mixed_precision=chosen.mixed_precision, cpu=not torch.cuda.is_available(), **tracking)
    accelerator.precision_choice = chosen
    set_seed(seed)
    return accelerator, chosen.label


@dataclass
class FitResult:
    step: int
    tokens_seen: int
    train_loss: float | None
    eval: dict
    seconds: float
    tokens_per_sec: float
    state: dict = field(default_factory=dict)
    model: object = None  # the prepared (wrapped) model, for exporting with the accelerator
    mfu: float | None = None  # model FLOPs utilisation over the run, on GPUs whose peak is known
    compile_seconds: float | None = None  # torch.compile's one-off cost (None: not compiled), outside `seconds`
    # Tokens per second of the training steps alone (evaluations and checkpoints left out), this session.
    step_tokens_per_sec: float | None = None


# ---------------------------------------------------------------------------------------------- set-up steps


def accumulation(cfg, world: int, n_train: int) -> int:
    """Micro-batches per optimizer step and process; the global batch must split evenly over processes."""
    per_chunk = cfg.micro_batch_size * world
    if cfg.batch_size % per_chunk:
        raise TrainError(
            f"train.batch_size ({cfg.batch_size}) must be a multiple of train.micro_batch_size x processes "
            f"({cfg.micro_batch_size} x {world} = {per_chunk})"
        )
    if n_train < 1:
        raise TrainError("the training split is empty")
    return cfg.batch_size // per_chunk


def optimizer_and_schedule(model, cfg):
    """AdamW without decay on biases and norm weights; linear warmup then cosine decay (lr_at).

    AdamW is fused (one kernel over all parameters; CUDA, and CPU since torch 2.4) when every parameter is a
    floating-point tensor on a device with the fused kernel; otherwise torch's default, which is the
    multi-tensor (foreach) form where that exists. AdamW accepts fused=True for any device and fails only at
    the first step, hence the check here."""
    import torch

    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
        fused_devices = set(_get_fused_kernels_supported_devices())
    except ImportError:  # a torch that moved the private list: the two devices that have had the kernel since 2.4
        fused_devices = {"cuda", "cpu"}
    params = decay + no_decay
    fused = {"fused": True} if params and all(
        p.is_floating_point() and p.device.type in fused_devices for p in params) else {}
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), **fused,
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: lr_at(s, lr=cfg.lr, min_lr=cfg.min_lr, warmup=cfg.warmup_steps, total=cfg.max_steps) / cfg.lr,
    )
    return optimizer, schedule


def schedule_at(optimizer, cfg, step: int):
    """The LR schedule (linear warmup, cosine decay: lr_at) positioned after `step` optimizer steps. It is rebuilt
    from the recipe on resume rather than stored: the LR is a function of the step."""
    import torch

    for group in optimizer.param_groups:
        group["initial_lr"] = cfg.lr
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: lr_at(s, lr=cfg.lr, min_lr=cfg.min_lr, warmup=cfg.warmup_steps, total=cfg.max_steps) / cfg.lr,
        last_epoch=step - 1,
    )


def restore(accelerator, model, optimizer, run: runs.Run, *, resume: bool, console, max_steps: int,
            fingerprint: dict | None = None) -> tuple[dict, dict | None]:
    """The loop's state: fresh, or loaded from the newest checkpoint that verifies (model, optimizer, RNG, the
    open log window), falling back past damaged ones with a warning. Returns (state, this process's own
    state or None)."""
    from llmctl import checkpoint

    main = accelerator.is_main_process
    state = {"step": 0, "tokens_seen": 0, "seconds": 0.0, "best": None, "skipped_nonfinite": 0,
             "made_from": fingerprint or {}}
    if main:
        checkpoint.clean_temporary(run)
    accelerator.wait_for_everyone()
    warn = (lambda msg: console.print(f"[yellow]warning:[/] {msg}", highlight=False)) if main and console else None
    try:
        latest = checkpoint.resumable(run, warn) if resume else None
    except checkpoint.CheckpointError as exc:
        raise TrainError(f"cannot resume: {exc}") from None
    if resume and latest is None and main and console is not None:
        console.print(f"resume: no checkpoint in {run.checkpoints}, starting from step 0")
    own = None
    if latest is not None:
        _, path = latest
        try:
            loaded, own = checkpoint.load(accelerator, model, optimizer, path)
        except checkpoint.CheckpointError as exc:
            raise TrainError(f"cannot resume: {exc}") from None
        state.update(loaded)
        if fingerprint is not None:
            state["made_from"] = fingerprint
        if main:
            runs.truncate_log(run.log, state["step"])
            if console is not None:
                console.print(f"resume: continuing from {path} (step {state['step']} of {max_steps})")
                if own is None:
                    console.print("[yellow]note:[/] the checkpoint was written by another number of processes: "
                                  "data order is kept, random draws (dropout) are not")
    elif main:
        runs.remove(run.log)
    accelerator.wait_for_everyone()
    return state, own


class StopSignals:
    """SIGINT / SIGTERM handlers for the loop's lifetime; `agreed()` is the signal any process received (0 for
    none), the same on every process."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, accelerator):
        self.accelerator = accelerator
        self.received = 0
        self.old = {}

    def __enter__(self):
        def handler(signum, frame):
            self.received = self.received or signum

        for sig in self.SIGNALS:
            self.old[sig] = signal.getsignal(sig)
            signal.signal(sig, handler)
        return self

    def __exit__(self, exc_type, exc, tb):
        # After a preemption the handlers stay: the process is on its way out, and a launcher that sees one
        # worker exit sends SIGTERM to the others, which must not cut short their report.
        if exc_type is not Preempted:
            for sig, old in self.old.items():
                signal.signal(sig, old)
        return False

    def agreed(self) -> int:
        if self.accelerator.num_processes == 1:
            return self.received
        import torch
        import torch.distributed as dist

        flag = torch.tensor([self.received], device=self.accelerator.device, dtype=torch.long)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())


class Window:
    """Loss, tokens and time since the last log line, summed on the device (read only at log steps)."""

    def __init__(self, accelerator):
        import torch

        self.accelerator = accelerator
        self.loss = torch.zeros((), device=accelerator.device)
        self.tokens = torch.zeros((), device=accelerator.device, dtype=torch.long)
        self.token_positions = torch.zeros((), device=accelerator.device, dtype=torch.long)
        self.steps = 0
        self.start = time.perf_counter()
        self.done_tokens = 0  # closed windows of this session: tokens and seconds of training steps
        self.done_seconds = 0.0

    def leave_out(self, seconds: float) -> None:
        """Time spent outside the training steps (an evaluation, a checkpoint) does not count for tokens/s."""
        self.start += seconds

    def count(self, batch, real=None) -> None:
        """Add a micro-batch: `real` is its count of real tokens where the batch says (packed rows), else the
        attention mask's sum, else (pretraining blocks, which carry no mask) the positions with a label, else
        every position."""
        if real is None:
            mask = batch.get("attention_mask")
            labels = batch.get("labels")
            if mask is not None:
                real = mask.sum()
            elif labels is not None and labels.shape == batch["input_ids"].shape:
                real = (labels != -100).sum()
            else:
                real = batch["input_ids"].numel()
        self.tokens += real
        self.token_positions += real * batch["input_ids"].shape[-1]  # for the attention FLOPs, 12 L W T

    def state(self) -> dict:
        """This process's open window (for a checkpoint between log steps: the resumed run logs the same)."""
        return {"loss": float(self.loss), "tokens": int(self.tokens), "positions": int(self.token_positions),
                "steps": self.steps}

    def load(self, saved: dict) -> None:
        self.loss.fill_(saved["loss"])
        self.tokens.fill_(saved["tokens"])
        self.token_positions.fill_(saved["positions"])
        self.steps = saved["steps"]

    def close(self) -> tuple[float, int, int, float]:
        """(mean loss, tokens, sum of tokens x sequence length, seconds) over all processes; then reset."""
        reduce = self.accelerator.reduce
        # No update in the window (every step skipped as non-finite): no loss to report.
        loss = reduce(self.loss, "mean").item() / self.steps if self.steps else float("nan")
        tokens = int(reduce(self.tokens, "sum").item())
        positions = int(reduce(self.token_positions, "sum").item())
        seconds = time.perf_counter() - self.start
        self.done_tokens += tokens
        self.done_seconds += seconds
        self.loss.zero_()
        self.tokens.zero_()
        self.token_positions.zero_()
        self.steps = 0
        self.start = time.perf_counter()
        return loss, tokens, positions, seconds


class Flops:
    """Training FLOPs of the tokens in a log window and the device's peak, for MFU (GPUs with a known peak)."""

    def __init__(self, model, accelerator):
        from llmctl import flops

        found = flops.device_peak(accelerator.mixed_precision)
        self.peak = found[0] if found else None
        self.world = accelerator.num_processes
        self.done = 0.0
        if self.peak:
            self.per_token = flops.flops_per_token_from(flops.matmul_parameters(model), 0, 0, 0)
            layers, width = flops.attention_dims(model.config)
            self.per_position = flops.flops_per_token_from(0, layers, width, 1)

    def mfu(self, tokens: int, positions: int, seconds: float) -> float | None:
        if not self.peak or seconds <= 0:
            return None
        from llmctl import flops

        work = self.per_token * tokens + self.per_position * positions
        self.done += work
        return round(flops.mfu(work, seconds, self.peak, self.world), 4)

    def mfu_since(self, start: float) -> float | None:
        """MFU over all the windows since `start` (evaluations and checkpoints count as time spent)."""
        seconds = time.perf_counter() - start
        if not self.peak or seconds <= 0:
            return None
        from llmctl import flops

        return round(flops.mfu(self.done, seconds, self.peak, self.world), 4)


# ------------------------------------------------------------------------------------------------- the loop


def fit(
    *,
    accelerator,
    model,
    train_ds,
    collate: Callable,
    cfg,
    seed: int,
    run: runs.Run,
    evaluate: Callable[[object], dict],
    resume: bool,
    console=None,
    on_eval: Callable[[int, dict, object, dict], bool] | None = None,
    own_share: int | None = None,
    fingerprint: dict | None = None,
    static_shapes: bool = False,
    lengths=None,
) -> FitResult:
    """Train until cfg.max_steps optimizer steps, with periodic validation and checkpoints.

    `on_eval(step, metrics, model, state)` runs on every process after every evaluation; it may keep values in
    `state` (saved with each checkpoint, so they survive a resume) and returns True to stop early.

    By default `train_ds` is the whole split and Accelerate hands each process its part of every global batch.
    With `own_share`, `train_ds` is this process's own data (its preprocessing shards, which no other process
    reads) and every process samples `own_share` of it per epoch, the size of the smallest process's data.

    `fingerprint` (what the run is made from, `checkpoint.fingerprint`) is kept in every checkpoint, so that a
    resume can tell whether the data changed.

    `static_shapes`: every micro-batch has the same shape (packed pretraining blocks), so `train.compile =
    "auto"` may compile the model once for the whole run (llmctl/compile.py).
    """
    from torch.utils.data import DataLoader

    world = accelerator.num_processes
    own = own_share is not None
    accum = accumulation(cfg, world, own_share * world if own else len(train_ds))
    per_chunk = cfg.micro_batch_size * world
    if len(train_ds) < per_chunk and console is not None and not own:
        console.print(f"[yellow]note:[/] the training split has {len(train_ds)} sequences, fewer than one "
                      f"micro-batch on every process ({per_chunk}): each micro-batch repeats some of them")
    if own:
        # Each process draws micro-batches from its own data in its own order; position = step, as below.
        per_chunk = cfg.micro_batch_size
        sampler = make_sampler(len(train_ds), seed, per_chunk, limit=own_share, stream=accelerator.process_index,
                               lengths=lengths)
    else:
        sampler = make_sampler(len(train_ds), seed, per_chunk, lengths=lengths)
    # The loader's own generator: starting an iterator (every epoch, and on resume mid-epoch) must not draw from
    # the global RNG, or every later dropout mask of a resumed run would differ from the uninterrupted run's.
    import torch

    loader = DataLoader(train_ds, batch_size=cfg.micro_batch_size, sampler=sampler, collate_fn=collate,
                        drop_last=True, generator=torch.Generator().manual_seed(seed))
    attention = cpu_bf16_attention(model, accelerator)
    if attention and console is not None:
        console.print(f"attention: {attention}", highlight=False)
    from llmctl.modeling import fuse_activations

    if fuse_activations(model) and console is not None:  # the same function, one kernel (see its docstring)
        console.print("activation: the tanh GELU runs as torch's fused kernel (gelu_pytorch_tanh)", highlight=False)
    from llmctl.allocator import keep_freed_memory

    # On the CPU every step's activations would otherwise be faulted in afresh (llmctl/allocator.py).
    if accelerator.device.type == "cpu" and (kept := keep_freed_memory()) and console is not None:
        console.print(f"memory: {kept}", highlight=False)
    flops = Flops(model, accelerator)
    optimizer, _ = optimizer_and_schedule(model, cfg)
    raw_optimizer = optimizer
    if own:
        model, optimizer = accelerator.prepare(model, optimizer)
    else:
        model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    if accelerator.log_with:
        # Scalars only: TensorBoard's hyperparameter view takes numbers, strings and booleans.
        accelerator.init_trackers(run.root.name, config={k: v for k, v in cfg.model_dump().items()
                                                         if isinstance(v, (int, float, str, bool))})
    state, own_state = restore(accelerator, model, optimizer, run, resume=resume, console=console,
                               max_steps=cfg.max_steps, fingerprint=fingerprint)
    step = state["step"]
    schedule = schedule_at(raw_optimizer, cfg, step)
    if step >= cfg.max_steps:
        return FitResult(step, state["tokens_seen"], None, evaluate(model, final=True), state["seconds"], 0.0,
                         state=state, model=model)

    last_eval: dict = {}
    if step == 0:
        last_eval = evaluate(model)
        _log(run, accelerator, {"step": 0, **_prefixed(last_eval)})
        if on_eval is not None:
            on_eval(0, last_eval, model, state)

    train_model, compile_seconds = _compiled(accelerator, model, train_ds, collate, cfg, console,
                                             steps=cfg.max_steps - step, static_shapes=static_shapes)
    batches = micro_batches(loader, sampler, step * accum, len(sampler) // per_chunk, per_chunk,
                            device=accelerator.device if own else None)
    window = Window(accelerator)
    if own_state and own_state.get("window"):
        window.load(own_state["window"])
    session_start = time.perf_counter()
    run_start = session_start - state["seconds"]
    train_loss = None
    stop_early = False
    progress = _Progress(console, cfg.max_steps, step)
    model.train()
    with StopSignals(accelerator) as stop:
        try:
            while step < cfg.max_steps and not stop_early:
                grad_norm, finite = train_step(accelerator, train_model, optimizer, schedule, batches, accum, cfg,
                                               window)
                step += 1
                if not finite:
                    state["skipped_nonfinite"] = state.get("skipped_nonfinite", 0) + 1
                    if state["skipped_nonfinite"] > cfg.skip_nonfinite:
                        raise TrainError(
                            f"step {step}: the loss or gradient norm is not finite; nothing from this step was "
                            "saved (lower train.lr or raise train.warmup_steps, or let train.skip_nonfinite = N "
                            "skip up to N such steps)")
                    if console is not None:
                        console.print(f"[yellow]warning:[/] step {step}: non-finite loss or gradient norm, "
                                      f"update skipped ({state['skipped_nonfinite']} of at most "
                                      f"{cfg.skip_nonfinite})", highlight=False)
                if step % cfg.log_every == 0 or step % cfg.eval_every == 0 or step == cfg.max_steps:
                    loss, tokens, positions, seconds = window.close()
                    state["tokens_seen"] += tokens
                    record = {"step": step, "loss": round(loss, 5) if math.isfinite(loss) else None, "lr": schedule.get_last_lr()[0],
                              "tokens_per_sec": round(tokens / seconds, 1) if seconds > 0 else None,
                              "tokens": state["tokens_seen"], "elapsed": round(time.perf_counter() - run_start, 2)}
                    if grad_norm is not None and math.isfinite(float(grad_norm)):
                        record["grad_norm"] = round(float(grad_norm), 4)
                    mfu = flops.mfu(tokens, positions, seconds)
                    if mfu is not None:
                        record["mfu"] = mfu
                    train_loss = loss
                    if step % cfg.eval_every == 0 or step == cfg.max_steps:
                        began = time.perf_counter()
                        last_eval = evaluate(model, final=step == cfg.max_steps)
                        model.train()
                        record.update(_prefixed(last_eval))
                        stop_early = on_eval is not None and on_eval(step, last_eval, model, state)
                        window.leave_out(time.perf_counter() - began)
                    _log(run, accelerator, record)
                    progress.update(step, record)
                signum = stop.agreed()
                if step % cfg.checkpoint_every == 0 or step == cfg.max_steps or signum or stop_early:
                    began = time.perf_counter()
                    state.update(step=step, seconds=began - run_start)
                    path = save_checkpoint(accelerator, model, optimizer, run, state, keep=cfg.keep_checkpoints,
                                           window=window)
                    window.leave_out(time.perf_counter() - began)
                if signum:
                    name = signal.Signals(signum).name
                    raise Preempted(signum, f"stopped at step {step} ({name}); checkpoint saved in {path}")
        finally:
            progress.close()
            if accelerator.log_with:
                accelerator.end_training()

    seconds = time.perf_counter() - run_start
    mfu = flops.mfu_since(session_start)
    return FitResult(step=step, tokens_seen=state["tokens_seen"], train_loss=train_loss, eval=last_eval,
                     seconds=seconds, tokens_per_sec=state["tokens_seen"] / seconds if seconds > 0 else 0.0,
                     state=state, model=model, mfu=mfu, compile_seconds=compile_seconds,
                     step_tokens_per_sec=round(window.done_tokens / window.done_seconds, 1)
                     if window.done_seconds > 0 else None)


def cpu_bf16_attention(model, accelerator) -> str | None:
    """Eager attention for training on a CPU under bf16 autocast; returns the reason, or None when nothing changed.

    torch's fused attention kernel for the CPU (SDPA) is slow there in training: one forward and backward pass
    of MiniLM-L6 (bf16, batch 32) took 188 / 407 / 426 ms at 15 / 64 / 128 tokens with SDPA and 78 / 213 / 234 ms
    with transformers' eager attention; GPT-2 6 x 384 at 8 x 256 tokens 697 against 597 ms. In fp32 the two are
    within 10% of each other, and GPUs keep SDPA or flash attention. The weights and the saved model are the same
    either way (docs/speed.md)."""
    if accelerator.device.type != "cpu" or accelerator.mixed_precision != "bf16":
        return None
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(base.config, "_attn_implementation", None) != "sdpa" or not hasattr(base, "set_attn_implementation"):
        return None
    try:
        base.set_attn_implementation("eager")
    except (ValueError, TypeError, AttributeError):
        return None
    if getattr(base.config, "_attn_implementation", None) != "eager":
        return None
    return "eager (bf16 on a CPU: faster than the fused SDPA kernel in training)"


def _compiled(accelerator, model, train_ds, collate, cfg, console, *, steps: int, static_shapes: bool):
    """(the model the training steps call, compile seconds or None). Prints the precision and compile choices.
    The compiled module shares the parameters of `model`, which evaluation, checkpoints and export keep using."""
    from accelerate.utils import send_to_device

    from llmctl import compile as compiling

    chosen = getattr(accelerator, "precision_choice", None)
    if console is not None and chosen is not None:
        console.print(f"precision: {chosen}", highlight=False)
    wanted, why = compiling.decide(cfg.compile, steps=steps, static_shapes=static_shapes,
                                   world=accelerator.num_processes)
    if not wanted:
        if console is not None:
            console.print(f"compile: no ({why})", highlight=False)
        return model, None
    compiled = compiling.compile_model(model, static_shapes=static_shapes)
    # A micro-batch like the run's: compiling happens here, not in the first timed step.
    batch = collate([train_ds[i % len(train_ds)] for i in range(cfg.micro_batch_size)])
    seconds = compiling.warm_up(compiled, send_to_device(batch, accelerator.device), accelerator)
    if console is not None:
        console.print(f"compile: yes ({why}); {seconds:.1f} s, not counted in tokens/s", highlight=False)
    return compiled, round(seconds, 2)


def micro_batches(loader, sampler, start_micro: int, per_epoch: int, per_chunk: int, device=None):
    """Micro-batches from position `start_micro` on, epoch after epoch; the order depends on (seed, epoch) only.
    `device`: where to move the batches of a loader Accelerate did not prepare."""
    from accelerate.utils import send_to_device

    epoch, offset = divmod(start_micro, per_epoch)
    while True:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        sampler.set_epoch(epoch)
        sampler.skip = offset * per_chunk
        if device is None:
            yield from loader
        else:
            for batch in loader:
                yield send_to_device(batch, device)
        epoch, offset = epoch + 1, 0


def train_step(accelerator, model, optimizer, schedule, batches, accum: int, cfg, window: Window):
    """One optimizer step over `accum` micro-batches (gradients synchronised on the last one only). Returns
    (gradient norm before clipping or None, finite): when the loss or the gradient norm is not finite on any
    process, the update is skipped (no optimizer step, nothing added to the log window), and the LR schedule
    still advances with the step count, as the data position does."""
    import contextlib

    import torch

    from llmctl.batches import REAL_TOKENS

    step_loss = torch.zeros((), device=accelerator.device)
    seen = []
    for i in range(accum):
        batch = next(batches)
        real = batch.pop(REAL_TOKENS, None)
        sync = contextlib.nullcontext() if i == accum - 1 else accelerator.no_sync(model)
        with sync, accelerator.autocast():
            loss = model(**batch).loss
            accelerator.backward(loss / accum)
        step_loss += loss.detach().float()
        seen.append((batch, real))
    if faults.hit("nonfinite-loss"):
        step_loss = step_loss * float("nan")
    grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip) if cfg.grad_clip > 0 else None
    # With fp16's gradient scaler an overflowing step is normal: the scaler skips it and lowers the scale.
    check = step_loss if grad_norm is None or accelerator.scaler is not None else step_loss + grad_norm.float()
    if accelerator.num_processes > 1:
        check = accelerator.reduce(check.reshape(1), "sum")
    finite = bool(torch.isfinite(check).all())
    if finite:
        optimizer.step()
        window.loss += step_loss / accum
        for batch, real in seen:
            window.count(batch, real)
        window.steps += 1
    schedule.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm, finite


def _prefixed(metrics: dict) -> dict:
    """Scalar metrics as val_* log fields (lists and strings, e.g. BLEU n-gram counts, stay out of the log)."""
    out = {}
    for k, v in metrics.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        out[f"val_{k}"] = round(v, 5) if isinstance(v, float) else v
    return out


def _log(run: runs.Run, accelerator, record: dict) -> None:
    """One log.jsonl line (main process), and the same values to the experiment trackers, if any."""
    record = runs.finite(record)
    if accelerator.is_main_process:
        run.log.parent.mkdir(parents=True, exist_ok=True)
        with open(run.log, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n")
    if accelerator.log_with:
        values = {k: v for k, v in record.items()
                  if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None}
        accelerator.log(values, step=record["step"])


def save_checkpoint(accelerator, model, optimizer, run: runs.Run, state: dict, *, keep: int,
                    window: Window | None = None) -> Path:
    """A durable, verified checkpoint of this step (llmctl/checkpoint.py); every process must call it."""
    from llmctl import checkpoint

    return checkpoint.save(accelerator, model, optimizer, run, state, keep=keep,
                           process={"window": window.state() if window is not None else None})


class _Progress:
    """A rich progress bar with loss, lr and tokens/s on a terminal; plain log lines otherwise (CI, pipes)."""

    def __init__(self, console, total: int, start: int):
        self.console = console
        self.bar = None
        if console is None:
            return
        if console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(), console=console,
            )
            self.task = self.bar.add_task("train", total=total, completed=start, info="")
            self.bar.start()

    def update(self, step: int, record: dict) -> None:
        if self.console is None:
            return
        info = f"loss {record['loss'] or float('nan'):.4f}  lr {record['lr']:.2e}  {record.get('tokens_per_sec') or 0:,.0f} tok/s"
        if "val_loss" in record:
            info += f"  val_loss {record['val_loss']:.4f}"
        if self.bar is not None:
            self.bar.update(self.task, completed=step, info=info)
        else:
            self.console.print(f"step {step}: {info}", highlight=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
