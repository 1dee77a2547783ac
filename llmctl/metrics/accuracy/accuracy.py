"""Accuracy as a local `evaluate` metric (scikit-learn's accuracy_score).

Output key and scale are those of the Hugging Face hub `accuracy` module: "accuracy" in 0-1 (or the
count of correct predictions with normalize=False). Labels may be integers or strings.
"""

import datasets
import evaluate
from sklearn.metrics import accuracy_score

_CITATION = """\
@article{scikit-learn,
  title={Scikit-learn: Machine Learning in {P}ython},
  author={Pedregosa, F. and Varoquaux, G. and Gramfort, A. and Michel, V. and Thirion, B. and others},
  journal={Journal of Machine Learning Research},
  volume={12},
  pages={2825--2830},
  year={2011}
}
"""

_DESCRIPTION = """\
Fraction of predictions equal to their reference label (0-1).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of predicted labels (ints or strings).
    references: list of reference labels (same type as predictions).
    normalize: True (default) returns the fraction correct, False the (weighted) number correct.
    sample_weight: optional list of per-example weights.
Returns:
    {"accuracy": float}
"""


def label_features():
    # Strings first: a non-string input fails the string check with a TypeError and falls through to
    # the integer option.
    return [
        datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
        datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
    ]


class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=label_features(),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.accuracy_score.html"],
        )

    def _compute(self, predictions, references, normalize=True, sample_weight=None):
        if len(predictions) != len(references):
            raise ValueError(f"got {len(predictions)} predictions but {len(references)} references")
        return {
            "accuracy": float(accuracy_score(references, predictions, normalize=normalize, sample_weight=sample_weight))
        }
