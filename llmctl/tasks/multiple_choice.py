"""Multiple choice (SWAG style): a context, the start of the next sentence, and several endings, of which one
follows. The model scores each `context + start ending` pair and the highest score is the prediction.

A record is `{"sent1": context, "sent2": start, "ending0": ..., "ending1": ..., ..., "label": index}`, the
layout the Hugging Face `run_swag.py` example reads; `data.text_column` / `data.text_pair_column` rename sent1 /
sent2. Every record of a split must have the same number of endings. Default metric accuracy; baseline: the
position most often right in the training split.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from llmctl.tasks.base import Predictions, RecordCheck, Task, compute_metrics

CONTEXT_COLUMN = "sent1"
START_COLUMN = "sent2"
ENDING_PREFIX = "ending"


def encode(examples: list[dict], tokenizer, max_length: int) -> list[dict]:
    """Per example, one token sequence per ending: the tokenizer's pair template over (context, start + ending),
    or `context EOS start ending EOS` for tokenizers without one. The context is cut first when too long."""
    out = []
    template = tokenizer.sep_token is not None
    eos = tokenizer.eos_token_id
    for ex in examples:
        firsts = [ex["context"]] * len(ex["endings"])
        seconds = [f"{ex['start']} {ending}".strip() for ending in ex["endings"]]
        if template:
            enc = tokenizer(firsts, seconds, truncation="longest_first", max_length=max_length)
            row = {"input_ids": [list(x) for x in enc["input_ids"]]}
            if "token_type_ids" in enc:
                row["token_type_ids"] = [list(x) for x in enc["token_type_ids"]]
        else:
            a = tokenizer(ex["context"], add_special_tokens=False)["input_ids"]
            ids = []
            for second in seconds:
                b = tokenizer(second, add_special_tokens=False)["input_ids"][: max_length - 2]
                ids.append(a[: max(0, max_length - 2 - len(b))] + [eos] + b + [eos])
            row = {"input_ids": ids}
        out.append(row)
    return out


class SameEndings(RecordCheck):
    """Every example of a split has as many endings as the first (the model scores a fixed number of choices)."""

    def __init__(self):
        self.n: int | None = None

    def keep(self, where, example):
        from llmctl.data import DataError

        n = len(example["endings"])
        if self.n is None:
            self.n = n
        elif n != self.n:
            raise DataError(f"{where}: {n} endings, but the first record of the split has {self.n}")
        return True


@dataclass(kw_only=True)
class MultipleChoice(Task):
    families: tuple[str, ...] = ("encoder",)
    auto_classes: dict = field(default_factory=lambda: {"encoder": "AutoModelForMultipleChoice"})
    # peft has no multiple-choice task type: LoRA adapts the encoder and trains the scoring head in full.
    lora_modules_to_save: tuple[str, ...] = ("classifier",)

    def normalize(self, where, rec, d):
        from llmctl.data import DataError, require_column, text_field

        endings = []
        while f"{ENDING_PREFIX}{len(endings)}" in rec:
            endings.append(text_field(where, rec, f"{ENDING_PREFIX}{len(endings)}", "ending"))
        if len(endings) < 2:
            raise DataError(f"{where}: a multiple-choice record needs columns ending0, ending1, ... "
                            f"(found {len(endings)})")
        label = require_column(where, rec, d.label_column, role="label")
        if isinstance(label, str) and label.strip().isdigit():
            label = int(label)
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(endings):
            raise DataError(f"{where}: label column '{d.label_column}' must be the index of the right ending "
                            f"(0-{len(endings) - 1}), got {label!r}")
        return {
            "context": text_field(where, rec, d.text_column or CONTEXT_COLUMN, "context"),
            "start": text_field(where, rec, d.text_pair_column or START_COLUMN, "sentence start"),
            "endings": endings,
            "label": label,
        }

    def check(self):
        return SameEndings()

    def tokenizer_texts(self, examples):
        for ex in examples:
            yield ex["context"]
            yield ex["start"]
            yield from ex["endings"]

    def features(self, examples, where, tokenizer, spec):
        rows = encode(examples, tokenizer, spec.max_source_length)
        return [{**row, "labels": ex["label"]} for row, ex in zip(rows, examples)], 0

    def collator(self, pad_id: int):
        """(batch, choices, longest) tensors: every choice of every example right-padded to one length."""
        import torch

        from llmctl.tasks.batching import pad_inputs

        def collate(rows: list[dict]) -> dict:
            flat = [{k: row[k][c] for k in ("input_ids", "token_type_ids") if k in row}
                    for row in rows for c in range(len(row["input_ids"]))]
            batch = pad_inputs(flat, pad_id)
            n = len(rows[0]["input_ids"])
            batch = {k: v.view(len(rows), n, -1) for k, v in batch.items()}
            if "labels" in rows[0]:
                batch["labels"] = torch.as_tensor([r["labels"] for r in rows], dtype=torch.long)
            return batch

        return collate

    def predict(self, model, examples, where, tokenizer, spec, settings, **options):
        from llmctl.tasks.batching import argmax_predictions

        rows = encode(examples, tokenizer, spec.max_source_length)
        return Predictions(argmax_predictions(model, rows, self.collator(tokenizer.pad_token_id), settings.batch_size))

    def score(self, names, predictions, examples, where, spec, kwargs):
        return compute_metrics(names, list(predictions), [ex["label"] for ex in examples], kwargs)

    def baseline(self, train, examples, spec):
        majority = Counter(ex["label"] for ex in train).most_common(1)[0][0]
        return [majority] * len(examples)

    def row(self, example, prediction, spec):
        return {"context": example["context"], "start": example["start"], "endings": example["endings"],
                "prediction": prediction, "reference": example["label"]}


TASK = MultipleChoice(name="multiple_choice", default_metrics=("accuracy",), best_metric="accuracy.accuracy")
