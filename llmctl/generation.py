"""Batched generation shared by eval and summarize: length-sorted batches, KV cache, results in input order.

Inputs are tokenized once, sorted longest first and cut into batches, so a batch holds inputs of similar length
and little compute goes to padding; the longest batch also runs first, so an input too large for memory fails
in seconds rather than at the end. Decoder-only models are padded on the left (the new tokens of every row then
start at the same column) and their prompts are truncated from the left (the end of a prompt, "Summary:", is
what tells the model what to write). Each output records whether it stopped at `max_new_tokens` without an
end-of-sequence token: many such outputs mean the budget is too small and the metrics are measuring truncation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields

# cap_warning speaks up when more than this fraction of outputs ran into max_new_tokens.
CAP_WARN_FRACTION = 0.05


class GenerationError(Exception):
    """Generation settings or inputs that cannot work (one line)."""


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int  # > 0; callers resolve "derive" (derive_max_new_tokens) before calling
    num_beams: int = 1  # 1 = greedy or plain sampling
    do_sample: bool = False
    temperature: float = 1.0  # sampling only
    top_k: int = 0  # sampling only; 0 = no top-k filter
    top_p: float = 1.0  # sampling only; 1.0 = no nucleus filter
    length_penalty: float = 1.0  # beam search only; > 1 favours longer outputs
    no_repeat_ngram_size: int = 0  # 0 = off
    batch_size: int = 16  # sequences per generate call (times num_beams in memory)
    max_source_length: int | None = None  # truncate inputs to this many tokens; None = the model's context

    def __post_init__(self):
        problems = []
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            problems.append(f"max_new_tokens must be a positive integer, got {self.max_new_tokens!r}")
        if self.num_beams < 1:
            problems.append(f"num_beams must be >= 1, got {self.num_beams}")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1, got {self.batch_size}")
        if self.temperature <= 0:
            problems.append(f"temperature must be > 0, got {self.temperature}")
        if self.top_k < 0:
            problems.append(f"top_k must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            problems.append(f"top_p must be in (0, 1], got {self.top_p}")
        if self.no_repeat_ngram_size < 0:
            problems.append(f"no_repeat_ngram_size must be >= 0, got {self.no_repeat_ngram_size}")
        if self.max_source_length is not None and self.max_source_length < 1:
            problems.append(f"max_source_length must be >= 1, got {self.max_source_length}")
        if problems:
            raise GenerationError("generation: " + "; ".join(problems))

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


@dataclass
class GenerationReport:
    outputs: list[str]  # in input order
    capped: int  # outputs that reached max_new_tokens without emitting EOS
    total: int
    flags: list[bool] = field(default_factory=list)  # per output, in input order: did it stop at the cap?

    @property
    def capped_fraction(self) -> float:
        return self.capped / self.total if self.total else 0.0


@dataclass
class GenerationBatch:
    """One finished batch: positions in the caller's input list, their outputs, and how many hit the cap."""

    indices: list[int]
    outputs: list[str]
    capped: int
    flags: list[bool] = field(default_factory=list)


def derive_max_new_tokens(target_lengths: Iterable[int], *, margin: float = 1.1, ceiling: int | None = None) -> int:
    """The longest target (in tokens) of the training data times `margin`, rounded up, at least 1, at most
    `ceiling`.

    Why derive it: `generate` stops at 20 new tokens unless told otherwise, which silently cuts most summaries
    and translations short; ROUGE and BLEU then measure the truncation, not the model. Targets as long as the
    longest seen in training (plus a margin for test outputs a little longer) are never cut, and the EOS token
    still ends the others early, so the larger budget costs little.
    """
    longest = max(target_lengths, default=None)
    if longest is None:
        raise GenerationError("cannot derive max_new_tokens: no target lengths (is the training split empty?)")
    # round() first: 10 * 1.1 is 11.000000000000002 in floating point, and ceil would make it 12.
    value = max(1, math.ceil(round(longest * margin, 6)))
    return min(value, ceiling) if ceiling is not None else value


def cap_warning(report: GenerationReport, max_new_tokens: int) -> str | None:
    """A one-line warning when more than 5% of outputs stopped at the cap, else None."""
    if report.total == 0 or report.capped_fraction <= CAP_WARN_FRACTION:
        return None
    return (
        f"{report.capped} of {report.total} outputs ({report.capped_fraction:.0%}) stopped at max_new_tokens="
        f"{max_new_tokens} without an end-of-sequence token and are probably cut short; raise max_new_tokens"
    )


def generate(model, tokenizer, inputs: list[str], settings: GenerationSettings, *,
             progress: Callable[[int], None] | None = None, seed: int = 0,
             synced_gpus: bool = False) -> GenerationReport:
    """Generate one output per input, in input order. `progress(n)` is called after each batch of n inputs."""
    outputs: list[str | None] = [None] * len(inputs)
    flags = [False] * len(inputs)
    capped = 0
    for batch in generate_batches(model, tokenizer, inputs, settings, seed=seed, synced_gpus=synced_gpus):
        for i, text, flag in zip(batch.indices, batch.outputs, batch.flags):
            outputs[i] = text
            flags[i] = flag
        capped += batch.capped
        if progress is not None:
            progress(len(batch.indices))
    return GenerationReport(outputs=outputs, capped=capped, total=len(inputs), flags=flags if inputs else [])


def generate_batches(model, tokenizer, inputs: list[str], settings: GenerationSettings, *,
                     seed: int = 0, synced_gpus: bool = False) -> Iterator[GenerationBatch]:
    """Yield batches as they finish (longest inputs first). For callers that write results as they go, like
    summarize, so that an interruption loses at most one batch.

    `synced_gpus` keeps every process stepping until all have finished, which sharded models (FSDP, DeepSpeed
    ZeRO-3) need: each forward pass is a collective there."""
    import torch

    if not inputs:
        return
    encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
    limit = source_limit(model, tokenizer, settings, encoder_decoder=encoder_decoder)
    ids = _tokenize(tokenizer, inputs, limit, left=not encoder_decoder)
    for i, row in enumerate(ids):
        if not row:
            raise GenerationError(f"input {i + 1}: empty (no tokens)")

    eos_ids = _eos_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = getattr(model.generation_config, "pad_token_id", None)
    if pad_id is None:
        if not eos_ids:
            raise GenerationError("the tokenizer has neither a pad nor an EOS token; cannot pad a batch")
        pad_id = eos_ids[0]  # padding is masked out, so any id will do; EOS is the usual stand-in
    kwargs = _generate_kwargs(settings, pad_id=pad_id, eos_ids=eos_ids)
    if synced_gpus:
        kwargs["synced_gpus"] = True

    order = sorted(range(len(ids)), key=lambda i: len(ids[i]), reverse=True)
    was_training = model.training
    model.eval()
    if settings.do_sample:
        torch.manual_seed(seed)
    try:
        for start in range(0, len(order), settings.batch_size):
            chosen = order[start:start + settings.batch_size]
            input_ids, attention_mask = _pad([ids[i] for i in chosen], pad_id, left=not encoder_decoder)
            with torch.no_grad():
                sequences = model.generate(
                    input_ids=input_ids.to(model.device),
                    attention_mask=attention_mask.to(model.device),
                    **kwargs,
                )
            # Encoder-decoder outputs start with the decoder start token; decoder-only ones repeat the prompt.
            new = sequences[:, 1:] if encoder_decoder else sequences[:, input_ids.shape[1]:]
            texts = [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
            flags = capped_rows(new, eos_ids, settings.max_new_tokens)
            yield GenerationBatch(indices=chosen, outputs=texts, capped=sum(flags), flags=flags)
    finally:
        if was_training:
            model.train()


def count_capped(new_tokens, eos_ids: list[int], max_new_tokens: int) -> int:
    """How many rows of `new_tokens` stopped at the cap (see capped_rows)."""
    return sum(capped_rows(new_tokens, eos_ids, max_new_tokens))


def capped_rows(new_tokens, eos_ids: list[int], max_new_tokens: int) -> list[bool]:
    """Rows of `new_tokens` (batch x generated, a tensor) that hold no EOS although all max_new_tokens were used.

    A row without EOS keeps generating until the cap, so the batch is as wide as the cap whenever any row is
    capped; rows that ended earlier hold their EOS (and padding after it, which may be EOS too).
    """
    import torch

    if new_tokens.shape[1] < max_new_tokens:
        return [False] * new_tokens.shape[0]
    if not eos_ids:
        return [True] * new_tokens.shape[0]
    has_eos = torch.isin(new_tokens, torch.tensor(eos_ids, device=new_tokens.device)).any(dim=1)
    return (~has_eos).tolist()


def source_limit(model, tokenizer, settings: GenerationSettings, *, encoder_decoder: bool) -> int | None:
    """How many input tokens fit: settings.max_source_length, bounded by the model's context (which a causal
    LM shares between the prompt and the new tokens); None when neither the model nor the tokenizer has one."""
    from llmctl.modeling import context_length

    context = context_length(model.config)
    if context is None and tokenizer.model_max_length < 1_000_000:  # "no limit" is stored as a huge number
        context = tokenizer.model_max_length
    if encoder_decoder:
        if settings.max_source_length is None:
            return context
        return min(settings.max_source_length, context) if context else settings.max_source_length
    if context is None:
        return settings.max_source_length
    room = context - settings.max_new_tokens
    if room < 1:
        raise GenerationError(
            f"max_new_tokens ({settings.max_new_tokens}) leaves no room for the prompt in the model's context of "
            f"{context} tokens"
        )
    # Positions past the context crash learned position embeddings (GPT-2) or degrade rotary ones: truncating
    # the prompt further is the only way the new tokens fit.
    return min(settings.max_source_length, room) if settings.max_source_length else room


def _tokenize(tokenizer, texts: list[str], limit: int | None, *, left: bool) -> list[list[int]]:
    old = tokenizer.truncation_side
    tokenizer.truncation_side = "left" if left else "right"
    try:
        if limit is None:
            enc = tokenizer(texts, truncation=False)
        else:
            enc = tokenizer(texts, truncation=True, max_length=limit)
    finally:
        tokenizer.truncation_side = old
    return [list(x) for x in enc["input_ids"]]


def _pad(rows: list[list[int]], pad_id: int, *, left: bool):
    """Pad to a rectangle ourselves rather than with tokenizer.pad: tokenizers without a pad token (GPT-2's)
    refuse to pad, and the tokenizer's padding_side stays untouched."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        span = slice(width - len(r), width) if left else slice(0, len(r))
        ids[i, span] = torch.tensor(r, dtype=torch.long)
        mask[i, span] = 1
    return ids, mask


def _eos_ids(model, tokenizer) -> list[int]:
    """The tokenizer's EOS plus any the model's generation config names (chat models often stop on several)."""
    found = []
    for value in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if v is not None and v not in found:
                found.append(int(v))
    return found


def _generate_kwargs(s: GenerationSettings, *, pad_id: int, eos_ids: list[int]) -> dict:
    # Sampling and beam flags are passed only in the modes that use them: transformers warns about each flag
    # given to a mode that ignores it.
    kwargs = {
        "max_new_tokens": s.max_new_tokens,
        "num_beams": s.num_beams,
        "do_sample": s.do_sample,
        "no_repeat_ngram_size": s.no_repeat_ngram_size,
        "use_cache": True,
        "pad_token_id": pad_id,
        "eos_token_id": eos_ids if len(eos_ids) > 1 else (eos_ids[0] if eos_ids else None),
    }
    if s.do_sample:
        kwargs.update(temperature=s.temperature, top_k=s.top_k, top_p=s.top_p)
    if s.num_beams > 1:
        kwargs["length_penalty"] = s.length_penalty
    return kwargs
