"""Batched generation shared by eval and summarize: length-sorted batches, KV cache, results in input order.

Inputs are tokenized once, sorted longest first and cut into batches, so a batch holds inputs of similar length
and little compute goes to padding; the longest batch also runs first, so an input too large for memory fails
in seconds rather than at the end. `batch_size` is the rows of a batch at the longest input allowed
(max_source_length, else the model's context): batches of shorter inputs take more rows in the same tokens
(input plus max_new_tokens per row), up to MAX_BATCH_GROWTH times as many, since a decoding step costs little
more for more rows on a small model. Decoder-only models are padded on the left (the new tokens of every row then
start at the same column) and their prompts are truncated from the left (the end of a prompt, "Summary:", is
what tells the model what to write). Each output records whether it stopped at `max_new_tokens` without an
end-of-sequence token: many such outputs mean the budget is too small and the metrics are measuring truncation.

Greedy decoding (one beam, no sampling, no n-gram blocking) runs llmctl's own decoding loop inside `model.generate`
(transformers' `custom_generate` hook: generate prepares the encoder outputs, cache, masks and position ids as
usual, then calls `_decode_greedy`). The loop takes the same argmax as generate's, token for token, and differs
in two things: once a quarter of a batch's rows have emitted EOS, those rows leave the batch (their KV cache rows,
masks and encoder outputs with them), so the rows still running stop paying for them; and a decoder-only model's
KV cache is written into room reserved for the whole output (_ReservedLayer) instead of growing by concatenation,
which copied the whole prompt's keys and values at every step (43% of the time of a GPT-2 4x192 decoding 35
tokens after 100-token prompts). Where generate would apply
logits processors (suppressed or forced tokens, penalties from the model's generation config), other stopping
criteria or a cache other than the dynamic one, the loop hands over to generate's own. Generation runs under
torch.inference_mode(), with GPT-2's tanh GELU as one fused kernel (llmctl.modeling.fuse_activations). Measured
with tests/bench_generate.py on 2 CPU cores, against plain batched generate on the same batch size, two runs: the
trained summarization T5 1.51x and 1.66x, a GPT-2 whose rows all run to the cap 1.65x and 1.66x, outputs
identical (docs/speed.md).

`GenerationSettings.precision` chooses the arithmetic: "fp32" (the default: outputs, and so eval metrics, do not
depend on the machine), "bf16" (bfloat16 autocast, on a CPU or a GPU) or "auto" (bf16 where the hardware runs it
natively: a GPU with bf16, or a CPU with AMX or AVX512-BF16 whose cached GEMM probe in llmctl.precision finds bf16
faster; fp32 elsewhere). bf16 changes some greedy outputs (a near-tie between two tokens can flip: 7-14% of the
T5's summaries, ROUGE-L within 0.005 either way) and pays only where matrix products dominate (GPT-2 4x192:
1.3-1.8x plain generate; the 3+3-layer T5 at d_model 128 is bound by per-operation overhead and runs slower in
bf16), so it is chosen, never implied.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields

# cap_warning speaks up when more than this fraction of outputs ran into max_new_tokens.
CAP_WARN_FRACTION = 0.05

# GenerationSettings.precision values (see the module docstring).
PRECISIONS = ("fp32", "bf16", "auto")

# The greedy loop drops the rows that have finished once they are at least this share of the rows still in the
# batch. Each drop copies the KV cache of the rows kept; dropping at the first EOS, or waiting for half the batch,
# both measured a little slower than a quarter on the tiny summarization models (2 CPU cores).
DROP_FINISHED_SHARE = 0.25

# Batches of inputs shorter than the longest allowed take more rows (see _batches), up to this many times
# generation.batch_size. On 2 CPU cores, batch 32 of the shipped summarization data: up to 2x made plain batched
# generate's peer 1.34x -> 1.56x (GPT-2 4x192) and 1.38x -> 1.61x (T5); up to 4x, 1.45x and 1.63x, as the prefill's
# activations outgrow the CPU caches.
MAX_BATCH_GROWTH = 2


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
    batch_size: int = 16  # rows per generate call at the longest input (times num_beams); see _batches
    max_source_length: int | None = None  # truncate inputs to this many tokens; None = the model's context
    precision: str = "fp32"  # "fp32", "bf16" (autocast) or "auto" (bf16 where the hardware runs it natively)

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
        if self.precision not in PRECISIONS:
            problems.append(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
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
    precision: str = "fp32"  # the arithmetic the outputs came from: "fp32" or "bf16" (settings.precision resolved)

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
    label = resolve_precision(model, settings.precision)[0] if inputs else "fp32"
    return GenerationReport(outputs=outputs, capped=capped, total=len(inputs), flags=flags if inputs else [],
                            precision=label)


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
    elif _greedy_loop_applies(model, settings):
        kwargs["custom_generate"] = _decode_greedy
    _, dtype = resolve_precision(model, settings.precision)

    order = sorted(range(len(ids)), key=lambda i: len(ids[i]), reverse=True)
    was_training = model.training
    model.eval()
    from llmctl.modeling import fuse_activations, restore_activations

    # The tanh GELU as one kernel (llmctl.modeling), put back at the end. (T5's RMS norms as torch's fused
    # rms_norm measured 1.01x on the summarization T5: not done.)
    fused = fuse_activations(model)
    if model.device.type == "cpu":  # the cache and logits of every batch reuse freed memory (llmctl/allocator.py)
        from llmctl.allocator import keep_freed_memory

        keep_freed_memory()
    if settings.do_sample:
        torch.manual_seed(seed)
    try:
        # Sharded models (synced_gpus) need the same number of batches on every process: no growing there.
        for chosen in _batches(order, [len(row) for row in ids], settings, limit, grow=not synced_gpus):
            input_ids, attention_mask = _pad([ids[i] for i in chosen], pad_id, left=not encoder_decoder)
            autocast = (torch.autocast(model.device.type, dtype=dtype) if dtype is not None
                        else contextlib.nullcontext())
            # inference_mode rather than no_grad: no version counters or autograd metadata on the many small
            # tensors of a decoding step (measured 1.085x on the T5 summarizer, 1.04x on the GPT-2).
            with torch.inference_mode(), autocast:
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
        restore_activations(fused)
        if was_training:
            model.train()


def _batches(order: list[int], lengths: list[int], settings: GenerationSettings, limit: int | None, *,
             grow: bool = True):
    """Cut `order` (longest input first) into batches: `settings.batch_size` rows, or more where the inputs are
    short. A batch may take as many rows as fit in the tokens of batch_size rows at the longest input allowed
    (`limit`, else the longest given), input plus max_new_tokens per row, so that no batch holds more KV cache and
    activations than the batch size the user chose for that length; and at most MAX_BATCH_GROWTH x batch_size."""
    longest = limit if limit is not None else lengths[order[0]]
    budget = settings.batch_size * (longest + settings.max_new_tokens)
    most = settings.batch_size * (MAX_BATCH_GROWTH if grow else 1)
    start = 0
    while start < len(order):
        rows = budget // (lengths[order[start]] + settings.max_new_tokens)
        rows = max(settings.batch_size, min(most, rows))
        yield order[start:start + rows]
        start += rows


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


# ------------------------------------------------------------------------------------------------ precision


def resolve_precision(model, choice: str) -> tuple[str, object]:
    """`settings.precision` on the device `model` is on -> (label, autocast dtype or None).

    "fp32" never autocasts (the label is the model's own dtype: "fp32" unless its weights were loaded in bf16 or
    fp16); "bf16" always does; "auto" does where bf16 is native: a GPU that supports it, or a CPU with AMX or
    AVX512-BF16 whose GEMM probe (llmctl.precision, measured once per machine and cached) finds bf16 faster.
    """
    import torch

    if choice == "bf16" or (choice == "auto" and _native_bf16(model.device.type)):
        return "bf16", torch.bfloat16
    names = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
    return names.get(getattr(model, "dtype", torch.float32), "fp32"), None


@functools.lru_cache(maxsize=None)
def _native_bf16(device_type: str) -> bool:
    import torch

    if device_type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device_type == "cpu":
        from llmctl import precision

        return precision.resolve("auto", cuda=False).label == "bf16"
    return False


# ------------------------------------------------------------------------------------------- the greedy loop


def _greedy_loop_applies(model, settings: GenerationSettings) -> bool:
    """Whether generate_batches hands `_decode_greedy` to `model.generate`: greedy settings, and a model whose
    generate is transformers' own and takes a decoding function (transformers 5)."""
    if settings.do_sample or settings.num_beams != 1 or settings.no_repeat_ngram_size:
        return False
    return _takes_decoding_function(type(model))


@functools.lru_cache(maxsize=None)
def _takes_decoding_function(cls) -> bool:
    import inspect

    try:
        from transformers import GenerationMixin
    except ImportError:
        return False
    generate = getattr(cls, "generate", None)
    if generate is None or generate is not getattr(GenerationMixin, "generate", None):
        return False  # a model with its own generate (Whisper, a PEFT wrapper): leave it alone
    try:
        hook = inspect.signature(generate).parameters.get("custom_generate")
        prepare = inspect.signature(cls.prepare_inputs_for_generation).parameters
    except (TypeError, ValueError, AttributeError):
        return False
    # Older transformers take only a Hub repository name in custom_generate, and their prepare_inputs_for_generation
    # works with cache positions instead of next_sequence_length.
    return (hook is not None and "Callable" in str(hook.annotation) and "next_sequence_length" in prepare
            and callable(getattr(cls, "_sample", None))
            and callable(getattr(cls, "_update_model_kwargs_for_generation", None)))


def _decode_greedy(model, input_ids, logits_processor, stopping_criteria, generation_config, synced_gpus=False,
                   streamer=None, **model_kwargs):
    """Greedy decoding for `model.generate(custom_generate=_decode_greedy)`, which has prepared the inputs.

    The same steps as generate's own loop (transformers' `_sample` without sampling): the model's
    prepare_inputs_for_generation, a forward pass, the argmax of the last position's logits in fp32, padding after
    EOS, the model's _update_model_kwargs_for_generation. Rows that have emitted EOS leave the batch once they are
    DROP_FINISHED_SHARE of it. Returns what generate returns: the sequences (prompt or decoder start token, then the
    new tokens, padding after EOS), as wide as the longest row. Anything this loop does not do (logits processors,
    other stopping criteria, a static cache, streaming) goes to generate's own loop instead.
    """
    import torch
    from transformers.generation.stopping_criteria import EosTokenCriteria, MaxLengthCriteria

    lengths = [c.max_length for c in stopping_criteria if type(c) is MaxLengthCriteria]
    eos_lists = [c.eos_token_id for c in stopping_criteria if type(c) is EosTokenCriteria]
    pad = generation_config.pad_token_id
    plain = (len(logits_processor) == 0 and lengths and len(lengths) + len(eos_lists) == len(stopping_criteria)
             and not synced_gpus and streamer is None and pad is not None and not generation_config.do_sample
             and not generation_config.return_dict_in_generate and model_kwargs.get("use_cache")
             and getattr(generation_config, "prefill_chunk_size", None) is None
             and _dynamic_cache(model_kwargs.get("past_key_values"), layers=False))
    if not plain:
        return type(model)._sample(model, input_ids, logits_processor=logits_processor,
                                   stopping_criteria=stopping_criteria, generation_config=generation_config,
                                   synced_gpus=synced_gpus, streamer=streamer, **model_kwargs)

    device = input_ids.device
    eos = torch.cat([torch.as_tensor(e, device=device).reshape(-1) for e in eos_lists]) if eos_lists else None
    max_length = min(lengths)
    encoder_decoder = bool(model.config.is_encoder_decoder)
    if not encoder_decoder:
        # A decoder-only model's cache holds the prompt, so growing it by concatenation copies all of it at every
        # step; write into room reserved for the whole output instead. (An encoder-decoder's self-attention cache
        # holds only the new tokens; there the strided views measured slower than the short copies.)
        _reserve_cache(model_kwargs["past_key_values"], max_length)
    batch, length = input_ids.shape
    sequences = input_ids.new_full((batch, max(max_length, length)), pad)
    sequences[:, :length] = input_ids
    rows = torch.arange(batch, device=device)  # the rows of `sequences` still in the batch, in batch order
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    inputs = model.prepare_inputs_for_generation(input_ids, is_first_iteration=True, **model_kwargs)
    while length < max_length:
        outputs = model(**inputs, return_dict=True)
        model_kwargs = model._update_model_kwargs_for_generation(outputs, model_kwargs,
                                                                 is_encoder_decoder=encoder_decoder)
        tokens = outputs.logits[:, -1].to(dtype=torch.float32, device=device).argmax(dim=-1)
        del outputs, inputs
        if eos is not None:
            tokens = tokens.masked_fill(finished, pad)
            finished = finished | torch.isin(tokens, eos)
        sequences[rows, length] = tokens
        input_ids = torch.cat([input_ids, tokens[:, None]], dim=-1)
        length += 1
        if length >= max_length or bool(finished.all()):
            break
        done = int(finished.sum())
        if done and done >= DROP_FINISHED_SHARE * len(rows):
            keep = (~finished).nonzero().squeeze(1)
            if _select_rows(model_kwargs, keep, len(rows)):
                rows, input_ids, finished = rows[keep], input_ids[keep], finished[keep]
        inputs = model.prepare_inputs_for_generation(input_ids, next_sequence_length=1, **model_kwargs)
    return sequences[:, :length]


# Model inputs the greedy loop knows to hold one row per sequence (batch first, 2-D); any other tensor input keeps
# every row in the batch until the end.
_ROW_INPUTS = ("attention_mask", "position_ids", "decoder_attention_mask", "token_type_ids")


def _select_rows(model_kwargs: dict, keep, n: int) -> bool:
    """Keep only the rows `keep` (of n) of every per-row model input, in place; False (and nothing changed) where an
    input is not one the loop knows how to cut."""
    import torch

    try:
        from transformers.utils import ModelOutput
    except ImportError:
        return False
    new = {}
    cache_key = None
    for key, value in model_kwargs.items():
        if value is None or isinstance(value, (bool, int, float, str)):  # no rows in a scalar
            continue
        if key == "past_key_values":
            if not _dynamic_cache(value, layers=True):
                return False
            cache_key = key
        elif key in _ROW_INPUTS and torch.is_tensor(value) and value.dim() == 2 and value.shape[0] == n:
            new[key] = value[keep]
        elif key == "encoder_outputs" and isinstance(value, ModelOutput):
            parts = {}
            for name, part in value.items():
                if torch.is_tensor(part) and part.dim() > 0 and part.shape[0] == n:
                    parts[name] = part[keep]
                elif isinstance(part, tuple) and all(torch.is_tensor(t) and t.shape[0] == n for t in part):
                    parts[name] = tuple(t[keep] for t in part)
                else:
                    return False
            new[key] = type(value)(**parts)
        else:
            return False
    if cache_key is not None:
        model_kwargs[cache_key].batch_select_indices(keep)
    model_kwargs.update(new)
    return True


def _reserve_cache(cache, capacity: int) -> None:
    """Replace each plain dynamic layer of `cache` not yet filled by a _ReservedLayer of `capacity` positions."""
    from transformers.cache_utils import DynamicLayer

    if getattr(cache, "offloading", False):
        return  # offloaded layers move their tensors between devices; leave them as they are
    for i, layer in enumerate(cache.layers):
        if type(layer) is DynamicLayer and not layer.is_initialized:
            cache.layers[i] = _reserved_layer_class()(capacity)


@functools.lru_cache(maxsize=None)
def _reserved_layer_class():
    """_ReservedLayer, defined on first use so that importing this module does not import transformers."""
    from transformers.cache_utils import DynamicLayer

    class _ReservedLayer(DynamicLayer):
        """A dynamic cache layer that writes new keys and values into room reserved for `capacity` positions
        rather than concatenating them onto a copy of everything cached: the decoding step of a decoder-only
        model then copies one position per layer instead of the whole prompt and output so far. `keys` and
        `values` are views of the filled positions, as DynamicLayer's are whole tensors; past the capacity the
        room doubles (with one copy), so the layer never refuses a token."""

        def __init__(self, capacity: int):
            super().__init__()
            self.capacity = capacity
            self.key_room = self.value_room = None
            self.filled = 0

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.dtype, self.device = key_states.dtype, key_states.device
                self.is_initialized = True
            end = self.filled + key_states.shape[-2]
            if self.key_room is None or end > self.key_room.shape[-2]:
                room = max(self.capacity, end, 2 * self.filled)
                keys = key_states.new_empty((*key_states.shape[:-2], room, key_states.shape[-1]))
                values = value_states.new_empty((*value_states.shape[:-2], room, value_states.shape[-1]))
                if self.filled:
                    keys[..., :self.filled, :] = self.keys
                    values[..., :self.filled, :] = self.values
                self.key_room, self.value_room = keys, values
            self.key_room[..., self.filled:end, :] = key_states
            self.value_room[..., self.filled:end, :] = value_states
            self.filled = end
            self._view()
            return self.keys, self.values

        def _view(self):
            self.keys = self.key_room[..., :self.filled, :]
            self.values = self.value_room[..., :self.filled, :]

        def get_seq_length(self) -> int:
            return self.filled

        def reset(self) -> None:
            self.key_room = self.value_room = None
            self.filled = 0
            super().reset()

        def crop(self, tokens_to_remove: int) -> None:
            if tokens_to_remove > 0:
                raise ValueError(f"crop takes a negative count of positions to remove, got {tokens_to_remove}")
            if self.key_room is not None and tokens_to_remove:
                self.filled = max(0, self.filled + tokens_to_remove)
                self._view()

        def _rows(self, pick) -> None:
            if self.key_room is not None:
                self.key_room, self.value_room = pick(self.key_room), pick(self.value_room)
                self._view()

        def batch_select_indices(self, indices) -> None:
            self._rows(lambda room: room[indices, ...])

        def batch_repeat_interleave(self, repeats: int) -> None:
            self._rows(lambda room: room.repeat_interleave(repeats, dim=0))

        def reorder_cache(self, beam_idx) -> None:
            self._rows(lambda room: room.index_select(0, beam_idx.to(room.device)))

    return _ReservedLayer


def _dynamic_cache(cache, *, layers: bool) -> bool:
    """Whether `cache` is transformers' DynamicCache (or an EncoderDecoderCache of two), whose rows can be cut
    (with `layers`: every layer a plain or sliding-window dynamic layer)."""
    try:
        from transformers.cache_utils import (DynamicCache, DynamicLayer, DynamicSlidingWindowLayer,
                                              EncoderDecoderCache)
    except ImportError:
        return False

    def plain(c) -> bool:
        if type(c) is not DynamicCache:
            return False
        kinds = (DynamicLayer, DynamicSlidingWindowLayer, _reserved_layer_class())
        return not layers or all(type(layer) in kinds for layer in c.layers)

    if type(cache) is EncoderDecoderCache:
        return plain(cache.self_attention_cache) and plain(cache.cross_attention_cache)
    return plain(cache)
