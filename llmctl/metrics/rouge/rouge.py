"""ROUGE (F-measure) as a local `evaluate` metric, computed with Google's `rouge_score` package.

Output keys and scales follow the Hugging Face hub `rouge` module (rouge1, rouge2, rougeL, rougeLsum,
F-measures in 0-1), with two deliberate differences:

* aggregation is the plain mean over examples (the hub module reports the "mid" of a bootstrap
  resampling, which is random-seed dependent and only approximately the mean);
* a `tokenizer` option makes ROUGE usable on Chinese/Japanese/Korean text. rouge_score's default
  tokenizer keeps only ``[a-z0-9]`` runs, so every CJK character is dropped and Chinese scores 0.
  ``tokenizer="char"`` makes each CJK character a token (other text is tokenized exactly like the
  default tokenizer), ``"auto"`` (the default) picks ``"char"`` when any prediction or reference
  contains a CJK character and ``"default"`` otherwise. The result names the tokenizer actually used
  under the string key ``"tokenizer"``.

rougeLsum is the summary-level LCS of rouge_score: sentences are split on newlines ("\\n") only, so
put one sentence per line to get a meaningful rougeLsum; without newlines it equals rougeL.
"""

import re

import datasets
import evaluate
from rouge_score import rouge_scorer

_CITATION = """\
@inproceedings{lin-2004-rouge,
    title = "{ROUGE}: A Package for Automatic Evaluation of Summaries",
    author = "Lin, Chin-Yew",
    booktitle = "Text Summarization Branches Out",
    year = "2004",
    publisher = "Association for Computational Linguistics",
    pages = "74--81",
}
"""

_DESCRIPTION = """\
ROUGE-N and ROUGE-L F-measures between predictions and references (0-1), mean over examples.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of predicted texts.
    references: list of reference texts, or list of lists of references (each prediction is scored
        against the reference giving the best F-measure, per ROUGE type).
    rouge_types: ROUGE types to compute, default ["rouge1", "rouge2", "rougeL", "rougeLsum"]
        ("rougeN" for any N >= 1 is accepted).
    use_stemmer: apply the Porter stemmer to Latin words longer than 3 characters (default False).
    use_aggregator: True (default) returns the mean over examples, False one score per example.
    tokenizer: "auto" (default), "default" (rouge_score's tokenizer) or "char" (one token per CJK
        character). rougeLsum splits sentences on newlines.
Returns:
    {"rouge1": float, "rouge2": float, "rougeL": float, "rougeLsum": float, "tokenizer": str}
"""

DEFAULT_ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
TOKENIZERS = ("auto", "default", "char")

# Han ideographs (+ extension A, compatibility ideographs, extensions B..), kana and Hangul syllables.
_CJK_RANGES = (
    "\u3040-\u30ff"  # Hiragana, Katakana
    "\u3400-\u4dbf"  # CJK Unified Ideographs Extension A
    "\u4e00-\u9fff"  # CJK Unified Ideographs
    "\uac00-\ud7af"  # Hangul syllables
    "\uf900-\ufaff"  # CJK Compatibility Ideographs
    "\uff66-\uff9f"  # half-width Katakana
    "\U00020000-\U0003134f"  # CJK Unified Ideographs Extensions B..G
)
_CJK_RE = re.compile(f"[{_CJK_RANGES}]")
# One CJK character, or a run of the characters rouge_score's default tokenizer keeps.
_CHAR_TOKEN_RE = re.compile(f"[{_CJK_RANGES}]|[a-z0-9]+")


def contains_cjk(text):
    return _CJK_RE.search(text) is not None


class CharTokenizer:
    """rouge_score-compatible tokenizer (has `tokenize(text)`) for CJK text.

    Lowercases, then emits every CJK character as its own token and every ``[a-z0-9]+`` run as a word;
    everything else (spaces, punctuation, other scripts) separates tokens and is dropped. On text
    without CJK characters the tokens are exactly those of rouge_score's DefaultTokenizer (same
    stemming rule: Porter stemmer on words longer than 3 characters when `use_stemmer`).
    """

    def __init__(self, use_stemmer=False):
        if use_stemmer:
            from nltk.stem import porter

            self._stemmer = porter.PorterStemmer()
        else:
            self._stemmer = None

    def tokenize(self, text):
        tokens = _CHAR_TOKEN_RE.findall(text.lower())
        if self._stemmer is not None:
            tokens = [self._stemmer.stem(t) if len(t) > 3 and not _CJK_RE.match(t) else t for t in tokens]
            # The stemmer can in principle produce characters outside [a-z0-9]; drop such tokens like
            # rouge_score does.
            tokens = [t for t in tokens if _CHAR_TOKEN_RE.fullmatch(t)]
        return tokens


def resolve_tokenizer(tokenizer, predictions, references):
    """The tokenizer name actually used: "default" or "char"."""
    if tokenizer is None:
        tokenizer = "auto"
    if tokenizer not in TOKENIZERS:
        raise ValueError(f"unknown rouge tokenizer {tokenizer!r}; valid: {', '.join(TOKENIZERS)}")
    if tokenizer != "auto":
        return tokenizer
    for text in predictions:
        if contains_cjk(text):
            return "char"
    for ref in references:
        for text in [ref] if isinstance(ref, str) else ref:
            if contains_cjk(text):
                return "char"
    return "default"


class Rouge(evaluate.Metric):
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
            codebase_urls=["https://github.com/google-research/google-research/tree/master/rouge"],
            reference_urls=["https://aclanthology.org/W04-1013/"],
        )

    def _compute(
        self,
        predictions,
        references,
        rouge_types=None,
        use_aggregator=True,
        use_stemmer=False,
        tokenizer="auto",
    ):
        if rouge_types is None:
            rouge_types = list(DEFAULT_ROUGE_TYPES)
        elif isinstance(rouge_types, str):
            rouge_types = [rouge_types]
        else:
            rouge_types = list(rouge_types)
        for rouge_type in rouge_types:
            if rouge_type not in ("rougeL", "rougeLsum") and not re.fullmatch(r"rouge[1-9]", rouge_type):
                raise ValueError(f"invalid rouge type {rouge_type!r}; valid: rouge1..rouge9, rougeL, rougeLsum")
        if len(predictions) != len(references):
            raise ValueError(f"got {len(predictions)} predictions but {len(references)} references")

        tokenizer_name = resolve_tokenizer(tokenizer, predictions, references)
        tokenizer_obj = CharTokenizer(use_stemmer) if tokenizer_name == "char" else None
        scorer = rouge_scorer.RougeScorer(rouge_types, use_stemmer=use_stemmer, tokenizer=tokenizer_obj)

        per_type = {rouge_type: [] for rouge_type in rouge_types}
        for pred, ref in zip(predictions, references):
            if isinstance(ref, str):
                scores = scorer.score(ref, pred)
            else:
                if not ref:
                    raise ValueError("a prediction has an empty list of references")
                scores = scorer.score_multi(ref, pred)
            for rouge_type in rouge_types:
                per_type[rouge_type].append(float(scores[rouge_type].fmeasure))

        result = {}
        for rouge_type, values in per_type.items():
            if use_aggregator:
                result[rouge_type] = sum(values) / len(values) if values else 0.0
            else:
                result[rouge_type] = values
        result["tokenizer"] = tokenizer_name
        return result
