"""Shared machinery of the text-to-text tasks (summarization, translation) for both generating families.

Encoder-decoder models read `source_prefix + source` and are trained on the target as labels. Causal LMs read
a prompt built around the source and continue it with the target; the loss covers the target (and its EOS)
only, never the prompt.
"""

from __future__ import annotations

KIND = "generate"


def split_prompt(prompt: str) -> tuple[str, str]:
    before, sep, after = prompt.partition("{source}")
    if not sep:
        from llmctl.data import DataError

        raise DataError(f"data.prompt must contain {{source}}, got {prompt!r}")
    return before, after


def fit_source(tokenizer, source: str, budget: int) -> str:
    """Cut `source` to at most `budget` tokens (keeping its beginning) and return it as text."""
    ids = tokenizer(source, add_special_tokens=False)["input_ids"]
    if len(ids) <= budget:
        return source
    return tokenizer.decode(ids[: max(budget, 1)], skip_special_tokens=True)


def model_inputs(examples: list[dict], tokenizer, *, family: str, prompt: str, source_prefix: str,
                 source_budget: int) -> list[str]:
    """The text each example is given to the model as, for training and for generation alike."""
    if family == "seq2seq":
        return [source_prefix + ex["source"] for ex in examples]
    before, after = split_prompt(prompt)
    overhead = len(tokenizer(before + after, add_special_tokens=False)["input_ids"])
    budget = max(1, source_budget - overhead)
    return [before + fit_source(tokenizer, ex["source"], budget) + after for ex in examples]


def _with_eos(ids: list[int], eos_id: int, limit: int) -> list[int]:
    if not ids or ids[-1] != eos_id:
        ids = ids[: limit - 1] + [eos_id]
    return ids


def features(examples: list[dict], inputs: list[str], tokenizer, *, family: str, max_source_length: int,
             max_target_length: int) -> tuple[list[dict], int]:
    """Tokenized training features; returns them and the number of targets cut at max_target_length."""
    eos = tokenizer.eos_token_id
    cut = 0
    out = []
    for ex, text in zip(examples, inputs):
        if family == "seq2seq":
            src = tokenizer(text, truncation=True, max_length=max_source_length)["input_ids"]
            src = _with_eos(src, eos, max_source_length)
            tgt_full = tokenizer(text_target=ex["target"])["input_ids"]
            tgt = _with_eos(tgt_full[:max_target_length], eos, max_target_length)
            cut += len(_with_eos(tgt_full, eos, 10**9)) > max_target_length
            out.append({"input_ids": src, "labels": tgt})
        else:
            prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            tgt_full = tokenizer(" " + ex["target"], add_special_tokens=False)["input_ids"] + [eos]
            cut += len(tgt_full) > max_target_length
            tgt = tgt_full[:max_target_length]
            out.append({"input_ids": prompt_ids + tgt, "labels": [-100] * len(prompt_ids) + tgt})
    return out, cut


def target_lengths(examples: list[dict], tokenizer, family: str) -> list[int]:
    """Token lengths of the reference targets as the model must produce them (EOS included)."""
    if family == "seq2seq":
        return [len(tokenizer(text_target=ex["target"])["input_ids"]) + 1 for ex in examples]
    return [len(tokenizer(" " + ex["target"], add_special_tokens=False)["input_ids"]) + 1 for ex in examples]


def collator(pad_id: int):
    """Right-pad input_ids (pad_id) and labels (-100); the attention mask marks the real tokens."""
    from llmctl.tasks.batching import pad, pad_inputs

    def collate(rows: list[dict]) -> dict:
        batch = pad_inputs(rows, pad_id)
        batch["labels"] = pad([r["labels"] for r in rows], -100)
        return batch

    return collate
