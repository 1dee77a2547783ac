"""Right padding shared by every task's collator."""

from __future__ import annotations


def pad(seqs: list, value: int):
    """Stack sequences of different lengths into a (n, longest) long tensor, right-padded with `value`."""
    import torch

    out = torch.full((len(seqs), max(len(s) for s in seqs)), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out


def pad_inputs(rows: list[dict], pad_id: int) -> dict:
    """input_ids padded with pad_id, the attention mask (the rows' own, else 1 on every real token), and
    token_type_ids when the rows have them. Right padding keeps token positions (QA spans) valid."""
    ids = [r["input_ids"] for r in rows]
    batch = {
        "input_ids": pad(ids, pad_id),
        "attention_mask": pad([r.get("attention_mask") or [1] * len(x) for r, x in zip(rows, ids)], 0),
    }
    if "token_type_ids" in rows[0]:
        batch["token_type_ids"] = pad([r["token_type_ids"] for r in rows], 0)
    return batch
