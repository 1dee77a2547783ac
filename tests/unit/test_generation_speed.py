"""The fast greedy path of llmctl.generation (its own decoding loop, finished rows leaving the batch) and the
`precision` setting: the same tokens as plain `model.generate` in fp32, input order, cap flags, fallbacks.
Correctness only; the speed is measured by tests/bench_generate.py."""

import pytest
import torch

from llmctl import generation as G
from llmctl import tokenizer as tok_mod

TEXTS = ["the cat sat on the mat", "a dog ran home", "x", "a much longer document about cats and dogs " * 4,
         "hello world", "the end of the story", "ein Hund läuft", "dogs", "cats and dogs and more cats",
         "the mat", "a long story about the old dog who ran home to the cat " * 2, "home"]


@pytest.fixture(scope="module")
def tok():
    return tok_mod.train_bpe(TEXTS * 10, vocab_size=300, min_frequency=1, eos_token="<|endoftext|>",
                             pad_token="<|pad|>", show_progress=False)


def bias_eos(model, eos_id: int, value: float):
    """Add `value` to the EOS logit at every step (a hook on the output layer), so that some rows end early."""
    def hook(module, args, output):
        output = output.clone()
        output[..., eos_id] += value
        return output

    model.get_output_embeddings().register_forward_hook(hook)
    return model


def make_t5(tok, eos_bias: float):
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(1)
    model = T5ForConditionalGeneration(T5Config(
        vocab_size=len(tok), d_model=32, d_ff=64, d_kv=16, num_layers=2, num_heads=2,
        decoder_start_token_id=tok.pad_token_id, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
    ))
    with torch.no_grad():  # larger weights: outputs that depend on the input (see test_generation.make_t5)
        for p in model.parameters():
            p.normal_(0, 0.5)
    return bias_eos(model.eval(), tok.eos_token_id, eos_bias)


def make_gpt2(tok, eos_bias: float):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(1)
    model = GPT2LMHeadModel(GPT2Config(
        vocab_size=len(tok), n_layer=2, n_embd=32, n_head=2, n_positions=128,
        bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    ))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    return bias_eos(model.eval(), tok.eos_token_id, eos_bias)


# EOS biases that end some rows within a few tokens and leave others running to the cap (checked in each test).
MODELS = {"t5": (make_t5, 0.6), "gpt2": (make_gpt2, 0.65)}


@pytest.fixture(scope="module", params=list(MODELS))
def model(request, tok):
    make, bias = MODELS[request.param]
    return make(tok, bias)


def plain(monkeypatch):
    """Make generate_batches call plain `model.generate` (generate's own decoding loop)."""
    monkeypatch.setattr(G, "_greedy_loop_applies", lambda model, settings: False)


def spy(monkeypatch, name: str) -> list:
    """Record the return values of G.<name>."""
    seen = []
    real = getattr(G, name)

    def wrapper(*args, **kwargs):
        out = real(*args, **kwargs)
        seen.append(out)
        return out

    monkeypatch.setattr(G, name, wrapper)
    return seen


def new_token_counts(model, tok, texts, max_new_tokens):
    """How many tokens plain generate gives each text alone (EOS included): shows early ends and capped rows."""
    counts = []
    for text in texts:
        enc = tok(text, return_tensors="pt")
        out = model.generate(**enc, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id,
                             eos_token_id=tok.eos_token_id)
        new = out[0, 1:] if model.config.is_encoder_decoder else out[0, enc["input_ids"].shape[1]:]
        ids = new.tolist()
        counts.append(ids.index(tok.eos_token_id) + 1 if tok.eos_token_id in ids else len(ids))
    return counts


# ------------------------------------------------------------------------------------- the same tokens as generate


@pytest.mark.parametrize("batch_size", [4, 12])
def test_fast_path_gives_plain_generate_outputs_flags_and_order(model, tok, monkeypatch, batch_size):
    monkeypatch.setattr(G, "MAX_BATCH_GROWTH", 1)  # batches of exactly batch_size rows
    settings = G.GenerationSettings(max_new_tokens=10, batch_size=batch_size)
    counts = new_token_counts(model, tok, TEXTS, 10)
    # The premise: rows that end early and rows that run to the cap, in the same batches.
    assert min(counts) <= 4 and max(counts) == 10, counts
    decoded = spy(monkeypatch, "_decode_greedy")
    dropped = spy(monkeypatch, "_select_rows")
    fast = G.generate(model, tok, TEXTS, settings)
    assert len(decoded) == -(-len(TEXTS) // batch_size)  # every batch went through the greedy loop
    assert True in dropped  # and finished rows left a batch
    monkeypatch.undo()
    monkeypatch.setattr(G, "MAX_BATCH_GROWTH", 1)
    plain(monkeypatch)
    reference = G.generate(model, tok, TEXTS, settings)
    assert fast.outputs == reference.outputs
    assert fast.flags == reference.flags and fast.capped == reference.capped
    assert 0 < fast.capped < len(TEXTS)
    if batch_size == 4:  # input order: each output is the one the text gets on its own
        alone = [G.generate(model, tok, [t], settings).outputs[0] for t in TEXTS]
        assert fast.outputs == alone and len(set(alone)) > 3


@pytest.mark.parametrize("ending", ["mixed", "all early"])
def test_loop_returns_generates_sequences_exactly(model, tok, ending):
    """Through model.generate directly: the same tensor (width, padding after EOS, prompt or start token)."""
    if ending == "all early":
        model = make_like(model, tok, bias=50.0)  # every row ends at once: the sequences are 1 token wide
    ids = [tok(t)["input_ids"] for t in TEXTS]
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    encoder_decoder = model.config.is_encoder_decoder
    input_ids, mask = G._pad([ids[i] for i in order], tok.pad_token_id, left=not encoder_decoder)
    for eos in (tok.eos_token_id, [tok.eos_token_id, tok.pad_token_id]):
        kwargs = dict(input_ids=input_ids, attention_mask=mask, max_new_tokens=9, num_beams=1, do_sample=False,
                      pad_token_id=tok.pad_token_id, eos_token_id=eos)
        expected = model.generate(**kwargs)
        got = model.generate(**kwargs, custom_generate=G._decode_greedy)
        assert torch.equal(got, expected)
        start = 1 if encoder_decoder else input_ids.shape[1]  # the decoder start token, or the prompt
        assert expected.shape[1] - start == (1 if ending == "all early" else 9)


def test_every_row_ending_early_stops_the_batch_early(model, tok):
    settings = G.GenerationSettings(max_new_tokens=12, batch_size=6)
    eager = make_like(model, tok, bias=50.0)  # EOS always wins
    report = G.generate(eager, tok, TEXTS, settings)
    assert report.outputs == [""] * len(TEXTS) and report.capped == 0


def make_like(model, tok, bias):
    make = make_t5 if model.config.is_encoder_decoder else make_gpt2
    return make(tok, bias)


# ---------------------------------------------------------------------------------------------- fallbacks


def test_logits_processors_from_the_generation_config_are_honoured(tok, monkeypatch):
    """suppress_tokens makes generate build a logits processor: the loop hands over to generate's own."""
    model = make_gpt2(tok, 0.65)
    model.generation_config.suppress_tokens = [tok.eos_token_id, tok.pad_token_id]
    settings = G.GenerationSettings(max_new_tokens=5, batch_size=4)
    fast = G.generate(model, tok, TEXTS, settings)
    assert fast.capped == len(TEXTS)  # EOS suppressed: every row runs to the cap
    plain(monkeypatch)
    assert G.generate(model, tok, TEXTS, settings).outputs == fast.outputs


@pytest.mark.parametrize("settings", [
    G.GenerationSettings(max_new_tokens=4, num_beams=2),
    G.GenerationSettings(max_new_tokens=4, do_sample=True),
    G.GenerationSettings(max_new_tokens=4, no_repeat_ngram_size=2),
], ids=["beam", "sample", "ngram"])
def test_other_decoding_modes_use_plain_generate(settings, tok, monkeypatch):
    model = make_t5(tok, 0.6)
    calls = []
    real = model.generate
    monkeypatch.setattr(model, "generate", lambda **kw: calls.append(kw) or real(**kw))
    G.generate(model, tok, TEXTS[:3], settings)
    assert calls and all("custom_generate" not in c for c in calls)


def test_a_model_with_its_own_generate_is_left_alone(tok):
    model = make_t5(tok, 0.6)

    class Custom(type(model)):
        def generate(self, *args, **kwargs):
            assert "custom_generate" not in kwargs
            return super().generate(*args, **kwargs)

    model.__class__ = Custom
    assert not G._greedy_loop_applies(model, G.GenerationSettings(max_new_tokens=3))
    assert len(G.generate(model, tok, TEXTS[:3], G.GenerationSettings(max_new_tokens=3)).outputs) == 3


def test_unknown_model_inputs_keep_every_row():
    """_select_rows cuts only inputs it knows; anything else leaves the kwargs untouched."""
    mask = torch.ones(3, 4, dtype=torch.long)
    kwargs = {"attention_mask": mask, "something_else": torch.zeros(3, 2), "use_cache": True}
    assert not G._select_rows(kwargs, torch.tensor([0, 2]), 3)
    assert kwargs["attention_mask"] is mask
    kwargs = {"attention_mask": mask, "use_cache": True, "logits_to_keep": 1}
    assert G._select_rows(kwargs, torch.tensor([0, 2]), 3)
    assert kwargs["attention_mask"].shape == (2, 4)


# ------------------------------------------------------------------------------- the reserved KV cache layer


def test_reserved_layer_holds_what_a_dynamic_layer_holds():
    """Prefill, one-token steps past the reserved room, rows leaving, a crop: the same keys and values as
    transformers' DynamicLayer at every step."""
    from transformers.cache_utils import DynamicLayer

    torch.manual_seed(0)
    reserved, dynamic = G._reserved_layer_class()(capacity=7), DynamicLayer()
    steps = [torch.randn(4, 2, 5, 3)] + [torch.randn(4, 2, 1, 3) for _ in range(6)]
    for i, keys in enumerate(steps):
        values = keys * 2 + 1
        if i == 4:  # rows 1 and 3 finished
            for layer in (reserved, dynamic):
                layer.batch_select_indices(torch.tensor([0, 2]))
        if i >= 4:
            keys, values = keys[:2], values[:2]
        got = reserved.update(keys, values)
        want = dynamic.update(keys, values)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        assert reserved.get_seq_length() == dynamic.get_seq_length() == 5 + i
    assert reserved.key_room.shape[-2] >= 11  # grew past its capacity of 7 without refusing a token
    for layer in (reserved, dynamic):
        layer.crop(-3)
    assert torch.equal(reserved.keys, dynamic.keys) and reserved.get_seq_length() == 8


def test_a_decoder_only_models_loop_writes_into_reserved_room(tok, monkeypatch):
    """The GPT-2 outputs of test_fast_path_gives_plain_generate_outputs_flags_and_order come from reserved layers;
    an encoder-decoder keeps its dynamic ones."""
    seen = []
    reserve = G._reserve_cache
    monkeypatch.setattr(G, "_reserve_cache", lambda cache, capacity: (seen.append(cache), reserve(cache, capacity)))
    settings = G.GenerationSettings(max_new_tokens=6, batch_size=4)
    G.generate(make_gpt2(tok, eos_bias=2.0), tok, TEXTS[:4], settings)
    assert len(seen) == 1
    layers = seen[0].layers
    assert all(type(layer).__name__ == "_ReservedLayer" and layer.get_seq_length() > 0 for layer in layers)
    G.generate(make_t5(tok, eos_bias=2.0), tok, TEXTS[:4], settings)
    assert len(seen) == 1


# ----------------------------------------------------------------------------------------- growing batches


def test_batches_of_short_inputs_take_more_rows_in_the_same_tokens():
    settings = G.GenerationSettings(max_new_tokens=10, batch_size=4)
    lengths = [90] * 4 + [60] * 5 + [40] * 12 + [5] * 3
    order = list(range(len(lengths)))
    batches = list(G._batches(order, lengths, settings, limit=90))
    # 400 tokens: 4 x (90 + 10), 5 x (60 + 10), 8 x (40 + 10) (at most 2 x 4), then the 7 left.
    assert [len(b) for b in batches] == [4, 5, 8, 7]
    assert [i for b in batches for i in b] == order
    for b in batches:  # never more than batch_size rows at the longest allowed input, nor 2x the rows
        assert len(b) * (lengths[b[0]] + 10) <= 4 * (90 + 10) and len(b) <= 4 * G.MAX_BATCH_GROWTH
    # No limit: the longest input given sets the budget. Sharded models (grow=False): batch_size rows each.
    assert [len(b) for b in G._batches(order[4:], lengths, settings, limit=None)] == [4, 4, 5, 5, 2]  # 280 tokens
    assert [len(b) for b in G._batches(order, lengths, settings, limit=90, grow=False)] == [4] * 6


# ------------------------------------------------------------------------------------------------- precision


def autocast_seen(model) -> list[bool]:
    seen = []
    model.get_output_embeddings().register_forward_hook(
        lambda module, args, output: seen.append(torch.is_autocast_enabled("cpu")))
    return seen


def test_fp32_is_the_default_and_never_autocasts(tok):
    model = make_t5(tok, 0.6)
    seen = autocast_seen(model)
    report = G.generate(model, tok, TEXTS[:4], G.GenerationSettings(max_new_tokens=3))
    assert report.precision == "fp32" and seen and not any(seen)


def test_bf16_autocasts_and_says_so(tok):
    model = make_t5(tok, 0.6)
    seen = autocast_seen(model)
    report = G.generate(model, tok, TEXTS[:4], G.GenerationSettings(max_new_tokens=3, precision="bf16"))
    assert report.precision == "bf16" and seen and all(seen)
    assert next(model.parameters()).dtype == torch.float32  # the weights stay fp32


@pytest.mark.parametrize("native", [True, False])
def test_auto_follows_the_hardware(tok, monkeypatch, native):
    monkeypatch.setattr(G, "_native_bf16", lambda device_type: native)
    model = make_gpt2(tok, 0.65)
    seen = autocast_seen(model)
    report = G.generate(model, tok, TEXTS[:4], G.GenerationSettings(max_new_tokens=3, precision="auto"))
    assert report.precision == ("bf16" if native else "fp32") and seen and all(s == native for s in seen)


def test_precision_is_validated():
    with pytest.raises(G.GenerationError) as info:
        G.GenerationSettings(max_new_tokens=4, precision="fp16")
    assert str(info.value) == "generation: precision must be one of fp32, bf16, auto, got 'fp16'"
