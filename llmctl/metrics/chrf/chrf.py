"""chrF / chrF++ as a local `evaluate` metric, computed by the `sacrebleu` package's CHRF.

Output keys and scales are those of the Hugging Face hub `chrf` module: "score" in 0-100 plus the
char_order, word_order and beta used. word_order=2 gives chrF++.
"""

import datasets
import evaluate
from sacrebleu import CHRF

_CITATION = """\
@inproceedings{popovic-2015-chrf,
    title = "chr{F}: character n-gram {F}-score for automatic {MT} evaluation",
    author = "Popovi{\\'c}, Maja",
    booktitle = "Proceedings of the Tenth Workshop on Statistical Machine Translation",
    year = "2015",
    pages = "392--395",
}
"""

_DESCRIPTION = """\
Corpus-level character n-gram F-score (chrF, 0-100); word_order=2 gives chrF++.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of predicted texts.
    references: list of reference texts, or list of lists of references (same number for every
        prediction).
    char_order: character n-gram order (default 6).
    word_order: word n-gram order (default 0; 2 gives chrF++).
    beta: recall weight (default 2).
    lowercase: lowercase before scoring (default False).
    whitespace: keep whitespace when extracting character n-grams (default False).
    eps_smoothing: use the epsilon smoothing of the original chrF++.py/NLTK/Moses (default False).
Returns:
    {"score": float 0-100, "char_order": int, "word_order": int, "beta": int}
"""


def transpose_references(references):
    if not references:
        return [[]]
    if isinstance(references[0], str):
        return [list(references)]
    count = len(references[0])
    if count == 0 or any(len(refs) != count for refs in references):
        raise ValueError("chrf needs the same (non-zero) number of references for every prediction")
    return [[refs[i] for refs in references] for i in range(count)]


class Chrf(evaluate.Metric):
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
            codebase_urls=["https://github.com/mjpost/sacreBLEU#chrf--chrf"],
            reference_urls=["https://aclanthology.org/W15-3049/", "https://aclanthology.org/W17-4770/"],
        )

    def _compute(
        self,
        predictions,
        references,
        char_order=CHRF.CHAR_ORDER,
        word_order=CHRF.WORD_ORDER,
        beta=CHRF.BETA,
        lowercase=False,
        whitespace=False,
        eps_smoothing=False,
    ):
        if len(predictions) != len(references):
            raise ValueError(f"got {len(predictions)} predictions but {len(references)} references")
        chrf = CHRF(
            char_order=char_order,
            word_order=word_order,
            beta=beta,
            lowercase=lowercase,
            whitespace=whitespace,
            eps_smoothing=eps_smoothing,
        )
        output = chrf.corpus_score(list(predictions), transpose_references(references))
        return {
            "score": float(output.score),
            "char_order": int(output.char_order),
            "word_order": int(output.word_order),
            "beta": int(output.beta),
        }
