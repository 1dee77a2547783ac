"""F1 as a local `evaluate` metric (scikit-learn's f1_score).

Output key and scale are those of the Hugging Face hub `f1` module: "f1" in 0-1 (a list of per-class
scores with average=None). Labels may be integers or strings (pass pos_label for string labels with
the default binary average).
"""

import datasets
import evaluate
from sklearn.metrics import f1_score

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
Harmonic mean of precision and recall (0-1): F1 = 2 * (precision * recall) / (precision + recall).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of predicted labels (ints or strings).
    references: list of reference labels (same type as predictions).
    labels: labels to include when average != "binary" (default: all labels seen).
    pos_label: the positive class for average="binary" (default 1).
    average: "binary" (default), "micro", "macro", "weighted", "samples" or None (per-class list).
    sample_weight: optional list of per-example weights.
Returns:
    {"f1": float} (or {"f1": [float, ...]} with average=None)
"""


def label_features():
    return [
        datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
        datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
    ]


class F1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=label_features(),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.f1_score.html"],
        )

    def _compute(self, predictions, references, labels=None, pos_label=1, average="binary", sample_weight=None):
        if len(predictions) != len(references):
            raise ValueError(f"got {len(predictions)} predictions but {len(references)} references")
        score = f1_score(
            references,
            predictions,
            labels=labels,
            pos_label=pos_label,
            average=average,
            sample_weight=sample_weight,
        )
        if getattr(score, "size", 1) == 1:
            return {"f1": float(score)}
        return {"f1": [float(s) for s in score]}
