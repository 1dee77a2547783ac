"""`llmctl eval`: pick the model, the data and the metrics the way the card describes, then score.

- `eval --metric rouge`: the most recent run's final/ on that run's validation split (the most recent run of a
  task that reports the metric, so a later pretraining run does not shadow a summarization run).
- `eval --model runs/X/final`: that run's validation split unless --data is given.
- `eval --model DIR --data F`: a model from elsewhere needs --task unless its config records one.
- `eval --predictions F --metric M`: score a JSON Lines file of {prediction, reference}; no model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from llmctl import data, runs


@dataclass
class EvalSetup:
    """The subset of finetune.Setup that prediction needs, rebuilt from a model directory."""

    recipe: object
    task: object
    kind: str
    family: str
    tokenizer: object
    labels: list | None
    max_new_tokens: int | None
    context: int | None
    val_examples: list
    val_where: list


def _info(model_dir: str) -> dict:
    from transformers import AutoConfig

    from llmctl import modeling

    try:
        config = AutoConfig.from_pretrained(model_dir)
    except (OSError, ValueError) as exc:
        raise modeling.ModelError(modeling.not_found(model_dir, "model", exc)) from None
    return {"config": config, **(getattr(config, "llmctl", None) or {})}


def run(*, metrics: list[str], model: str | None, data: Path | None, task: str | None, predictions: Path | None,
        output: Path | None, batch_size: int, block_size: int | None, max_new_tokens: int | None,
        num_beams: int | None, text_column: str, console) -> dict:
    from llmctl import metrics as metric_mod

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
    info = _info(model)
    run_dir = Path(model).parent if (Path(model).parent / "recipe.toml").exists() else None
    task_name = task or info.get("task")
    if task_name is None and names in ([], ["perplexity"]):
        from llmctl.modeling import family

        if family(info["config"]) == "causal" or names == ["perplexity"]:
            task_name = "causal_lm"  # any causal LM directory: perplexity
    if task_name is None:
        raise _data_error(f"{model}: the model records no task; pass --task (summarization, translation, "
                          "classification, qa) or --metric perplexity")
    if names == ["perplexity"] or (not names and task_name == "causal_lm"):
        if data is None:
            guess = run_dir / "data" / "validation" if run_dir else None
            if guess is None or not guess.is_dir():
                raise _data_error(f"{model}: not a pretraining run's final/ directory; pass --data")
            data = guess
        from llmctl.evaluation import perplexity

        result = perplexity(model, data, batch_size=batch_size, block_size=block_size, text_column=text_column)
        return {"model": model, "data": str(data), "task": "causal_lm", "metrics": result}
    if task_name == "causal_lm":
        raise _data_error(f"{model}: a pretrained causal LM is scored with --metric perplexity; for "
                          f"{', '.join(names)} pass --model of a fine-tuned run, or --task")
    if "perplexity" in names:
        raise metric_mod.MetricError("perplexity is computed for causal LMs on text; evaluate it on its own")
    return evaluate_task(model, info, task_name, names, data=data, run_dir=run_dir, output=output,
                         max_new_tokens=max_new_tokens, num_beams=num_beams, batch_size=batch_size,
                         console=console)


def _latest_for(names: list[str]) -> Path | None:
    """The most recent finished run whose task reports the first metric asked for (rouge -> summarization,
    perplexity -> causal_lm, ...); the most recent run of any task when no task does."""
    from llmctl import tasks as registry

    if names:
        related = {"perplexity": "causal_lm", "squad": "qa", "bleu": "translation"}
        wanted = [t for t, mod in registry.REGISTRY.items()
                  if names[0] in getattr(mod, "DEFAULT_METRICS", ()) or related.get(names[0]) == t]
        found = [r for r in (runs.latest_run(task=t) for t in wanted) if r is not None]
        if found:
            return max(found, key=lambda r: (r / "results.json").stat().st_mtime)
    return runs.latest_run()


def _data_error(msg: str):
    return data.DataError(msg)


def evaluate_task(model_dir: str, info: dict, task_name: str, names: list[str], *, data: Path | None,
                  run_dir: Path | None, output: Path | None, max_new_tokens, num_beams, batch_size, console) -> dict:
    from llmctl import modeling
    from llmctl import recipe as recipe_mod
    from llmctl import tasks as registry
    from llmctl import tokenizer as tok_mod
    from llmctl.evaluation import evaluate_setup
    from llmctl.finetune import metric_settings

    if task_name not in registry.REGISTRY or task_name == "causal_lm":
        raise _data_error(f"--task {task_name}: unknown task; valid tasks: summarization, translation, "
                          "classification, qa")
    task = registry.get(task_name)
    if run_dir is not None:
        base = recipe_mod.read_toml(run_dir / "recipe.toml")
    else:
        base = {"name": "eval", "task": task_name, "data": {"train_files": [str(data or "none")]}}
    overrides = []
    if num_beams:
        overrides.append(f"generation.num_beams={num_beams}")
    overrides.append(f"generation.batch_size={batch_size}")
    r = recipe_mod.load(None, overrides, base=base)
    if r.task != task_name:
        raise _data_error(f"{model_dir}: the run trained {r.task}, not {task_name}")

    if data is not None:
        from llmctl.data import read_examples

        examples, where = read_examples([str(data)], task.normalize, r.data)
    elif run_dir is not None and (run_dir / "data" / "validation.jsonl").exists():
        path = run_dir / "data" / "validation.jsonl"
        examples = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        where = [f"{path}:{i}" for i in range(1, len(examples) + 1)]
    else:
        raise _data_error(f"{model_dir}: no validation split recorded for this model; pass --data")

    config = info["config"]
    fam = modeling.check_task_family(task_name, task.FAMILIES, config, model_dir)
    model = modeling.load_for_task(model_dir, task_name)
    tokenizer = tok_mod.load(model_dir)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    labels = None
    if task.KIND == "classify":
        labels = [config.id2label[i] for i in sorted(int(k) for k in config.id2label)]
    if task.KIND == "span":
        examples, skipped = task.check_answers(examples, where)
    context = None if fam == "seq2seq" else modeling.context_length(config)
    new_tokens = None
    if task.KIND == "generate":
        new_tokens = max_new_tokens or info.get("max_new_tokens") or getattr(
            getattr(model, "generation_config", None), "max_new_tokens", None)
        if not new_tokens:
            raise _data_error(f"{model_dir}: no generation length recorded; pass --max-new-tokens")
    s = EvalSetup(recipe=r, task=task, kind=task.KIND, family=fam, tokenizer=tokenizer, labels=labels,
                  max_new_tokens=new_tokens, context=context, val_examples=examples, val_where=where)
    names = names or list(metric_settings(r, task, labels)[0])
    _, kwargs = metric_settings(r, task, labels)
    if output is not None:
        pred_path = output.with_name(output.stem + ".predictions.jsonl")
    elif run_dir is not None:
        pred_path = run_dir / "eval" / "predictions.jsonl"
    else:
        pred_path = None
    result = evaluate_setup(s, model, names, kwargs, predictions_path=pred_path, console=console)
    notes = []
    if "rouge.tokenizer" in result["metrics"]:
        notes.append(f"rouge tokenizer: {result['metrics']['rouge.tokenizer']}")
    if pred_path is not None:
        notes.append(f"predictions next to references: {pred_path}")
    return {"model": model_dir, "task": task_name, "data": str(data) if data else "validation split",
            "examples": result["examples"], "metrics": result["metrics"], "capped_outputs": result["capped"],
            "predictions": str(pred_path) if pred_path else None, "notes": notes}


def score_file(path: Path, names: list[str]) -> dict:
    """Score {prediction, reference} JSON Lines with no model; QA references may list several answers."""
    from llmctl.evaluation import score

    preds, refs = [], []
    for where, rec in data.iter_records(path):
        for key in ("prediction", "reference"):
            if key not in rec:
                raise data.DataError(f"{where}: no '{key}' field (a predictions file holds prediction and "
                                     "reference per line)")
        preds.append(rec["prediction"])
        refs.append(rec["reference"])
    if not preds:
        raise data.DataError(f"{path}: no predictions")
    out = {}
    for name in names:
        if name in ("squad", "squad_v2"):
            p = [{"id": str(i), "prediction_text": str(x)} for i, x in enumerate(preds)]
            if name == "squad_v2":
                for item in p:
                    item["no_answer_probability"] = 0.0
            rr = [{"id": str(i), "answers": {"text": ([x] if isinstance(x, str) and x else
                                                      [] if isinstance(x, str) else list(x)),
                                             "answer_start": [0] * (len(x) if isinstance(x, list) else int(bool(x)))}}
                  for i, x in enumerate(refs)]
            from llmctl import metrics as metric_mod

            result = metric_mod.compute(name, p, rr)
            out.update({f"{name}.{k}": v for k, v in result.items()})
        elif name in ("accuracy", "f1"):
            labels = sorted({str(x) for x in preds + refs})
            ids = {v: i for i, v in enumerate(labels)}
            kwargs = {} if name == "accuracy" else ({"average": "macro"} if len(labels) > 2 else {})
            out.update(score([name], ([ids[str(x)] for x in preds], [ids[str(x)] for x in refs]), {name: kwargs}))
        else:
            out.update(score([name], ([str(x) for x in preds], refs), {}))
    return {"predictions_file": str(path), "examples": len(preds), "metrics": out}
