"""Causal language modelling on packed blocks: the pretraining task."""

from __future__ import annotations

NAME = "causal_lm"
DEFAULT_METRIC = "perplexity"


def collator(pad_id: int):
    """Stack blocks into a batch. Blocks are full length except possibly the last block of a split; it is
    right-padded, and padding is masked out of attention and of the loss (label -100)."""
    import torch

    def collate(rows: list[dict]) -> dict:
        longest = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), longest), dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[i, :n] = torch.as_tensor(r["input_ids"], dtype=torch.long)
            mask[i, :n] = 1
        labels = ids.masked_fill(mask == 0, -100)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    return collate
