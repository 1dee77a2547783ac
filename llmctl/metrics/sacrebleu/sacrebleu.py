"""SacreBLEU as a local `evaluate` metric: corpus BLEU computed by the `sacrebleu` package.

Output keys and scales are those of the Hugging Face hub `sacrebleu` module: "score" in 0-100 plus
counts, totals, precisions (0-100), bp, sys_len, ref_len.
"""

import datasets
import evaluate
import sacrebleu as scb

_CITATION = """\
@inproceedings{post-2018-call,
    title = "A Call for Clarity in Reporting {BLEU} Scores",
    author = "Post, Matt",
    booktitle = "Proceedings of the Third Conference on Machine Translation: Research Papers",
    year = "2018",
    publisher = "Association for Computational Linguistics",
    pages = "186--191",
}
"""

_DESCRIPTION = """\
Corpus-level BLEU (0-100) with sacrebleu's standard tokenization ("13a" by default).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of predicted texts.
    references: list of reference texts (one per prediction), or list of lists of references; every
        prediction must then have the same number of references.
    smooth_method: "exp" (default), "floor", "add-k" or "none".
    smooth_value: value for "floor"/"add-k" smoothing (sacrebleu's default when None).
    tokenize: sacrebleu tokenizer name, default "13a" ("none", "zh", "intl", "char", ...).
    lowercase: lowercase before scoring (default False).
    force: do not complain about input that looks already tokenized (default False).
    use_effective_order: ignore n-gram orders with no candidate n-grams (default False; use True
        for sentence-level BLEU).
Returns:
    {"score": float 0-100, "counts": [int]*4, "totals": [int]*4, "precisions": [float 0-100]*4,
     "bp": float, "sys_len": int, "ref_len": int}
"""


def transpose_references(references):
    """Per-prediction reference lists -> sacrebleu's reference streams (one list per reference index)."""
    if not references:
        return [[]]
    if isinstance(references[0], str):
        return [list(references)]
    count = len(references[0])
    if count == 0 or any(len(refs) != count for refs in references):
        raise ValueError("sacrebleu needs the same (non-zero) number of references for every prediction")
    return [[refs[i] for refs in references] for i in range(count)]


class Sacrebleu(evaluate.Metric):
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
            codebase_urls=["https://github.com/mjpost/sacreBLEU"],
            reference_urls=["https://aclanthology.org/W18-6319/"],
        )

    def _compute(
        self,
        predictions,
        references,
        smooth_method="exp",
        smooth_value=None,
        force=False,
        lowercase=False,
        tokenize="13a",
        use_effective_order=False,
    ):
        if len(predictions) != len(references):
            raise ValueError(f"got {len(predictions)} predictions but {len(references)} references")
        output = scb.corpus_bleu(
            list(predictions),
            transpose_references(references),
            smooth_method=smooth_method,
            smooth_value=smooth_value,
            force=force,
            lowercase=lowercase,
            tokenize=tokenize if tokenize is not None else "13a",
            use_effective_order=use_effective_order,
        )
        return {
            "score": float(output.score),
            "counts": [int(c) for c in output.counts],
            "totals": [int(t) for t in output.totals],
            "precisions": [float(p) for p in output.precisions],
            "bp": float(output.bp),
            "sys_len": int(output.sys_len),
            "ref_len": int(output.ref_len),
        }
