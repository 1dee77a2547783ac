"""The one Accelerate training loop, shared by pretrain and finetune.

It knows batches, `.loss`, optimizer steps and checkpoints, not tasks: the caller supplies the datasets, the
collator and an `evaluate(model, final=False) -> dict` callback (with a "loss" key; `final=True` at the last
step, when a callback that samples the split for periodic checks must use all of it).

Two clocks: a *micro-batch* is one forward/backward pass of `micro_batch_size` sequences on one process; an
*optimizer step* consumes `batch_size` sequences = micro_batch_size x processes x accumulation. Every interval
(logging, evaluation, checkpoints) counts optimizer steps. The data order is a pure function of (seed, epoch),
and the position in it is a pure function of the optimizer step, which is what makes resume exact and O(1):
a resumed run skips to its position without reading the batches before it.
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


# Peak dense bf16 throughput in FLOP/s, for MFU; devices not listed get no MFU figure.
_PEAK_FLOPS = {"A100": 312e12, "H100": 989e12, "H200": 989e12, "L4": 121e12, "A10G": 125e12, "4090": 165e12}


def make_sampler(n: int, seed: int, per_step_chunk: int):
    """A shuffling sampler whose order depends only on (seed, epoch) and that can start part-way in.

    Each epoch yields a multiple of `per_step_chunk` (micro_batch_size x processes) indices, so every
    micro-batch is full and processes get equal shares; the few left-over blocks rotate in other epochs.
    """
    import torch

    class EpochSampler(torch.utils.data.Sampler):
        def __init__(self):
            self.epoch = 0
            self.skip = 0  # indices to skip at the start of the next iteration (resume)
            self.used = (n // per_step_chunk) * per_step_chunk

        def set_epoch(self, epoch: int) -> None:
            self.epoch = epoch

        def __len__(self) -> int:
            return self.used - self.skip

        def __iter__(self):
            g = torch.Generator().manual_seed(seed * 100_003 + self.epoch)
            order = torch.randperm(n, generator=g)[: self.used].tolist()
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


def peak_flops() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    for key, value in _PEAK_FLOPS.items():
        if key in name:
            return value
    return None


@dataclass
class FitResult:
    step: int
    tokens_seen: int
    train_loss: float | None
    eval: dict
    seconds: float
    tokens_per_sec: float
    history: list = field(default_factory=list)
    state: dict = field(default_factory=dict)


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
    flops_per_token: float | None = None,
    on_eval: Callable[[int, dict, object, dict], bool] | None = None,
) -> FitResult:
    """Train until cfg.max_steps optimizer steps, with periodic validation and checkpoints.

    `on_eval(step, metrics, model, state)` runs after every evaluation; it may keep values in `state` (saved with
    each checkpoint, so they survive a resume) and returns True to stop early.
    """
    import torch
    from torch.utils.data import DataLoader

    world = accelerator.num_processes
    per_chunk = cfg.micro_batch_size * world
    if cfg.batch_size % per_chunk:
        raise TrainError(
            f"train.batch_size ({cfg.batch_size}) must be a multiple of train.micro_batch_size x processes "
            f"({cfg.micro_batch_size} x {world} = {per_chunk})"
        )
    accum = cfg.batch_size // per_chunk
    if len(train_ds) < per_chunk:
        raise TrainError(
            f"the training split has {len(train_ds)} sequences, fewer than one micro-batch on every process "
            f"({per_chunk}); lower train.micro_batch_size or add data"
        )

    sampler = make_sampler(len(train_ds), seed, per_chunk)
    loader = DataLoader(train_ds, batch_size=cfg.micro_batch_size, sampler=sampler, collate_fn=collate,
                        drop_last=True)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)  # no decay on biases and norm weights
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=False,
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: lr_at(s, lr=cfg.lr, min_lr=cfg.min_lr, warmup=cfg.warmup_steps, total=cfg.max_steps) / cfg.lr,
    )
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    accelerator.register_for_checkpointing(schedule)
    per_epoch = len(sampler) // per_chunk  # micro-batches per process per epoch

    main = accelerator.is_main_process
    state = {"step": 0, "tokens_seen": 0, "seconds": 0.0, "best": None}
    if resume:
        latest = run.latest_checkpoint()
        if latest is None:
            if main and console is not None:
                console.print(f"resume: no checkpoint in {run.checkpoints}, starting from step 0")
        else:
            step, path = latest
            accelerator.load_state(str(path))
            state.update(runs.read_json(path / "trainer_state.json"))
            if main:
                runs.truncate_log(run.log, state["step"])
                if console is not None:
                    console.print(f"resume: continuing from {path} (step {state['step']} of {cfg.max_steps})")
    elif main:
        runs.remove(run.log)

    def micro_batches(start_micro: int):
        epoch, offset = divmod(start_micro, per_epoch)
        while True:
            loader.set_epoch(epoch)
            sampler.skip = offset * per_chunk
            yield from loader
            epoch, offset = epoch + 1, 0

    step = state["step"]
    history: list[dict] = []
    last_eval: dict = {}
    if step >= cfg.max_steps:
        return FitResult(step, state["tokens_seen"], None, evaluate(model, final=True), state["seconds"], 0.0,
                         state=state)

    if step == 0:
        last_eval = evaluate(model)
        _log(run, main, {"step": 0, **_prefixed(last_eval)}, history)
        if on_eval is not None:
            on_eval(0, last_eval, model, state)

    batches = micro_batches(step * accum)
    model.train()
    window_loss = torch.zeros((), device=accelerator.device)
    window_steps = 0
    window_tokens = torch.zeros((), device=accelerator.device, dtype=torch.long)
    window_start = time.perf_counter()
    run_start = time.perf_counter() - state["seconds"]
    tokens_seen = state["tokens_seen"]
    train_loss = None
    interrupted = False
    stop_early = False
    progress = _Progress(console if main else None, cfg.max_steps, step)
    old_handler = signal.getsignal(signal.SIGINT)
    if world == 1:
        # Ctrl-C finishes nothing half-way: the loop stops at the next step boundary and saves a checkpoint.
        def _stop(signum, frame):
            nonlocal interrupted
            interrupted = True

        signal.signal(signal.SIGINT, _stop)
    try:
        while step < cfg.max_steps and not interrupted and not stop_early:
            for i in range(accum):
                batch = next(batches)
                sync = i == accum - 1
                ctx = accelerator.no_sync(model) if not sync else _nullcontext()
                with ctx, accelerator.autocast():
                    loss = model(**batch).loss
                    accelerator.backward(loss / accum)
                window_loss += loss.detach().float() / accum
                window_tokens += batch["attention_mask"].sum() if "attention_mask" in batch else batch[
                    "input_ids"].numel()
            grad_norm = None
            if cfg.grad_clip > 0:
                grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            window_steps += 1

            if step % cfg.log_every == 0 or step == cfg.max_steps or step % cfg.eval_every == 0:
                mean_loss = accelerator.reduce(window_loss, "mean").item() / window_steps
                n_tok = int(accelerator.reduce(window_tokens, "sum").item())
                dt = time.perf_counter() - window_start
                tokens_seen += n_tok
                record = {
                    "step": step,
                    "loss": round(mean_loss, 5),
                    "lr": schedule.get_last_lr()[0],
                    "tokens_per_sec": round(n_tok / dt, 1) if dt > 0 else None,
                    "tokens": tokens_seen,
                    "elapsed": round(time.perf_counter() - run_start, 2),
                }
                if grad_norm is not None:
                    record["grad_norm"] = round(float(grad_norm), 4)
                peak = peak_flops()
                if peak and flops_per_token and dt > 0:
                    record["mfu"] = round(flops_per_token * n_tok / dt / (peak * world), 4)
                train_loss = mean_loss
                if step % cfg.eval_every == 0 or step == cfg.max_steps:
                    last_eval = evaluate(model, final=step == cfg.max_steps)
                    model.train()
                    record.update(_prefixed(last_eval))
                    if on_eval is not None and on_eval(step, last_eval, model, state):
                        stop_early = True
                _log(run, main, record, history)
                progress.update(step, record)
                window_loss.zero_()
                window_tokens.zero_()
                window_steps = 0
                window_start = time.perf_counter()

            if step % cfg.checkpoint_every == 0 or step == cfg.max_steps or interrupted or stop_early:
                state.update(step=step, tokens_seen=tokens_seen, seconds=time.perf_counter() - run_start)
                save_checkpoint(accelerator, run, state, keep=cfg.keep_checkpoints)
    finally:
        progress.close()
        if world == 1:
            signal.signal(signal.SIGINT, old_handler)
    if interrupted:
        raise KeyboardInterrupt(f"stopped at step {step}; checkpoint saved in {run.checkpoint(step)}")

    seconds = time.perf_counter() - run_start
    return FitResult(
        step=step,
        tokens_seen=tokens_seen,
        train_loss=train_loss,
        eval=last_eval,
        seconds=seconds,
        tokens_per_sec=tokens_seen / seconds if seconds > 0 else 0.0,
        history=history,
        state=state,
    )


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _prefixed(metrics: dict) -> dict:
    """Scalar metrics as val_* log fields (lists and strings, e.g. BLEU n-gram counts, stay out of the log)."""
    out = {}
    for k, v in metrics.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        out[f"val_{k}"] = round(v, 5) if isinstance(v, float) else v
    return out


def _log(run: runs.Run, main: bool, record: dict, history: list) -> None:
    history.append(record)
    if main:
        run.log.parent.mkdir(parents=True, exist_ok=True)
        with open(run.log, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


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
