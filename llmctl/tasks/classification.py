"""Sequence classification, single sentences or sentence pairs. Labels may be strings or integers; the label
map is saved in the model's config (id2label / label2id). Default metrics accuracy and F1."""

from __future__ import annotations

NAME = "classification"
KIND = "classify"
FAMILIES = ("encoder", "causal", "seq2seq")
DEFAULT_METRICS = ("accuracy", "f1")
DEFAULT_BEST = "accuracy.accuracy"
TEXT_COLUMN = "text"


def normalize(where: str, rec: dict, d) -> dict:
    from llmctl.data import DataError, require_column, text_field

    out = {"text": text_field(where, rec, d.text_column or TEXT_COLUMN, "text")}
    if d.text_pair_column:
        out["text_pair"] = text_field(where, rec, d.text_pair_column, "second text")
    label = require_column(where, rec, d.label_column, role="label")
    if isinstance(label, bool) or not isinstance(label, (str, int)):
        raise DataError(f"{where}: label column '{d.label_column}' must hold a string or an integer, got {label!r}")
    out["label"] = label.strip() if isinstance(label, str) else label
    return out


def label_map(examples: list[dict]) -> list:
    """Sorted distinct labels: numerically when every label is an integer (or a string of digits, as CSV
    gives them), alphabetically otherwise."""
    labels = {ex["label"] for ex in examples}
    if all(isinstance(v, int) or str(v).lstrip("-").isdigit() for v in labels):
        return sorted(labels, key=lambda v: int(v))
    return sorted(labels, key=str)


def label_ids(examples: list[dict], where: list[str], label2id: dict) -> list[int]:
    from llmctl.data import DataError

    out = []
    for ex, w in zip(examples, where):
        key = str(ex["label"])
        if key not in label2id:
            known = ", ".join(repr(k) for k in label2id)
            raise DataError(f"{w}: label {ex['label']!r} was not seen in training (known labels: {known})")
        out.append(label2id[key])
    return out


def features(examples: list[dict], labels: list[int], tokenizer, *, max_length: int) -> list[dict]:
    """Tokenize; pairs use the tokenizer's own pair template, or `text EOS pair` for tokenizers without one
    (such as the byte-level BPE that llmctl trains)."""
    out = []
    has_template = tokenizer.sep_token is not None
    for ex, label in zip(examples, labels):
        if "text_pair" in ex and has_template:
            enc = tokenizer(ex["text"], ex["text_pair"], truncation=True, max_length=max_length)
            ids = enc["input_ids"]
            row = {"input_ids": ids, "labels": label}
            if "token_type_ids" in enc:
                row["token_type_ids"] = enc["token_type_ids"]
        elif "text_pair" in ex:
            a = tokenizer(ex["text"], add_special_tokens=False)["input_ids"]
            b = tokenizer(ex["text_pair"], add_special_tokens=False)["input_ids"]
            half = max(1, (max_length - 2) // 2)
            ids = (a[:half] + [tokenizer.eos_token_id] + b[: max_length - 2 - min(len(a), half)] +
                   [tokenizer.eos_token_id])
            row = {"input_ids": ids, "labels": label}
        else:
            ids = tokenizer(ex["text"], truncation=True, max_length=max_length)["input_ids"]
            if tokenizer.sep_token is None and tokenizer.eos_token_id is not None and ids[-1:] != [tokenizer.eos_token_id]:
                ids = ids[: max_length - 1] + [tokenizer.eos_token_id]
            row = {"input_ids": ids, "labels": label}
        out.append(row)
    return out


def collator(pad_id: int):
    import torch

    from llmctl.tasks.batching import pad_inputs

    def collate(rows: list[dict]) -> dict:
        batch = pad_inputs(rows, pad_id)
        batch["labels"] = torch.as_tensor([r["labels"] for r in rows], dtype=torch.long)
        return batch

    return collate


def metric_kwargs(recipe, n_labels: int = 2) -> dict:
    # Binary F1 of label 1 for two classes (the GLUE convention); macro average over classes otherwise.
    return {"f1": {"average": "binary", "pos_label": 1} if n_labels == 2 else {"average": "macro"}}
