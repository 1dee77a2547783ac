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
