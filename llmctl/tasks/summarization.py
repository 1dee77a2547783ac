"""Summarization: a document in, a summary out. Default metric ROUGE; baseline: the lead sentence."""

from __future__ import annotations

import re
from dataclasses import dataclass

from llmctl.tasks.generative import TextToText

TEXT_COLUMN = "document"
TARGET_COLUMN = "summary"


@dataclass(kw_only=True)
class Summarization(TextToText):
    def normalize(self, where, rec, d):
        from llmctl.data import text_field

        return {
            "source": text_field(where, rec, d.text_column or TEXT_COLUMN, "text"),
            "target": text_field(where, rec, d.target_column or TARGET_COLUMN, "target"),
        }

    def metric_kwargs(self, eval_cfg, spec):
        return {"rouge": {"tokenizer": eval_cfg.rouge_tokenizer}}

    def baseline(self, train, examples, spec):
        return [re.split(r"(?<=[.!?。！？])\s*|\n", ex["source"].strip(), maxsplit=1)[0] for ex in examples]


TASK = Summarization(name="summarization", default_metrics=("rouge",), best_metric="rouge.rougeL",
                     default_prompt="{source}\nSummary:", endpoint="/v1/summarize", output_field="summary")
