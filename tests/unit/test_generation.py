"""Batched generation on tiny random models: order, padding, truncation, the cap count, and no warnings."""

import warnings

import pytest
import torch

from llmctl import generation as G
from llmctl import tokenizer as tok_mod

TEXTS = ["the cat sat on the mat", "a dog ran home", "x", "a much longer document about cats and dogs " * 4,
         "hello world", "the end of the story", "ein Hund läuft", "dogs"]


@pytest.fixture(scope="module")
def tok():
    return tok_mod.train_bpe(TEXTS * 10, vocab_size=300, min_frequency=1, eos_token="<|endoftext|>",
                             pad_token="<|pad|>", show_progress=False)


def make_t5(tok):
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config(
        vocab_size=len(tok), d_model=32, d_ff=64, d_kv=16, num_layers=1, num_heads=2,
        decoder_start_token_id=tok.pad_token_id, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
    ))
    # The default initialisation makes a 1-layer T5 repeat one token whatever the input; larger weights make the
    # output depend on the input, so comparing batched with one-by-one outputs can fail.
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)
    return model.eval()  # no dropout, so direct calls to model.generate are deterministic too


def make_gpt2(tok, n_positions=128):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(
        vocab_size=len(tok), n_layer=1, n_embd=32, n_head=2, n_positions=n_positions,
        bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )).eval()


@pytest.fixture(scope="module")
def t5(tok):
    return make_t5(tok)


@pytest.fixture(scope="module")
def gpt2(tok):
    return make_gpt2(tok)


def record_generate_calls(model, monkeypatch) -> list[dict]:
    calls = []
    real = model.generate

    def spy(**kwargs):
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(model, "generate", spy)
    return calls


# ------------------------------------------------------------------------------------------- order and batching


@pytest.mark.parametrize("which", ["t5", "gpt2"])
def test_batched_outputs_equal_one_by_one_in_input_order(which, request, tok):
    model = request.getfixturevalue(which)
    settings = G.GenerationSettings(max_new_tokens=6, batch_size=3)
    seen = []
    report = G.generate(model, tok, TEXTS, settings, progress=seen.append)
    alone = [G.generate(model, tok, [t], settings).outputs[0] for t in TEXTS]
    assert report.outputs == alone
    assert len(set(alone)) > 2  # the model's outputs depend on the input, so a mix-up would show
    # Batches of shorter inputs take more rows (up to MAX_BATCH_GROWTH x batch_size), longest first.
    assert report.total == len(TEXTS) and sum(seen) == len(TEXTS)
    assert all(3 <= n <= 3 * G.MAX_BATCH_GROWTH for n in seen[:-1]) and len(seen) < -(-len(TEXTS) // 3)


def test_batches_run_longest_first(gpt2, tok, monkeypatch):
    monkeypatch.setattr(G, "MAX_BATCH_GROWTH", 1)  # batches of exactly batch_size rows
    calls = record_generate_calls(gpt2, monkeypatch)
    G.generate(gpt2, tok, TEXTS, G.GenerationSettings(max_new_tokens=2, batch_size=2))
    widths = [c["input_ids"].shape[1] for c in calls]
    assert widths == sorted(widths, reverse=True) and len(calls) == 4
    longest = max(len(tok(t)["input_ids"]) for t in TEXTS)
    assert widths[0] == longest
    assert all(c["use_cache"] is True for c in calls)


def test_decoder_only_pads_left_and_returns_only_new_tokens(gpt2, tok, monkeypatch):
    calls = record_generate_calls(gpt2, monkeypatch)
    prompts = ["the cat sat on the mat", "x"]
    report = G.generate(gpt2, tok, prompts, G.GenerationSettings(max_new_tokens=5, batch_size=2))
    ids, mask = calls[0]["input_ids"], calls[0]["attention_mask"]
    short = len(tok("x")["input_ids"])
    assert mask[1].tolist() == [0] * (ids.shape[1] - short) + [1] * short  # padding on the left
    assert ids[1, 0].item() == tok.pad_token_id
    assert calls[0]["pad_token_id"] == tok.pad_token_id and calls[0]["eos_token_id"] == tok.eos_token_id
    # The same as transformers' own generate on the unpadded prompt, less the prompt.
    for prompt, out in zip(prompts, report.outputs):
        enc = tok(prompt, return_tensors="pt")
        full = gpt2.generate(**enc, max_new_tokens=5, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        assert out == tok.decode(full[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    assert tok.padding_side == "right" and tok.truncation_side == "right"  # the tokenizer is left as it was


def test_encoder_decoder_skips_decoder_start_token(t5, tok):
    report = G.generate(t5, tok, ["the cat sat on the mat"], G.GenerationSettings(max_new_tokens=5))
    enc = tok("the cat sat on the mat", return_tensors="pt")
    full = t5.generate(**enc, max_new_tokens=5, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    assert full[0, 0].item() == tok.pad_token_id  # T5 starts decoding from the pad token
    assert report.outputs == [tok.decode(full[0, 1:], skip_special_tokens=True).strip()]


def test_truncation_keeps_the_end_of_a_prompt_and_the_start_of_a_source(gpt2, t5, tok, monkeypatch):
    text = "a much longer document about cats and dogs the end"
    ids = tok(text)["input_ids"]
    settings = G.GenerationSettings(max_new_tokens=2, max_source_length=4)
    calls = record_generate_calls(gpt2, monkeypatch)
    G.generate(gpt2, tok, [text], settings)
    assert calls[0]["input_ids"][0].tolist() == ids[-4:]
    calls = record_generate_calls(t5, monkeypatch)
    G.generate(t5, tok, [text], settings)
    assert calls[0]["input_ids"][0].tolist() == ids[:4]
    assert tok.truncation_side == "right"


def test_causal_prompt_is_truncated_to_leave_room_for_new_tokens(tok, monkeypatch):
    model = make_gpt2(tok, n_positions=16)
    calls = record_generate_calls(model, monkeypatch)
    G.generate(model, tok, [TEXTS[3]], G.GenerationSettings(max_new_tokens=6))
    assert calls[0]["input_ids"].shape[1] == 10
    with pytest.raises(G.GenerationError) as info:
        G.generate(model, tok, ["x"], G.GenerationSettings(max_new_tokens=16))
    assert str(info.value) == ("max_new_tokens (16) leaves no room for the prompt in the model's context of 16 "
                               "tokens")


def test_sampling_is_seeded(gpt2, tok):
    settings = G.GenerationSettings(max_new_tokens=8, do_sample=True, temperature=1.5, top_k=50, top_p=0.95)
    first = G.generate(gpt2, tok, TEXTS, settings, seed=3).outputs
    assert G.generate(gpt2, tok, TEXTS, settings, seed=3).outputs == first
    assert G.generate(gpt2, tok, TEXTS, settings, seed=4).outputs != first


@pytest.mark.parametrize("settings", [
    G.GenerationSettings(max_new_tokens=4),
    G.GenerationSettings(max_new_tokens=4, num_beams=3, length_penalty=2.0, no_repeat_ngram_size=2),
    G.GenerationSettings(max_new_tokens=4, do_sample=True, temperature=0.7, top_k=0, top_p=0.9),
], ids=["greedy", "beam", "sample"])
def test_no_warnings(settings, t5, gpt2, tok):
    import logging

    from transformers.utils import logging as hf_logging

    # transformers logs each complaint once per process, through its own stderr handler (which pytest's capture
    # does not see): forget what earlier tests triggered and listen on its logger directly.
    hf_logging.warning_once.cache_clear()
    logged = []
    listener = logging.Handler(level=logging.WARNING)
    listener.emit = lambda record: logged.append(record.getMessage())
    hf_logger = logging.getLogger("transformers")
    hf_logger.addHandler(listener)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for model in (t5, gpt2):
                report = G.generate(model, tok, TEXTS[:4], settings)
                assert len(report.outputs) == 4
    finally:
        hf_logger.removeHandler(listener)
    assert logged == [] and [str(w.message) for w in caught] == []


def test_empty_input_list_needs_no_model(tok):
    report = G.generate(None, tok, [], G.GenerationSettings(max_new_tokens=4))
    assert report == G.GenerationReport(outputs=[], capped=0, total=0) and report.capped_fraction == 0.0


# ------------------------------------------------------------------------------------------------------ the cap


@pytest.mark.parametrize("beams", [1, 2])
def test_a_model_that_cannot_emit_eos_is_capped_everywhere(tok, beams):
    model = make_gpt2(tok)
    model.generation_config.suppress_tokens = [tok.eos_token_id, tok.pad_token_id]
    report = G.generate(model, tok, TEXTS, G.GenerationSettings(max_new_tokens=3, batch_size=3, num_beams=beams))
    assert report.capped == report.total == len(TEXTS) and report.capped_fraction == 1.0
    assert G.cap_warning(report, 3) == (
        "8 of 8 outputs (100%) stopped at max_new_tokens=3 without an end-of-sequence token and are probably cut "
        "short; raise max_new_tokens"
    )


@pytest.mark.parametrize("beams", [1, 2])
def test_a_model_that_always_emits_eos_is_never_capped(tok, beams):
    model = make_gpt2(tok)
    model.generation_config.suppress_tokens = [i for i in range(len(tok)) if i != tok.eos_token_id]
    report = G.generate(model, tok, TEXTS, G.GenerationSettings(max_new_tokens=3, batch_size=3, num_beams=beams))
    assert report.outputs == [""] * len(TEXTS) and report.capped == 0
    assert G.cap_warning(report, 3) is None


def test_count_capped_per_row():
    eos, pad = 0, 1
    rows = torch.tensor([
        [5, 6, 7],  # no EOS, all 3 tokens: capped
        [5, eos, pad],  # ended early
        [eos, pad, pad],  # ended at once
        [5, 6, eos],  # EOS as the last allowed token: not capped
    ])
    assert G.count_capped(rows, [eos], 3) == 1
    assert G.count_capped(rows, [eos, 7], 3) == 0  # a second stop token
    assert G.count_capped(rows[:, :2], [eos], 3) == 0  # the batch never reached the cap
    assert G.count_capped(rows, [], 3) == 4  # no EOS at all: everything runs to the cap


def test_cap_warning_threshold_is_five_percent():
    assert G.cap_warning(G.GenerationReport(outputs=[""] * 20, capped=1, total=20), 8) is None
    assert G.cap_warning(G.GenerationReport(outputs=[""] * 20, capped=2, total=20), 8) == (
        "2 of 20 outputs (10%) stopped at max_new_tokens=8 without an end-of-sequence token and are probably cut "
        "short; raise max_new_tokens"
    )
    assert G.cap_warning(G.GenerationReport(outputs=[], capped=0, total=0), 8) is None


# ----------------------------------------------------------------------------------------------- settings


def test_derive_max_new_tokens():
    assert G.derive_max_new_tokens([3, 10, 7]) == 11  # not 12: 10 * 1.1 is 11.000000000000002
    assert G.derive_max_new_tokens(iter([3, 10, 7]), margin=1.25) == 13
    assert G.derive_max_new_tokens([100], ceiling=64) == 64
    assert G.derive_max_new_tokens([0]) == 1
    with pytest.raises(G.GenerationError) as info:
        G.derive_max_new_tokens([])
    assert str(info.value) == "cannot derive max_new_tokens: no target lengths (is the training split empty?)"


def test_settings_are_validated_at_once():
    with pytest.raises(G.GenerationError) as info:
        G.GenerationSettings(max_new_tokens=0, top_p=1.5)
    assert str(info.value) == ("generation: max_new_tokens must be a positive integer, got 0; top_p must be in "
                               "(0, 1], got 1.5")
