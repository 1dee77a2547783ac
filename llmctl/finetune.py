"""`llmctl finetune`: one recipe format for every task in `llmctl.tasks`, whatever the model family.
Set up -> fit (the shared loop) -> export the best checkpoint -> evaluate it (`llmctl.evaluation`).

Nothing here depends on which task runs: the task object says how records become features, which head the model
needs, how outputs become predictions, its metrics and its baseline.
"""

from __future__ import annotations

import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from llmctl import data, modeling, runs
from llmctl import tasks as registry


class FinetuneError(Exception):
    """A fine-tuning set-up problem (one line)."""


@dataclass
class Setup:
    """Everything a fine-tuning run needs, built from a recipe."""

    recipe: object
    task: object
    spec: object
    tokenizer: object
    model: object
    train_examples: list
    train_where: list
    val_examples: list
    val_where: list
    train_features: list
    skipped: int
    cut_targets: int


# ------------------------------------------------------------------------------------------------------ recipes


def resolve(recipe_path: Path | None, *, task: str | None, model: str | None, data_file: str | None,
            sets: list[str]):
    """The recipe of `finetune [RECIPE] [--task T] [--model M] [--data F] [--set ...]`."""
    from llmctl import recipe as recipe_mod

    valid = ", ".join(registry.finetunable())
    if recipe_path is None:
        if task is None:
            raise recipe_mod.RecipeError([f"give a recipe file or --task ({valid})"])
        if task not in registry.finetunable():
            raise recipe_mod.RecipeError([f"--task {task}: unknown task; valid tasks: {valid}"])
        recipe_path = Path("recipes") / f"{task}.toml"
    extra = list(sets)
    if task is not None:
        extra.insert(0, f'task="{task}"')
    if model is not None:
        extra.append(f"model.path={_toml_str(model)}")
    if data_file is not None:
        extra.append(f"data.train_files=[{_toml_str(data_file)}]")
    r = recipe_mod.load(recipe_path, extra)
    return with_resolved_paths(r)


def with_resolved_paths(r):
    """The recipe with `pkg:` model and tokenizer paths turned into directories."""
    model_path = modeling.resolve_path(r.model.path)
    tok_path = modeling.resolve_path(r.tokenizer.path)
    if model_path == r.model.path and tok_path == r.tokenizer.path:
        return r
    return r.model_copy(update={"model": r.model.model_copy(update={"path": model_path}),
                                "tokenizer": r.tokenizer.model_copy(update={"path": tok_path})})


def _toml_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def task_of(recipe):
    task = registry.get(recipe.task)
    if not task.finetunable:
        raise FinetuneError(f"task {recipe.task} is trained by `llmctl pretrain`; set task to one of "
                            f"{', '.join(registry.finetunable())}")
    return task


# ----------------------------------------------------------------------------------------------------- set up


def read_splits(recipe, task):
    """(train, train_where, validation, validation_where, skipped): the recipe's files normalized by the task;
    without validation files, `data.validation_fraction` of the training records is held out (seeded)."""
    d = recipe.data
    if not d.train_files:
        raise data.DataError("data.train_files is empty: fine-tuning reads local files")
    train, train_where = data.read_examples(list(d.train_files), task.normalize, d)
    if d.validation_files:
        val, val_where = data.read_examples(list(d.validation_files), task.normalize, d)
    else:
        order = list(range(len(train)))
        random.Random(recipe.seed).shuffle(order)
        n_val = max(1, round(len(order) * d.validation_fraction))
        if len(order) - n_val < 1:
            raise data.DataError(f"{train_where[0].rsplit(':', 1)[0]}: too few records to hold out a validation split")
        held, kept = sorted(order[:n_val]), sorted(order[n_val:])
        val, val_where = [train[i] for i in held], [train_where[i] for i in held]
        train, train_where = [train[i] for i in kept], [train_where[i] for i in kept]
    train, train_where, skipped = task.clean(train, train_where)
    val, val_where, val_skipped = task.clean(val, val_where)
    return train, train_where, val, val_where, skipped + val_skipped


def tokenizer_for(recipe, task, train: list[dict], run: runs.Run, accelerator, *, resume: bool, say):
    """The run's tokenizer: the recipe's or the model's, or a BPE trained on the training split. It is made once,
    by the main process, and saved in the run; the other processes (and a resumed run) load that copy."""
    from llmctl import tokenizer as tok_mod

    if accelerator.is_main_process:
        source = recipe.tokenizer.path or recipe.model.path
        if resume and (run.tokenizer / "tokenizer.json").exists():
            tokenizer = tok_mod.load(str(run.tokenizer))
        elif source:
            tokenizer = tok_mod.load(source)
        else:
            t = recipe.tokenizer
            say(f"finetune: training a byte-level BPE tokenizer (vocab {t.vocab_size}) on the training split")
            tokenizer = tok_mod.train_bpe(task.tokenizer_texts(train), vocab_size=t.vocab_size,
                                          min_frequency=t.min_frequency, eos_token=t.eos_token,
                                          pad_token=t.pad_token, extra_special_tokens=t.extra_special_tokens,
                                          show_progress=False)
        if tokenizer.pad_token_id is None:
            if tokenizer.eos_token_id is None:
                raise FinetuneError(f"{source}: the tokenizer has neither a pad nor an EOS token")
            tokenizer.pad_token = tokenizer.eos_token
        tmp = run.tokenizer.with_name(run.tokenizer.name + ".tmp")
        runs.remove(tmp)
        tokenizer.save_pretrained(tmp)
        runs.remove(run.tokenizer)
        tmp.rename(run.tokenizer)
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        tokenizer = tok_mod.load(str(run.tokenizer))
    return tokenizer


def setup(recipe, run: runs.Run, accelerator, *, resume: bool = False, console=None) -> Setup:
    say = console.print if console is not None else (lambda *a, **k: None)
    task = task_of(recipe)
    train, train_where, val, val_where, skipped = read_splits(recipe, task)
    if skipped:
        say(f"[yellow]warning:[/] skipped {skipped} records that {task.name} cannot learn from "
            "(for QA: the answer is not in the context at answer_start)")
    tokenizer = tokenizer_for(recipe, task, train, run, accelerator, resume=resume, say=say)

    # The family decides the head; the head's settings (labels) come from the spec, which needs the context.
    probe = modeling.task_config(recipe, task, tokenizer)
    origin = recipe.model.path or f"model.arch {recipe.model.arch!r}"
    fam = modeling.check_task_family(task, probe, origin)
    context = None if fam == "seq2seq" else modeling.context_length(probe)
    spec = task.spec(recipe, tokenizer, train, fam, context, say)
    config = modeling.task_config(recipe, task, tokenizer, extra=task.config_overrides(spec))
    model = modeling.task_model(recipe, config, task.auto_class(fam), recipe.seed)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        raise modeling.ModelError(f"{origin}: the tokenizer has {len(tokenizer)} tokens but the model's embedding "
                                  f"only {model.get_input_embeddings().num_embeddings}")
    feats, cut = task.features(train, train_where, tokenizer, spec)
    if cut:
        say(f"[yellow]warning:[/] {cut} of {len(train)} training targets are longer than "
            f"{spec.max_target_length} tokens and were cut (data.max_target_length)")
    model = _maybe_lora(recipe, task, model, fam, accelerator)
    return Setup(recipe, task, spec, tokenizer, model, train, train_where, val, val_where, feats, skipped, cut)


def _maybe_lora(recipe, task, model, fam: str, accelerator):
    lo = recipe.lora
    if not lo.enabled:
        return model
    from peft import LoraConfig, TaskType, get_peft_model

    from llmctl.evaluation import sharded

    if sharded(accelerator):
        raise FinetuneError("lora: LoRA runs use data parallelism (DDP); drop the FSDP/DeepSpeed "
                            "train.accelerate_config, the adapters are small enough not to need sharding")
    kind = task.peft_types.get(fam)
    config = LoraConfig(task_type=getattr(TaskType, kind) if kind else None, r=lo.r, lora_alpha=lo.alpha,
                        lora_dropout=lo.dropout, target_modules=list(lo.target_modules) or None,
                        modules_to_save=list(task.lora_modules_to_save) or None)
    try:
        return get_peft_model(model, config)
    except ValueError as exc:
        raise FinetuneError(f"lora: {str(exc).splitlines()[0]} (set lora.target_modules)") from None


def pick(metrics: dict, key: str) -> float | None:
    """A metric value by `metric.key`, `key` alone when unambiguous, or "loss"."""
    if key in metrics and isinstance(metrics[key], (int, float)):
        return float(metrics[key])
    hits = [v for k, v in metrics.items() if k.split(".", 1)[-1] == key and isinstance(v, (int, float))]
    return float(hits[0]) if len(hits) == 1 else None


# --------------------------------------------------------------------------------------------------------- run


def run_finetune(recipe, run: runs.Run, *, resume: bool, console) -> dict:
    from llmctl import evaluation
    from llmctl.tasks.base import FAMILY_NAMES
    from llmctl.train import fit, make_accelerator

    started = time.perf_counter()
    accelerator, precision = make_accelerator(recipe.train.precision, seed=recipe.seed)
    main = accelerator.is_main_process
    out = console if main else None
    s = setup(recipe, run, accelerator, resume=resume, console=out)
    task, spec = s.task, s.spec
    names = evaluation.metric_names(task, recipe.eval.metrics)
    kwargs = task.metric_kwargs(recipe.eval, spec)
    settings = evaluation.generation_settings(recipe.generation, spec)
    best_name = recipe.eval.best_metric or task.best_metric
    higher = best_name.split(".")[-1] != "loss"

    n_params = modeling.count_parameters(s.model)
    trainable = sum(p.numel() for p in s.model.parameters() if p.requires_grad)
    if out is not None:
        out.print(
            f"finetune: {recipe.task} with {s.model.config.model_type} ({FAMILY_NAMES[spec.family]}), "
            f"{n_params / 1e6:.2f}M parameters ({trainable / 1e6:.2f}M trainable), {len(s.train_examples):,} train / "
            f"{len(s.val_examples):,} validation examples, {accelerator.num_processes} process(es), "
            f"precision {precision}, best checkpoint by {best_name}"
            + (f", max_new_tokens {spec.max_new_tokens}" if spec.max_new_tokens else "")
        )
    if main:
        write_validation(run, s)

    in_training = evaluation.task_evaluator(accelerator, task, spec, s.tokenizer, s.val_examples, s.val_where,
                                            names=names, kwargs=kwargs, settings=settings,
                                            max_samples=recipe.eval.max_samples, seed=recipe.seed)
    best_dir = run.root / "best"

    def on_eval(step: int, metrics: dict, model, st: dict) -> bool:
        value = pick(metrics, best_name)
        if value is None:
            raise FinetuneError(f"eval.best_metric: {best_name!r} is not among the computed metrics "
                                f"({', '.join(k for k in metrics if isinstance(metrics[k], (int, float)))})")
        if st.get("best") is None or (value > st["best"] if higher else value < st["best"]):
            st.update(best=value, best_step=step, bad_evals=0)
            modeling.save_model(accelerator, model, s.tokenizer, best_dir, spec.to_info())
        else:
            st["bad_evals"] = st.get("bad_evals", 0) + 1
        return bool(recipe.eval.patience and st["bad_evals"] >= recipe.eval.patience)

    result = fit(
        accelerator=accelerator, model=s.model, train_ds=s.train_features, collate=task.collator(s.tokenizer.pad_token_id),
        cfg=recipe.train, seed=recipe.seed, run=run, evaluate=in_training, resume=resume, console=out,
        on_eval=on_eval,
    )
    export_final(accelerator, result.model, s, best_dir, run)
    loaded = evaluation.load_model_dir(str(run.final), device=accelerator.device)
    final = evaluation.evaluate_model(accelerator, loaded, s.val_examples, s.val_where, names=names, kwargs=kwargs,
                                      settings=settings, predictions_path=run.root / "predictions.jsonl",
                                      console=out, seed=recipe.seed)
    results = {}
    if main:
        base = evaluation.baseline(task, spec, s.train_examples, s.val_examples, s.val_where, names, kwargs)
        history = runs.read_log(run.log)
        first = next((r for r in history if r.get("step") == 0), {})
        results = {
            "task": recipe.task,
            "recipe": recipe.name,
            "model": s.model.config.model_type,
            "family": spec.family,
            "parameters": n_params,
            "trainable_parameters": trainable,
            "lora": recipe.lora.enabled,
            "precision": precision,
            "steps": result.step,
            "stopped_early": result.step < recipe.train.max_steps,
            "best_metric": best_name,
            "best_step": result.state.get("best_step"),
            "metrics": final["metrics"],
            "initial_metrics": {k[4:]: v for k, v in first.items() if k.startswith("val_")},
            "baseline_metrics": {k: v for k, v in base.items() if isinstance(v, (int, float, str))},
            "validation_examples": len(s.val_examples),
            "skipped_records": s.skipped,
            "cut_targets": s.cut_targets,
            "max_new_tokens": spec.max_new_tokens,
            "capped_outputs": final.get("capped"),
            "tokens_seen": result.tokens_seen,
            "train_seconds": round(result.seconds, 2),
            "wall_seconds": round(time.perf_counter() - started, 2),
            "world_size": accelerator.num_processes,
            "predictions": str(run.root / "predictions.jsonl"),
        }
        if result.mfu is not None:
            results["mfu"] = result.mfu
        runs.write_json(run.results, results)
    accelerator.wait_for_everyone()
    return results


def write_validation(run: runs.Run, s: Setup) -> None:
    """The normalized validation split, so `llmctl eval --model runs/X/final` can score it later."""
    import json

    path = run.data / "validation.jsonl"
    runs.write_text(path, "".join(json.dumps(ex, ensure_ascii=False) + "\n" for ex in s.val_examples))
    runs.write_json(run.data / "meta.json", {"task": s.recipe.task, "validation": len(s.val_examples),
                                             "train": len(s.train_examples), "labels": list(s.spec.labels)})


def export_final(accelerator, model, s: Setup, best_dir: Path, run: runs.Run) -> None:
    """final/: a plain transformers model of the best checkpoint. best/ was written from the gathered full state
    dict, so the main process copies it; with LoRA, best/ holds the adapter, which goes to adapter/, and every
    process merges it into its copy of the model before the merged model is saved (LoRA runs are DDP only)."""
    main = accelerator.is_main_process
    if not s.recipe.lora.enabled:
        if main:
            tmp = run.final.with_name(run.final.name + ".tmp")
            runs.remove(tmp)
            shutil.copytree(best_dir, tmp)
            runs.remove(run.final)
            tmp.rename(run.final)
        accelerator.wait_for_everyone()
        return
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    peft_model = accelerator.unwrap_model(model)
    set_peft_model_state_dict(peft_model, load_file(best_dir / "adapter_model.safetensors"))
    if main:
        adapter = run.root / "adapter"
        runs.remove(adapter)
        shutil.copytree(best_dir, adapter)
    merged = peft_model.merge_and_unload()
    modeling.save_model(accelerator, merged, s.tokenizer, run.final, s.spec.to_info())


def plan(recipe, root: Path, *, num_processes: int = 1) -> dict:
    """What `finetune` would do, for --dry-run: reads the data and the model config, trains nothing."""
    from transformers import AutoConfig

    from llmctl.tasks.base import FAMILY_NAMES

    task = task_of(recipe)
    train, _, val, _, _ = read_splits(recipe, task)
    if recipe.model.path:
        config = modeling.load_config(recipe.model.path)
    else:
        try:
            config = AutoConfig.for_model(recipe.model.arch, **dict(recipe.model.config))
        except (ValueError, TypeError) as exc:
            raise modeling.ModelError(f"model.arch {recipe.model.arch!r}: {exc}") from None
    fam = modeling.check_task_family(task, config, recipe.model.path or recipe.model.arch)
    t = recipe.train
    run = runs.Run(Path(root))
    return {
        "recipe": recipe.name,
        "task": recipe.task,
        "model": f"{config.model_type} ({FAMILY_NAMES[fam]}, "
                 f"{'from ' + recipe.model.path if recipe.model.path else 'from scratch'})",
        "train_examples": len(train),
        "validation_examples": len(val),
        "metrics": ", ".join(recipe.eval.metrics or task.default_metrics),
        "best_metric": recipe.eval.best_metric or task.best_metric,
        "lora": recipe.lora.enabled,
        "processes": num_processes,
        "examples_per_step": t.batch_size,
        "steps": t.max_steps,
        "output": {"run": str(run.root), "final": str(run.final), "results": str(run.results),
                   "predictions": str(run.root / "predictions.jsonl")},
    }
