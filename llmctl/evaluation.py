"""Loss and perplexity of a causal LM over a split; task metrics are added by later stages."""

from __future__ import annotations

import math


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
                    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
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


def _batches(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i : i + size]


def predict(s, model, examples: list[dict], *, where: list[str] | None = None, progress=None) -> dict:
    """Run a fine-tuned model over examples: {"predictions", "references", "metric_inputs", "capped"}.

    `s` is a finetune.Setup or an equivalent object with task, kind, family, tokenizer, recipe, labels,
    max_new_tokens and context.
    """
    import torch

    model.eval()
    tok = s.tokenizer
    if s.kind == "generate":
        from llmctl.finetune import prompt_of, source_budget
        from llmctl.generation import GenerationSettings, generate
        from llmctl.tasks import generative

        g, d = s.recipe.generation, s.recipe.data
        budget = source_budget(s.recipe, s.family, s.context, s.max_new_tokens)
        inputs = generative.model_inputs(examples, tok, family=s.family, prompt=prompt_of(s.recipe, s.task),
                                         source_prefix=d.source_prefix, source_budget=budget)
        settings = GenerationSettings(
            max_new_tokens=s.max_new_tokens, num_beams=g.num_beams, do_sample=g.do_sample,
            temperature=g.temperature, top_k=g.top_k, top_p=g.top_p,
            no_repeat_ngram_size=g.no_repeat_ngram_size, batch_size=g.batch_size, max_source_length=budget,
        )
        report = generate(model, tok, inputs, settings, progress=progress, seed=s.recipe.seed)
        preds = [p.strip() for p in report.outputs]
        refs = [ex["target"] for ex in examples]
        return {"predictions": preds, "references": refs, "metric_inputs": (preds, refs), "capped": report.capped,
                "report": report}
    if s.kind == "classify":
        from llmctl.tasks import classification

        id2label = {int(k): v for k, v in model.config.id2label.items()}
        label2id = {v: k for k, v in id2label.items()}
        gold = classification.label_ids(examples, where or ["validation"] * len(examples), label2id)
        length = s.recipe.data.max_source_length if s.context is None else min(s.recipe.data.max_source_length, s.context)
        feats = classification.features(examples, gold, tok, max_length=length)
        collate = classification.collator(tok.pad_token_id)
        pred_ids = []
        with torch.no_grad():
            for rows in _batches(feats, 32):
                batch = collate(rows)
                batch.pop("labels")
                logits = model(**{k: v.to(model.device) for k, v in batch.items()}).logits
                pred_ids += logits.argmax(-1).tolist()
                if progress:
                    progress(len(rows))
        return {"predictions": [id2label[i] for i in pred_ids], "references": [id2label[i] for i in gold],
                "metric_inputs": (pred_ids, gold), "capped": None}
    from llmctl.tasks import qa

    length = s.recipe.data.max_source_length if s.context is None else min(s.recipe.data.max_source_length, s.context)
    cols = qa.prepare_eval_features(examples, tok, max_length=length,
                                    doc_stride=min(s.recipe.data.doc_stride, length // 2))
    rows = [dict(zip(cols, r)) for r in zip(*cols.values())]
    collate = qa.collator(tok.pad_token_id)
    starts, ends = [], []
    with torch.no_grad():
        for chunk in _batches(rows, 32):
            batch = collate(chunk)
            out = model(**{k: v.to(model.device) for k, v in batch.items()})
            for i, r in enumerate(chunk):
                n = len(r["input_ids"])
                starts.append(out.start_logits[i, :n].float().tolist())
                ends.append(out.end_logits[i, :n].float().tolist())
            if progress:
                progress(len(chunk))
    has_impossible = any(not ex["answers"]["text"] for ex in examples)
    preds = qa.postprocess(examples, cols, starts, ends, allow_impossible=has_impossible)
    refs = qa.references(examples)
    return {"predictions": [p["prediction_text"] for p in preds],
            "references": [r["answers"]["text"] for r in refs],
            "metric_inputs": (preds, refs), "capped": None}


def score(names: list[str], metric_inputs: tuple, kwargs: dict) -> dict:
    """Each metric over the predictions, flattened to `metric.key` -> value."""
    from llmctl import metrics as metric_mod

    preds, refs = metric_inputs
    out = {}
    for name in names:
        p, r = preds, refs
        if name in ("squad", "squad_v2") and p and isinstance(p[0], dict):
            from llmctl.tasks import qa

            p = qa.metric_predictions(p, name)
        elif p and isinstance(p[0], dict):  # QA predictions scored by a text metric (exact_match, f1 ...)
            p = [x["prediction_text"] for x in p]
            r = [x["answers"]["text"][0] if x["answers"]["text"] else "" for x in r]
        result = metric_mod.compute(name, p, r, **kwargs.get(name, {}))
        for key, value in result.items():
            out[f"{name}.{key}"] = value
    return out


def task_evaluator(s, names: list[str], kwargs: dict, *, accelerator, max_samples: int = 0):
    """`evaluate(model, final=False)` for fit(): validation loss (teacher forcing) and the task metrics.

    Metrics are computed on the main process (generation is sequential per batch anyway) and shared with the
    others, so every process takes the same best-checkpoint and early-stopping decisions.
    """
    from accelerate.utils import broadcast_object_list

    loss_fn = _loss_evaluator(s, accelerator)

    def evaluate(model, final: bool = False) -> dict:
        metrics = {"loss": loss_fn(model)}
        payload = [None]
        if accelerator.is_main_process:
            examples = s.val_examples if final or not max_samples else s.val_examples[:max_samples]
            where = s.val_where[: len(examples)]
            out = predict(s, accelerator.unwrap_model(model), examples, where=where)
            payload = [score(names, out["metric_inputs"], kwargs)]
        if accelerator.num_processes > 1:
            broadcast_object_list(payload)
        metrics.update(payload[0])
        model.train()
        return metrics

    return evaluate


def _loss_evaluator(s, accelerator):
    """Mean validation loss per batch as the model computes it (its `.loss`), over all processes."""
    import torch
    from torch.utils.data import DataLoader

    feats = validation_features(s)
    loader = accelerator.prepare(DataLoader(feats, batch_size=16, shuffle=False, collate_fn=s.collate))

    def loss(model) -> float:
        model.eval()
        total, n = 0.0, 0
        with torch.no_grad():
            for batch in loader:
                value = model(**batch).loss.detach().float().reshape(1)
                value = accelerator.gather_for_metrics(value)
                total += float(value.sum())
                n += value.numel()
        return total / max(n, 1)

    return loss


def validation_features(s) -> list[dict]:
    """The validation split as training features (for the teacher-forced validation loss)."""
    from llmctl.finetune import prompt_of, source_budget

    d = s.recipe.data
    if s.kind == "generate":
        from llmctl.tasks import generative

        budget = source_budget(s.recipe, s.family, s.context, s.max_new_tokens)
        inputs = generative.model_inputs(s.val_examples, s.tokenizer, family=s.family,
                                         prompt=prompt_of(s.recipe, s.task), source_prefix=d.source_prefix,
                                         source_budget=budget)
        feats, _ = generative.features(s.val_examples, inputs, s.tokenizer, family=s.family,
                                       max_source_length=d.max_source_length, max_target_length=d.max_target_length)
        if s.context is not None:
            feats = [{k: v[: s.context] for k, v in f.items()} for f in feats]
        return feats
    length = d.max_source_length if s.context is None else min(d.max_source_length, s.context)
    if s.kind == "classify":
        label2id = {str(v): i for i, v in enumerate(s.labels)}
        ids = s.task.label_ids(s.val_examples, s.val_where, label2id)
        return s.task.features(s.val_examples, ids, s.tokenizer, max_length=length)
    cols = s.task.prepare_train_features(s.val_examples, s.tokenizer, max_length=length,
                                         doc_stride=min(d.doc_stride, length // 2))
    return [dict(zip(cols, r)) for r in zip(*cols.values())]


def evaluate_setup(s, model, names: list[str], kwargs: dict, *, predictions_path, console=None,
                   examples: list[dict] | None = None, where: list[str] | None = None) -> dict:
    """The full evaluation of a model: metrics, and predictions next to references as JSON Lines."""
    import json

    from rich.progress import Progress

    from llmctl import runs

    examples = s.val_examples if examples is None else examples
    where = s.val_where if where is None else where
    with Progress(console=console, transient=True, disable=console is None or not console.is_terminal) as bar:
        task = bar.add_task("predict", total=len(examples))
        out = predict(s, model, examples, where=where, progress=lambda n: bar.advance(task, n))
    metrics = score(names, out["metric_inputs"], kwargs)
    lines = []
    for i, (ex, p, r) in enumerate(zip(examples, out["predictions"], out["references"])):
        row = {"id": ex.get("id", i)}
        for key in ("source", "text", "text_pair", "question"):
            if key in ex:
                row[key] = ex[key]
        row.update(prediction=p, reference=r)
        lines.append(json.dumps(row, ensure_ascii=False) + "\n")
    if predictions_path is not None:
        runs.write_text(predictions_path, "".join(lines))
    result = {"metrics": metrics, "capped": out["capped"], "examples": len(examples)}
    report = out.get("report")
    if report is not None and console is not None:
        from llmctl.generation import cap_warning

        warning = cap_warning(report, s.max_new_tokens)
        if warning:
            console.print(f"[yellow]warning:[/] {warning}")
    return result


def baseline(s, names: list[str], kwargs: dict) -> dict:
    """The task's trivial baseline on the validation split, scored like the model, so that results say how
    far above it the model is: lead sentence (summarization), copy the source (translation), the majority
    training label (classification), always "no answer" (QA)."""
    import re
    from collections import Counter

    examples = s.val_examples
    if s.kind == "generate":
        if s.recipe.task == "summarization":
            preds = [re.split(r"(?<=[.!?。！？])\s*|\n", ex["source"].strip(), maxsplit=1)[0] for ex in examples]
        else:
            preds = [ex["source"] for ex in examples]
        return score(names, (preds, [ex["target"] for ex in examples]), kwargs)
    if s.kind == "classify":
        label2id = {str(v): i for i, v in enumerate(s.labels)}
        gold = [label2id.get(str(ex["label"]), -1) for ex in examples]
        majority = Counter(str(ex["label"]) for ex in s.train_examples).most_common(1)[0][0]
        return score(names, ([label2id[majority]] * len(gold), gold), kwargs)
    from llmctl.tasks import qa

    preds = [{"id": str(ex["id"]), "prediction_text": "", "no_answer_probability": 1.0} for ex in examples]
    return score(names, (preds, qa.references(examples)), kwargs)
