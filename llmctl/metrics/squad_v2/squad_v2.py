"""SQuAD 2.0 scores as a local `evaluate` metric.

Implements the definitions of the official SQuAD 2.0 evaluation script (evaluate-v2.0.py):

* answers are normalized like SQuAD v1.1 (lowercase, punctuation removed, articles a/an/the removed,
  whitespace collapsed);
* gold answers whose normalized text is empty are dropped; a question left with no gold answer is
  unanswerable and its only gold answer is "" — a prediction then scores 1 (exact and F1) iff it
  normalizes to the empty string;
* token F1 is 1 when both token lists are empty, 0 when only one is;
* with no-answer probabilities, a prediction whose probability exceeds `na_prob_thresh` (default 1.0)
  is treated as "no answer" (scores 1 iff the question is unanswerable), and best_exact/best_f1 with
  their thresholds are added (the best score over all thresholds, as the official script's
  find_all_best_thresh);
* HasAns_* / NoAns_* are the same scores restricted to answerable / unanswerable questions (the
  official split: a question is answerable when its raw answer list is non-empty); each group is
  reported only when present.

All scores are in 0-100, keys as the Hugging Face hub `squad_v2` module: exact, f1, total,
HasAns_exact, HasAns_f1, HasAns_total, NoAns_exact, NoAns_f1, NoAns_total (+ best_exact,
best_exact_thresh, best_f1, best_f1_thresh with no-answer probabilities).

Input formats:

* the hub format: predictions=[{"id", "prediction_text", "no_answer_probability"}], references=[{"id",
  "answers": {"text": [...], "answer_start": [...]}}], matched by id; no_answer_probability may be
  None (= not given);
* plain strings: predictions=[str], references=[str] (""/whitespace = unanswerable) or [[str, ...]]
  ([] = unanswerable; ""/whitespace-only entries are dropped), matched by position; no-answer
  probabilities then come from the `no_answer_probability` keyword (a list of floats).
"""

import re
import string
from collections import Counter

import datasets
import evaluate

_CITATION = """\
@inproceedings{rajpurkar-etal-2018-know,
    title = "Know What You Don{'}t Know: Unanswerable Questions for {SQ}u{AD}",
    author = "Rajpurkar, Pranav and Jia, Robin and Liang, Percy",
    booktitle = "Proceedings of the 56th Annual Meeting of the Association for Computational Linguistics",
    year = "2018",
    pages = "784--789",
}
"""

_DESCRIPTION = """\
SQuAD 2.0 exact match and token F1 (0-100) with unanswerable questions.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: [{"id": str, "prediction_text": str, "no_answer_probability": float | None}] or [str]
        ("" = the model abstains).
    references: [{"id": str, "answers": {"text": [str], "answer_start": [int]}}], [str] or [[str]].
    no_answer_probability: optional list of floats (plain-string format), one per prediction.
    na_prob_thresh: predictions with a no-answer probability above it count as "no answer" (1.0).
Returns:
    {"exact", "f1", "total", "HasAns_exact", "HasAns_f1", "HasAns_total", "NoAns_exact", "NoAns_f1",
     "NoAns_total"} (+ "best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh")
"""

_PUNCTUATION = set(string.punctuation)
_ARTICLES_RE = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(text):
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES_RE.sub(" ", text)
    return " ".join(text.split())


def get_tokens(text):
    if not text:
        return []
    return normalize_answer(text).split()


def compute_exact(gold, prediction):
    return int(normalize_answer(gold) == normalize_answer(prediction))


def compute_f1(gold, prediction):
    gold_tokens = get_tokens(gold)
    pred_tokens = get_tokens(prediction)
    if not gold_tokens or not pred_tokens:
        # If either is no-answer, F1 is 1 if they agree, 0 otherwise.
        return int(gold_tokens == pred_tokens)
    num_same = sum((Counter(gold_tokens) & Counter(pred_tokens)).values())
    if num_same == 0:
        return 0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def find_best_thresh(predictions, scores, na_probs, has_answer):
    """Best total score over all no-answer thresholds (official find_best_thresh)."""
    cur_score = best_score = sum(1 for qid in scores if not has_answer[qid])
    best_thresh = 0.0
    for qid in sorted(scores, key=lambda q: na_probs[q]):
        if has_answer[qid]:
            diff = scores[qid]
        elif predictions[qid]:
            diff = -1
        else:
            diff = 0
        cur_score += diff
        if cur_score > best_score:
            best_score = cur_score
            best_thresh = na_probs[qid]
    return 100.0 * best_score / len(scores), best_thresh


def squad_v2_scores(questions, na_prob_thresh=1.0):
    """questions: list of (qid, prediction text, raw gold answer texts, no-answer probability or None)."""
    if not questions:
        raise ValueError("no references to score")
    predictions, has_answer, na_probs = {}, {}, {}
    exact_raw, f1_raw = {}, {}
    for qid, prediction, answers, na_prob in questions:
        if qid in exact_raw:
            raise ValueError(f"duplicate question id {qid!r}")
        if prediction is None:
            raise ValueError(f"missing prediction for question id {qid!r}")
        golds = [a for a in answers if normalize_answer(a)] or [""]
        predictions[qid] = prediction
        has_answer[qid] = bool(answers)
        na_probs[qid] = na_prob
        exact_raw[qid] = max(compute_exact(g, prediction) for g in golds)
        f1_raw[qid] = max(compute_f1(g, prediction) for g in golds)

    use_probs = any(p is not None for p in na_probs.values())
    if use_probs:
        na_probs = {qid: 0.0 if p is None else float(p) for qid, p in na_probs.items()}

    def thresholded(raw):
        if not use_probs:
            return dict(raw)
        return {
            qid: float(not has_answer[qid]) if na_probs[qid] > na_prob_thresh else score for qid, score in raw.items()
        }

    exact, f1 = thresholded(exact_raw), thresholded(f1_raw)

    def group(qids):
        return (
            100.0 * sum(exact[q] for q in qids) / len(qids),
            100.0 * sum(f1[q] for q in qids) / len(qids),
            len(qids),
        )

    result = {}
    result["exact"], result["f1"], result["total"] = group(list(exact))
    has_ans_qids = [q for q in exact if has_answer[q]]
    no_ans_qids = [q for q in exact if not has_answer[q]]
    if has_ans_qids:
        result["HasAns_exact"], result["HasAns_f1"], result["HasAns_total"] = group(has_ans_qids)
    if no_ans_qids:
        result["NoAns_exact"], result["NoAns_f1"], result["NoAns_total"] = group(no_ans_qids)
    if use_probs:
        result["best_exact"], result["best_exact_thresh"] = find_best_thresh(
            predictions, exact_raw, na_probs, has_answer
        )
        result["best_f1"], result["best_f1_thresh"] = find_best_thresh(predictions, f1_raw, na_probs, has_answer)
    return result


def to_questions(predictions, references, no_answer_probability=None):
    if len(predictions) != len(references):
        raise ValueError(f"got {len(predictions)} predictions but {len(references)} references")
    if no_answer_probability is not None and len(no_answer_probability) != len(predictions):
        raise ValueError(
            f"got {len(no_answer_probability)} no_answer_probability values for {len(predictions)} predictions"
        )
    if predictions and isinstance(predictions[0], dict):
        by_id = {p["id"]: p for p in predictions}
        questions = []
        for i, ref in enumerate(references):
            pred = by_id.get(ref["id"])
            na_prob = None
            if pred is not None:
                na_prob = pred.get("no_answer_probability")
            if no_answer_probability is not None:
                na_prob = no_answer_probability[i]
            text = None if pred is None else pred["prediction_text"]
            questions.append((ref["id"], text, list(ref["answers"]["text"]), na_prob))
        return questions
    questions = []
    for i, (pred, ref) in enumerate(zip(predictions, references)):
        answers = [ref] if isinstance(ref, str) else list(ref)
        answers = [a for a in answers if a.strip()]
        na_prob = None if no_answer_probability is None else no_answer_probability[i]
        questions.append((str(i), pred, answers, na_prob))
    return questions


class SquadV2(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features(
                    {
                        "predictions": {
                            "id": datasets.Value("string"),
                            "prediction_text": datasets.Value("string"),
                            "no_answer_probability": datasets.Value("float64"),
                        },
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

    def _compute(self, predictions, references, no_answer_probability=None, na_prob_thresh=1.0):
        return squad_v2_scores(to_questions(predictions, references, no_answer_probability), na_prob_thresh)
