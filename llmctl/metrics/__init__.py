"""Evaluation metrics as local Hugging Face `evaluate` modules, loaded by path (no hub access needed).

Every text metric lives in ``llmctl/metrics/<name>/<name>.py`` as an ``evaluate.Metric`` subclass and is
loaded with ``evaluate.load(<that directory>)``, so it works with ``HF_HUB_OFFLINE=1``. Output keys and
scales are those of the Hugging Face hub modules of the same name:

============  =====================================================================  ==========
metric        keys                                                                   scale
============  =====================================================================  ==========
accuracy      accuracy                                                               0-1
bleu          bleu, precisions, brevity_penalty, length_ratio, translation_length,    0-1
              reference_length
chrf          score, char_order, word_order, beta                                    0-100
exact_match   exact_match                                                            0-1
f1            f1                                                                     0-1
perplexity    (computed from a model's loss by llmctl.evaluation, not from text)
rouge         rouge1, rouge2, rougeL, rougeLsum (+ "tokenizer": str)                 0-1
sacrebleu     score, counts, totals, precisions, bp, sys_len, ref_len                0-100
squad         exact_match, f1                                                        0-100
squad_v2      exact, f1, total, HasAns_*, NoAns_* (+ best_* with no-answer probs)    0-100
============  =====================================================================  ==========

Usage::

    from llmctl import metrics
    metrics.compute("rouge", ["the cat sat"], ["a cat sat"])            # {"rouge1": ..., ...}
    metrics.compute("sacrebleu", preds, [[r1, r2] for ...], tokenize="13a")
    metrics.load("squad")                                               # the evaluate module itself

Heavy imports (evaluate, datasets, sacrebleu, ...) happen on first `load()`, not on import.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_KWARGS",
    "DESCRIPTIONS",
    "HIGHER_IS_BETTER",
    "METRICS",
    "METRICS_DIR",
    "MetricError",
    "PRIMARY_KEY",
    "TEXT_METRICS",
    "compute",
    "load",
    "metric_path",
    "resolve_name",
]

METRICS_DIR = Path(__file__).resolve().parent

#: Every metric name `llmctl eval --metric` accepts.
METRICS: tuple[str, ...] = (
    "accuracy",
    "bleu",
    "chrf",
    "exact_match",
    "f1",
    "perplexity",
    "rouge",
    "sacrebleu",
    "squad",
    "squad_v2",
)

#: Metrics computed from predictions and references (each one a local evaluate module).
TEXT_METRICS: tuple[str, ...] = tuple(m for m in METRICS if m != "perplexity")

#: One-line descriptions, e.g. for CLI help.
DESCRIPTIONS: dict[str, str] = {
    "accuracy": "fraction of predicted labels equal to the reference label (0-1)",
    "bleu": "corpus BLEU-4 with 13a tokenization, hub `bleu` keys (0-1)",
    "chrf": "character n-gram F-score via sacrebleu; word_order=2 gives chrF++ (0-100)",
    "exact_match": "fraction of predictions identical to the reference (0-1)",
    "f1": "F1 of predicted labels, sklearn f1_score (0-1)",
    "perplexity": "exp of the mean token negative log-likelihood of a model on a dataset",
    "rouge": "ROUGE-1/2/L/Lsum F-measure, mean over examples; CJK-aware tokenizer (0-1)",
    "sacrebleu": "corpus BLEU via sacrebleu, 13a tokenization (0-100)",
    "squad": "SQuAD v1.1 exact match and token F1, max over gold answers (0-100)",
    "squad_v2": "SQuAD 2.0 exact/F1 with unanswerable questions (0-100)",
}

#: The headline number of each metric's result.
PRIMARY_KEY: dict[str, str] = {
    "accuracy": "accuracy",
    "bleu": "bleu",
    "chrf": "score",
    "exact_match": "exact_match",
    "f1": "f1",
    "perplexity": "perplexity",
    "rouge": "rougeL",
    "sacrebleu": "score",
    "squad": "f1",
    "squad_v2": "f1",
}

HIGHER_IS_BETTER: dict[str, bool] = {name: name != "perplexity" for name in METRICS}

#: The keyword arguments each metric's `_compute` takes, with their defaults (documentation; `compute`
#: passes only what the caller gives, so the module's own defaults apply).
DEFAULT_KWARGS: dict[str, dict[str, Any]] = {
    "accuracy": {"normalize": True, "sample_weight": None},
    "bleu": {"max_order": 4, "smooth": False, "tokenize": "13a", "lowercase": False},
    "chrf": {
        "char_order": 6,
        "word_order": 0,
        "beta": 2,
        "lowercase": False,
        "whitespace": False,
        "eps_smoothing": False,
    },
    "exact_match": {
        "regexes_to_ignore": None,
        "ignore_case": False,
        "ignore_punctuation": False,
        "ignore_numbers": False,
    },
    "f1": {"labels": None, "pos_label": 1, "average": "binary", "sample_weight": None},
    "perplexity": {},
    "rouge": {
        "rouge_types": ["rouge1", "rouge2", "rougeL", "rougeLsum"],
        "use_aggregator": True,
        "use_stemmer": False,
        "tokenizer": "auto",
    },
    "sacrebleu": {
        "smooth_method": "exp",
        "smooth_value": None,
        "force": False,
        "lowercase": False,
        "tokenize": "13a",
        "use_effective_order": False,
    },
    "squad": {},
    "squad_v2": {"no_answer_probability": None, "na_prob_thresh": 1.0},
}


class MetricError(ValueError):
    """A user-facing, one-line error about a metric (unknown name, bad inputs or options)."""


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def resolve_name(name: str) -> str:
    """The canonical metric name for `name` (case-insensitive, '-' accepted for '_'), or MetricError."""
    canonical = str(name).strip().lower().replace("-", "_")
    if canonical in METRICS:
        return canonical
    close = difflib.get_close_matches(canonical, METRICS, n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise MetricError(f"unknown metric '{name}'{hint}; valid metrics: {', '.join(METRICS)}")


def metric_path(name: str) -> Path:
    """The directory of the local evaluate module of a text metric."""
    name = resolve_name(name)
    if name == "perplexity":
        raise MetricError(_PERPLEXITY_MESSAGE)
    return METRICS_DIR / name


_PERPLEXITY_MESSAGE = (
    "metric 'perplexity' is computed from a model's loss on a dataset (llmctl.evaluation), "
    "not from predictions and references"
)


@functools.lru_cache(maxsize=None)
def _load(name: str):
    import evaluate

    # keep_in_memory: no Arrow cache files or file locks under ~/.cache/huggingface/metrics.
    return evaluate.load(str(metric_path(name)), keep_in_memory=True)


def load(name: str):
    """The `evaluate.EvaluationModule` of a text metric, loaded by path (cached per process).

    Raises MetricError for an unknown name or for "perplexity".
    """
    return _load(metric_path(name).name)


def _plain(value: Any) -> Any:
    """numpy scalars/arrays -> Python floats/ints/lists, recursively."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):  # numpy scalar or array
        return _plain(value.tolist())
    return value


_MULTI_REFERENCE_METRICS = ("bleu", "chrf", "rouge", "sacrebleu", "squad", "squad_v2")


def _uniform_references(references: list) -> list:
    """Tuples -> lists, and single strings -> one-element lists when other examples have several.

    `evaluate` picks the input format from the first example only, so a mix would be mis-encoded.
    """
    references = [list(r) if isinstance(r, tuple) else r for r in references]
    if any(isinstance(r, list) for r in references) and any(isinstance(r, str) for r in references):
        references = [[r] if isinstance(r, str) else r for r in references]
    return references


def _fill_squad_defaults(name: str, predictions: list, references: list) -> tuple[list, list]:
    """Hub-format squad inputs without answer_start / no_answer_probability: fill them in.

    `evaluate` matches dict inputs against the declared features key by key, so a missing key would
    otherwise fail; answer_start is never used for scoring and a None probability means "not given".
    """
    if references and isinstance(references[0], dict):
        filled = []
        for ref in references:
            answers = ref.get("answers")
            if isinstance(answers, dict) and "answer_start" not in answers:
                texts = list(answers.get("text", []))
                ref = {**ref, "answers": {"text": texts, "answer_start": [-1] * len(texts)}}
            filled.append(ref)
        references = filled
    if name == "squad_v2" and predictions and isinstance(predictions[0], dict):
        predictions = [p if "no_answer_probability" in p else {**p, "no_answer_probability": None} for p in predictions]
    return predictions, references


def compute(name: str, predictions: Sequence[Any], references: Sequence[Any], **kwargs: Any) -> dict[str, Any]:
    """Compute a text metric: ``load(name).compute(predictions=..., references=..., **kwargs)``.

    Returns a plain dict (Python floats/ints/strs, lists for per-order/per-example values). Input or
    option errors are raised as a one-line MetricError.
    """
    name = resolve_name(name)
    if name == "perplexity":
        raise MetricError(_PERPLEXITY_MESSAGE)
    predictions, references = list(predictions), list(references)
    if len(predictions) != len(references):
        raise MetricError(f"{name}: got {len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise MetricError(f"{name}: no predictions to score")
    unknown = sorted(set(kwargs) - set(DEFAULT_KWARGS[name]))
    if unknown:
        valid = ", ".join(DEFAULT_KWARGS[name]) or "none"
        raise MetricError(f"{name}: unknown option(s) {', '.join(unknown)}; valid options: {valid}")
    if name in _MULTI_REFERENCE_METRICS:
        references = _uniform_references(references)
    if name in ("squad", "squad_v2"):
        predictions, references = _fill_squad_defaults(name, predictions, references)
    module = load(name)
    try:
        result = module.compute(predictions=predictions, references=references, **kwargs)
    except (ValueError, TypeError, KeyError) as exc:
        raise MetricError(f"{name}: {_one_line(exc)}") from exc
    return _plain(result)
