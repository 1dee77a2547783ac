"""Translation: source-language text in, target-language text out. Default metrics sacreBLEU and chrF."""

from __future__ import annotations

from llmctl.tasks.generative import KIND  # noqa: F401 - part of the task interface

NAME = "translation"
FAMILIES = ("seq2seq", "causal")
DEFAULT_METRICS = ("sacrebleu", "chrf")
DEFAULT_BEST = "sacrebleu.score"
DEFAULT_PROMPT = "{source}\nTranslation:"


def normalize(where: str, rec: dict, d) -> dict:
    """`{"translation": {"en": ..., "ro": ...}}` records, or the two languages as plain columns."""
    from llmctl.data import DataError, text_field

    pair = rec.get(d.translation_column)
    if pair is None:
        pair = rec
    elif not isinstance(pair, dict):
        raise DataError(f"{where}: column '{d.translation_column}' must hold a {{language: text}} object")
    return {
        "source": text_field(where, pair, d.source_lang, "source-language"),
        "target": text_field(where, pair, d.target_lang, "target-language"),
    }


def metric_kwargs(recipe) -> dict:
    return {}
