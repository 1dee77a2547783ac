"""Fine-tuning batches without waste (llmctl/batches.py): the length-grouped order is a deterministic,
resumable permutation that pads little, and packed causal-LM rows give the same loss and gradients as the same
examples padded, with every example's logits equal to its logits alone."""

from __future__ import annotations

import random

import pytest
import torch

from llmctl import batches
from llmctl.tasks.summarization import TASK as SUMMARIZE
from llmctl.train import make_sampler

PAD = 0


def lengths_for(n: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.choice([rng.randint(3, 12), rng.randint(20, 60)]) for _ in range(n)]


def test_grouped_order_is_a_permutation_that_pads_less():
    lengths = lengths_for(1000)
    order = torch.randperm(1000, generator=torch.Generator().manual_seed(1)).tolist()[:992]
    got = batches.grouped(order, lengths, 16, torch.Generator().manual_seed(2))
    assert sorted(got) == sorted(order)
    random_eff = batches.padding_efficiency(order, lengths, 16)
    grouped_eff = batches.padding_efficiency(got, lengths, 16)
    assert random_eff < 0.6 and grouped_eff > 0.9, (random_eff, grouped_eff)
    # The chunk holding the longest example comes first: an out-of-memory batch fails at step 1.
    assert max(lengths[i] for i in got[:16]) == max(lengths[i] for i in order)
    # The same generator state gives the same order; another seed another order.
    assert got == batches.grouped(order, lengths, 16, torch.Generator().manual_seed(2))
    assert got != batches.grouped(order, lengths, 16, torch.Generator().manual_seed(3))


def test_grouped_sampler_resumes_mid_epoch_and_changes_per_epoch():
    lengths = lengths_for(300, seed=4)
    full = make_sampler(300, seed=7, per_step_chunk=8, lengths=lengths)
    first = list(full)
    assert sorted(first) == sorted(list(make_sampler(300, seed=7, per_step_chunk=8)))
    resumed = make_sampler(300, seed=7, per_step_chunk=8, lengths=lengths)
    resumed.skip = 40
    assert list(resumed) == first[40:]
    full.set_epoch(1)
    assert list(full) != first
    assert batches.padding_efficiency(first, lengths, 8) > 0.85


def test_rows_for_packs_first_fit_decreasing_within_the_longest():
    rows = batches.rows_for([10, 3, 7, 2, 8, 5])
    assert sorted(i for r in rows for i in r) == list(range(6))
    assert all(sum([10, 3, 7, 2, 8, 5][i] for i in r) <= 10 for r in rows)
    assert len(rows) == 4  # 10 | 8+2 | 7+3 | 5


def examples(count: int = 7, seed: int = 0, vocab: int = 90) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in [5, 17, 9, 3, 12, 4, 8, 6][:count]:
        ids = torch.randint(1, vocab, (n,), generator=g).tolist()
        prompt = max(1, n // 3)
        out.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return out


def tiny_causal(arch: str, attention: str | None = None):
    import transformers

    shapes = {
        "gpt2": dict(n_layer=2, n_embd=32, n_head=2, n_positions=64),
        "llama": dict(num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=2,
                      num_key_value_heads=2, max_position_embeddings=64),
        "bloom": dict(n_layer=2, hidden_size=32, n_head=2),
    }
    torch.manual_seed(0)
    config = transformers.AutoConfig.for_model(arch, vocab_size=100, bos_token_id=1, eos_token_id=2,
                                               pad_token_id=PAD, **shapes[arch])
    model = transformers.AutoModelForCausalLM.from_config(config)
    if attention:
        model.set_attn_implementation(attention)
        assert model.config._attn_implementation == attention
    return model


@pytest.mark.parametrize("arch,attention", [("gpt2", "sdpa"), ("llama", "sdpa"), ("gpt2", "eager"),
                                            ("llama", "eager")])
def test_packed_loss_and_gradients_equal_padded(arch, attention):
    # eager: what training on a CPU under bf16 switches to (train.cpu_bf16_attention).
    model = tiny_causal(arch, attention).eval()  # no dropout: the two passes must see the same network
    rows = examples()
    collate = SUMMARIZE.collator(PAD)

    def loss_and_grads(batch):
        model.zero_grad()
        loss = model(**batch).loss
        loss.backward()
        return float(loss.detach()), [p.grad.clone() for p in model.parameters()]

    packed = batches.pack(rows, PAD)
    real = packed.pop(batches.REAL_TOKENS)
    assert int(real) == sum(len(r["input_ids"]) for r in rows)
    assert packed["input_ids"].shape[0] < len(rows)  # fewer rows than examples: packing happened
    want, want_grads = loss_and_grads(collate(rows))
    got, got_grads = loss_and_grads(packed)
    assert got == pytest.approx(want, rel=1e-5)
    for a, b in zip(got_grads, want_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    ok, diff = batches.isolates(model, rows, collate, PAD)
    assert ok and diff < 1e-5


@pytest.mark.parametrize("arch,attention", [("gpt2", "sdpa"), ("gpt2", "eager"), ("llama", "sdpa"),
                                            ("bloom", None)])
def test_pretraining_blocks_need_no_attention_mask(arch, attention):
    """The pretraining collator sends no attention mask: with the short block padded on the right, the loss and
    gradients equal those of the same batch with its mask (BLOOM counts its ALiBi positions from the mask)."""
    from llmctl.tasks import causal_lm

    model = tiny_causal(arch, attention).eval()
    g = torch.Generator().manual_seed(5)
    rows = [{"input_ids": torch.randint(3, 100, (n,), generator=g).tolist()} for n in (16, 16, 16, 9)]
    batch = causal_lm.collator(PAD)(rows)
    assert "attention_mask" not in batch
    assert int((batch["labels"] != -100).sum()) == 16 * 3 + 9  # the labels mark the real tokens
    mask = (batch["labels"] != -100).long()

    def loss_and_grads(**inputs):
        model.zero_grad()
        loss = model(**inputs).loss
        loss.backward()
        return float(loss.detach()), [p.grad.clone() for p in model.parameters()]

    want, want_grads = loss_and_grads(**batch, attention_mask=mask)
    got, got_grads = loss_and_grads(**batch)
    assert got == pytest.approx(want, rel=1e-6)
    for a, b in zip(got_grads, want_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    if arch == "bloom":
        return  # (its tiny random ALiBi heads barely move the loss below: the other models show the failure)
    # The same padding on the left would be seen by the real tokens without a mask: the comparison can fail.
    left = {"input_ids": batch["input_ids"].roll(7, dims=1), "labels": batch["labels"].roll(7, dims=1)}
    left_mask = mask.roll(7, dims=1)
    assert loss_and_grads(**left)[0] != pytest.approx(loss_and_grads(**left, attention_mask=left_mask)[0], rel=1e-4)


def test_a_model_that_lets_packed_examples_see_each_other_is_caught():
    # BLOOM reads no position_ids (ALiBi): packed examples attend to the ones before them in their row.
    model = tiny_causal("bloom")
    ok, diff = batches.isolates(model, examples(), SUMMARIZE.collator(PAD), PAD)
    assert not ok and diff > 1e-4


def test_without_restarting_positions_packing_would_leak():
    """The check itself can fail: the same rows packed with positions running on across examples differ."""
    model = tiny_causal("llama").eval()
    rows = examples()
    packed = batches.pack(rows, PAD)
    packed.pop(batches.REAL_TOKENS)
    joined = dict(packed, position_ids=torch.arange(packed["input_ids"].shape[1]).expand_as(packed["input_ids"]))
    with torch.no_grad():
        assert not torch.allclose(model(**packed).logits, model(**joined).logits, atol=1e-4)


def test_example_lengths_of_each_feature_shape():
    import datasets

    flat = datasets.Dataset.from_list([{"input_ids": [1, 2, 3], "labels": 1}, {"input_ids": [4], "labels": 0}])
    assert batches.example_lengths(flat) == [3, 1]
    seq2seq = datasets.Dataset.from_list([{"input_ids": [1, 2, 3], "labels": [5, 6]},
                                          {"input_ids": [4], "labels": [7, 8, 9, 10]}])
    assert batches.example_lengths(seq2seq) == [5, 5]
    choices = datasets.Dataset.from_list([{"input_ids": [[1, 2], [3, 4, 5]], "labels": 1},
                                          {"input_ids": [[1], [2]], "labels": 0}])
    assert batches.example_lengths(choices) == [3, 1]


def test_probe_examples_share_a_row():
    import datasets

    feats = datasets.Dataset.from_list(examples(8))
    lengths = batches.example_lengths(feats)
    picked = batches.probe_examples(feats, lengths)
    assert len(batches.rows_for([len(r["input_ids"]) for r in picked])) < len(picked)


def test_bucket_lengths_are_few_and_waste_at_most_a_sixteenth():
    widths = {batches.bucket(n) for n in range(1, 1025)}
    assert len(widths) <= 31 + 16 * 5 + 1  # of 1,024 lengths: exact below 32, then 16 per doubling
    for n in range(1, 1025):
        width = batches.bucket(n)
        assert n <= width <= n * 17 / 16
    assert [batches.bucket(n) for n in (17, 33, 100, 250, 300)] == [17, 34, 100, 256, 304]
    assert batches.bucket(250, cap=250) == 250  # never past the model's positions
    assert batches.bucket(251, cap=250) == 251  # unless the sequence itself is


def long_examples(lengths=(61, 12, 30, 9, 20, 25), vocab: int = 100, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    rows = []
    for n in lengths:
        ids = torch.randint(1, vocab, (n,), generator=g).tolist()
        rows.append({"input_ids": ids, "labels": [-100] * (n // 3) + ids[n // 3:]})
    return rows


@pytest.mark.parametrize("arch,attention", [("gpt2", "sdpa"), ("llama", "eager")])
@pytest.mark.parametrize("packed", [False, True])
def test_bucketed_batches_give_the_same_loss_and_gradients(arch, attention, packed):
    model = tiny_causal(arch, attention).eval()
    rows = long_examples()
    collate = batches.packed_collator(PAD) if packed else SUMMARIZE.collator(PAD)
    plain = collate(rows)
    bucketed = batches.bucketed(collate, PAD, cap=64)(rows)
    assert plain["input_ids"].shape[-1] == 61 and bucketed["input_ids"].shape[-1] == 62
    assert {k: tuple(v.shape) for k, v in bucketed.items() if torch.is_tensor(v) and v.dim() == 2} == \
        {k: (plain["input_ids"].shape[0], 62) for k, v in plain.items() if torch.is_tensor(v) and v.dim() == 2}
    results = []
    for batch in (plain, bucketed):
        batch = {k: v for k, v in batch.items() if k != batches.REAL_TOKENS}
        model.zero_grad()
        loss = model(**batch).loss
        loss.backward()
        results.append((float(loss), [p.grad.clone() for p in model.parameters()]))
    assert results[1][0] == pytest.approx(results[0][0], rel=1e-5)
    for a, b in zip(results[1][1], results[0][1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_bucketed_seq2seq_and_classification_batches_keep_their_outputs():
    import transformers

    torch.manual_seed(0)
    t5 = transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=100, d_model=32, d_ff=64, d_kv=16, num_layers=2, num_heads=2, dropout_rate=0.0,
        decoder_start_token_id=PAD, pad_token_id=PAD)).eval()
    rows = [{"input_ids": [3 + i % 90 for i in range(n)], "labels": [5 + i % 90 for i in range(m)]}
            for n, m in ((37, 65), (20, 40))]
    plain = SUMMARIZE.collator(PAD)(rows)
    bucketed = batches.to_bucket(plain, PAD)
    assert bucketed["input_ids"].shape == (2, 38) and bucketed["labels"].shape == (2, 68)  # each its own bucket
    assert float(t5(**bucketed).loss) == pytest.approx(float(t5(**plain).loss), rel=1e-5)

    bert = transformers.BertForSequenceClassification(transformers.BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        num_labels=3, max_position_embeddings=64)).eval()
    ids = torch.randint(3, 100, (2, 35))
    mask = torch.ones_like(ids)
    ids[1, 30:], mask[1, 30:] = PAD, 0
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids),
             "labels": torch.tensor([0, 2])}
    out = batches.to_bucket(batch, PAD)
    assert out["input_ids"].shape == (2, 36) and out["attention_mask"][:, 35:].sum() == 0
    torch.testing.assert_close(bert(**out).logits, bert(**batch).logits, rtol=1e-5, atol=1e-6)
    unknown = {**batch, "special_tokens_mask": torch.zeros_like(ids)}
    assert batches.to_bucket(unknown, PAD) is unknown  # padding it would be a guess
