"""Tasks: each knows its columns, how a record becomes model inputs, its default metric and how model outputs
become predictions. An explicit registry: a test asserts it agrees with the recipe schema."""

from __future__ import annotations

from llmctl.tasks import causal_lm

REGISTRY = {
    "causal_lm": causal_lm,
}


def get(name: str):
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(sorted(REGISTRY))}") from None
