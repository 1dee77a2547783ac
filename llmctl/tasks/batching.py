"""Right padding shared by every task's collator, and batched forward passes for predictions."""

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


def forward_batches(model, rows: list[dict], collate, batch_size: int):
    """Yield (rows, model output) for consecutive batches of `rows`, without gradients, on the model's device.
    Labels are left out: predictions need logits only."""
    import torch

    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            batch = collate(chunk)
            batch = {k: v.to(model.device) for k, v in batch.items()
                     if k not in ("labels", "start_positions", "end_positions")}
            with torch.no_grad():
                yield chunk, model(**batch)
    finally:
        if was_training:
            model.train()


def argmax_predictions(model, rows: list[dict], collate, batch_size: int) -> list[int]:
    """The highest-scoring class (or choice) of each row, for heads whose logits end in the class dimension."""
    preds = []
    for _, out in forward_batches(model, rows, collate, batch_size):
        preds += out.logits.argmax(-1).tolist()
    return preds
