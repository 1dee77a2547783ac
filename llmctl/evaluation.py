"""Evaluation as its own stage: perplexity of a causal LM, and a task's metrics over a split, on every process.

Every process predicts its share of the examples (round robin, padded to equal counts so that sharded models
step together) on the accelerator's device; the predictions are gathered with their positions, so every
process holds them all in input order, and the metrics are computed from them. `load_model_dir` is the one way
a finished model is loaded (its task, spec, tokenizer and the run's recipe), used by `eval`, `summarize` and the
final evaluation of `finetune`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path


def causal_lm_evaluator(accelerator, dataset, collate, *, batch_size: int, max_batches: int = 0):
    """Return `evaluate(model) -> {"loss", "perplexity", "tokens"}` over `dataset` (packed blocks).

    The loss is the mean negative log-likelihood per predicted token over the whole split (token-weighted, so
    a short last block counts for what it holds), gathered across processes without double counting.
    """
    import torch
    from torch.utils.data import DataLoader

    loader = accelerator.prepare(DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate))

    def evaluate(model, final: bool = False) -> dict:
        # Periodic evaluations may look at the first `max_batches` only; the final one sees the whole split.
        limit = 0 if final else max_batches
        was_training = model.training
        model.eval()
        nll = 0.0
        tokens = 0
        with torch.no_grad():
            for i, batch in enumerate(loader):
                if limit and i >= limit:
                    break
                with accelerator.autocast():
                    logits = model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")).logits
                labels = batch["labels"][:, 1:]
                per_token = torch.nn.functional.cross_entropy(
                    logits[:, :-1].float().reshape(-1, logits.size(-1)), labels.reshape(-1),
                    ignore_index=-100, reduction="none",
                ).view(labels.shape)
                sums = per_token.sum(dim=1).double()
                counts = (labels != -100).sum(dim=1)
                sums, counts = accelerator.gather_for_metrics((sums, counts))
                nll += float(sums.sum())
                tokens += int(counts.sum())
        if was_training:
            model.train()
        loss = nll / max(tokens, 1)
        return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": tokens}

    return evaluate


def perplexity(model_path: str, data_path, *, batch_size: int, block_size: int | None, text_column: str) -> dict:
    """`llmctl eval --metric perplexity`: a causal LM directory over a preprocessed split or a text file."""
    import shutil
    from pathlib import Path

    from accelerate import Accelerator

    from llmctl import data, modeling
    from llmctl import tokenizer as tok_mod
    from llmctl.tasks import causal_lm

    data_path = Path(data_path)
    model = modeling.load_causal_lm(model_path)
    tokenizer = tok_mod.load(model_path)
    context = modeling.context_length(model.config) or 1024
    work = None
    if data_path.is_dir() and (data_path / "data" / "validation").is_dir():
        data_path = data_path / "data" / "validation"  # a run directory: its validation split
    if data_path.is_dir():
        if not (data_path / "dataset_info.json").exists() and not (data_path / "state.json").exists():
            raise data.DataError(f"{data_path}: not a preprocessed split (no state.json); pass a data file")
        blocks = data.load_blocks(data_path)
        if "input_ids" not in blocks.column_names:
            raise data.DataError(f"{data_path}: no input_ids column; not a preprocessed causal-LM split")
        longest = max((len(x) for x in blocks[:1]["input_ids"]), default=0)
        if longest > context:
            raise data.DataError(f"{data_path}: blocks of {longest} tokens exceed the model's context ({context})")
    else:
        size = block_size or context
        if size > context:
            raise data.DataError(f"--block-size {size} exceeds the model's context length ({context})")
        blocks, work = data.text_blocks([str(data_path)], tokenizer, size, column=text_column)
    try:
        accelerator = Accelerator()
        model = accelerator.prepare(model)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        evaluate = causal_lm_evaluator(accelerator, blocks, causal_lm.collator(pad_id), batch_size=batch_size)
        result = evaluate(model)
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
    return {"perplexity": result["perplexity"], "loss": result["loss"], "tokens": result["tokens"],
            "sequences": len(blocks)}


# ------------------------------------------------------------------------------------------------ task metrics


def shard_map(accelerator, items: list, fn) -> list:
    """fn over `items` with every process taking its share; the results of all, in input order, on every process.

    Process r takes items r, r + N, r + 2N, ... (so every process sees a similar mix of lengths), padded with a
    repeat of its last item to the same count on every process, because a sharded model (FSDP, ZeRO-3) needs all
    processes to run the same number of forward passes. `fn(shard) -> list` returns one result per item.
    """
    from accelerate.utils import gather_object

    world, rank = accelerator.num_processes, accelerator.process_index
    if world == 1:
        return list(fn(items))
    mine = list(range(rank, len(items), world))
    count = -(-len(items) // world)
    padded = mine + [mine[-1] if mine else 0] * (count - len(mine)) if items else []
    results = list(fn([items[i] for i in padded])) if padded else []
    pairs = [(i, r) for i, r in zip(padded[: len(mine)], results)]
    out = [None] * len(items)
    for i, r in gather_object(pairs):
        out[i] = r
    return out


def sharded(accelerator) -> bool:
    """Whether parameters are sharded (FSDP, DeepSpeed), so every forward pass is a collective and generation
    must keep the processes in step."""
    from accelerate.utils import DistributedType

    return accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)


def predict(accelerator, task, model, tokenizer, spec, settings, examples: list[dict], where: list[str], *,
            seed: int = 0):
    """The task's predictions for `examples` on every process, in input order (a Predictions)."""
    from llmctl.tasks.base import Predictions

    options = {**task.prediction_options(examples), "seed": seed, "synced_gpus": sharded(accelerator)}

    def run(shard):
        got = task.predict(model, [examples[i] for i in shard], [where[i] for i in shard], tokenizer, spec,
                           settings, **options)
        flags = got.capped or [False] * len(got.items)
        return list(zip(got.items, flags))

    pairs = shard_map(accelerator, list(range(len(examples))), run)
    return Predictions([p for p, _ in pairs], capped=[c for _, c in pairs] if task.generates else [])


def generation_settings(cfg, spec, **overrides):
    """GenerationSettings from a recipe's [generation] section and the spec's lengths; None overrides ignored."""
    from llmctl.generation import GenerationSettings

    values = dict(max_new_tokens=spec.max_new_tokens or 1, num_beams=cfg.num_beams, do_sample=cfg.do_sample,
                  temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
                  no_repeat_ngram_size=cfg.no_repeat_ngram_size, batch_size=cfg.batch_size,
                  max_source_length=spec.max_source_length, precision=cfg.precision)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return GenerationSettings(**values)


def metric_names(task, requested) -> list[str]:
    from llmctl import metrics as metric_mod

    return [metric_mod.resolve_name(m) for m in (requested or task.default_metrics)]


def loss_evaluator(accelerator, features: list[dict], collate, *, batch_size: int = 16):
    """Mean validation loss per batch as the model computes it (its `.loss`), over all processes."""
    import torch
    from torch.utils.data import DataLoader

    loader = accelerator.prepare(DataLoader(features, batch_size=batch_size, shuffle=False, collate_fn=collate))

    def loss(model) -> float:
        model.eval()
        total, n = 0.0, 0
        with torch.no_grad():
            for batch in loader:
                with accelerator.autocast():
                    value = model(**batch).loss.detach().float().reshape(1)
                value = accelerator.gather_for_metrics(value)
                total += float(value.sum())
                n += value.numel()
        return total / max(n, 1)

    return loss


def task_evaluator(accelerator, task, spec, tokenizer, examples: list[dict], where: list[str], *, names: list[str],
                   kwargs: dict, settings, max_samples: int = 0, seed: int = 0):
    """`evaluate(model, final=False)` for fit(): validation loss (teacher forcing) and the task metrics.

    Every process predicts its share; the metrics are computed from the gathered predictions on every process,
    so all take the same best-checkpoint and early-stopping decisions without another collective.
    """
    features, _ = task.features(examples, where, tokenizer, spec)
    loss_fn = loss_evaluator(accelerator, features, task.collator(tokenizer.pad_token_id))

    def evaluate(model, final: bool = False) -> dict:
        metrics = {"loss": loss_fn(model)}
        n = len(examples) if final or not max_samples else min(max_samples, len(examples))
        got = predict(accelerator, task, accelerator.unwrap_model(model), tokenizer, spec, settings,
                      examples[:n], where[:n], seed=seed)
        metrics.update(task.score(names, got.items, examples[:n], where[:n], spec, kwargs))
        model.train()
        return metrics

    return evaluate


# ------------------------------------------------------------------------------------------------ loading


@dataclass
class Loaded:
    """A finished model as its run used it: the task, the spec, the tokenizer, and the run's recipe if any."""

    path: str
    model: object
    tokenizer: object
    task: object
    spec: object
    run_dir: Path | None
    recipe: object | None


def run_dir_of(model_dir: str) -> Path | None:
    """The run directory a model directory (runs/X/final) belongs to, if it is one."""
    parent = Path(model_dir).parent
    return parent if (parent / "recipe.toml").exists() and (parent / "results.json").exists() else None


def load_model_dir(path: str, *, task_name: str | None = None, default_task: str | None = None,
                   device=None) -> Loaded:
    """Load a finished model with the head its task needs, on `device`. The task is `task_name`, else the one the
    model's config.llmctl records, else `default_task`; a model from elsewhere that records none needs one."""
    from llmctl import data, modeling
    from llmctl import recipe as recipe_mod
    from llmctl import tasks as registry
    from llmctl import tokenizer as tok_mod

    config = modeling.load_config(path)
    info = getattr(config, "llmctl", None) or {}
    if not isinstance(info, dict):
        raise modeling.ModelError(f"{path}: config.json 'llmctl' must be an object, got {type(info).__name__}")
    name = task_name or info.get("task") or default_task
    if name is None:
        raise data.DataError(f"{path}: the model records no task; pass --task ({', '.join(registry.finetunable())})")
    if name not in registry.REGISTRY or not registry.get(name).finetunable:
        valid = ", ".join(registry.finetunable())
        if task_name is None and name == info.get("task"):  # the model's own record, not an option the user gave
            raise data.DataError(f"{path}: the model records task {name!r}, which has no task head here; fine-tune "
                                 f"it first (llmctl finetune --task TASK --model {path}; tasks: {valid})")
        raise data.DataError(f"--task {name}: unknown task; valid tasks: {valid}")
    task = registry.get(name)
    if info.get("task") not in (None, name):
        raise data.DataError(f"{path}: the model was trained for {info['task']}, not {name}")
    fam = modeling.check_task_family(task, config, path)
    context = None if fam == "seq2seq" else modeling.context_length(config)
    spec = task.spec_from_info(info, config, fam, context)
    model = modeling.load_pretrained(path, task.auto_class(fam))
    tokenizer = tok_mod.load(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if device is not None:
        model.to(device)
    model.eval()
    run_dir = run_dir_of(path)
    recipe = recipe_mod.load(run_dir / "recipe.toml") if run_dir is not None else None
    return Loaded(path, model, tokenizer, task, spec, run_dir, recipe)


# ------------------------------------------------------------------------------------------------ evaluation


def evaluate_model(accelerator, loaded: Loaded, examples: list[dict], where: list[str], *, names: list[str],
                   kwargs: dict, settings, predictions_path: Path | None, console=None, seed: int = 0) -> dict:
    """The full evaluation of a model on every process: metrics, and (main process) predictions next to
    references as JSON Lines."""
    from llmctl import runs
    from llmctl.generation import GenerationReport, cap_warning

    task, spec = loaded.task, loaded.spec
    got = predict(accelerator, task, loaded.model, loaded.tokenizer, spec, settings, examples, where, seed=seed)
    metrics = task.score(names, got.items, examples, where, spec, kwargs)
    capped = sum(got.capped) if task.generates else None
    if accelerator.is_main_process:
        if predictions_path is not None:
            lines = []
            for i, (ex, pred, loc) in enumerate(zip(examples, got.items, where)):
                # `where` (file:line) ties each prediction to the record it was made for.
                row = {"id": ex.get("id", i), **task.row(ex, pred, spec), "where": loc}
                lines.append(json.dumps(row, ensure_ascii=False) + "\n")
            runs.write_text(predictions_path, "".join(lines))
        if capped is not None and console is not None:
            report = GenerationReport(outputs=got.items, capped=capped, total=len(examples))
            warning = cap_warning(report, settings.max_new_tokens)
            if warning:
                console.print(f"[yellow]warning:[/] {warning}")
    return {"metrics": metrics, "capped": capped, "examples": len(examples)}


def baseline(task, spec, train: list[dict], examples: list[dict], where: list[str], names: list[str],
             kwargs: dict) -> dict:
    """The task's trivial baseline on the validation split, scored like the model, so that results say how far
    above it the model is: lead sentence (summarization), copy the source (translation), the majority training
    label (classification, multiple choice), always "no answer" (QA). No model: any process may compute it."""
    return task.score(names, task.baseline(train, examples, spec), examples, where, spec, kwargs)
