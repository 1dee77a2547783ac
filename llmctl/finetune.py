"""`llmctl finetune`: one recipe format for every task in `llmctl.tasks`, whatever the model family.
Set up -> fit (the shared loop) -> export the best checkpoint -> evaluate it (`llmctl.evaluation`).

Nothing here depends on which task runs: the task object says how records become features, which head the model
needs, how outputs become predictions, its metrics and its baseline.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from llmctl import modeling, runs
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
    train_examples: object  # taskdata.Records: memory-mapped, iterable
    val_examples: list
    val_where: list
    train_features: object  # datasets.Dataset
    skipped: int
    cut_targets: int


# ------------------------------------------------------------------------------------------------------ recipes


def resolve(recipe_path: str | Path | None, *, task: str | None, model: str | None, data_files: list[str] = (),
            validation_files: list[str] = (), sets: list[str] = ()):
    """The recipe of `finetune [RECIPE] [--task T] [--model M] [--data F ...] [--validation-data F ...] [--set ...]`:
    a recipe file, a shipped recipe's name, or the shipped recipe of the task."""
    from llmctl import catalog
    from llmctl import recipe as recipe_mod

    valid = ", ".join(registry.finetunable())
    if recipe_path is None:
        if task is None:
            raise recipe_mod.RecipeError([f"give a recipe file or --task ({valid})"])
        if task not in registry.finetunable():
            raise recipe_mod.RecipeError([f"--task {task}: unknown task; valid tasks: {valid}"])
        path = catalog.for_task(task)
    else:
        path = catalog.find(recipe_path)
    extra = recipe_mod.data_overrides(data_files, validation_files)
    if task is not None:
        extra.insert(0, f'task="{task}"')
    if model is not None:
        extra.append(f"model.path={_toml_str(model)}")
    return catalog.resolve_paths(recipe_mod.load(path, [*extra, *sets]))


def _toml_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def task_of(recipe):
    task = registry.get(recipe.task)
    if not task.finetunable:
        raise FinetuneError(f"task {recipe.task} is trained by `llmctl pretrain`; set task to one of "
                            f"{', '.join(registry.finetunable())}")
    return task


# ----------------------------------------------------------------------------------------------------- set up


def model_shape(recipe, task, tokenizer) -> tuple[str, int | None]:
    """(family, context) of the model the recipe trains, from its config alone (no weights are loaded)."""
    probe = modeling.task_config(recipe, task, tokenizer)
    fam = modeling.check_task_family(task, probe, recipe.model.path or f"model.arch {recipe.model.arch!r}")
    return fam, None if fam == "seq2seq" else modeling.context_length(probe)


def prepare_data(recipe, run: runs.Run, console=None):
    """The run's records, tokenizer, spec and features (`llmctl.taskdata`), made once and reused."""
    from llmctl import taskdata

    task = task_of(recipe)
    return taskdata.prepare(recipe, task, run, lambda tok: model_shape(recipe, task, tok), console=console)


def setup(recipe, run: runs.Run, accelerator, *, console=None) -> Setup:
    say = console.print if console is not None else (lambda *a, **k: None)
    task = task_of(recipe)
    with accelerator.main_process_first():  # the main process prepares; the others find its cache
        td = prepare_data(recipe, run, console)
    if td.skipped:
        say(f"[yellow]warning:[/] skipped {td.skipped} records that {task.name} cannot learn from "
            "(for QA: the answer is not in the context at answer_start)")
    if td.cut:
        say(f"[yellow]warning:[/] {td.cut} of {len(td.train):,} training targets are longer than "
            f"{td.spec.max_target_length} tokens and were cut (data.max_target_length)")
    tokenizer, spec = td.tokenizer, td.spec
    origin = recipe.model.path or f"model.arch {recipe.model.arch!r}"
    config = modeling.task_config(recipe, task, tokenizer, extra=task.config_overrides(spec))
    model = modeling.task_model(recipe, config, task.auto_class(spec.family), recipe.seed)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        raise modeling.ModelError(f"{origin}: the tokenizer has {len(tokenizer)} tokens but the model's embedding "
                                  f"only {model.get_input_embeddings().num_embeddings}")
    model = _maybe_lora(recipe, task, model, spec.family, accelerator)
    val, val_where = td.validation.lists()
    return Setup(recipe, task, spec, tokenizer, model, td.train, val, val_where, td.features, td.skipped, td.cut)


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


@dataclass
class Batching:
    """How the training micro-batches are made (`train.group_by_length`, `train.packing`)."""

    collate: object
    lengths: list | None  # tokens per training example when grouping by length, else None
    grouped: bool
    packed: bool
    efficiency: float  # real tokens per computed position, on a shuffled epoch laid out this way
    random_efficiency: float  # the same, padded in random order
    note: str  # one line for the terminal

    def to_info(self) -> dict:
        return {"group_by_length": self.grouped, "packing": self.packed,
                "padding_efficiency": round(self.efficiency, 4),
                "random_order_padding_efficiency": round(self.random_efficiency, 4)}


def batching(recipe, s: Setup) -> Batching:
    """Grouping by length and packing, decided from the recipe, the task and (for packing) a check on the model:
    packed examples must not see each other (`batches.isolates`)."""
    import torch

    from llmctl import batches

    cfg = recipe.train
    pad_id = s.tokenizer.pad_token_id
    collate = s.task.collator(pad_id)
    lengths = batches.example_lengths(s.train_features)
    packed, why = False, ""
    if cfg.packing is not False:
        if not s.task.packs(s.spec):
            if cfg.packing is True:
                from llmctl.tasks.base import FAMILY_NAMES

                raise FinetuneError(f"train.packing = true: packing is for text-to-text tasks on decoder-only "
                                    f"models, not {s.task.name} on {s.model.config.model_type} "
                                    f"({FAMILY_NAMES[s.spec.family]}); set train.packing = \"auto\" or false")
        else:
            ok, diff = batches.isolates(s.model, batches.probe_examples(s.train_features, lengths), collate, pad_id)
            kind = s.model.config.model_type
            if ok:
                packed, collate = True, batches.packed_collator(pad_id)
            elif cfg.packing is True:
                raise FinetuneError(f"train.packing = true: {kind} does not keep packed examples apart (their "
                                    f"logits differ by {diff:.1e} of their scale); set train.packing = false")
            else:
                why = f" (off: {kind} does not keep packed examples apart)"
    grouped = cfg.group_by_length and not packed
    # Few distinct lengths, so that new shapes (new kernels) stop coming early in a run (batches.bucket).
    config = s.model.config
    cap = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    collate = batches.bucketed(collate, pad_id, cap if isinstance(cap, int) else None)
    micro = cfg.micro_batch_size
    order = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(recipe.seed)).tolist()
    usable = order[: len(order) // micro * micro] or order
    random_eff = batches.padding_efficiency(usable, lengths, micro)
    if grouped:
        eff = batches.padding_efficiency(batches.grouped(usable, lengths, micro, torch.Generator().manual_seed(0)),
                                         lengths, micro)
    else:
        eff = batches.padding_efficiency(usable, lengths, micro, packed=packed)
    how = "packed rows" if packed else "grouped by length" if grouped else "random order, padded"
    note = (f"batches: {how}, {eff:.0%} of computed positions are real tokens (random order, padded: "
            f"{random_eff:.0%})" + (f"; packing{why}" if why else ""))
    return Batching(collate, lengths if grouped else None, grouped, packed, eff, random_eff, note)


def pick(metrics: dict, key: str) -> float | None:
    """A metric value by `metric.key`, `key` alone when unambiguous, or "loss"."""
    if key in metrics and isinstance(metrics[key], (int, float)):
        return float(metrics[key])
    hits = [v for k, v in metrics.items() if k.split(".", 1)[-1] == key and isinstance(v, (int, float))]
    return float(hits[0]) if len(hits) == 1 else None


# --------------------------------------------------------------------------------------------------------- run


def run_finetune(recipe, run: runs.Run, *, resume: bool, console) -> dict:
    from llmctl import checkpoint, evaluation
    from llmctl.tasks.base import FAMILY_NAMES
    from llmctl.train import fit, make_accelerator

    started = time.perf_counter()
    accelerator, precision = make_accelerator(recipe.train.precision, seed=recipe.seed,
                                              report_to=recipe.train.report_to, run=run)
    main = accelerator.is_main_process
    out = console if main else None
    s = setup(recipe, run, accelerator, console=out)
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
    how = batching(recipe, s)
    if out is not None:
        out.print(how.note, highlight=False)
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
        accelerator=accelerator, model=s.model, train_ds=s.train_features, collate=how.collate,
        cfg=recipe.train, seed=recipe.seed, run=run, evaluate=in_training, resume=resume, console=out,
        on_eval=on_eval, fingerprint=checkpoint.fingerprint(recipe), lengths=how.lengths,
    )
    export_final(accelerator, result.model, s, best_dir, run)
    loaded = evaluation.load_model_dir(str(run.final), device=accelerator.device)
    final = evaluation.evaluate_model(accelerator, loaded, s.val_examples, s.val_where, names=names, kwargs=kwargs,
                                      settings=settings, predictions_path=run.root / "predictions.jsonl",
                                      console=out, seed=recipe.seed)
    results = {}
    if main:
        from llmctl import environment

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
            "environment": environment.describe([*recipe.data.train_files, *recipe.data.validation_files]),
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
            "tokens_per_sec": round(result.tokens_per_sec, 1),
            "step_tokens_per_sec": result.step_tokens_per_sec,
            "batches": how.to_info(),
            "train_seconds": round(result.seconds, 2),
            "wall_seconds": round(time.perf_counter() - started, 2),
            "world_size": accelerator.num_processes,
            "predictions": str(run.root / "predictions.jsonl"),
        }
        if result.mfu is not None:
            results["mfu"] = result.mfu
        runs.write_json(run.results, results)
        from llmctl.card import write_card

        write_card(run.root, run.final)
    accelerator.wait_for_everyone()
    return results


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


def _planned_batches(t, task, family: str) -> str:
    from llmctl.tasks.base import Spec

    order = "grouped by length" if t.group_by_length else "random order, padded"
    if t.packing is False or not task.packs(Spec(task=task.name, family=family, max_source_length=0)):
        return order
    if t.packing is True:
        return "packed rows (the model is checked to keep packed examples apart)"
    return f"packed rows if the model keeps packed examples apart (checked at the start), else {order}"


def plan(recipe, root: Path, *, num_processes: int = 1) -> dict:
    """What `finetune` would do, for --dry-run: reads the data and the model config, trains nothing."""
    from transformers import AutoConfig

    from llmctl.tasks.base import FAMILY_NAMES

    from llmctl import taskdata

    task = task_of(recipe)
    run = runs.Run(Path(root))
    counts = taskdata.count_records(recipe, task, run)
    if recipe.model.path:
        config = modeling.load_config(recipe.model.path)
    else:
        try:
            config = AutoConfig.for_model(recipe.model.arch, **dict(recipe.model.config))
        except (ValueError, TypeError) as exc:
            raise modeling.ModelError(f"model.arch {recipe.model.arch!r}: {exc}") from None
    fam = modeling.check_task_family(task, config, recipe.model.path or recipe.model.arch)
    t, d = recipe.train, recipe.data
    return {
        "recipe": recipe.name,
        "task": recipe.task,
        "train_files": ", ".join(d.train_files),
        "validation_files": ", ".join(d.validation_files) or
                            f"none: {d.validation_fraction:g} of the training records held out (seed {recipe.seed})",
        "model": f"{config.model_type} ({FAMILY_NAMES[fam]}, "
                 f"{'from ' + recipe.model.path if recipe.model.path else 'from scratch'})",
        "train_examples": counts["train"],
        "validation_examples": counts["validation"],
        "metrics": ", ".join(recipe.eval.metrics or task.default_metrics),
        "best_metric": recipe.eval.best_metric or task.best_metric,
        "lora": recipe.lora.enabled,
        "processes": num_processes,
        "examples_per_step": t.batch_size,
        "steps": t.max_steps,
        "batches": _planned_batches(t, task, fam),
        "output": {"run": str(run.root), "final": str(run.final), "results": str(run.results),
                   "predictions": str(run.root / "predictions.jsonl")},
    }
