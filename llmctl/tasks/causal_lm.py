"""Causal language modelling on packed blocks: the pretraining task, trained by `llmctl pretrain` and scored
by perplexity (llmctl.evaluation), not fine-tuned through the task interface."""

from __future__ import annotations

from dataclasses import dataclass

from llmctl.tasks.base import Task


@dataclass(kw_only=True)
class CausalLM(Task):
    def collator(self, pad_id: int):
        """Stack blocks into a batch of input_ids and labels. Blocks are full length except possibly the last
        block of a split (or of a preprocessing shard); it is right-padded, and the padding is masked out of the
        loss (label -100).

        No attention mask: under causal attention a position sees only itself and earlier positions, so padding on
        the right is never seen by a real token, and positions (learned, rotary, or counted from a mask as OPT's
        and BLOOM's are) are the same for every real token with or without one. The loss and its gradients are
        therefore those of the masked batch (tests/unit/test_batches.py), and the model skips building a mask for
        full blocks, which costs 4% of a compiled bf16 step on the 13.9M benchmark shape."""
        from llmctl.tasks.batching import pad_inputs

        def collate(rows: list[dict]) -> dict:
            batch = pad_inputs(rows, pad_id)
            mask = batch.pop("attention_mask")
            batch["labels"] = batch["input_ids"].masked_fill(mask == 0, -100)
            return batch

        return collate


TASK = CausalLM(name="causal_lm", families=("causal",), default_metrics=("perplexity",), best_metric="loss",
                auto_classes={"causal": "AutoModelForCausalLM"}, finetunable=False)


def collator(pad_id: int):
    return TASK.collator(pad_id)
