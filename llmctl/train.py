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

from llmctl import runs


class TrainError(Exception):
    """A training set-up problem (one line)."""


class Preempted(KeyboardInterrupt):
    """Training stopped by SIGINT or SIGTERM after saving a checkpoint; `code` is the exit code (128 + signal)."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.code = 128 + signum


def make_sampler(n: int, seed: int, per_step_chunk: int, *, limit: int | None = None, stream: int = 0):
    """A shuffling sampler whose order depends only on (seed, stream, epoch) and that can start part-way in.

    Each epoch yields a multiple of `per_step_chunk` (micro_batch_size x processes) indices, so every
    micro-batch is full and processes get equal shares; the few left-over blocks rotate in other epochs.
    `limit` caps an epoch below n (a process reading its own shards draws as many as the smallest share);
    `stream` separates the orders of processes that each sample their own data.
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
            skip, self.skip = self.skip, 0
            return iter(order[skip:])

    return EpochSampler()


def lr_at(step: int, *, lr: float, min_lr: float, warmup: int, total: int) -> float:
    """Linear warmup to `lr`, then cosine decay to `min_lr` at `total` (step counts completed optimizer steps)."""
    if warmup and step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * progress))


def precision_for(choice: str) -> str:
    """Accelerate's mixed_precision value for the recipe's precision."""
    import torch

    if choice == "fp32":
        return "no"
    if choice in ("bf16", "fp16"):
        if not torch.cuda.is_available():
            raise TrainError(f"train.precision = {choice!r} needs a GPU; use \"auto\" or \"fp32\" on CPU")
        return choice
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


# The package each tracker needs (tensorboard: torch.utils.tensorboard writes with the tensorboard package).
TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


def make_accelerator(choice: str, *, seed: int, report_to: list[str] = (), run: runs.Run | None = None):
    """(Accelerator, precision label) for a training command. cpu=True without GPUs lets a multi-process launch
    (accelerate launch, torchrun) form a gloo group on the CPU. `report_to` names experiment trackers, which
    write under <run>/tracking/."""
    import importlib.util

    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    for name in report_to:
        if importlib.util.find_spec(TRACKER_PACKAGES[name]) is None:
            raise TrainError(f"train.report_to: {name} needs the {TRACKER_PACKAGES[name]!r} package, which is not "
                             "installed")
    mixed = precision_for(choice)
    tracking = {"log_with": list(report_to), "project_dir": str(run.root / "tracking")} if report_to and run else {}
    accelerator = Accelerator(mixed_precision=mixed, cpu=not torch.cuda.is_available(), **tracking)
    set_seed(seed)
    return accelerator, "fp32" if mixed == "no" else mixed


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
    """AdamW without decay on biases and norm weights; linear warmup then cosine decay (lr_at)."""
    import torch

    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=False,
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: lr_at(s, lr=cfg.lr, min_lr=cfg.min_lr, warmup=cfg.warmup_steps, total=cfg.max_steps) / cfg.lr,
    )
    return optimizer, schedule


def restore(accelerator, run: runs.Run, *, resume: bool, console, max_steps: int) -> dict:
    """The loop's state: fresh, or loaded from the latest checkpoint (model, optimizer, schedule, RNG)."""
    main = accelerator.is_main_process
    state = {"step": 0, "tokens_seen": 0, "seconds": 0.0, "best": None}
    latest = run.latest_checkpoint() if resume else None
    if resume and latest is None and main and console is not None:
        console.print(f"resume: no checkpoint in {run.checkpoints}, starting from step 0")
    if latest is not None:
        _, path = latest
        accelerator.load_state(str(path))
        state.update(runs.read_json(path / "trainer_state.json"))
        if main:
            runs.truncate_log(run.log, state["step"])
            if console is not None:
                console.print(f"resume: continuing from {path} (step {state['step']} of {max_steps})")
    elif main:
        runs.remove(run.log)
    accelerator.wait_for_everyone()
    return state


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

    def add(self, loss, batch, accum: int) -> None:
        self.loss += loss.detach().float() / accum
        mask = batch.get("attention_mask")
        tokens = mask.sum() if mask is not None else batch["input_ids"].numel()
        self.tokens += tokens
        self.token_positions += tokens * batch["input_ids"].shape[-1]  # for the attention FLOPs, 12 L W T

    def close(self) -> tuple[float, int, int, float]:
        """(mean loss, tokens, sum of tokens x sequence length, seconds) over all processes; then reset."""
        reduce = self.accelerator.reduce
        loss = reduce(self.loss, "mean").item() / max(self.steps, 1)
        tokens = int(reduce(self.tokens, "sum").item())
        positions = int(reduce(self.token_positions, "sum").item())
        seconds = time.perf_counter() - self.start
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
) -> FitResult:
    """Train until cfg.max_steps optimizer steps, with periodic validation and checkpoints.

    `on_eval(step, metrics, model, state)` runs on every process after every evaluation; it may keep values in
    `state` (saved with each checkpoint, so they survive a resume) and returns True to stop early.

    By default `train_ds` is the whole split and Accelerate hands each process its part of every global batch.
    With `own_share`, `train_ds` is this process's own data (its preprocessing shards, which no other process
    reads) and every process samples `own_share` of it per epoch, the size of the smallest process's data.
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
        sampler = make_sampler(len(train_ds), seed, per_chunk, limit=own_share, stream=accelerator.process_index)
    else:
        sampler = make_sampler(len(train_ds), seed, per_chunk)
    loader = DataLoader(train_ds, batch_size=cfg.micro_batch_size, sampler=sampler, collate_fn=collate,
                        drop_last=True)
    flops = Flops(model, accelerator)
    optimizer, schedule = optimizer_and_schedule(model, cfg)
    if own:
        model, optimizer = accelerator.prepare(model, optimizer)
    else:
        model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    accelerator.register_for_checkpointing(schedule)
    if accelerator.log_with:
        # Scalars only: TensorBoard's hyperparameter view takes numbers, strings and booleans.
        accelerator.init_trackers(run.root.name, config={k: v for k, v in cfg.model_dump().items()
                                                         if isinstance(v, (int, float, str, bool))})
    state = restore(accelerator, run, resume=resume, console=console, max_steps=cfg.max_steps)
    step = state["step"]
    if step >= cfg.max_steps:
        return FitResult(step, state["tokens_seen"], None, evaluate(model, final=True), state["seconds"], 0.0,
                         state=state, model=model)

    last_eval: dict = {}
    if step == 0:
        last_eval = evaluate(model)
        _log(run, accelerator, {"step": 0, **_prefixed(last_eval)})
        if on_eval is not None:
            on_eval(0, last_eval, model, state)

    batches = micro_batches(loader, sampler, step * accum, len(sampler) // per_chunk, per_chunk,
                            device=accelerator.device if own else None)
    window = Window(accelerator)
    session_start = time.perf_counter()
    run_start = session_start - state["seconds"]
    train_loss = None
    stop_early = False
    progress = _Progress(console, cfg.max_steps, step)
    model.train()
    with StopSignals(accelerator) as stop:
        try:
            while step < cfg.max_steps and not stop_early:
                grad_norm = train_step(accelerator, model, optimizer, schedule, batches, accum, cfg, window)
                step += 1
                if step % cfg.log_every == 0 or step % cfg.eval_every == 0 or step == cfg.max_steps:
                    loss, tokens, positions, seconds = window.close()
                    state["tokens_seen"] += tokens
                    record = {"step": step, "loss": round(loss, 5), "lr": schedule.get_last_lr()[0],
                              "tokens_per_sec": round(tokens / seconds, 1) if seconds > 0 else None,
                              "tokens": state["tokens_seen"], "elapsed": round(time.perf_counter() - run_start, 2)}
                    if grad_norm is not None:
                        record["grad_norm"] = round(float(grad_norm), 4)
                    mfu = flops.mfu(tokens, positions, seconds)
                    if mfu is not None:
                        record["mfu"] = mfu
                    train_loss = loss
                    if step % cfg.eval_every == 0 or step == cfg.max_steps:
                        last_eval = evaluate(model, final=step == cfg.max_steps)
                        model.train()
                        record.update(_prefixed(last_eval))
                        stop_early = on_eval is not None and on_eval(step, last_eval, model, state)
                    _log(run, accelerator, record)
                    progress.update(step, record)
                signum = stop.agreed()
                if step % cfg.checkpoint_every == 0 or step == cfg.max_steps or signum or stop_early:
                    state.update(step=step, seconds=time.perf_counter() - run_start)
                    path = save_checkpoint(accelerator, run, state, keep=cfg.keep_checkpoints)
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
                     state=state, model=model, mfu=mfu)


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
    """One optimizer step over `accum` micro-batches (gradients synchronised on the last one only); returns the
    gradient norm before clipping, or None without clipping."""
    import contextlib

    for i in range(accum):
        batch = next(batches)
        sync = contextlib.nullcontext() if i == accum - 1 else accelerator.no_sync(model)
        with sync, accelerator.autocast():
            loss = model(**batch).loss
            accelerator.backward(loss / accum)
        window.add(loss, batch, accum)
    grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip) if cfg.grad_clip > 0 else None
    optimizer.step()
    schedule.step()
    optimizer.zero_grad(set_to_none=True)
    window.steps += 1
    return grad_norm


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
    if accelerator.is_main_process:
        run.log.parent.mkdir(parents=True, exist_ok=True)
        with open(run.log, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    if accelerator.log_with:
        values = {k: v for k, v in record.items()
                  if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}
        accelerator.log(values, step=record["step"])


def save_checkpoint(accelerator, run: runs.Run, state: dict, *, keep: int) -> Path:
    """Save to a temporary directory, then rename: a checkpoint either exists whole or not at all."""
    step = state["step"]
    final = run.checkpoint(step)
    tmp = run.checkpoints / f".tmp-step-{step}"
    if accelerator.is_main_process:
        runs.remove(tmp)
    accelerator.wait_for_everyone()
    import logging

    # Tied embeddings (T5, Marian, GPT-2) are saved once; accelerate warns about it at every checkpoint.
    quiet = logging.getLogger("accelerate.utils.other")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        accelerator.save_state(str(tmp), safe_serialization=True)
    finally:
        quiet.setLevel(level)
    accelerator.wait_for_everyone()  # every process has written its part (RNG states) before the rename
    if accelerator.is_main_process:
        runs.write_json(tmp / "trainer_state.json", state)
        runs.remove(final)
        tmp.rename(final)
        for _, old in run.list_checkpoints()[:-keep]:
            runs.remove(old)
    accelerator.wait_for_everyone()
    return final


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
        info = f"loss {record['loss']:.4f}  lr {record['lr']:.2e}  {record.get('tokens_per_sec') or 0:,.0f} tok/s"
        if "val_loss" in record:
            info += f"  val_loss {record['val_loss']:.4f}"
        if self.bar is not None:
            self.bar.update(self.task, completed=step, info=info)
        else:
            self.console.print(f"step {step}: {info}", highlight=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
