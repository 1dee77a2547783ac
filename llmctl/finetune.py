"""`llmctl finetune`: one recipe format for summarization, translation, classification and extractive QA,
whatever the model family. Set up -> fit (the shared loop) -> pick the best checkpoint -> export -> evaluate.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path

from llmctl import data, modeling, runs
from llmctl import tasks as task_registry


class FinetuneError(Exception):
    """A fine-tuning set-up problem (one line)."""


@dataclass
class Setup:
    """Everything a fine-tuning run (and a later `eval` of it) needs, built from a recipe."""

    recipe: object
    task: object
    kind: str
    family: str
    tokenizer: object
    model: object
    train_examples: list
    val_examples: list
    val_where: list
    train_features: list
    collate: object
    labels: list | None
    max_new_tokens: int | None
    context: int | None
    skipped: int
    cut_targets: int


# ------------------------------------------------------------------------------------------------------ recipes


def resolve(recipe_path: Path | None, *, task: str | None, model: str | None, data_file: str | None,
            sets: list[str]):
    """The recipe of `finetune [RECIPE] [--task T] [--model M] [--data F] [--set ...]`."""
    from llmctl import recipe as recipe_mod

    if recipe_path is None:
        if task is None:
            raise recipe_mod.RecipeError(["give a recipe file or --task (summarization, translation, "
                                          "classification, qa)"])
        if task not in task_registry.REGISTRY or task == "causal_lm":
            valid = ", ".join(t for t in task_registry.REGISTRY if t != "causal_lm")
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


# ----------------------------------------------------------------------------------------------------- set up


def _texts_for_tokenizer(kind: str, examples: list[dict]):
    for ex in examples:
        if kind == "generate":
            yield ex["source"]
            yield ex["target"]
        elif kind == "classify":
            yield ex["text"]
            if "text_pair" in ex:
                yield ex["text_pair"]
        else:
            yield ex["question"]
            yield ex["context"]


def _split(examples: list, where: list, fraction: float, seed: int):
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(order) * fraction))
    if len(order) - n_val < 1:
        raise data.DataError(f"{where[0].rsplit(':', 1)[0]}: too few records to hold out a validation split")
    val, train = sorted(order[:n_val]), sorted(order[n_val:])
    return [examples[i] for i in train], [where[i] for i in train], [examples[i] for i in val], [where[i] for i in val]


def setup(recipe, run: runs.Run | None, console=None) -> Setup:
    from llmctl import tokenizer as tok_mod

    say = console.print if console is not None else (lambda *a, **k: None)
    if recipe.task == "causal_lm":
        raise FinetuneError("task causal_lm is trained by `llmctl pretrain`; set task to summarization, "
                            "translation, classification or qa")
    task = task_registry.get(recipe.task)
    kind = task.KIND
    d = recipe.data
    if not d.train_files:
        raise data.DataError("data.train_files is empty: fine-tuning reads local files")
    train_ex, train_where = data.read_examples(list(d.train_files), task.normalize, d)
    if d.validation_files:
        val_ex, val_where = data.read_examples(list(d.validation_files), task.normalize, d)
    else:
        train_ex, train_where, val_ex, val_where = _split(train_ex, train_where, d.validation_fraction, recipe.seed)

    skipped = 0
    if kind == "span":
        train_ex, skipped = task.check_answers(train_ex, train_where)
        val_ex_kept, val_skipped = task.check_answers(val_ex, val_where)
        kept = {id(ex) for ex in val_ex_kept}
        val_where = [w for w, ex in zip(val_where, val_ex) if id(ex) in kept]
        val_ex = val_ex_kept
        skipped += val_skipped
        if skipped:
            say(f"[yellow]warning:[/] skipped {skipped} QA records whose answer is not in the context at "
                "answer_start")

    source = recipe.tokenizer.path or recipe.model.path
    if source:
        tokenizer = tok_mod.load(source)
    else:
        t = recipe.tokenizer
        say(f"finetune: training a byte-level BPE tokenizer (vocab {t.vocab_size}) on the training split")
        tokenizer = tok_mod.train_bpe(_texts_for_tokenizer(kind, train_ex), vocab_size=t.vocab_size,
                                      min_frequency=t.min_frequency, eos_token=t.eos_token, pad_token=t.pad_token,
                                      extra_special_tokens=t.extra_special_tokens, show_progress=False)
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise FinetuneError(f"{source}: the tokenizer has neither a pad nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token

    labels = None
    if kind == "classify":
        labels = task.label_map(train_ex)
        if len(labels) < 2:
            raise data.DataError(f"{d.train_files[0]}: classification needs at least two labels, found {labels}")
    config = modeling.task_config(recipe, tokenizer, labels=labels, families=task.FAMILIES)
    origin = recipe.model.path or f"model.arch {recipe.model.arch!r}"
    fam = modeling.check_task_family(recipe.task, task.FAMILIES, config, origin)
    model = modeling.task_model(recipe, config, recipe.task, fam, recipe.seed)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        raise modeling.ModelError(f"{origin}: the tokenizer has {len(tokenizer)} tokens but the model's embedding "
                                  f"only {model.get_input_embeddings().num_embeddings}")
    context = modeling.context_length(model.config)
    if fam == "seq2seq":
        context = None  # the encoder and decoder lengths are separate; T5 has no fixed limit
    pad = tokenizer.pad_token_id

    max_new = None
    cut = 0
    if kind == "generate":
        from llmctl.generation import derive_max_new_tokens
        from llmctl.tasks import generative

        lengths = generative.target_lengths(train_ex, tokenizer, fam)
        ceiling = recipe.data.max_target_length + 1
        if fam == "causal" and context is not None:
            ceiling = min(ceiling, context // 2)  # a decoder-only model shares its context with the prompt
        max_new = recipe.generation.max_new_tokens or derive_max_new_tokens(lengths, ceiling=ceiling)
        if max_new < max(lengths):
            say(f"[yellow]warning:[/] the longest training target has {max(lengths)} tokens; generation stops "
                f"at {max_new} (the model's context is {context})")
        budget = source_budget(recipe, fam, context, max_new)
        inputs = generative.model_inputs(train_ex, tokenizer, family=fam, prompt=prompt_of(recipe, task),
                                         source_prefix=d.source_prefix, source_budget=budget)
        max_target = d.max_target_length if context is None else min(d.max_target_length, max(1, context - budget))
        feats, cut = generative.features(train_ex, inputs, tokenizer, family=fam,
                                         max_source_length=d.max_source_length, max_target_length=max_target)
        if context is not None:
            feats = [{k: v[:context] for k, v in f.items()} for f in feats]
        collate = generative.collator(pad)
        if cut:
            say(f"[yellow]warning:[/] {cut} of {len(train_ex)} training targets are longer than "
                f"{max_target} tokens and were cut (data.max_target_length)")
    elif kind == "classify":
        label2id = {str(v): i for i, v in enumerate(labels)}
        ids = task.label_ids(train_ex, train_where, label2id)
        length = min(d.max_source_length, context or d.max_source_length)
        feats = task.features(train_ex, ids, tokenizer, max_length=length)
        collate = task.collator(pad)
    else:
        length = min(d.max_source_length, context or d.max_source_length)
        cols = task.prepare_train_features(train_ex, tokenizer, max_length=length,
                                           doc_stride=min(d.doc_stride, length // 2))
        feats = [dict(zip(cols, row)) for row in zip(*cols.values())]
        collate = task.collator(pad)

    model = _maybe_lora(recipe, model, fam)
    return Setup(recipe, task, kind, fam, tokenizer, model, train_ex, val_ex, val_where, feats, collate, labels,
                 max_new, context, skipped, cut)


def prompt_of(recipe, task) -> str:
    return recipe.data.prompt or getattr(task, "DEFAULT_PROMPT", "{source}")


def source_budget(recipe, fam: str, context: int | None, max_new: int) -> int:
    """Tokens the model input may take: the recipe's limit, and for causal LMs room left for the output."""
    limit = recipe.data.max_source_length
    if fam == "causal" and context is not None:
        if context - max_new < 8:
            raise FinetuneError(f"the model's context ({context} tokens) leaves no room for a prompt before "
                                f"{max_new} generated tokens; lower generation.max_new_tokens")
        limit = min(limit, context - max_new)
    return limit


def _maybe_lora(recipe, model, fam: str):
    lo = recipe.lora
    if not lo.enabled:
        return model
    from peft import LoraConfig, TaskType, get_peft_model

    task_type = {"summarization": TaskType.SEQ_2_SEQ_LM if fam == "seq2seq" else TaskType.CAUSAL_LM,
                 "translation": TaskType.SEQ_2_SEQ_LM if fam == "seq2seq" else TaskType.CAUSAL_LM,
                 "classification": TaskType.SEQ_CLS, "qa": TaskType.QUESTION_ANS}[recipe.task]
    config = LoraConfig(task_type=task_type, r=lo.r, lora_alpha=lo.alpha, lora_dropout=lo.dropout,
                        target_modules=list(lo.target_modules) or None)
    try:
        return get_peft_model(model, config)
    except ValueError as exc:
        raise FinetuneError(f"lora: {str(exc).splitlines()[0]} (set lora.target_modules)") from None


# ------------------------------------------------------------------------------------------------- evaluation


def task_info(s: Setup) -> dict:
    """What `eval` and `summarize` need to use the exported model like the run did, kept in its config."""
    r = s.recipe
    info = {"task": r.task, "family": s.family}
    if s.kind == "generate":
        info.update(prompt=prompt_of(r, s.task), source_prefix=r.data.source_prefix,
                    max_new_tokens=s.max_new_tokens,
                    max_source_length=source_budget(r, s.family, s.context, s.max_new_tokens))
    else:
        info.update(max_source_length=min(r.data.max_source_length, s.context or r.data.max_source_length))
        if s.kind == "span":
            info["doc_stride"] = r.data.doc_stride
    return info


def metric_settings(recipe, task, labels) -> tuple[list[str], dict]:
    from llmctl import metrics as metric_mod

    names = [metric_mod.resolve_name(m) for m in (recipe.eval.metrics or task.DEFAULT_METRICS)]
    if task.KIND == "classify":
        kwargs = task.metric_kwargs(recipe, len(labels or []))
    else:
        kwargs = task.metric_kwargs(recipe)
    return names, kwargs


def pick(metrics: dict, key: str) -> float | None:
    """A metric value by `metric.key`, `key` alone when unambiguous, or "loss"."""
    if key in metrics and isinstance(metrics[key], (int, float)):
        return float(metrics[key])
    hits = [v for k, v in metrics.items() if k.split(".", 1)[-1] == key and isinstance(v, (int, float))]
    return float(hits[0]) if len(hits) == 1 else None


# --------------------------------------------------------------------------------------------------------- run


def run_finetune(recipe, run: runs.Run, *, resume: bool, console) -> dict:
    from accelerate import Accelerator, PartialState
    from accelerate.utils import set_seed
    import torch

    from llmctl import evaluation
    from llmctl.train import fit, precision_for

    cpu = not torch.cuda.is_available()
    state = PartialState(cpu=cpu)
    main = state.is_main_process
    out = console if main else None
    started = time.perf_counter()
    set_seed(recipe.seed)
    s = setup(recipe, run, out)
    names, kwargs = metric_settings(recipe, s.task, s.labels)
    best_name = recipe.eval.best_metric or s.task.DEFAULT_BEST
    higher = best_name.split(".")[-1] != "loss"

    mixed = precision_for(recipe.train.precision)
    accelerator = Accelerator(mixed_precision=mixed, cpu=cpu)
    n_params = modeling.count_parameters(s.model)
    trainable = sum(p.numel() for p in s.model.parameters() if p.requires_grad)
    if out is not None:
        out.print(
            f"finetune: {recipe.task} with {s.model.config.model_type} ({modeling.FAMILY_NAMES[s.family]}), "
            f"{n_params / 1e6:.2f}M parameters ({trainable / 1e6:.2f}M trainable), {len(s.train_examples):,} train / "
            f"{len(s.val_examples):,} validation examples, {accelerator.num_processes} process(es), "
            f"best checkpoint by {best_name}"
            + (f", max_new_tokens {s.max_new_tokens}" if s.max_new_tokens else "")
        )
    if main:
        runs.remove(run.tokenizer)
        s.tokenizer.save_pretrained(run.tokenizer)
        write_validation(run, s)

    in_training = evaluation.task_evaluator(s, names, kwargs, accelerator=accelerator,
                                            max_samples=recipe.eval.max_samples)
    best_dir = run.root / "best"

    def on_eval(step: int, metrics: dict, model, st: dict) -> bool:
        value = pick(metrics, best_name)
        if value is None:
            raise FinetuneError(f"eval.best_metric: {best_name!r} is not among the computed metrics "
                                f"({', '.join(k for k in metrics if isinstance(metrics[k], (int, float)))})")
        better = st.get("best") is None or (value > st["best"] if higher else value < st["best"])
        if better:
            st.update(best=value, best_step=step, bad_evals=0)
            if main:
                save_model(accelerator.unwrap_model(model), s.tokenizer, best_dir, task_info(s))
        else:
            st["bad_evals"] = st.get("bad_evals", 0) + 1
        accelerator.wait_for_everyone()
        return bool(recipe.eval.patience and st["bad_evals"] >= recipe.eval.patience)

    result = fit(
        accelerator=accelerator, model=s.model, train_ds=s.train_features, collate=s.collate, cfg=recipe.train,
        seed=recipe.seed, run=run, evaluate=in_training, resume=resume, console=out, on_eval=on_eval,
    )
    accelerator.wait_for_everyone()
    results = {}
    if main:
        model = accelerator.unwrap_model(s.model)
        if best_dir.is_dir():
            _load_best(model, best_dir)
        export_final(model, s, run.final)
        final = evaluation.evaluate_setup(s, load_final(run.final, recipe.task), names, kwargs,
                                          predictions_path=run.root / "predictions.jsonl", console=out)
        base = evaluation.baseline(s, names, kwargs)
        history = runs.read_log(run.log)
        first = next((r for r in history if r.get("step") == 0), {})
        results = {
            "task": recipe.task,
            "recipe": recipe.name,
            "model": s.model.config.model_type,
            "family": s.family,
            "parameters": n_params,
            "trainable_parameters": trainable,
            "lora": recipe.lora.enabled,
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
            "max_new_tokens": s.max_new_tokens,
            "capped_outputs": final.get("capped"),
            "tokens_seen": result.tokens_seen,
            "train_seconds": round(result.seconds, 2),
            "wall_seconds": round(time.perf_counter() - started, 2),
            "world_size": accelerator.num_processes,
            "predictions": str(run.root / "predictions.jsonl"),
        }
        runs.write_json(run.results, results)
    accelerator.wait_for_everyone()
    return results


def write_validation(run: runs.Run, s: Setup) -> None:
    """The normalized validation split, so `llmctl eval --model runs/X/final` can score it later."""
    import json

    path = run.data / "validation.jsonl"
    runs.write_text(path, "".join(json.dumps(ex, ensure_ascii=False) + "\n" for ex in s.val_examples))
    runs.write_json(run.data / "meta.json", {"task": s.recipe.task, "validation": len(s.val_examples),
                                             "train": len(s.train_examples), "labels": s.labels})


def save_model(model, tokenizer, path: Path, info: dict) -> None:
    """save_pretrained into `path` atomically (LoRA: the adapter in PEFT format)."""
    import shutil

    tmp = path.with_name(path.name + ".tmp")
    runs.remove(tmp)
    model.config.llmctl = info
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    runs.remove(path)
    shutil.move(str(tmp), str(path))


def _load_best(model, best_dir: Path) -> None:
    """Put the best checkpoint's weights back into the in-memory model (full weights or a LoRA adapter)."""
    from safetensors.torch import load_file

    if (best_dir / "adapter_model.safetensors").exists():
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(best_dir / "adapter_model.safetensors"))
        return
    files = sorted(best_dir.glob("*.safetensors"))
    state = {}
    for f in files:
        state.update(load_file(f))
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {k for k in missing if "lm_head" in k or "embed" in k or "shared" in k}
    if set(missing) - tied:
        raise FinetuneError(f"{best_dir}: the best checkpoint lacks {sorted(set(missing) - tied)[:3]}")


def export_final(model, s: Setup, final: Path) -> None:
    """final/: a plain transformers model. With LoRA the adapter goes to adapter/ and a merged copy to final/."""
    info = task_info(s)
    if s.recipe.lora.enabled:
        save_model(model, s.tokenizer, final.with_name("adapter"), info)
        model = model.merge_and_unload()
    if s.max_new_tokens:
        model.generation_config.max_new_tokens = s.max_new_tokens
    save_model(model, s.tokenizer, final, info)


def load_final(path: Path, task: str):
    return modeling.load_for_task(str(path), task)


def plan(recipe, root: Path, *, num_processes: int = 1) -> dict:
    """What `finetune` would do, for --dry-run: reads the data and the model config, trains nothing."""
    from transformers import AutoConfig

    task = task_registry.get(recipe.task)
    if recipe.task == "causal_lm":
        raise FinetuneError("task causal_lm is trained by `llmctl pretrain`")
    d = recipe.data
    train_ex, _ = data.read_examples(list(d.train_files), task.normalize, d)
    n_val = None
    if d.validation_files:
        n_val = len(data.read_examples(list(d.validation_files), task.normalize, d)[0])
    if recipe.model.path:
        try:
            config = AutoConfig.from_pretrained(recipe.model.path)
        except (OSError, ValueError) as exc:
            raise modeling.ModelError(modeling.not_found(recipe.model.path, "model", exc)) from None
    else:
        try:
            config = AutoConfig.for_model(recipe.model.arch, **dict(recipe.model.config))
        except (ValueError, TypeError) as exc:
            raise modeling.ModelError(f"model.arch {recipe.model.arch!r}: {exc}") from None
    fam = modeling.check_task_family(recipe.task, task.FAMILIES, config, recipe.model.path or recipe.model.arch)
    names = recipe.eval.metrics or task.DEFAULT_METRICS
    t = recipe.train
    run = runs.Run(Path(root))
    return {
        "recipe": recipe.name,
        "task": recipe.task,
        "model": f"{config.model_type} ({modeling.FAMILY_NAMES[fam]}, "
                 f"{'from ' + recipe.model.path if recipe.model.path else 'from scratch'})",
        "train_examples": len(train_ex) if d.validation_files else len(train_ex) - max(1, round(len(train_ex) * d.validation_fraction)),
        "validation_examples": n_val if n_val is not None else max(1, round(len(train_ex) * d.validation_fraction)),
        "metrics": ", ".join(names),
        "best_metric": recipe.eval.best_metric or task.DEFAULT_BEST,
        "lora": recipe.lora.enabled,
        "processes": num_processes,
        "examples_per_step": t.batch_size,
        "steps": t.max_steps,
        "output": {"run": str(run.root), "final": str(run.final), "results": str(run.results),
                   "predictions": str(run.root / "predictions.jsonl")},
    }
