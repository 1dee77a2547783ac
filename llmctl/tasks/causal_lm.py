"""Causal language modelling on packed blocks: the pretraining task, trained by `llmctl pretrain` and scored
by perplexity (llmctl.evaluation), not fine-tuned through the task interface."""

from __future__ import annotations

from dataclasses import dataclass

from llmctl.tasks.base import Task


@dataclass(kw_only=True)
class CausalLM(Task):
    def collator(self, pad_id: int):
        """Stack blocks into a batch. Blocks are full length except possibly the last block of a split; it is
        right-padded, and padding is masked out of attention and of the loss (label -100)."""
        from llmctl.tasks.batching import pad_inputs

        def collate(rows: list[dict]) -> dict:
            batch = pad_inputs(rows, pad_id)
            batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
            return batch

        return collate


TASK = CausalLM(name="causal_lm", families=("causal",), default_metrics=("perplexity",), best_metric="loss",
                auto_classes={"causal": "AutoModelForCausalLM"}, finetunable=False)


def collator(pad_id: int):
    return TASK.collator(pad_id)
