"""Exact match as a local `evaluate` metric.

Output key and scale are those of the Hugging Face hub `exact_match` module: "exact_match" in 0-1,
the fraction of predictions identical to their reference after the optional normalizations, applied
in the hub module's order: regexes_to_ignore (each removed with re.sub, in order), then ignore_case,
ignore_punctuation (string.punctuation), ignore_numbers (string.digits).
"""

import re
import string

import datasets
import evaluate

_DESCRIPTION = """\
Fraction of predictions that are exactly equal to their reference (0-1).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of predicted texts.
    references: list of reference texts.
    regexes_to_ignore: list of regular expressions whose matches are removed before comparing.
    ignore_case: lowercase both sides (default False).
    ignore_punctuation: remove string.punctuation characters (default False).
    ignore_numbers: remove the digits 0-9 (default False).
Returns:
    {"exact_match": float}
"""

_PUNCTUATION_TABLE = str.maketrans("", "", string.punctuation)
_DIGITS_TABLE = str.maketrans("", "", string.digits)


def normalize(text, regexes_to_ignore=None, ignore_case=False, ignore_punctuation=False, ignore_numbers=False):
    for pattern in regexes_to_ignore or ():
        text = re.sub(pattern, "", text)
    if ignore_case:
        text = text.lower()
    if ignore_punctuation:
        text = text.translate(_PUNCTUATION_TABLE)
    if ignore_numbers:
        text = text.translate(_DIGITS_TABLE)
    return text


class ExactMatch(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("string", id="sequence"),
                    "references": datasets.Value("string", id="sequence"),
                }
            ),
        )

    def _compute(
        self,
        predictions,
        references,
        regexes_to_ignore=None,
        ignore_case=False,
        ignore_punctuation=False,
        ignore_numbers=False,
    ):
        if len(predictions) != len(references):
            raise ValueError(f"got {len(predictions)} predictions but {len(references)} references")
        if isinstance(regexes_to_ignore, str):
            regexes_to_ignore = [regexes_to_ignore]
        options = dict(
            regexes_to_ignore=regexes_to_ignore,
            ignore_case=ignore_case,
            ignore_punctuation=ignore_punctuation,
            ignore_numbers=ignore_numbers,
        )
        if not predictions:
            return {"exact_match": 0.0}
        matches = sum(normalize(p, **options) == normalize(r, **options) for p, r in zip(predictions, references))
        return {"exact_match": matches / len(predictions)}
