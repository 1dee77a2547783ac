"""Fine-tuning batches without waste: a length-grouped order, and causal-LM examples packed into shared rows.

Fine-tuning examples differ in length, and a micro-batch is padded to its longest one; in random order about a
quarter to a half of every batch is padding on the embedded data (classification 0.56 real tokens per position,
summarization 0.77). Two remedies, both task-agnostic:

* `grouped`: within each epoch's shuffled order, windows of GROUP_CHUNKS steps' worth of examples are sorted
  by length and cut into chunks, and the chunks are shuffled again. A micro-batch then holds examples of
  nearly one length, while which examples meet in a step, and when, still changes every epoch. The order is a
  pure function of (seed, epoch, lengths), so resume stays exact and O(1). The chunk with the longest example
  runs first in every epoch: a batch too large for memory fails at once, not hours in.
* `pack`: a micro-batch of causal-LM examples is laid into as few rows as the longest example allows
  (first-fit decreasing), each example with its own `position_ids` from 0 and no attention mask. transformers
  reads the restarting positions as separate sequences and masks attention block-diagonally (eager and SDPA;
  flash attention uses them for variable-length kernels), so no token sees another example. The micro-batch
  holds the same examples as unpacked and the loss averages the same target tokens: only padding is gone.
  `isolates` checks this on the model itself before a run relies on it.

Either way, the micro-batch's length is rounded up to one of a few buckets (`bucket`): exact below 32 tokens,
then multiples of 2 up to 63, of 4 up to 127, of 8 up to 255 and so on, so at most 1/16 more positions and
at most 16 lengths per doubling. Without them every new length is a new
shape, and a new shape costs: oneDNN builds its bf16 kernels for each, which made the first step at a length
1.98x slower than a repeat on the GPT-2 summarization shape (1.07x in fp32).
"""

from __future__ import annotations

# Sort windows span this many chunks (one chunk = micro_batch_size x processes examples). Larger windows pad
# less but mix lengths less across steps; transformers' LengthGroupedSampler uses 50 batches.
GROUP_CHUNKS = 50

# The batch key under which a packed micro-batch carries its count of real tokens (the packed rows have no
# attention mask to count them from). The training step removes it before the model sees the batch.
REAL_TOKENS = "llmctl_real_tokens"


def example_lengths(features) -> list[int]:
    """Tokens per example of a datasets.Dataset of features: input_ids plus labels when labels are token lists
    (seq2seq targets; a causal LM's labels repeat its input length, which keeps the order). For inputs that are
    lists of lists (multiple choice: one sequence per choice), the longest inner list."""
    import pyarrow.compute as pc

    columns = [c for c in ("input_ids", "labels") if c in features.column_names]
    total = [0] * len(features)
    for column in columns:
        table = features.data.column(column)
        kind = str(table.type)
        if not kind.startswith(("list", "large_list")):
            continue  # class ids, span positions
        if kind.count("list") > 1:
            values = [max((len(x) for x in row), default=0) for row in table.to_pylist()]
        else:
            values = pc.list_value_length(table).to_pylist()
        total = [a + (b or 0) for a, b in zip(total, values)]
    return total


def grouped(order: list[int], lengths, chunk: int, generator) -> list[int]:
    """`order` (a multiple of `chunk` long) rearranged so that each chunk holds examples of similar length;
    see the module docstring. `generator` (a torch.Generator) shuffles the chunks."""
    import torch

    window = chunk * GROUP_CHUNKS
    chunks: list[list[int]] = []
    for start in range(0, len(order), window):
        part = sorted(order[start:start + window], key=lambda i: lengths[i], reverse=True)
        chunks += [part[k:k + chunk] for k in range(0, len(part), chunk)]
    shuffled = [chunks[i] for i in torch.randperm(len(chunks), generator=generator).tolist()]
    longest = max(range(len(shuffled)), key=lambda k: lengths[shuffled[k][0]])
    shuffled[0], shuffled[longest] = shuffled[longest], shuffled[0]
    return [i for c in shuffled for i in c]


def padding_efficiency(order: list[int], lengths, micro: int, *, packed: bool = False) -> float:
    """Real tokens over the positions computed when `order` is cut into micro-batches of `micro` examples,
    padded to the longest (or packed by `rows_for`), rounded up to its `bucket`."""
    real = positions = 0
    for start in range(0, len(order) - micro + 1, micro):
        part = [lengths[i] for i in order[start:start + micro]]
        real += sum(part)
        positions += bucket(max(part)) * (len(rows_for(part)) if packed else len(part))
    return real / positions if positions else 1.0


def bucket(length: int, cap: int | None = None) -> int:
    """The padded length of a micro-batch whose longest sequence has `length` tokens: rounded up to a multiple
    of the largest power of two that is at most length / 16 (1 below 32 tokens, 8 from 128, 16 from 256, ...),
    and never past `cap` (the model's position limit) unless `length` itself is."""
    step = 1 << max(0, length.bit_length() - 5)
    width = -(-length // step) * step
    return max(length, min(width, cap)) if cap else width


# What each sequence tensor of a batch is padded with on the right; position_ids go on counting from 0, as the
# padding at the end of a packed row does. A batch with any other tensor of the sequence's length is left as
# it is: llmctl would not know what its padding should hold.
_FILL = {"attention_mask": 0, "token_type_ids": 0, "labels": -100, "decoder_attention_mask": 0}


def to_bucket(batch: dict, pad_id: int, cap: int | None = None) -> dict:
    """`batch` with its sequence tensors right-padded to the `bucket` of their length; padding is masked out of
    attention (mask 0, or its own positions in a packed row) and of the loss (label -100). Seq2seq labels,
    whose length differs from the input's, get their own bucket."""
    import torch

    ids = batch.get("input_ids")
    if not torch.is_tensor(ids) or ids.dim() < 2:
        return batch
    width = ids.shape[-1]
    plan = {}
    for key, value in batch.items():
        if not torch.is_tensor(value) or value.dim() < 2:
            continue
        if key == "labels" and value.shape[-1] != width:
            plan[key] = (bucket(value.shape[-1], cap), -100)
        elif value.shape[-1] == width:
            fill = pad_id if key == "input_ids" else "count" if key == "position_ids" else _FILL.get(key)
            if fill is None:
                return batch
            plan[key] = (bucket(width, cap), fill)
    out = dict(batch)
    for key, (target, fill) in plan.items():
        value = batch[key]
        extra = target - value.shape[-1]
        if extra <= 0:
            continue
        shape = (*value.shape[:-1], extra)
        tail = (torch.arange(extra, dtype=value.dtype).expand(shape) if fill == "count"
                else torch.full(shape, fill, dtype=value.dtype))
        out[key] = torch.cat([value, tail], dim=-1)
    return out


def bucketed(collate, pad_id: int, cap: int | None = None):
    """`collate` whose batches are padded to their `bucket` (see `to_bucket`)."""
    if pad_id is None:
        return collate

    def collate_bucketed(examples: list[dict]) -> dict:
        return to_bucket(collate(examples), pad_id, cap)

    return collate_bucketed


def rows_for(lengths: list[int]) -> list[list[int]]:
    """First-fit decreasing: example indices per row, each row at most as long as the longest example."""
    capacity = max(lengths)
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda k: lengths[k], reverse=True):
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(capacity - lengths[i])
    return rows


def pack(examples: list[dict], pad_id: int) -> dict:
    """A packed micro-batch of causal-LM examples (`input_ids` and `labels` of equal length): input_ids,
    labels (-100 on padding and on each example's first token, which no earlier token of its own predicts),
    position_ids restarting at 0 for every example (and for the padding at a row's end), no attention mask,
    use_cache off, and REAL_TOKENS."""
    import torch

    lengths = [len(ex["input_ids"]) for ex in examples]
    layout = rows_for(lengths)
    width = max(lengths)
    ids = torch.full((len(layout), width), pad_id, dtype=torch.long)
    labels = torch.full((len(layout), width), -100, dtype=torch.long)
    positions = torch.zeros((len(layout), width), dtype=torch.long)
    for r, members in enumerate(layout):
        at = 0
        for i in members:
            n = lengths[i]
            ids[r, at:at + n] = torch.as_tensor(examples[i]["input_ids"], dtype=torch.long)
            labels[r, at:at + n] = torch.as_tensor(examples[i]["labels"], dtype=torch.long)
            labels[r, at] = -100
            positions[r, at:at + n] = torch.arange(n)
            at += n
        positions[r, at:] = torch.arange(width - at)
    # use_cache=False: with a KV cache object present, transformers does not look for packed positions.
    return {"input_ids": ids, "labels": labels, "position_ids": positions, "use_cache": False,
            REAL_TOKENS: torch.tensor(sum(lengths), dtype=torch.long)}


def packed_collator(pad_id: int):
    def collate(examples: list[dict]) -> dict:
        return pack(examples, pad_id)

    return collate


def isolates(model, examples: list[dict], collate, pad_id: int, *, tolerance: float = 1e-4) -> tuple[bool, float]:
    """(whether `model` keeps packed examples apart, the largest relative difference found), in fp32 without
    dropout: the logits of every example inside a packed row must equal its logits alone, and the loss of the
    packed micro-batch must equal the loss of the same examples padded by the task's own `collate`. A model
    whose attention ignores restarting positions (or that reads no position_ids) lets examples see each other
    and fails. Needs at least two examples that fit one row together (`probe_examples`)."""
    import torch

    was_training = model.training
    model.eval()
    worst = 0.0
    try:
        with torch.no_grad():
            device = next(model.parameters()).device
            batch = pack(examples, pad_id)
            packed = {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items() if k != REAL_TOKENS}
            out = model(**packed)
            logits = out.logits
            layout = rows_for([len(ex["input_ids"]) for ex in examples])
            for r, members in enumerate(layout):
                at = 0
                for i in members:
                    ids = torch.as_tensor([examples[i]["input_ids"]], device=device)
                    alone = model(input_ids=ids, use_cache=False).logits[0]
                    inside = logits[r, at:at + len(alone)]
                    at += len(alone)
                    scale = float(alone.abs().max()) or 1.0
                    worst = max(worst, float((inside - alone).abs().max()) / scale)
            padded = {k: v.to(device) for k, v in collate(examples).items()}
            want = float(model(**padded).loss)
            worst = max(worst, abs(float(out.loss) - want) / max(abs(want), 1e-12))
    finally:
        model.train(was_training)
    return worst <= tolerance, worst


def probe_examples(features, lengths: list[int], count: int = 6) -> list[dict]:
    """A few short training examples for `isolates`, chosen so that several share one row: the longest of
    them is at least as long as two of the others together."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    picked = order[:count - 1]
    if len(picked) >= 2:
        need = lengths[picked[0]] + lengths[picked[1]]
        longer = next((i for i in order if lengths[i] >= need), order[-1])
        picked.append(longer)
    return [features[int(i)] for i in picked]
