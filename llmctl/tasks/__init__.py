"""Tasks: one object per task (the interface is `llmctl.tasks.base.Task`), in an explicit registry. A test
asserts it agrees with the recipe schema. Adding a task is one module defining `TASK` plus a line here."""

from __future__ import annotations

from llmctl.tasks import causal_lm, classification, multiple_choice, qa, summarization, translation
from llmctl.tasks.base import Task

REGISTRY: dict[str, Task] = {
    m.TASK.name: m.TASK
    for m in (causal_lm, summarization, translation, classification, qa, multiple_choice)
}


def finetunable() -> list[str]:
    return [name for name, task in REGISTRY.items() if task.finetunable]


def get(name: str) -> Task:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(REGISTRY)}") from None


def for_metric(metric: str) -> list[str]:
    """Tasks whose default metrics include `metric` (rouge -> summarization), for `eval --metric M`."""
    related = {"squad": "qa", "bleu": "translation"}
    return [name for name, task in REGISTRY.items()
            if metric in task.default_metrics or related.get(metric) == name]
