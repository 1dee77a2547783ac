"""Sequence classification, single sentences or sentence pairs. Labels may be strings or integers; the label
map is saved in the model's config (id2label / label2id). Default metrics accuracy and F1; baseline: the
majority training label."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from llmctl.tasks.base import Predictions, RecordCheck, Spec, Task, compute_metrics, request_text

TEXT_COLUMN = "text"


def label_map(examples: list[dict]) -> list:
    """Sorted distinct labels: numerically when every label is an integer (or a string of digits, as CSV
    gives them), alphabetically otherwise."""
    labels = {ex["label"] for ex in examples}
    if all(isinstance(v, int) or str(v).lstrip("-").isdigit() for v in labels):
        return sorted(labels, key=lambda v: int(v))
    return sorted(labels, key=str)


def label_ids(examples: list[dict], where: list[str], labels: tuple[str, ...]) -> list[int]:
    """Class ids of the examples' labels; a label the model was not trained on names its file and line."""
    from llmctl.data import DataError

    label2id = {v: i for i, v in enumerate(labels)}
    out = []
    for ex, w in zip(examples, where):
        key = str(ex["label"])
        if key not in label2id:
            known = ", ".join(repr(k) for k in labels)
            raise DataError(f"{w}: label {ex['label']!r} was not seen in training (known labels: {known})")
        out.append(label2id[key])
    return out


def encode(examples: list[dict], tokenizer, max_length: int) -> list[list[int]]:
    """Token ids of each text (or pair). Pairs use the tokenizer's own pair template, or `text EOS pair EOS`
    for tokenizers without one (such as the byte-level BPE that llmctl trains)."""
    out = []
    has_template = tokenizer.sep_token is not None
    eos = tokenizer.eos_token_id
    for ex in examples:
        if "text_pair" in ex and has_template:
            enc = tokenizer(ex["text"], ex["text_pair"], truncation=True, max_length=max_length)
            out.append(enc)
            continue
        if "text_pair" in ex:
            a = tokenizer(ex["text"], add_special_tokens=False)["input_ids"]
            b = tokenizer(ex["text_pair"], add_special_tokens=False)["input_ids"]
            half = max(1, (max_length - 2) // 2)
            ids = a[:half] + [eos] + b[: max_length - 2 - min(len(a), half)] + [eos]
        else:
            ids = tokenizer(ex["text"], truncation=True, max_length=max_length)["input_ids"]
            if tokenizer.sep_token is None and eos is not None and ids[-1:] != [eos]:
                ids = ids[: max_length - 1] + [eos]
        out.append({"input_ids": ids})
    return [dict(e) for e in out]


class SameLabelType(RecordCheck):
    """Labels of a split are all text or all integers: with `1` in one record and `"1"` in another the user
    meant one class, or two, and guessing either way trains the wrong model."""

    def __init__(self):
        self.first: tuple[type, str, object] | None = None

    def keep(self, where, example):
        from llmctl.data import DataError

        label = example["label"]
        if self.first is None:
            self.first = (type(label), where, label)
        elif type(label) is not self.first[0]:
            kind = {str: "text", int: "an integer"}
            raise DataError(f"{where}: label {label!r} is {kind[type(label)]}, but the label at {self.first[1]} "
                            f"({self.first[2]!r}) is {kind[self.first[0]]}; write every label the same way")
        return True


@dataclass(kw_only=True)
class Classification(Task):
    families: tuple[str, ...] = ("encoder", "causal", "seq2seq")
    auto_classes: dict = field(default_factory=lambda: dict.fromkeys(
        ("encoder", "causal", "seq2seq"), "AutoModelForSequenceClassification"))
    peft_types: dict = field(default_factory=lambda: dict.fromkeys(("encoder", "causal", "seq2seq"), "SEQ_CLS"))

    def normalize(self, where, rec, d):
        from llmctl.data import DataError, require_column, text_field

        out = {"text": text_field(where, rec, d.text_column or TEXT_COLUMN, "text")}
        if d.text_pair_column:
            out["text_pair"] = text_field(where, rec, d.text_pair_column, "second text")
        label = require_column(where, rec, d.label_column, role="label")
        # An integer column with a missing value is float in pandas (1.0, 2.0): take integral floats as integers.
        if isinstance(label, float):
            if not label.is_integer():
                raise DataError(f"{where}: label column '{d.label_column}' holds {label!r}, which is not a whole "
                                f"number; labels must be strings or integers")
            label = int(label)
        if isinstance(label, bool) or not isinstance(label, (str, int)):
            raise DataError(f"{where}: label column '{d.label_column}' must hold a string or an integer, "
                            f"got {label!r}")
        out["label"] = label.strip() if isinstance(label, str) else label
        return out

    def check(self):
        return SameLabelType()

    def tokenizer_texts(self, examples):
        for ex in examples:
            yield ex["text"]
            if "text_pair" in ex:
                yield ex["text_pair"]

    def spec(self, recipe, tokenizer, train, family, context, say):
        from llmctl.data import DataError

        labels = label_map(train)
        if len(labels) < 2:
            raise DataError(f"{recipe.data.train_files[0]}: classification needs at least two labels, "
                            f"found {labels}")
        d = recipe.data
        return Spec(task=self.name, family=family, context=context, labels=tuple(str(v) for v in labels),
                    max_source_length=min(d.max_source_length, context or d.max_source_length))

    def spec_from_info(self, info, config, family, context):
        labels = [config.id2label[i] for i in sorted(int(k) for k in config.id2label)]
        return Spec.from_info({**info, "labels": labels}, task=self.name, family=family, context=context,
                              max_source_length=context or 512)

    def config_overrides(self, spec):
        return {"num_labels": len(spec.labels), "id2label": dict(enumerate(spec.labels)),
                "label2id": {v: i for i, v in enumerate(spec.labels)}}

    def features(self, examples, where, tokenizer, spec):
        ids = label_ids(examples, where, spec.labels)
        rows = encode(examples, tokenizer, spec.max_source_length)
        return [{**row, "labels": label} for row, label in zip(rows, ids)], 0

    def collator(self, pad_id: int):
        import torch

        from llmctl.tasks.batching import pad_inputs

        def collate(rows: list[dict]) -> dict:
            batch = pad_inputs(rows, pad_id)
            if "labels" in rows[0]:
                batch["labels"] = torch.as_tensor([r["labels"] for r in rows], dtype=torch.long)
            return batch

        return collate

    def predict(self, model, examples, where, tokenizer, spec, settings, **options):
        from llmctl.tasks.batching import argmax_predictions

        rows = encode(examples, tokenizer, spec.max_source_length)
        return Predictions(argmax_predictions(model, rows, self.collator(tokenizer.pad_token_id), settings.batch_size))

    def metric_kwargs(self, eval_cfg, spec):
        # Binary F1 of label 1 for two classes (the GLUE convention); macro average over classes otherwise.
        return {"f1": {"average": "binary", "pos_label": 1} if len(spec.labels) == 2 else {"average": "macro"}}

    def score(self, names, predictions, examples, where, spec, kwargs):
        return compute_metrics(names, list(predictions), label_ids(examples, where, spec.labels), kwargs)

    def baseline(self, train, examples, spec):
        majority = Counter(str(ex["label"]) for ex in train).most_common(1)[0][0]
        return [spec.labels.index(majority)] * len(examples)

    def row(self, example, prediction, spec):
        row = {"text": example["text"]}
        if "text_pair" in example:
            row["text_pair"] = example["text_pair"]
        return {**row, "prediction": spec.labels[prediction], "reference": str(example["label"])}

    def serve_request(self, body, inputs):
        """`{"text", "text_pair"?}`, each fit to the input limit."""
        item = {"text": inputs.fit(request_text(body, "text"), "text")}
        if body.get("text_pair") is not None:
            item["text_pair"] = inputs.fit(request_text(body, "text_pair"), "text_pair")
        return (), item

    def serve_batch(self, model, key, items, tokenizer, spec, settings):
        """`{"label"}` per item, predicted as `eval` does."""
        got = self.predict(model, items, [f"request {i + 1}" for i in range(len(items))], tokenizer, spec, settings)
        return [{"label": spec.labels[p]} for p in got.items]


TASK = Classification(name="classification", default_metrics=("accuracy", "f1"), best_metric="accuracy.accuracy",
                      endpoint="/v1/classify")
