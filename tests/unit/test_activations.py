"""llmctl.modeling.fuse_activations: transformers' multi-operation tanh GELU swapped for torch's fused kernel in
memory. The same function (the model's outputs within float rounding), the config and saved model untouched, and a
caller's model given back as it was by generation."""

import json

import pytest
import torch

from llmctl import generation as G
from llmctl import tokenizer as tok_mod
from llmctl.modeling import fuse_activations, fused_activations, restore_activations

TEXTS = ["the cat sat on the mat", "a dog ran home", "a much longer document about cats and dogs " * 3, "x"]


@pytest.fixture(scope="module")
def tok():
    return tok_mod.train_bpe(TEXTS * 10, vocab_size=200, min_frequency=1, eos_token="<|endoftext|>",
                             pad_token="<|pad|>", show_progress=False)


def gpt2(tok, activation="gelu_new"):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_layer=3, n_embd=32, n_head=2, n_positions=256,
                                       activation_function=activation, eos_token_id=tok.eos_token_id,
                                       pad_token_id=tok.pad_token_id))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)  # large weights: activations far from zero, where the formulas could part
    return model.eval()


@pytest.mark.parametrize("activation", ["gelu_new", "gelu_fast"])
def test_fused_gelu_is_the_same_function(tok, activation):
    model = gpt2(tok, activation)
    ids = torch.tensor([tok(TEXTS[2])["input_ids"]])
    before = model(ids).logits
    originals = [block.mlp.act for block in model.transformer.h]
    replaced = fuse_activations(model)
    assert len(replaced) == 3 and all(type(b.mlp.act) is torch.nn.GELU for b in model.transformer.h)
    after = model(ids).logits
    assert torch.allclose(before, after, atol=1e-4, rtol=1e-5)
    assert model.config.activation_function == activation  # the saved model still names its activation
    restore_activations(replaced)
    assert [block.mlp.act for block in model.transformer.h] == originals
    assert torch.equal(model(ids).logits, before)


def test_other_activations_are_left_alone(tok):
    model = gpt2(tok, "relu")
    with fused_activations(model) as count:
        assert count == 0
    assert type(model.transformer.h[0].mlp.act) is not torch.nn.GELU


def test_generation_gives_the_callers_model_back_as_it_was(tok, tmp_path):
    model = gpt2(tok)
    kinds = [type(m) for m in model.modules()]
    seen = []
    model.transformer.h[0].mlp.register_forward_hook(lambda m, a, o: seen.append(type(m.act)))
    report = G.generate(model, tok, TEXTS, G.GenerationSettings(max_new_tokens=4, batch_size=2))
    assert seen and set(seen) == {torch.nn.GELU}  # generation ran with the fused kernel
    assert [type(m) for m in model.modules()] == kinds  # and gave the modules back
    # The same tokens as transformers' own generate with the model's own activation, one input at a time.
    for text, out in zip(TEXTS, report.outputs):
        enc = tok(text, return_tensors="pt")
        ref = model.generate(**enc, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
        assert out == tok.decode(ref[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["activation_function"] == "gelu_new"

