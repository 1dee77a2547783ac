"""SQuAD v1.1 exact match and F1 as a local `evaluate` metric.

Implements the definitions of the official SQuAD v1.1 evaluation script: answers are normalized
(lowercase, punctuation removed, articles a/an/the removed, whitespace collapsed); exact_match is 1 when
the normalized prediction equals a normalized gold answer; F1 is the bag-of-tokens F1 between
normalized token lists; each question takes the maximum over its gold answers; both are averaged over
questions and reported in 0-100 (keys "exact_match" and "f1", as the Hugging Face hub `squad` module).

Two input formats:

* the hub format: predictions=[{"id": str, "prediction_text": str}], references=[{"id": str,
  "answers": {"text": [str, ...], "answer_start": [int, ...]}}], matched by id (a reference whose id
  has no prediction counts as 0, as in the official script);
* plain strings: predictions=[str], references=[str] or [[str, ...]] (several gold answers), matched
  by position.
"""

import re
import string
from collections import Counter

import datasets
import evaluate

_CITATION = """\
@inproceedings{rajpurkar-etal-2016-squad,
    title = "{SQ}u{AD}: 100,000+ Questions for Machine Comprehension of Text",
    author = "Rajpurkar, Pranav and Zhang, Jian and Lopyrev, Konstantin and Liang, Percy",
    booktitle = "Proceedings of the 2016 Conference on Empirical Methods in Natural Language Processing",
    year = "2016",
    pages = "2383--2392",
}
"""

_DESCRIPTION = """\
SQuAD v1.1 exact match and token F1 (0-100), maximum over gold answers, mean over questions.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: [{"id": str, "prediction_text": str}] or [str].
    references: [{"id": str, "answers": {"text": [str], "answer_start": [int]}}], [str] or [[str]].
Returns:
    {"exact_match": float 0-100, "f1": float 0-100}
"""

_PUNCTUATION = set(string.punctuation)
_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text):
    """Lowercase, remove punctuation, remove articles, collapse whitespace (official v1.1 order)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES_RE.sub(" ", text)
    return " ".join(text.split())


def exact_match_score(prediction, gold):
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1_score(prediction, gold):
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    num_same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_scores(pairs):
    """pairs: list of (prediction text or None when missing, list of gold answer texts)."""
    if not pairs:
        raise ValueError("no references to score")
    exact = f1 = 0.0
    for prediction, golds in pairs:
        if not golds:
            raise ValueError(
                "SQuAD v1.1 needs at least one gold answer per question (use squad_v2 for unanswerable ones)"
            )
        if prediction is None:
            continue
        exact += max(exact_match_score(prediction, g) for g in golds)
        f1 += max(f1_score(prediction, g) for g in golds)
    return {"exact_match": 100.0 * exact / len(pairs), "f1": 100.0 * f1 / len(pairs)}


def to_pairs(predictions, references):
    if len(predictions) != len(references):
        raise ValueError(f"got {len(predictions)} predictions but {len(references)} references")
    if predictions and isinstance(predictions[0], dict):
        by_id = {p["id"]: p["prediction_text"] for p in predictions}
        return [(by_id.get(ref["id"]), list(ref["answers"]["text"])) for ref in references]
    return [(pred, [ref] if isinstance(ref, str) else list(ref)) for pred, ref in zip(predictions, references)]


class Squad(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features(
                    {
                        "predictions": {"id": datasets.Value("string"), "prediction_text": datasets.Value("string")},
                        "references": {
                            "id": datasets.Value("string"),
                            "answers": datasets.Sequence(
                                {"text": datasets.Value("string"), "answer_start": datasets.Value("int32")}
                            ),
                        },
                    }
                ),
                datasets.Features(
                    {
                        "predictions": datasets.Value("string"),
                        "references": datasets.Sequence(datasets.Value("string")),
                    }
                ),
                datasets.Features(
                    {
                        "predictions": datasets.Value("string"),
                        "references": datasets.Value("string"),
                    }
                ),
            ],
            codebase_urls=["https://rajpurkar.github.io/SQuAD-explorer/"],
            reference_urls=["https://rajpurkar.github.io/SQuAD-explorer/"],
        )

    def _compute(self, predictions, references):
        return squad_scores(to_pairs(predictions, references))
