"""Summarization: a document in, a summary out. Default metric ROUGE."""

from __future__ import annotations

from llmctl.tasks.generative import KIND  # noqa: F401 - part of the task interface

NAME = "summarization"
FAMILIES = ("seq2seq", "causal")
DEFAULT_METRICS = ("rouge",)
DEFAULT_BEST = "rouge.rougeL"
DEFAULT_PROMPT = "{source}\nSummary:"
TEXT_COLUMN = "document"
TARGET_COLUMN = "summary"


def normalize(where: str, rec: dict, d) -> dict:
    from llmctl.data import text_field

    return {
        "source": text_field(where, rec, d.text_column or TEXT_COLUMN, "text"),
        "target": text_field(where, rec, d.target_column or TARGET_COLUMN, "target"),
    }


def metric_kwargs(recipe) -> dict:
    return {"rouge": {"tokenizer": recipe.eval.rouge_tokenizer}}
