"""Causal language modelling on packed blocks: the pretraining task."""

from __future__ import annotations

NAME = "causal_lm"
DEFAULT_METRIC = "perplexity"


def collator(pad_id: int):
    """Stack blocks into a batch. Blocks are full length except possibly the last block of a split; it is
    right-padded, and padding is masked out of attention and of the loss (label -100)."""
    from llmctl.tasks.batching import pad_inputs

    def collate(rows: list[dict]) -> dict:
        batch = pad_inputs(rows, pad_id)
        batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        return batch

    return collate
