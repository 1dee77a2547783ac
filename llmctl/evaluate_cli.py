"""`llmctl eval`: pick the model, the data and the metrics the way the card describes, then score.

- `eval --metric rouge`: the most recent run's final/ on that run's validation split (the most recent run of a
  task that reports the metric, so a later pretraining run does not shadow a summarization run).
- `eval --model runs/X/final`: that run's validation split unless --data is given.
- `eval --model DIR --data F`: a model from elsewhere needs --task unless its config records one.
- `eval --predictions F --metric M`: score a JSON Lines file of {prediction, reference}; no model.
"""

from __future__ import annotations

from pathlib import Path

from llmctl import data, runs


def run(*, metrics: list[str], model: str | None, data: Path | None, task: str | None, predictions: Path | None,
        output: Path | None, batch_size: int | None, block_size: int | None, max_new_tokens: int | None,
        num_beams: int | None, text_column: str, console, sets: list[str] = ()) -> dict:
    from llmctl import metrics as metric_mod
    from llmctl import modeling

    names = [metric_mod.resolve_name(m) for m in metrics]
    if predictions is not None:
        if not names:
            raise metric_mod.MetricError("--predictions needs at least one --metric")
        return score_file(predictions, names)

    if model is None:
        last = _latest_for(names)
        if last is None:
            raise _data_error("no --model given and no finished run under runs/")
        model = str(last / "final")
    config = modeling.load_config(model)
    info = getattr(config, "llmctl", None) or {}
    run_dir = Path(model).parent if (Path(model).parent / "recipe.toml").exists() else None
    task_name = task or info.get("task")
    if task_name is None and names in ([], ["perplexity"]):
        if modeling.family(config) == "causal" or names == ["perplexity"]:
            task_name = "causal_lm"  # any causal LM directory: perplexity
    if names == ["perplexity"] or (not names and task_name == "causal_lm"):
        if data is None:
            guess = run_dir / "data" / "validation" if run_dir else None
            if guess is None or not guess.is_dir():
                raise _data_error(f"{model}: not a pretraining run's final/ directory; pass --data")
            data = guess
        from llmctl.evaluation import perplexity

        result = perplexity(model, data, batch_size=batch_size or 8, block_size=block_size, text_column=text_column)
        return {"model": model, "data": str(data), "task": "causal_lm", "metrics": result}
    if task_name == "causal_lm":
        raise _data_error(f"{model}: a pretrained causal LM is scored with --metric perplexity; for "
                          f"{', '.join(names)} pass --model of a fine-tuned run, or --task")
    if "perplexity" in names:
        raise metric_mod.MetricError("perplexity is computed for causal LMs on text; evaluate it on its own")
    return evaluate_task(model, task_name, names, data=data, output=output, max_new_tokens=max_new_tokens,
                         num_beams=num_beams, batch_size=batch_size, console=console, sets=sets)


def _latest_for(names: list[str]) -> Path | None:
    """The most recent finished run whose task reports the first metric asked for (rouge -> summarization,
    perplexity -> causal_lm, ...); the most recent run of any task when no task does."""
    from llmctl import tasks as registry

    if names:
        found = [r for r in (runs.latest_run(task=t) for t in registry.for_metric(names[0])) if r is not None]
        if found:
            return max(found, key=lambda r: (r / "results.json").stat().st_mtime)
    return runs.latest_run()


def _data_error(msg: str):
    return data.DataError(msg)


def columns(run_recipe, sets: list[str]):
    """The column mapping `eval --data` reads a file with: the run's, changed by `--set data.KEY=VALUE`."""
    from pydantic import ValidationError

    from llmctl import recipe as recipe_mod

    base = run_recipe.data.model_dump() if run_recipe is not None else {}
    for text in sets:
        path, _ = recipe_mod.parse_override(text)
        if path[0] != "data" or len(path) != 2:
            raise recipe_mod.RecipeError([f"--set {text!r}: eval takes only data.* keys (the column mapping)"])
    merged = recipe_mod.apply_overrides({"data": base}, list(sets))["data"]
    try:
        return recipe_mod.DataSection.model_validate(merged)
    except ValidationError as exc:
        raise recipe_mod.RecipeError([f"--set data.{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                      for e in exc.errors(include_url=False)]) from None


def evaluate_task(model_dir: str, task_name: str | None, names: list[str], *, data: Path | None,
                  output: Path | None, max_new_tokens, num_beams, batch_size, console, sets: list[str] = ()) -> dict:
    """A fine-tuned model on its run's validation split or on a data file, on every launched process."""
    import dataclasses

    import torch
    from accelerate import Accelerator

    from llmctl import evaluation
    from llmctl import recipe as recipe_mod
    from llmctl.data import read_examples

    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    loaded = evaluation.load_model_dir(model_dir, task_name=task_name, device=accelerator.device)
    task, r = loaded.task, loaded.recipe
    say = console.print if console is not None and accelerator.is_main_process else (lambda *a, **k: None)
    if data is not None:
        examples, where = read_examples([str(data)], task.normalize, columns(r, sets))
        examples, where, _ = task.clean(examples, where)
    else:
        from llmctl.taskdata import cached_validation

        if sets:
            raise recipe_mod.RecipeError(["--set: a column mapping applies to --data FILE only"])
        split = cached_validation(Path(model_dir).parent)
        if split is None:
            raise _data_error(f"{model_dir}: no validation split recorded for this model; pass --data")
        examples, where = split
        say(f"eval: the run's validation split, {len(examples):,} examples from its cache "
            f"({Path(model_dir).parent / 'data'})")
    if max_new_tokens:
        loaded.spec = dataclasses.replace(loaded.spec, max_new_tokens=max_new_tokens)
    gen_cfg = r.generation if r is not None else recipe_mod.GenerationSection()
    eval_cfg = r.eval if r is not None else recipe_mod.EvalSection()
    settings = evaluation.generation_settings(gen_cfg, loaded.spec, num_beams=num_beams, batch_size=batch_size)
    names = evaluation.metric_names(task, names or eval_cfg.metrics)
    kwargs = task.metric_kwargs(eval_cfg, loaded.spec)
    if output is not None:
        pred_path = output.with_name(output.stem + ".predictions.jsonl")
    elif loaded.run_dir is not None:
        pred_path = loaded.run_dir / "eval" / "predictions.jsonl"
    else:
        pred_path = None
    result = evaluation.evaluate_model(accelerator, loaded, examples, where, names=names, kwargs=kwargs,
                                       settings=settings, predictions_path=pred_path,
                                       console=console if accelerator.is_main_process else None,
                                       seed=r.seed if r is not None else 0)
    notes = []
    if "rouge.tokenizer" in result["metrics"]:
        notes.append(f"rouge tokenizer: {result['metrics']['rouge.tokenizer']}")
    if pred_path is not None:
        notes.append(f"predictions next to references: {pred_path}")
    return {"model": model_dir, "task": task.name, "data": str(data) if data else "validation split",
            "examples": result["examples"], "metrics": result["metrics"], "capped_outputs": result["capped"],
            "predictions": str(pred_path) if pred_path else None, "notes": notes,
            "world_size": accelerator.num_processes}


def _scored_value(where: str, key: str, value, *, labels: bool, many: bool = False):
    """A prediction or reference as the metrics take it: text (a number is taken as its text, as in data files);
    a reference may also be a list of texts (several references, or a QA question's answers, [] for none); for
    accuracy and f1 a label, text or integer. Anything else is a one-line DataError naming the line."""
    import math

    def shown(v) -> str:
        text = "null" if v is None else repr(v)
        return text if len(text) <= 40 else text[:37] + "..."

    if labels:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise data.DataError(f"{where}: '{key}' must be a label (text or an integer), got {shown(value)}")
        if isinstance(value, float):
            if not math.isfinite(value) or value != int(value):
                raise data.DataError(f"{where}: '{key}' must be a label (text or an integer), got {shown(value)}")
            value = int(value)
        return value
    if many and isinstance(value, list):
        for i, item in enumerate(value, 1):
            if not isinstance(item, str):
                raise data.DataError(f"{where}: '{key}' item {i} must be text, got {shown(item)}")
        return value
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return str(value)
    what = "text or a list of texts" if many else "text"
    raise data.DataError(f"{where}: '{key}' must be {what}, got {shown(value)}")


def score_file(path: Path, names: list[str]) -> dict:
    """Score {prediction, reference} JSON Lines with no model; QA references may list several answers."""
    from llmctl.tasks.base import compute_metrics

    preds, refs = [], []
    labels = any(name in ("accuracy", "f1") for name in names)
    for where, rec in data.iter_records(path):
        for key in ("prediction", "reference"):
            if key not in rec:
                raise data.DataError(f"{where}: no '{key}' field (a predictions file holds prediction and "
                                     "reference per line)")
        preds.append(_scored_value(where, "prediction", rec["prediction"], labels=labels))
        refs.append(_scored_value(where, "reference", rec["reference"], labels=labels, many=not labels))
    if not preds:
        raise data.DataError(f"{path}: no predictions")
    out = {}
    # The text metrics asked for alongside accuracy or f1 read the labels as text.
    texts = [str(x) for x in refs] if labels else refs
    for name in names:
        if name in ("squad", "squad_v2"):
            p = [{"id": str(i), "prediction_text": str(x)} for i, x in enumerate(preds)]
            if name == "squad_v2":
                for item in p:
                    item["no_answer_probability"] = 0.0
            rr = [{"id": str(i), "answers": {"text": ([x] if isinstance(x, str) and x else
                                                      [] if isinstance(x, str) else list(x)),
                                             "answer_start": [0] * (len(x) if isinstance(x, list) else int(bool(x)))}}
                  for i, x in enumerate(texts)]
            from llmctl import metrics as metric_mod

            result = metric_mod.compute(name, p, rr)
            out.update({f"{name}.{k}": v for k, v in result.items()})
        elif name in ("accuracy", "f1"):
            labels = sorted({str(x) for x in preds + refs})
            ids = {v: i for i, v in enumerate(labels)}
            kwargs = {} if name == "accuracy" else ({"average": "macro"} if len(labels) > 2 else {})
            out.update(compute_metrics([name], [ids[str(x)] for x in preds], [ids[str(x)] for x in refs],
                                       {name: kwargs}))
        else:
            out.update(compute_metrics([name], [str(x) for x in preds], texts, {}))
    return {"predictions_file": str(path), "examples": len(preds), "metrics": out}
