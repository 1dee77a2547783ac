"""Classic corpus BLEU (Papineni et al., 2002) as a local `evaluate` metric.

Output keys and scales are those of the Hugging Face hub `bleu` module: "bleu" in 0-1 plus the
n-gram precisions (0-1), brevity_penalty, length_ratio, translation_length and reference_length.

Texts are tokenized with a sacrebleu tokenizer ("13a", the mteval-v13a tokenization, by default) and
the n-gram statistics are computed here:

* modified (clipped) n-gram precision per order, pooled over the corpus; with several references the
  clip count of an n-gram is its maximum count in any one reference;
* brevity penalty exp(1 - r/c) when c < r, where c is the total prediction length and r sums, per
  example, the length of the SHORTEST reference (as the hub module / tensorflow nmt compute_bleu do;
  sacrebleu uses the reference closest in length instead, so the two differ only when an example has
  references of different lengths);
* smooth=True adds 1 to the matches and to the candidate counts of every order (Lin & Och 2004).
"""

import math
from collections import Counter

import datasets
import evaluate
from sacrebleu import BLEU

_CITATION = """\
@inproceedings{papineni-etal-2002-bleu,
    title = "{B}leu: a Method for Automatic Evaluation of Machine Translation",
    author = "Papineni, Kishore and Roukos, Salim and Ward, Todd and Zhu, Wei-Jing",
    booktitle = "Proceedings of the 40th Annual Meeting of the Association for Computational Linguistics",
    year = "2002",
    pages = "311--318",
}
"""

_DESCRIPTION = """\
Corpus BLEU-4 (0-1): geometric mean of clipped n-gram precisions times a brevity penalty.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of predicted texts.
    references: list of reference texts, or list of lists of references (any number per prediction).
    max_order: maximum n-gram order (default 4).
    smooth: add-one smoothing of every n-gram precision (default False).
    tokenize: sacrebleu tokenizer name used to split texts into tokens (default "13a"; "none" splits
        on whitespace only).
    lowercase: lowercase before tokenizing (default False).
Returns:
    {"bleu": float 0-1, "precisions": [float 0-1]*max_order, "brevity_penalty": float,
     "length_ratio": float, "translation_length": int, "reference_length": int}
"""


def ngram_counts(tokens, max_order):
    """Counter of all n-grams (as tuples) of orders 1..max_order."""
    counts = Counter()
    for n in range(1, max_order + 1):
        for i in range(len(tokens) - n + 1):
            counts[tuple(tokens[i : i + n])] += 1
    return counts


def corpus_bleu_stats(tokenized_predictions, tokenized_references, max_order=4, smooth=False):
    """BLEU from token lists: tokenized_references[i] is the list of token lists for prediction i."""
    matches = [0] * max_order
    possible = [0] * max_order
    translation_length = 0
    reference_length = 0
    for pred, refs in zip(tokenized_predictions, tokenized_references):
        if not refs:
            raise ValueError("a prediction has an empty list of references")
        translation_length += len(pred)
        reference_length += min(len(ref) for ref in refs)
        max_ref_counts = Counter()
        for ref in refs:
            max_ref_counts |= ngram_counts(ref, max_order)  # element-wise max
        clipped = ngram_counts(pred, max_order) & max_ref_counts  # element-wise min
        for ngram, count in clipped.items():
            matches[len(ngram) - 1] += count
        for n in range(1, max_order + 1):
            possible[n - 1] += max(len(pred) - n + 1, 0)

    if smooth:
        precisions = [(m + 1.0) / (p + 1.0) for m, p in zip(matches, possible)]
    else:
        precisions = [m / p if p > 0 else 0.0 for m, p in zip(matches, possible)]
    if min(precisions) > 0:
        geo_mean = math.exp(sum(math.log(p) for p in precisions) / max_order)
    else:
        geo_mean = 0.0

    if reference_length > 0:
        ratio = translation_length / reference_length
    else:
        ratio = math.inf if translation_length > 0 else 0.0
    if ratio > 1.0:
        brevity_penalty = 1.0
    elif ratio > 0.0:
        brevity_penalty = math.exp(1.0 - 1.0 / ratio)
    else:
        brevity_penalty = 0.0
    return {
        "bleu": geo_mean * brevity_penalty,
        "precisions": precisions,
        "brevity_penalty": brevity_penalty,
        "length_ratio": ratio,
        "translation_length": translation_length,
        "reference_length": reference_length,
    }


class Bleu(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features(
                    {
                        "predictions": datasets.Value("string", id="sequence"),
                        "references": datasets.Sequence(datasets.Value("string", id="sequence")),
                    }
                ),
                datasets.Features(
                    {
                        "predictions": datasets.Value("string", id="sequence"),
                        "references": datasets.Value("string", id="sequence"),
                    }
                ),
            ],
            codebase_urls=["https://github.com/tensorflow/nmt/blob/master/nmt/scripts/bleu.py"],
            reference_urls=["https://aclanthology.org/P02-1040/"],
        )

    def _compute(self, predictions, references, max_order=4, smooth=False, tokenize="13a", lowercase=False):
        if len(predictions) != len(references):
            raise ValueError(f"got {len(predictions)} predictions but {len(references)} references")
        if max_order < 1:
            raise ValueError(f"max_order must be >= 1, got {max_order}")
        tokenizer = BLEU(tokenize=tokenize if tokenize is not None else "13a").tokenizer

        def tokens(text):
            if lowercase:
                text = text.lower()
            return tokenizer(text.rstrip()).split()

        tokenized_predictions = [tokens(p) for p in predictions]
        tokenized_references = [[tokens(r)] if isinstance(r, str) else [tokens(x) for x in r] for r in references]
        return corpus_bleu_stats(tokenized_predictions, tokenized_references, max_order=max_order, smooth=smooth)
