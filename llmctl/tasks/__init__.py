"""Tasks: each knows its columns, how a record becomes model inputs, its default metric and how model outputs
become predictions. An explicit registry: a test asserts it agrees with the recipe schema."""

from __future__ import annotations

from llmctl.tasks import causal_lm, classification, qa, summarization, translation

REGISTRY = {
    "causal_lm": causal_lm,
    "summarization": summarization,
    "translation": translation,
    "classification": classification,
    "qa": qa,
}


def get(name: str):
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(sorted(REGISTRY))}") from None
